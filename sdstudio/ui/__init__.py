"""ipywidgets apps, one per notebook, built from shared components (``components.py``).

Each app is a VBox whose controls are public attributes; it calls the package API and holds no workflow
logic. Imported lazily so the CLI never loads ipywidgets.
"""
from __future__ import annotations

import importlib
from typing import Any

_APPS = {"HomeApp": "home", "GenerateApp": "generate", "EvaluateApp": "evaluate", "ReviewPanel": "review",
         "ExportApp": "export", "DocumentsApp": "documents", "WorkflowApp": "workflow", "AlignmentApp": "alignment"}
__all__ = list(_APPS)


def __getattr__(name: str) -> Any:
    module = _APPS.get(name)
    if module is None:
        raise AttributeError(f"module 'sdstudio.ui' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
