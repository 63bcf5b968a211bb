"""The shipped configs: one `get_config()` per recipe (default.py documents every key), found
by file or by name (`digits`, `digits.py`, `configs/digits.py`) from any directory after a plain
`pip install`."""

from __future__ import annotations

import os

SHIPPED_CONFIGS = os.path.dirname(os.path.abspath(__file__))


def shipped_names() -> list[str]:
    return sorted(name[:-3] for name in os.listdir(SHIPPED_CONFIGS)
                  if name.endswith(".py") and not name.startswith("_"))


def shipped_config(value: str) -> str:
    """`value` if it is a file; else the shipped config it names (`digits`, `digits.py`,
    `configs/digits.py` from any directory after a plain `pip install`)."""
    path, colon, overrides = value.partition(":")  # ml_collections' FILE:ARGUMENT form
    if os.path.exists(path):
        return value
    name = os.path.basename(path)
    shipped = os.path.join(SHIPPED_CONFIGS, name if name.endswith(".py") else f"{name}.py")
    if os.path.exists(shipped):
        return shipped + colon + overrides
    return value
