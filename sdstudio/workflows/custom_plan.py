"""What a custom workflow will ask, decided before any call: the rows, each step's model and prompt.

Everything a user can get wrong fails here with one line, before a request is sent or a row written: a
template naming a column the file does not have (the message lists the ones it has), a column the
selection left out, an earlier step using a later step's output, an output column that would overwrite
an input column, a JSON schema that is not one, a template that does not render on the first row.

A template sees the row's selected columns and the output columns of earlier steps by name, all of them
as ``row`` (for names that are not identifiers: ``{{ row["Question text"] }}``), and ``variation`` /
``variations`` (1-based copy number, copies per row). JSON step outputs are the parsed value, so
``{{ grade.difficulty }}`` works.

``preview`` (the CLI's ``--dry-run``, the notebook's per-step preview) renders each step on the first row
with placeholders such as ``<grade.difficulty>`` for outputs that do not exist yet, and estimates
tokens and cost without a call or a write.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import nodes

from ..config import ModelSpec, WorkflowJob, WorkflowStep
from ..datasets import DatasetError, plain, read_selection, select_rows
from ..diagnostics import cut_off, explain
from ..engine import InvalidOutput
from ..errors import ConfigError, SdstudioError
from ..pricing import price_for
from ..spark_io import is_spark_source
from ..spark_io import read_selection as spark_selection
from ..providers import ChatRequest, Completion, get_provider
from ..templates import TemplateError, environment, render, variables
from .jobs import Estimate

RESERVED = ("row", "variation", "variations")
_DICT_METHODS = {"items", "keys", "values", "get"}


class Pending(str):
    """Stands in for a step output that does not exist yet (previews, checks). A string, so filters and
    ``tojson`` work; any attribute or key of it is another placeholder, so ``grade.difficulty`` renders."""

    def __new__(cls, label: str) -> Pending:
        return super().__new__(cls, f"<{label}>")

    def __getattr__(self, name: str) -> Pending:
        if name.startswith("_"):
            raise AttributeError(name)
        return Pending(f"{self[1:-1]}.{name}")

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, slice)):
            return str.__getitem__(self, key)
        return Pending(f"{self[1:-1]}[{key!r}]")


@dataclass(frozen=True)
class RowInput:
    """One output row to make: a source row (by its position in the file) and a copy number."""

    key: str  # the record's item key; changes when the row's content changes
    index: int
    variation: int
    values: dict[str, Any]


@dataclass(frozen=True)
class StepPlan:
    step: WorkflowStep
    index: int
    spec: ModelSpec
    endpoint: str  # steps on one endpoint share one engine (and its limits)

    @property
    def name(self) -> str:
        return self.step.name


def endpoint_of(spec: ModelSpec) -> str:
    return json.dumps(spec.model_dump(mode="json", exclude={"parameters"}), sort_keys=True)


@dataclass(frozen=True)
class WorkflowPlan:
    config: WorkflowJob
    label: str  # the input, as messages name it
    file_columns: list[str]
    columns: list[str]  # the selected input columns
    rows: list[RowInput]
    steps: list[StepPlan]

    @classmethod
    def build(cls, config: WorkflowJob, home: str | Path | None = None, frame: Any = None) -> WorkflowPlan:
        if frame is None:
            if not config.input_file:
                raise ConfigError("the workflow has no input: give --input FILE (or input_file in the config)")
            label = f"input file {config.input_file}"
            if is_spark_source(config.input_file):  # a table or a URI: Spark reads it, the same rows (spark_io)
                file_columns, chosen = spark_selection(config.input_file, columns=config.columns, limit=config.limit,
                                                       sample=config.sample, seed=config.seed, label=label,
                                                       master=config.run.spark_master, encoding=config.encoding)
            else:
                file_columns, chosen = read_selection(config.input_file, columns=config.columns, limit=config.limit,
                                                      sample=config.sample, seed=config.seed, label=label,
                                                      encoding=config.encoding, sheet=config.sheet, home=home)
        else:
            label = "the input"
            file_columns = [str(c) for c in frame.columns]
            chosen = select_rows(frame, columns=config.columns, limit=config.limit, sample=config.sample,
                                 seed=config.seed, label=label)
        steps = [StepPlan(step, i, spec := (step.model.resolve(config.model) if step.model else config.model),
                          endpoint_of(spec)) for i, step in enumerate(config.steps)]
        plan = cls(config, label, file_columns, list(chosen.columns), _rows(chosen, config.variations), steps)
        plan._check()
        return plan

    # -- checks, before any call ------------------------------------------------------------------
    def _check(self) -> None:
        available = set(self.columns)
        produced_by = {sp.step.column: sp.name for sp in self.steps}
        for sp in self.steps:
            step = sp.step
            if step.column in self.columns:
                raise ConfigError(f"step {step.name}: output column {step.column!r} is already an input column; "
                                  "give the step another output_column")
            if step.column in RESERVED:
                raise ConfigError(f"step {step.name}: output column {step.column!r} is a reserved name "
                                  f"({', '.join(RESERVED)}); choose another")
            for source, what in ((step.template, "template"), (step.system_prompt, "system_prompt")):
                if source:
                    self._check_names(step, source, what, available, produced_by)
            if step.json_schema is not None:
                _check_schema(step)
            available.add(step.column)
        for flag, column in (("prompt_column", self.config.prompt_column),
                             ("completion_column", self.config.completion_column)):
            if column is not None and column not in available:
                raise ConfigError(f"{flag} {column!r} is neither an input column nor a step's output "
                                  f"(columns: {', '.join(sorted(available))})")
        if self.rows:  # render the first row: a broken template fails now, not once per row
            first, outputs = self.rows[0], {sp.step.column for sp in self.steps}
            pending = {column: Pending(column) for column in outputs}
            for sp in self.steps:
                try:
                    self.messages(first, sp, pending)
                except TemplateError:
                    # a placeholder cannot stand in for every use of an output (arithmetic on a JSON
                    # number): such a step is checked on each row as it runs, failing only that row
                    if not self.uses(sp) & outputs:
                        raise

    @staticmethod
    def uses(sp: StepPlan) -> set[str]:
        """The names a step's prompts read (columns, earlier outputs, reserved names)."""
        names = variables(sp.step.template) | _row_lookups(sp.step.template)
        if sp.step.system_prompt:
            names |= variables(sp.step.system_prompt) | _row_lookups(sp.step.system_prompt)
        return names

    def _check_names(self, step: WorkflowStep, source: str, what: str, available: set[str],
                     produced_by: dict[str, str]) -> None:
        name = f"step {step.name} {what}"
        used = (variables(source, name) - set(RESERVED)) | _row_lookups(source)
        for var in sorted(used - available):
            if var in produced_by:
                later = produced_by[var]
                where = "its own output" if later == step.name else f"the output of step {later}, which runs later"
                raise ConfigError(f"{name} uses {var!r}, {where}; a step can only use earlier steps' outputs "
                                  "(reorder the steps)")
            shown = ", ".join(sorted(available))
            if var in self.file_columns:
                raise ConfigError(f"{name} uses column {var!r}, which is not among the selected columns "
                                  f"({shown}); add it to columns")
            raise ConfigError(f"{name} uses column {var!r}, which {self.label} does not have "
                              f"(available: {shown})")

    # -- prompts ----------------------------------------------------------------------------------
    def context(self, row: RowInput, outputs: dict[str, Any]) -> dict[str, Any]:
        values = {**row.values, **outputs}
        return {**values, "row": values, "variation": row.variation, "variations": self.config.variations}

    def messages(self, row: RowInput, sp: StepPlan, outputs: dict[str, Any]) -> list[dict[str, str]]:
        context = self.context(row, outputs)
        prompt = render(sp.step.template, context, f"step {sp.name} template").strip("\n")
        if not prompt.strip():
            raise ConfigError(f"step {sp.name}: the prompt for source row {row.index} is empty")
        messages = [{"role": "user", "content": prompt}]
        if sp.step.system_prompt:
            system = render(sp.step.system_prompt, context, f"step {sp.name} system_prompt").strip("\n")
            messages.insert(0, {"role": "system", "content": system})
        return messages

    def request(self, row: RowInput, sp: StepPlan, outputs: dict[str, Any]) -> ChatRequest:
        return ChatRequest.of(self.messages(row, sp, outputs), sp.spec.parameters, sp.step.json_schema)

    # -- replies ----------------------------------------------------------------------------------
    @staticmethod
    def parse(sp: StepPlan, completion: Completion) -> Any:
        """A reply -> the step's output value, or InvalidOutput saying what is wrong with it."""
        step = sp.step
        if cut_off(completion.finish_reason):  # "length", or Bedrock's "max_tokens"
            raise InvalidOutput(f"reply cut off at max_tokens ({sp.spec.parameters.max_tokens}); "
                                f"raise max_tokens for step {step.name}")
        if step.output_type == "text":
            text = completion.text.strip()
            if not text:
                raise InvalidOutput("empty reply")
            return text
        from ..parsing import (  # jsonschema: ~1 s to import
            ParseError,
            extract_json,
            validate_item,
        )

        value = completion.parsed
        if value is None:
            try:
                value, _, _ = extract_json(completion.text)
            except ParseError as exc:
                raise InvalidOutput(explain(str(exc), completion.finish_reason)) from None
        reason = validate_item(value, step.json_schema)
        if reason is not None:
            raise InvalidOutput(f"reply does not match the step's JSON schema: {reason}")
        return value

    # -- what the job row says ----------------------------------------------------------------------
    def metadata(self, model_ids: dict[str, str]) -> dict[str, Any]:
        spec = self.config.model
        templates = "\n\n".join(f"# step {sp.name} -> {sp.step.column} ({sp.step.output_type})\n{sp.step.template}"
                                for sp in self.steps)
        return {"technique": "workflow", "use_case": None,
                "model_id": ", ".join(dict.fromkeys(model_ids[sp.endpoint] for sp in self.steps)),
                "inference_type": ", ".join(dict.fromkeys(sp.spec.provider for sp in self.steps)),
                "model_parameters": spec.parameters.model_dump(mode="json"), "prompt_template": templates,
                "num_per_topic": self.config.variations, "requested": len(self.rows)}


