"""sdstudio: a Jupyter-native Synthetic Data Studio.

The public API is re-exported here, loaded on first use so ``import sdstudio`` (and so the CLI's
start-up) costs nothing until a name is actually needed.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ConfigError": "errors", "SdstudioError": "errors", "StoreError": "errors",
    "EvaluationJob": "config", "ExportJob": "config", "GenerationJob": "config",
    "ModelParameters": "config", "ModelSpec": "config", "RunSettings": "config", "load_config": "config", "parse_job": "config",
    "init_home": "home", "resolve_home": "home",
    "Record": "store", "Store": "store",
    "GenerationRun": "workflows.sft", "generate": "workflows.sft",
    "EvaluationRun": "workflows.evaluate", "evaluate": "workflows.evaluate",
    "histogram": "reviews", "latest_scores": "reviews", "review": "reviews", "scores": "reviews",
    "select": "reviews", "summary": "reviews",
    "ExportResult": "export", "ExportUploadError": "export", "export_dataset": "export",
    "AlignmentJob": "config", "AlignmentRun": "workflows.alignment", "align": "workflows.alignment",
    "WorkflowJob": "config", "WorkflowStep": "config", "WorkflowRun": "workflows.custom",
    "run_workflow": "workflows.custom",
    "DocumentJob": "config", "DocumentRun": "workflows.documents", "generate_documents": "workflows.documents",
    "load_corpus": "documents",
    "dedup_records": "dedup", "find_duplicates": "dedup", "parse_items": "parsing",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sdstudio' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
