"""What a generation job will ask, decided before any call: the prompt per topic and the item schema.

Everything a user can get wrong (unknown use case, empty topics, a template that does not render, a
freeform example set whose types disagree) fails here, with one line naming the problem, before a
single request is sent or a row written.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from ..config import GenerationJob
from ..errors import ConfigError
from ..providers.base import ChatRequest
from ..samplers import AttributeSampler, value_folders
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
    sampler: AttributeSampler | None = None  # the job's attributes (samplers.py): a draw per request

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
        declared = config.attributes if config.attributes is not None else use_case.attributes
        sampler = None
        if declared:
            sampler = AttributeSampler.build(declared, config.seed, value_folders(use_case.folder, home))
            taken = sorted(set(sampler.names) & (PROVIDED | set(inputs) | {"attributes"}))
            if taken:
                raise ConfigError(f"attribute {taken[0]!r} has the name of a template variable sdstudio or the "
                                  "job's inputs provide; rename it")
        plan = cls(config=config, use_case=use_case, topics=list(dict.fromkeys(topics)),
                   instruction=config.instruction if config.instruction is not None else use_case.instruction,
                   requirements=config.requirements if config.requirements is not None else list(use_case.requirements),
                   examples=examples, item_schema=schema, keys=keys, inputs=inputs,
                   template=use_case.generate_template, technique=technique, sampler=sampler)
        plan._check_template()
        return plan

    def _check_template(self) -> None:
        name = f"{self.use_case.name}/generate.jinja"
        missing = sorted(variables(self.template, name) - PROVIDED - set(self.inputs) - self._attribute_names())
        if missing:
            raise ConfigError(f"{name} uses {', '.join(missing)}, which neither sdstudio nor the job's "
                              "inputs (nor attributes) provide; add them under `inputs:` or `attributes:`")
        self.prompt(self.topics[0], min(self.config.batch_size, self.config.num_per_topic),
                    attributes=self.draw(self.topics[0], 0, 0))

    @cached_property
    def _template_shows_attributes(self) -> bool:
        return bool(variables(self.template, self.use_case.name) & self._attribute_names())

    def _attribute_names(self) -> set[str]:
        return {*self.sampler.names, "attributes"} if self.sampler else set()

    # -- prompts -----------------------------------------------------------------------------------
    def draw(self, topic: str, round_no: int, part: int) -> dict[str, str] | None:
        """The attributes of one request (None without attributes): fixed by the seed and the request's place,
        so a resumed run rebuilds the same prompt."""
        return self.sampler.draw(f"{topic}|{round_no}|{part}") if self.sampler else None

    def prompt(self, topic: str, count: int, avoid: list[str] | tuple[str, ...] = (),
               attributes: dict[str, str] | None = None) -> str:
        context = {**self.inputs, "examples": self.examples, "instruction": self.instruction,
                   "requirements": self.requirements, "topic": topic, "count": count, "keys": self.keys,
                   "avoid": list(avoid)}
        if attributes:
            context.update(attributes)
            context["attributes"] = dict(attributes)
        text = render(self.template, context, f"{self.use_case.name}/generate.jinja").strip("\n")
        if attributes and not self._template_shows_attributes:
            # a template that never mentions them (most shipped ones) still gets them: said after the prompt
            text += "\n\nWrite for these attributes:\n" + "\n".join(f"- {k}: {v}" for k, v in attributes.items())
        return text

    def reply_schema(self, count: int) -> dict[str, Any]:
        """One item alone, or ``{"items": [count items]}`` when a call asks for several."""
        if count == 1:
            return self.item_schema
        return {"type": "object", "additionalProperties": False, "required": [LIST_KEY],
                "properties": {LIST_KEY: {"type": "array", "items": self.item_schema,
                                          "minItems": count, "maxItems": count}}}

    def request(self, topic: str, count: int, avoid: list[str] | tuple[str, ...] = (),
                attributes: dict[str, str] | None = None) -> ChatRequest:
        return ChatRequest.of(self.prompt(topic, count, avoid, attributes), self.config.model.parameters,
                              self.reply_schema(count))

    @cached_property
    def recipe(self) -> str:
        """A digest of everything every request of this job is made of besides its call's own variables (topic,
        count, avoid list, attributes): the two together fix the request, so its key is known without rendering
        its prompt (``work.recipe_key``). Editing the use case's template or examples changes it, as it changes
        the prompts."""
        payload = {"template": self.template, "inputs": self.inputs, "examples": self.examples,
                   "instruction": self.instruction, "requirements": self.requirements, "keys": self.keys,
                   "schema": self.item_schema, "list_key": LIST_KEY,
                   "parameters": self.config.model.parameters.model_dump(mode="json"),
                   "attributes_shown": self._template_shows_attributes if self.sampler else None}
        text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()

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
