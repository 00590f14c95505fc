"""Offerlab: personalised offers for marketplaces."""

__version__ = "0.1.0"
