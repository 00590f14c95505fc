"""YAML config plumbing shared by every family: overlays, merging, flattening for MLflow params."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def deep_merge(base: dict, over: dict) -> dict:
    """`over` on top of `base`, merging nested mappings key by key (neither input is changed)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def expand_dotted(d: dict) -> dict:
    """{'net.members': 2, 'trainer': {'max_epochs': 5}} -> {'net': {'members': 2}, 'trainer': {'max_epochs': 5}}."""
    out: dict = {}
    for key, value in d.items():
        value = expand_dotted(value) if isinstance(value, dict) else value
        parts = str(key).split(".")
        for part in reversed(parts[1:]):
            value = {part: value}
        out = deep_merge(out, {parts[0]: value})
    return out


def parse_key_values(items, flag: str, example: str) -> dict[str, object]:
    """`KEY=VALUE` command-line pairs (values read as YAML: 3, 0.1, [0], true) -> {dotted key: value}."""
    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE, e.g. {flag} {example}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested mapping -> {'a.b': value}, the shape MLflow params take."""
    out: dict = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def read_yaml(path: str | Path, base_key: str = "base", *, on_file: Callable[[Path, dict], None] | None = None,
              _seen: tuple[Path, ...] = ()) -> dict:
    """A YAML mapping with the file it names under `base_key` (relative to it) merged underneath, recursively.

    `on_file(path, raw)` may adjust each file's mapping before merging (e.g. resolve paths it names).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file not found: {path}")
    if path.resolve() in _seen:
        raise ValueError(f"config {path} includes itself through '{base_key}'")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"config {path} must be a mapping of keys")
    if on_file is not None:
        on_file(path, raw)
    base = raw.pop(base_key, None)
    if base:
        raw = deep_merge(read_yaml(path.parent / base, base_key, on_file=on_file, _seen=(*_seen, path.resolve())), raw)
    return raw


def load_yaml_model(path: str | Path, model: type[M], what: str, missing: type[Exception] = ValueError) -> M:
    """Read one YAML file into a pydantic model; errors say `<what> not found` or `<what> <path> is invalid`."""
    path = Path(path)
    if not path.is_file():
        raise missing(f"{what} not found: {path}")
    try:
        return model.model_validate(yaml.safe_load(path.read_text()) or {})
    except ValidationError as e:
        raise ValueError(f"{what} {path} is invalid: {e}") from None
