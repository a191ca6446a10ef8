"""A workflow written the way a later issue would add one: this module plus one registry line.

``toy`` asks the model for one sentence per word. It has its Config, a run built on ``runner.JobRunner``
(lease, resume, progress, errors, close) and the local executor, a pure handler, and its CLI subcommand.
"""
from __future__ import annotations

import argparse
from typing import Any, Literal

from pydantic import Field

from sdstudio.commands.common import add_model_flags, apply_overrides, build_config, load_job_data, run_with_progress
from sdstudio.config import ModelSpec, RunSettings, StrictModel
from sdstudio.engine import WorkItem, request_key
from sdstudio.pricing import price_for
from sdstudio.providers import ChatRequest, Completion, get_provider, model_id
from sdstudio.runner import JobRunner
from sdstudio.store import Record, Store
from sdstudio.workflows.registry import Workflow

KIND = "toy"
ENTRY = Workflow(KIND, "generation", "tests.plugins.toy_workflow:ToyJob", "tests.plugins.toy_workflow:ToyRun",
                 "tests.plugins.toy_workflow", None, None, "Toy sentences")


class ToyJob(StrictModel):
    kind: Literal["toy"] = "toy"
    words: list[str] = Field(min_length=1)
    model: ModelSpec = Field(default_factory=ModelSpec)
    run: RunSettings = Field(default_factory=RunSettings)


def sentence(item: WorkItem, completion: Completion) -> list[Record]:
    """Pure: the reply becomes one record; the runner's executor writes it."""
    return [Record(job_kind="generation", job_id=0, item_key=item.key, status="ok", topic=item.topic,
                   output={"word": item.topic, "sentence": completion.text.strip()},
                   tokens_in=completion.usage.input_tokens, tokens_out=completion.usage.output_tokens)]


class ToyRun:
    def __init__(self, config: ToyJob, *, home: Any = None):
        self.config, self.store = config, Store.open(home)
        self.provider = get_provider(config.model)
        self.model_id = model_id(config.model)

    def run(self, *, resume: int | None = None, on_progress: Any = None, cancel_event: Any = None,
            wait: bool = False) -> Any:
        with JobRunner(self.store, "generation", KIND, self.config, resume=resume, fields={"model_id": self.model_id},
                       on_progress=on_progress, cancel_event=cancel_event, wait=wait) as job:
            items = []
            for word in self.config.words:
                request = ChatRequest.of(f"One sentence using the word {word!r}.", self.config.model.parameters)
                items.append(WorkItem(key=request_key(self.config.model.provider, self.model_id, request),
                                      request=request, topic=word))
            job.execute(self.provider, items, sentence, settings=self.config.run,
                        price=price_for(self.model_id, self.store.path.parent))
            return job.finish()


def register(sub: argparse._SubParsersAction) -> None:
    toy = sub.add_parser(KIND, help="one sentence per word")
    add_model_flags(toy)
    toy.add_argument("--words", nargs="+")
    toy.add_argument("--resume", type=int)
    toy.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    data = load_job_data(args, KIND)
    if args.words:
        data["words"] = args.words
    config = build_config(ToyJob, apply_overrides(data, args), "toy flags", args)
    return run_with_progress(ToyRun(config, home=args.home), args, config.run.max_failed_ratio)
