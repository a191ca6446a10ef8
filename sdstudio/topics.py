"""Topic suggestions: the model proposes a taxonomy (categories, then topics in each) for a use case, from
its description and examples (or rows of the user's own file); near-duplicates are removed with dedup.py.

Why a taxonomy and not a flat list: asked for 30 topics at once, a model circles around the two or three most
obvious areas; asked first for categories that cover the domain, then for topics within each, it spreads out
(synthetic-data-kit issues #9/#15/#16, Data Designer's seed taxonomies). The result is a suggestion for a
person to edit (the notebook fills the Topics box; the CLI prints a topics file) before anything is generated.

One request per round: round 0 asks for the whole taxonomy with a margin for duplicates; while fewer than
``count`` distinct topics are kept, a later round (at most ``MAX_ROUNDS``) asks for the shortfall, shown what
it already has. ``ask_json`` is the one-call helper ``suggest_prompt`` shares.
"""
from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ModelSpec
from .errors import ConfigError, SdstudioError
from .providers.base import ChatRequest

MAX_ROUNDS = 3
MAX_TOPICS = 500
EXAMPLE_ROWS = 20  # rows of --from-examples shown to the model
TOPIC_THRESHOLD = 0.7  # topics are short: two that share 70% of their character 5-grams say the same thing

TAXONOMY_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["categories"],
    "properties": {"categories": {"type": "array", "minItems": 1, "items": {
        "type": "object", "additionalProperties": False, "required": ["category", "topics"],
        "properties": {"category": {"type": "string", "minLength": 1},
                       "topics": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}}}}}}}


@dataclass
class Taxonomy:
    """Categories and their topics, in the model's order; ``removed`` lists (topic, the kept one it repeats)."""

    categories: dict[str, list[str]] = field(default_factory=dict)
    removed: list[tuple[str, str]] = field(default_factory=list)
    requests: int = 0
    tokens_in: int = 0
    tokens_out: int = 0

    @property
    def topics(self) -> list[str]:
        return [topic for topics in self.categories.values() for topic in topics]

    def as_text(self) -> str:
        """A topics file: ``# category`` lines (comments to ``--topics-file`` and the Topics box) then its topics."""
        return "\n".join(f"# {name}\n" + "\n".join(topics) for name, topics in self.categories.items() if topics)

    def to_json(self) -> dict[str, Any]:
        return {"categories": [{"category": k, "topics": v} for k, v in self.categories.items()],
                "topics": self.topics, "removed": [{"topic": t, "duplicate_of": d} for t, d in self.removed],
                "requests": self.requests, "tokens_in": self.tokens_in, "tokens_out": self.tokens_out}


def category_count(count: int) -> int:
    """About the square root of the topics, 2 to 10: enough breadth, and several topics in each."""
    return max(2, min(10, round(math.sqrt(count))))


def example_rows(path: str | Path, home: str | Path | None = None, limit: int = EXAMPLE_ROWS) -> list[dict[str, Any]]:
    """The first rows of a CSV / JSONL / JSON / Excel / Parquet file as plain dicts (datasets.py reads it)."""
    from .datasets import plain, read_dataset, resolve_input

    frame = read_dataset(resolve_input(path, home), limit=limit)
    return [{str(k): plain(v) for k, v in row.items() if plain(v) not in (None, "")}
            for row in frame.to_dict(orient="records")]


def taxonomy_prompt(use_case: Any, count: int, examples: list[dict[str, Any]], have: list[str] = (),
                    categories: int | None = None) -> str:
    """What the model is asked: the use case, examples of its items, the shipped topics as examples of the
    grain, and (in later rounds) the topics it already has."""
    lines = [f"We are building a synthetic training dataset. Use case: {use_case.name}.",
             f"What it holds: {use_case.description or use_case.instruction}".strip()]
    if use_case.instruction:
        lines.append(f"Each item is written from this instruction and one topic: {use_case.instruction}")
    if examples:
        lines.append("\nExamples of items:")
        lines.extend(json.dumps(row, ensure_ascii=False)[:600] for row in examples[:EXAMPLE_ROWS])
    if use_case.topics:
        lines.append("\nTopics of this size work well (do not repeat them): " + "; ".join(use_case.topics[:10]))
    if have:
        lines.append("\nAlready chosen (do not repeat or rephrase them):\n" + "\n".join(f"- {t}" for t in have))
    lines.append(f"\nPropose {count} new, distinct topics that together cover the domain well. First choose "
                 f"{categories or category_count(count)} categories that split the domain, then list topics under "
                 "each category. Each topic is a short phrase (3 to 10 words), specific enough that items "
                 "written about it differ from items of the other topics.")
    lines.append('Reply with JSON only: {"categories": [{"category": "...", "topics": ["...", "..."]}, ...]}')
    return "\n".join(lines)


