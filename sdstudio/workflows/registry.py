"""The one list of workflows. The config union (``config.load_config``), the CLI subcommands (``cli.py``),
the notebook apps (``sdstudio.ui``), the home page's links and the job kinds are all built from it.

Adding a workflow = its module (Config, the run class, its CLI subcommand module, its app) + one line here.
Entries are import paths, so reading the registry imports nothing heavy: ``sdstudio --help`` stays fast and
choosing one workflow never loads another's dependencies.

Its items' fields (which key is the prompt, the completion, the messages) come from ``fields.job_fields``.
A workflow's run class follows one protocol (``WorkflowRun``): built from its Config (``home=``), it runs with
``run(resume=, on_progress=, cancel_event=, wait=)`` inside a ``runner.JobRunner`` and returns a JobResult.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


class WorkflowRun(Protocol):
    def run(self, *, resume: int | None = None, on_progress: Callable[[Any], None] | None = None,
            cancel_event: Any = None, wait: bool = False) -> Any: ...


@dataclass(frozen=True)
class Workflow:
    kind: str           # the config's ``kind`` and the job's kind in ``jobs``
    family: str         # whose details its jobs keep (generation | evaluation | export: the seed's tables)
    config: str         # "module:Class" of its pydantic Config
    run: str | None     # "module:Class" of its run (WorkflowRun); None when it is not a model-calling job
    command: str        # the module of its ``sdstudio`` subcommand (``register(subparsers)`` + its handler)
    app: str | None     # its notebook app, "module:Class"
    notebook: str | None
    title: str
    fields: str | None = None  # "module:function" (job, home) -> fields.Fields; None: its use case's fields


WORKFLOWS: list[Workflow] = [
    Workflow("generation", "generation", "sdstudio.configs.generation:GenerationJob",
             "sdstudio.workflows.sft:GenerationRun", "sdstudio.commands.generate", "sdstudio.ui.generate:GenerateApp",
             "01_generate.ipynb", "Generate (SFT / freeform from topics)"),
    Workflow("documents", "generation", "sdstudio.configs.documents:DocumentJob",
             "sdstudio.workflows.documents:DocumentRun", "sdstudio.commands.documents",
             "sdstudio.ui.documents:DocumentsApp", "02_documents.ipynb",
             "Documents (grounded Q/A from PDF, DOCX, HTML...)"),
    Workflow("workflow", "generation", "sdstudio.configs.workflow:WorkflowJob", "sdstudio.workflows.custom:WorkflowRun",
             "sdstudio.commands.workflow", "sdstudio.ui.workflow:WorkflowApp", "03_custom_workflow.ipynb",
             "Custom workflows over your data", "sdstudio.workflows.custom:fields"),
    Workflow("alignment", "generation", "sdstudio.configs.alignment:AlignmentJob",
             "sdstudio.workflows.alignment:AlignmentRun", "sdstudio.commands.align",
             "sdstudio.ui.alignment:AlignmentApp", "04_alignment.ipynb", "Alignment data (DPO / KTO)",
             "sdstudio.workflows.alignment:fields"),
    Workflow("evaluation", "evaluation", "sdstudio.configs.evaluation:EvaluationJob",
             "sdstudio.workflows.evaluate:EvaluationRun", "sdstudio.commands.evaluate",
             "sdstudio.ui.evaluate:EvaluateApp", "05_evaluate.ipynb", "Evaluate and review (LLM as judge)"),
    Workflow("evolve", "generation", "sdstudio.configs.evolve:EvolveJob", "sdstudio.workflows.evolve:EvolveRun",
             "sdstudio.commands.evolve", "sdstudio.ui.evolve:EvolveApp", "09_evolve.ipynb",
             "Evolve (Evol-Instruct: harder, broader instructions)", "sdstudio.workflows.evolve:fields"),
    Workflow("conversations", "generation", "sdstudio.configs.conversations:ConversationJob",
             "sdstudio.workflows.conversations:ConversationRun", "sdstudio.commands.conversations",
             "sdstudio.ui.conversations:ConversationsApp", "10_conversations.ipynb",
             "Conversations (multi-turn chats)", "sdstudio.workflows.conversations:fields"),
    Workflow("export", "export", "sdstudio.configs.export:ExportJob", None, "sdstudio.commands.export",
             "sdstudio.ui.export:ExportApp", "06_export.ipynb", "Export (files, Hugging Face Hub)"),
]


def register(entry: Workflow) -> None:
    """Add a workflow (a plugin, or a test's): its kind must be new."""
    if any(w.kind == entry.kind for w in WORKFLOWS):
        raise ValueError(f"a workflow of kind {entry.kind!r} is registered already")
    WORKFLOWS.append(entry)


def unregister(kind: str) -> None:
    WORKFLOWS[:] = [w for w in WORKFLOWS if w.kind != kind]


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def workflow(kind: str) -> Workflow:
    from ..errors import ConfigError

    for entry in WORKFLOWS:
        if entry.kind == kind:
            return entry
    raise ConfigError(f"unknown kind {kind!r}; one of {', '.join(kinds())}")


def kinds() -> list[str]:
    return [w.kind for w in WORKFLOWS]


def config_class(kind: str) -> type:
    return _load(workflow(kind).config)


def run_class(kind: str) -> type:
    target = workflow(kind).run
    if target is None:
        from ..errors import ConfigError

        raise ConfigError(f"{kind} jobs are not run by a workflow run; use `sdstudio {workflow(kind).command}`")
    return _load(target)


def commands() -> list[str]:
    return [w.command for w in WORKFLOWS]


def apps() -> dict[str, str]:
    """App class name -> its module."""
    return {w.app.partition(":")[2]: w.app.partition(":")[0] for w in WORKFLOWS if w.app}


def notebooks() -> list[tuple[str, str]]:
    return [(w.notebook, w.title) for w in WORKFLOWS if w.notebook]
