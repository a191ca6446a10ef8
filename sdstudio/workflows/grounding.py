"""The documents grounding check: is a generated answer supported by the chunk it was written from?

The check is part of its item, not a row of its own. The generation reply leaves each item as a ``failed``
row marked ``grounding.pending`` ("not checked yet"), so nothing unchecked is ever ``ok``, exported or
counted as done, even when the run is killed between the two calls. The check's outcome is a stamp onto
that same row (applied by the run's writer, so the handlers stay pure):

* a supported verdict -> ``ok``, the verdict in ``provenance.grounding``;
* an unsupported one -> ``filtered`` with the reason (the next round asks that chunk again);
* a check that failed (provider error, a reply that is not the verdict JSON) -> the row stays ``failed``
  with the check's error and its generation kept: a later run checks it again without paying for the
  generation twice.

Tokens and cost of every check, failed ones included, are added to the item's row, so a job's figures
are the sum of its rows.

The verdict is read strictly: the judge is asked for a JSON object (sent as structured output where the
provider supports it) with a boolean ``supported``, a ``reason`` and an ``evidence`` quote, and a reply
that is anything else is an unusable reply, never prose read for a "true". The model's word is not taken
for the evidence either: the quote must occur in the chunk (compared case- and whitespace-insensitively,
in code), or the item is not supported.
"""
from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ModelParameters
from ..engine import InvalidOutput, WorkItem, request_key
from ..errors import ConfigError
from ..providers import ChatRequest, Completion
from ..store import Record
from ..templates import render, variables
from ..usecases import SHIPPED_TEMPLATES

KIND = "generation"
GROUND_VARIABLES = {"chunk", "source", "question", "answer"}
GROUND_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["supported", "reason", "evidence"],
                 "properties": {"supported": {"type": "boolean"}, "reason": {"type": "string"},
                                "evidence": {"type": "string"}}}
GROUND_MAX_TOKENS = 300
NOT_CHECKED = "grounding check not done yet (the run stopped first); run the job again to check it"
MAX_QUOTE = 300
_FENCED = re.compile(r"```(?:json)?\s*\n(.*)\n\s*```", re.DOTALL | re.IGNORECASE)