def suggest_topics(use_case: str, count: int, model: ModelSpec, *, home: str | Path | None = None,
                   examples_file: str | Path | None = None, categories: int | None = None,
                   threshold: float = TOPIC_THRESHOLD, provider: Any = None) -> Taxonomy:
    """``count`` distinct topics in categories, asked of ``model`` (at most MAX_ROUNDS requests)."""
    from .dedup import find_duplicates
    from .usecases import load_use_case

    if not 1 <= count <= MAX_TOPICS:
        raise ConfigError(f"--count {count}: ask for 1 to {MAX_TOPICS} topics")
    case = load_use_case(use_case, home)
    examples = example_rows(examples_file, home) if examples_file else list(case.examples)
    taxonomy = Taxonomy()
    seen = [*case.topics]  # the shipped topics count as taken: a suggestion repeating one adds nothing
    for _ in range(MAX_ROUNDS):
        shortfall = count - len(taxonomy.topics)
        if shortfall <= 0:
            break
        ask = shortfall + max(2, shortfall // 4)  # a margin for what dedup will drop
        prompt = taxonomy_prompt(case, ask, examples, taxonomy.topics, categories)
        reply, completion = ask_json(model, prompt, TAXONOMY_SCHEMA, provider=provider)
        taxonomy.requests += 1
        taxonomy.tokens_in += completion.usage.input_tokens
        taxonomy.tokens_out += completion.usage.output_tokens
        proposed = [(str(c["category"]).strip(), " ".join(str(t).split())) for c in reply["categories"]
                    for t in c["topics"] if str(t).strip()]
        texts = seen + [topic for _, topic in proposed]
        repeats = {d.index - len(seen): texts[d.of] for d in find_duplicates(texts, threshold)
                   if d.index >= len(seen)}
        for index, (category, topic) in enumerate(proposed):
            if index in repeats:
                taxonomy.removed.append((topic, repeats[index]))
            else:
                taxonomy.categories.setdefault(category, []).append(topic)
        seen = [*case.topics, *taxonomy.topics]
    _trim(taxonomy, count)
    if not taxonomy.topics:
        raise SdstudioError("the model proposed no topic that is not a repeat; try another model or --count")
    return taxonomy


def _trim(taxonomy: Taxonomy, count: int) -> None:
    """Keep ``count`` topics, taken in turn from each category so none is crowded out."""
    queues = {name: list(topics) for name, topics in taxonomy.categories.items()}
    kept: dict[str, list[str]] = {name: [] for name in queues}
    while sum(map(len, kept.values())) < count and any(queues.values()):
        for name, queue in queues.items():
            if queue and sum(map(len, kept.values())) < count:
                kept[name].append(queue.pop(0))
    taxonomy.categories = {name: topics for name, topics in kept.items() if topics}


# -- one request, outside a job --------------------------------------------------------------------

def ask_json(model: ModelSpec, prompt: str, schema: dict[str, Any], *, provider: Any = None,
             attempts: int = 3) -> tuple[Any, Any]:
    """(the reply's JSON object, the Completion) for one prompt: a rate limit or a passing error is tried
    again, a reply that is not the object asked for is asked again, up to ``attempts`` times. Suggestions
    are not jobs: nothing is stored, and a failure is one line."""
    from .parsing import parse_items
    from .providers import ProviderError, get_provider, run_sync

    request = ChatRequest.of(prompt, model.parameters, schema)

    async def call() -> tuple[Any, Any]:
        client = provider or get_provider(model)
        problem = ""
        try:
            for attempt in range(attempts):
                try:
                    completion = await client.complete(request)
                except ProviderError as exc:
                    if not exc.retryable or attempt == attempts - 1:
                        raise
                    await asyncio.sleep(min(exc.retry_after or 0.5 * 2 ** attempt, 10.0))
                    continue
                parsed = parse_items(completion.text, schema, list_key="__reply__")
                if parsed.valid:
                    return parsed.valid[0], completion
                problem = parsed.error or (parsed.items[0].error if parsed.items else "no JSON object")
        finally:
            if provider is None:
                await client.aclose()
        raise SdstudioError(f"the model's reply is not the JSON asked for after {attempts} tries ({problem}); "
                            "try another model or a higher --max-tokens")

    return run_sync(call())
