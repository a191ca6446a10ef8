"""10_conversations: multi-turn chats per topic. Pick the assistant's model (and, folded, another one to play the
user), type topics, turns, conversations per topic and the assistant's system prompt, see the first prompts and
the cost, run with progress and cancel, and read the conversations (failed ones with the turns they have).
Wiring only: the workflow is ``sdstudio.workflows.conversations``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import ipywidgets as w

from ..configs.conversations import DEFAULT_USER_PROMPT, ConversationJob
from ..config import ModelParameters
from ..errors import SdstudioError
from ..providers import DEFAULT_PROVIDER
from ..store import Store
from .components import FULL, ModelPicker, PagedTable, RunControls, escape, message, preview_html, text_lines
from .generate import ShownJob, collapsible
from .nav import nav_bar
from .outcomes import OutcomeTabs
from .run_settings import RunSettingsBox

NOTEBOOK = "10_conversations.ipynb"
LABELS = {"description_width": "10em"}


def conversation_rows(records: list[dict[str, Any]]):
    """Conversations as a table a person reads: topic, messages, the transcript (one labelled line per turn)."""
    import pandas as pd

    from ..workflows.fields import transcript

    rows = []
    for rec in records:
        messages = (rec["output"] or {}).get("messages") or []
        chat = [m for m in messages if m.get("role") != "system"]
        rows.append({"topic": rec["topic"] or "", "messages": len(chat), "conversation": transcript(chat),
                     "row id": rec["id"]})
    return pd.DataFrame(rows, columns=["topic", "messages", "conversation", "row id"])


class ConversationsApp(ShownJob, w.VBox):
    """The conversations page: the form, Run, the folded first prompts, then the conversations kept and failed.
    ``results`` hands the shown job's conversations to the next cell."""

    def __init__(self, home: str | Path | None = None, provider: str = DEFAULT_PROVIDER, model: str | None = None,
                 base_url: str | None = None):
        self.home = home
        self.store = Store.open(home)
        self.model = ModelPicker(provider, model, base_url, parameters=ModelParameters(max_tokens=512))
        self.topics = w.Textarea(value="Brewing green tea\nPlanning a week of vegetarian dinners",
                                 description="Topics", layout=w.Layout(width="100%", height="6em"), style=LABELS)
        self.turns = w.BoundedIntText(value=3, min=1, max=50, description="Turns", style=LABELS,
                                      tooltip="user messages per conversation, each answered by the assistant")
        self.per_topic = w.BoundedIntText(value=1, min=1, max=10_000, description="Per topic", style=LABELS)
        self.system_prompt = w.Textarea(description="System prompt", placeholder="the assistant's (optional)",
                                        layout=w.Layout(width="100%", height="4em"), style=LABELS)
        self.user_prompt = w.Textarea(value=DEFAULT_USER_PROMPT, description="User simulator",
                                      layout=w.Layout(width="100%", height="6em"), style=LABELS)
        self.user_model = w.Text(description="User model", placeholder="the assistant's model", style=LABELS,
                                 tooltip="another model id on the same provider plays the user")
        self.preview = w.HTML(layout=FULL)
        self.estimate = w.HTML()
        self.run_settings = RunSettingsBox(model=self.model, on_change=self.refresh_preview)
        self.controls = RunControls()
        self.preview_box = collapsible("First prompts", self.preview)
        self.results_table = PagedTable(self._fetch, page_size=10)
        self.outcomes = OutcomeTabs(self.store, self.results_table, lambda: self.job_id)
        self.job_id: int | None = None
        self._shown: dict[str, Any] | None = None
        self._starting: dict[str, Any] | None = None
        for control in (self.topics, self.turns, self.per_topic, self.system_prompt, self.user_prompt,
                        self.user_model):
            control.observe(lambda _: self.refresh_preview(), "value")
        for name in ("provider", *ModelPicker.SPEC_FIELDS, "temperature", "max_tokens"):
            getattr(self.model, name).observe(lambda _: self.refresh_preview(), "value")
        self.controls.run_button.on_click(lambda _: self.run())
        super().__init__([nav_bar(NOTEBOOK),
            w.HTML("<h3>Assistant model</h3>"), self.model,
            w.HTML("<h3>Conversations</h3>"), self.topics, w.HBox([self.turns, self.per_topic]),
            self.system_prompt, self.user_prompt, self.user_model,
            self.estimate, self.run_settings, self.controls, self.preview_box,
            w.HTML("<h3>Outcome</h3>"), self.outcomes])
        self.refresh_preview()

    def config(self) -> ConversationJob:
        """The form as a ConversationJob, built as the CLI builds one."""
        from ..config import parse_job

        data: dict[str, Any] = {"topics": text_lines(self.topics.value), "turns": self.turns.value,
                                "per_topic": self.per_topic.value, "system_prompt": self.system_prompt.value,
                                "model": self.model.spec().model_dump(), "run": self.run_settings.values()}
        if self.user_prompt.value.strip() != DEFAULT_USER_PROMPT:
            data["user_prompt"] = self.user_prompt.value
        if self.user_model.value.strip():
            data["user_model"] = {"model": self.user_model.value.strip()}
        return parse_job(ConversationJob, data, "conversations form", self.home)

    def refresh_preview(self) -> None:
        from ..workflows.conversations import preview

        try:
            config = self.config()
            self.run_settings.applied = config
            shown = preview(config, home=self.home)
        except (SdstudioError, ValueError) as exc:
            self.estimate.value = message("error", str(exc))
            self.preview.value = ""
            self.check_shown(None)
            return
        self.check_shown(config)
        self.estimate.value = escape(
            f"{shown.conversations} conversations x {shown.messages} messages = {shown.requests} requests · "
            f"~{shown.est_tokens_in:,} tokens in, ~{shown.est_tokens_out:,} out · "
            f"{self.run_settings.cost_text(shown)}")
        self.preview.value = preview_html("", shown.prompt)

    def run(self):
        from ..workflows.conversations import ConversationRun

        def build() -> ConversationRun:
            config = self.config()
            self._starting = config.model_dump(mode="json")
            return ConversationRun(config, home=self.home)

        return self.controls.run_job(build, self.show)

    def show(self, result: Any) -> None:
        self._shown = self._starting
        self.show_job(result, self.preview_box)

    @property
    def results(self):
        """The shown job's ok conversations as a DataFrame (topic, messages, conversation, row id)."""
        return conversation_rows(self.ok_records())

    def _fetch(self, offset: int, limit: int):
        return self.ok_page(offset, limit, conversation_rows)

    def autorun(self, topics: list[str], turns: int = 1, timeout: float = 600) -> Any:
        """Headless run on small settings (what nbval executes with SDSTUDIO_AUTORUN=1)."""
        self.topics.value = "\n".join(topics)
        self.turns.value = turns
        self.per_topic.value = 1
        self.model.max_tokens.value = min(self.model.max_tokens.value, 128)
        self.run()
        result = self.controls.wait(timeout)
        return self.results_table.frame if result is not None else None