def normalised(text: str) -> str:
    """Text as the evidence check compares it: Unicode-normalised, case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def evidence_in(evidence: str, chunk: str) -> bool:
    """Does the quote occur in the chunk (ignoring case and whitespace)? An empty quote never does."""
    quote = normalised(evidence)
    return bool(quote) and quote in normalised(chunk)


def strict_verdict(completion: Completion) -> dict[str, Any]:
    """The verdict object, or InvalidOutput: the whole reply must be one JSON object (alone, or alone in one
    ```json fence) that validates against GROUND_SCHEMA. No repair, no scanning prose for a value."""
    from ..validation import validate_item

    value = completion.parsed
    if value is None:
        text = completion.text.strip()
        fenced = _FENCED.fullmatch(text)
        try:
            value = json.loads(fenced.group(1) if fenced else text)
        except ValueError:
            raise InvalidOutput('grounding check: the judge did not reply with the verdict JSON alone '
                                '({"supported": true|false, "reason": ..., "evidence": ...})') from None
    problem = validate_item(value, GROUND_SCHEMA)
    if problem is not None:
        raise InvalidOutput(f"grounding check: the judge's verdict does not match its schema: {problem}")
    return value


def _quote(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_QUOTE else text[:MAX_QUOTE - 3] + "..."


@dataclass(frozen=True)
class GroundingCheck:
    """Everything one job's checks need; ``item``, ``handle`` and ``failed`` are pure (JSON in, records out)."""

    provider_name: str
    judge_model_id: str
    parameters: ModelParameters
    template: str
    prompt_field: str
    completion_field: str

    @classmethod
    def build(cls, provider_name: str, judge_model_id: str, parameters: ModelParameters, use_case: Any,
              sample_chunk: str = "", sample_source: str = "") -> GroundingCheck:
        """The check for a use case: its own ground.jinja, else document_qa's. The template is rendered once
        here, with the first chunk and the use case's first example, so a template that cannot render (an
        unknown variable, a sandbox refusal) is one line before any generation is paid for."""
        own = Path(use_case.folder) / "ground.jinja"
        template = (own if own.is_file() else SHIPPED_TEMPLATES / "document_qa" / "ground.jinja").read_text(
            encoding="utf-8")
        unknown = sorted(variables(template, "ground.jinja") - GROUND_VARIABLES)
        if unknown:
            raise ConfigError(f"ground.jinja uses {', '.join(unknown)}; it can use {', '.join(sorted(GROUND_VARIABLES))}")
        parameters = parameters.model_copy(update={"max_tokens": min(parameters.max_tokens, GROUND_MAX_TOKENS)})
        check = cls(provider_name, judge_model_id, parameters, template, use_case.prompt_field,
                    use_case.completion_field)
        example = use_case.examples[0] if use_case.examples else {}
        check.item({"item_key": "", "topic": None, "provenance": None, "output": example}, sample_chunk, sample_source)
        return check

    # -- the generation side -----------------------------------------------------------------------
    @staticmethod
    def pending(record: Record) -> Record:
        """A generated item that passed its schema, held back until its check: failed, marked pending."""
        if record.status == "ok":
            record.status, record.error = "failed", NOT_CHECKED
            record.provenance = {**(record.provenance or {}), "grounding": {"pending": True}}
        return record

    # -- the check ---------------------------------------------------------------------------------
    def item(self, row: dict[str, Any], chunk_text: str, source: str) -> WorkItem:
        """The check of one stored item: its key is salted with the item's, so each item is checked once."""
        output = row["output"] if row["output"] is not None else {}
        provenance = row["provenance"] or {}
        if isinstance(output, dict) and self.prompt_field in output and self.completion_field in output:
            question, answer = str(output[self.prompt_field]), str(output[self.completion_field])
        else:
            question, answer = "", json.dumps(output, ensure_ascii=False)
        chunk = provenance.get("text") or chunk_text
        context = {"chunk": chunk, "question": question, "answer": answer, "source": source}
        prompt = render(self.template, context, "ground.jinja").strip("\n")
        request = ChatRequest.of(prompt, self.parameters, GROUND_SCHEMA)
        key = request_key(self.provider_name, self.judge_model_id, request, salt=f"ground|{row['item_key']}")
        return WorkItem(key=key, request=request, topic=row["topic"], input={"grounding_of": row["item_key"]},
                        meta={"chunk": chunk})

    def handle(self, item: WorkItem, completion: Completion) -> list[Record]:
        """The verdict as a stamp on the checked item: ok only when the judge says supported AND its evidence
        quote is in the chunk; otherwise filtered with the reason."""
        value = strict_verdict(completion)
        reason, evidence = _quote(value["reason"]), value["evidence"]
        supported, error = value["supported"], None
        if not supported:
            error = f"not supported by its chunk: {reason}"
        elif not evidence.strip():
            supported, error = False, "not supported by its chunk: the judge quoted no evidence"
        elif not evidence_in(evidence, item.meta["chunk"]):
            supported, error = False, f"not supported by its chunk: the judge's evidence {_quote(evidence)!r} is not in it"
        verdict = {"supported": supported, "reason": reason, "evidence": _quote(evidence), "judge": self.judge_model_id}
        return [self._stamp(item, "ok" if supported else "filtered", error, verdict, completion)]

    def failed(self, item: WorkItem, reason: str, raw: str | None) -> list[Record]:
        """A check that failed leaves its item failed (still pending, so a later run checks it again)."""
        verdict: dict[str, Any] = {"pending": True, "error": reason, "judge": self.judge_model_id}
        if raw:
            verdict["reply"] = _quote(raw)
        return [self._stamp(item, "failed", f"grounding check failed: {reason}; run the job again to check it",
                            verdict, None)]

    @staticmethod
    def _stamp(item: WorkItem, status: str, error: str | None, verdict: dict[str, Any],
               completion: Completion | None) -> Record:
        usage = completion.usage if completion is not None else None
        return Record(job_kind=KIND, job_id=0, item_key=item.input["grounding_of"], status=status, error=error,
                      provenance={"grounding": verdict}, stamp=True,
                      tokens_in=usage.input_tokens if usage else 0, tokens_out=usage.output_tokens if usage else 0)