# -- dry run ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StepPreview:
    step: str
    output_column: str
    output_type: str
    provider: str
    model_id: str | None
    prompt: str  # the first row's prompt; earlier steps' outputs shown as <column>
    prompt_tokens: int


@dataclass(frozen=True)
class WorkflowPreview(Estimate):
    """What a workflow will send and roughly cost, computed without a call or a write."""

    steps: list[StepPreview]
    rows: int  # output rows (selected rows x variations)
    requests: int
    columns: list[str]  # the selected input columns

    @property
    def prompt(self) -> str:
        return self.steps[0].prompt


PREVIEW_SAMPLE = 200  # rows rendered for the estimate; the rest are scaled from them


def preview(config: WorkflowJob, *, home: str | Path | None = None, frame: Any = None) -> WorkflowPreview:
    """Each step's prompt on the first row and a token/cost estimate for the whole job."""
    from ..tokens import count_tokens

    plan = WorkflowPlan.build(config, home, frame=frame)
    if not plan.rows:
        raise ConfigError(f"{plan.label} has no rows to run")
    pending = {sp.step.column: Pending(sp.step.column) for sp in plan.steps}
    price_home = Path(home).expanduser() if home else None
    shown, tokens_in, tokens_out, cost, known = [], 0, 0, 0.0, True
    sample = plan.rows[:PREVIEW_SAMPLE]
    scale = len(plan.rows) / len(sample)
    guessed_out: dict[str, int] = {}
    for sp in plan.steps:
        model_id = get_provider(sp.spec).model_id  # no connection yet
        text = _shown_prompt(plan, plan.rows[0], sp, pending)
        first_tokens, _ = count_tokens(text, sp.spec)
        shown.append(StepPreview(sp.name, sp.step.column, sp.step.output_type, sp.spec.provider, model_id, text,
                                 first_tokens))
        chars = sum(len(_shown_prompt(plan, row, sp, pending)) for row in sample)
        step_in = round(chars / 4 * scale) + sum(guessed_out.get(c, 0) for c in plan.uses(sp))
        step_out = len(plan.rows) * min(sp.spec.parameters.max_tokens, 256)
        guessed_out[sp.step.column] = step_out
        price = price_for(model_id, price_home)
        known = known and price.known
        tokens_in, tokens_out, cost = tokens_in + step_in, tokens_out + step_out, cost + price.cost(step_in, step_out)
    return WorkflowPreview(steps=shown, rows=len(plan.rows), requests=len(plan.rows) * len(plan.steps),
                           columns=plan.columns, est_tokens_in=tokens_in, est_tokens_out=tokens_out,
                           est_cost_usd=cost, price_known=known)


