"""Errors of settings that cannot work; the CLI prints them as one line, not a traceback."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """An option whose value cannot work with the data, files or model it names (a fold out
    of range, an AU the dataset does not code, model and data AUs that differ ...). The
    message names the option or value and says what was expected."""
