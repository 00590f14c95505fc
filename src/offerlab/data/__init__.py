"""Data layer: canonical tables, validation, loaders, synthetic marketplace, sequences and features."""

from offerlab.data.loaders import (
    DataFileMissing,
    load_cdnow,
    load_dataset,
    load_german,
    load_hillstrom,
    load_mapped,
    read_mapping,
)
from offerlab.data.schema import DataValidationError, validate_table

__all__ = [
    "DataFileMissing",
    "DataValidationError",
    "load_cdnow",
    "load_dataset",
    "load_german",
    "load_hillstrom",
    "load_mapped",
    "read_mapping",
    "validate_table",
]
