"""What a generation job will ask, decided before any call: the prompt per topic and the item schema.

Everything a user can get wrong (unknown use case, empty topics, a template that does not render, a
freeform example set whose types disagree) fails here, with one line naming the problem, before a
single request is sent or a row written.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import GenerationJob
from ..errors import ConfigError
from ..providers.base import ChatRequest
from ..templates import render, variables
from ..usecases import UseCase, load_use_case, schema_from_examples, schema_from_keys

LIST_KEY = "items"
# variables the generation workflow itself provides to every generate.jinja
PROVIDED = {"examples", "instruction", "requirements", "topic", "count", "keys", "avoid"}


@dataclass(frozen=True)
class GenerationPlan:
    config: GenerationJob
    use_case: UseCase
    topics: list[str]
    instruction: str
    requirements: list[str]
    examples: list[dict[str, Any]]
    item_schema: dict[str, Any]
    keys: list[str]
    inputs: dict[str, str]
    template: str
    technique: str

    @classmethod
    def build(cls, config: GenerationJob, home: str | Path | None = None) -> "GenerationPlan":
        use_case = load_use_case(config.use_case, home)
        topics = config.topics if config.topics is not None else list(use_case.topics)
        if not topics:
            raise ConfigError(f"use case {use_case.name} has no default topics; give --topics or a topics list")
        examples = config.examples if config.examples is not None else list(use_case.examples)
        technique = config.technique if config.technique != "sft" else use_case.technique
        if technique == "freeform":
            schema = schema_from_examples(examples)
        elif config.output_keys:
            schema = schema_from_keys(config.output_keys)
        elif use_case.output_schema:
            schema = use_case.output_schema
        elif examples:
            schema = schema_from_examples(examples)
        else:
            raise ConfigError(f"use case {use_case.name} defines no output schema; give output_keys or examples")
        keys = list(schema.get("properties", {}))
        inputs = {**{k: str(v) for k, v in use_case.inputs.items()}, **(config.inputs or {})}
        plan = cls(config=config, use_case=use_case, topics=list(dict.fromkeys(topics)),
                   instruction=config.instruction if config.instruction is not None else use_case.instruction,
                   requirements=config.requirements if config.requirements is not None else list(use_case.requirements),
                   examples=examples, item_schema=schema, keys=keys, inputs=inputs,
                   template=use_case.generate_template, technique=technique)
        plan._check_template()
        return plan

    def _check_template(self) -> None:
        name = f"{self.use_case.name}/generate.jinja"
        missing = sorted(variables(self.template, name) - PROVIDED - set(self.inputs))
        if missing:
            raise ConfigError(f"{name} uses {', '.join(missing)}, which neither sdstudio nor the job's "
                              "inputs provide; add them under `inputs:`")
        self.prompt(self.topics[0], min(self.config.batch_size, self.config.num_per_topic))

    # -- prompts -----------------------------------------------------------------------------------
    def prompt(self, topic: str, count: int, avoid: list[str] | tuple[str, ...] = ()) -> str:
        context = {**self.inputs, "examples": self.examples, "instruction": self.instruction,
                   "requirements": self.requirements, "topic": topic, "count": count, "keys": self.keys,
                   "avoid": list(avoid)}
        return render(self.template, context, f"{self.use_case.name}/generate.jinja").strip("\n")

    def reply_schema(self, count: int) -> dict[str, Any]:
        """One item alone, or ``{"items": [count items]}`` when a call asks for several."""
        if count == 1:
            return self.item_schema
        return {"type": "object", "additionalProperties": False, "required": [LIST_KEY],
                "properties": {LIST_KEY: {"type": "array", "items": self.item_schema,
                                          "minItems": count, "maxItems": count}}}

    def request(self, topic: str, count: int, avoid: list[str] | tuple[str, ...] = ()) -> ChatRequest:
        return ChatRequest.of(self.prompt(topic, count, avoid), self.config.model.parameters,
                              self.reply_schema(count))

    # -- what identifies an item -------------------------------------------------------------------
    @property
    def summary_field(self) -> str | None:
        """The field that names an item in the avoid list (the question, for SFT use cases)."""
        field = self.use_case.prompt_field
        return field if field in self.keys else None

    def summarise(self, item: Any) -> str:
        if isinstance(item, dict) and self.summary_field:
            text = str(item.get(self.summary_field, ""))
        else:
            text = json.dumps(item, ensure_ascii=False, sort_keys=True)
        text = " ".join(text.split())
        return text if len(text) <= 200 else text[:197] + "..."

    def calls(self, needed: int) -> list[int]:
        """Item counts per call to get ``needed`` items, ``batch_size`` at a time."""
        size = self.config.batch_size
        return [min(size, needed - start) for start in range(0, needed, size)]

    def metadata(self) -> dict[str, Any]:
        """The generation_metadata fields that describe what was asked."""
        spec = self.config.model
        return {"technique": self.technique, "use_case": self.use_case.name,
                "inference_type": spec.provider, "model_parameters": spec.parameters.model_dump(mode="json"),
                "prompt_template": self.template, "topics": self.topics, "examples": self.examples,
                "num_per_topic": self.config.num_per_topic,
                "requested": len(self.topics) * self.config.num_per_topic}