def _shown_prompt(plan: WorkflowPlan, row: RowInput, sp: StepPlan, pending: dict[str, Any]) -> str:
    try:
        return "\n\n".join(m["content"] for m in plan.messages(row, sp, pending))
    except SdstudioError as exc:  # only possible for a step that computes with earlier outputs
        return f"(rendered once the earlier steps have run; with placeholders: {exc})"



def _rows(frame: Any, variations: int) -> list[RowInput]:
    rows = []
    for index, record in zip(frame.index.tolist(), frame.to_dict("records")):
        values = {str(k): plain(v) for k, v in record.items()}
        digest = hashlib.sha256(json.dumps(values, sort_keys=True, ensure_ascii=False,
                                           default=str).encode()).hexdigest()[:12]
        for copy in range(1, variations + 1):
            key = f"row:{index}:{digest}" + (f":v{copy}" if variations > 1 else "")
            rows.append(RowInput(key, int(index), copy, values))
    return rows


def _row_lookups(source: str) -> set[str]:
    """Columns a template reads through ``row`` with a constant name (``row["a b"]``, ``row.a``)."""
    found = set()
    for node in environment().parse(source).find_all((nodes.Getitem, nodes.Getattr)):
        if not (isinstance(node.node, nodes.Name) and node.node.name == "row"):
            continue
        if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            found.add(node.arg.value)
        elif isinstance(node, nodes.Getattr) and node.attr not in _DICT_METHODS:
            found.add(node.attr)
    return found


def _check_schema(step: WorkflowStep) -> None:
    from ..parsing import jsonschema_module

    validators, SchemaError = jsonschema_module().validators, jsonschema_module().exceptions.SchemaError
    try:
        validators.validator_for(step.json_schema, default=validators.Draft202012Validator).check_schema(
            step.json_schema)
    except SchemaError as exc:
        raise ConfigError(f"step {step.name}: json_schema is not a valid JSON schema: "
                          f"{' '.join(exc.message.split())[:160]}") from None


__all__ = ["DatasetError", "Pending", "RowInput", "StepPlan", "StepPreview", "WorkflowPlan", "WorkflowPreview",
           "endpoint_of", "preview"]
