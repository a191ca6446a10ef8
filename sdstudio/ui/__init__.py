"""ipywidgets apps, one per notebook, built from shared components (``components.py``).

Each app is a VBox whose controls are public attributes; it calls the package API and holds no workflow
logic. Imported lazily so the CLI never loads ipywidgets.
"""
from __future__ import annotations

import importlib
from typing import Any

from ..workflows import registry

_PAGES = {"HomeApp": "sdstudio.ui.home", "ReviewPanel": "sdstudio.ui.review"}  # pages no workflow owns
__all__ = [*_PAGES, *registry.apps()]


def __getattr__(name: str) -> Any:
    module = {**_PAGES, **registry.apps()}.get(name)  # one app per registered workflow
    if module is None:
        raise AttributeError(f"module 'sdstudio.ui' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
