"""YAML written by users (job configs, use cases, presets): ``yaml.safe_load`` plus a cap on its expanded size.

``safe_load`` never runs code, but anchors and aliases let a 1 KB file name a structure of billions of
values ("billion laughs"): loading shares the references and is quick, then validation or the job's
config hash walks every path and the process takes gigabytes and minutes. ``check_size`` counts values
the way a walk sees them and stops at ``MAX_VALUES``, so such a file is one error line instead.
"""
from __future__ import annotations

from typing import Any

import yaml

from .errors import ConfigError

MAX_VALUES = 1_000_000  # a real config holds thousands of values at most


def check_size(data: Any, label: str, limit: int = MAX_VALUES) -> Any:
    """Return ``data`` unchanged, or raise ConfigError when it expands to more than ``limit`` values."""
    seen, stack = 0, [data]
    while stack:
        value = stack.pop()
        seen += 1
        if seen > limit:
            raise ConfigError(f"{label}: expands to more than {limit:,} values (anchors and aliases nested "
                              "into a 'billion laughs'?); write the values out or use fewer aliases")
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
    return data


def load(text: str, label: str) -> Any:
    """``yaml.safe_load`` with the size check; YAML errors are left to the caller (each words its own)."""
    return check_size(yaml.safe_load(text), label)
