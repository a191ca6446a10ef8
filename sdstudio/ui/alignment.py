"""04_alignment: prompts (a generation job, or topics written first) -> K candidates -> judge -> DPO pairs or
KTO rows; pairs side by side with their scores, the KTO balance chart, and the rows the run dropped with their
reasons (its stage jobs' failed judgements included). Prompts from a file column are the CLI's
(``sdstudio align --input FILE --prompt-col NAME``). Wiring only: the work is ``sdstudio.workflows.alignment``."""
from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import ipywidgets as w

from ..config import AlignmentJob, ModelParameters
from ..errors import SdstudioError
from ..providers import DEFAULT_PROVIDER
from ..store import Store
from .nav import nav_bar
from .components import (FULL, escape, message, ModelPicker, PagedTable, preview_html, RunControls, text_lines)
from .run_settings import RunSettingsBox
from .job import top_level_jobs
from .nav import preselect
from .outcomes import OutcomeTabs
from .workflow import LABEL, blank_cells, wide

TOPICS = "topics"  # the source value meaning: the model writes prompts from the topics below first
DPO_COLUMNS = ["prompt", "chosen", "chosen_score", "rejected", "rejected_score", "margin"]
KTO_COLUMNS = ["prompt", "completion", "label", "score", "justification"]


class AlignmentApp(w.VBox):
    def __init__(self, home: str | Path | None = None, provider: str = DEFAULT_PROVIDER, model: str | None = None,
                 base_url: str | None = None):
        self.home = home
        self.store = Store.open(home)
        self.method = w.ToggleButtons(options=[("DPO pairs", "dpo"), ("KTO rows", "kto")], value="dpo")
        self.source = w.Dropdown(description="Prompts from", **wide())
        self.topics = w.Textarea(value="Explaining recursion to a beginner\nWriting a polite refund email",
                                 description="Topics", layout=w.Layout(width="100%", height="5em"))
        self.prompts_per_topic = w.BoundedIntText(value=2, min=1, max=10_000, description="Per topic", **LABEL)
        self.limit = w.IntText(value=0, description="Max prompts", tooltip="0: all", **LABEL)
        self.candidates = w.BoundedIntText(value=4, min=2, max=64, description="K per prompt", **LABEL)
        self.min_margin = w.FloatText(value=1.0, description="Min margin", **LABEL)
        self.model = ModelPicker(provider, model, base_url, parameters=ModelParameters(max_tokens=512))
        self.judge_model = w.Text(value=model or "", placeholder="same as the candidates' model",
                                  description="Judge model", **LABEL)
        self.estimate = w.HTML(layout=FULL)  # prompts, requests, tokens, cost (or what is wrong), next to Run
        self.preview = w.HTML(layout=FULL)
        self.run_settings = RunSettingsBox(model=self.model, on_change=self.refresh_preview)
        self.controls = RunControls()
        self.table = PagedTable(self._fetch, page_size=10)
        self.balance_chart = w.HTML()
        self.outcomes = OutcomeTabs(self.store, w.VBox([self.table, self.balance_chart]), lambda: self.job_id)
        self.topic_fields = w.VBox([self.topics, w.HBox([self.prompts_per_topic])])
        self.job_id: int | None = None
        for control in (self.method, self.source, self.topics, self.prompts_per_topic, self.limit, self.candidates,
                        self.min_margin, self.judge_model):
            control.observe(lambda _: self.refresh_preview(), "value")
        for control in (self.method, self.source, self.topics, self.prompts_per_topic, self.limit, self.candidates,
                        self.min_margin, self.judge_model, self.model.provider, self.model.model):
            control.observe(lambda _: self.clear_results(), "value")
        self.source.observe(lambda _: self._show_topic_fields(), "value")
        self.controls.run_button.on_click(lambda _: self.run())
        super().__init__([nav_bar("04_alignment.ipynb"),
            self.method, w.HTML("<h3>Prompts</h3>"), self.source, self.topic_fields, self.limit,
            w.HTML("<h3>Candidates and judge</h3>"), w.HBox([self.candidates, self.min_margin, self.judge_model]),
            self.model, self.estimate, self.run_settings, self.controls, self.outcomes,
            w.HTML("<h3>First request</h3>"), self.preview])
        self.load_sources()

    def load_sources(self) -> None:
        """Topics (the default), or a user's generation job with ok rows: never one of an alignment's own
        stage jobs (its prompts, its candidates), which are not the user's data. ``?job=ID`` preselects one."""
        frame = top_level_jobs(self.store.jobs("generation"))
        options = [("topics below (the model writes the prompts first)", TOPICS)] + [
            (self._job_label(r), int(r.id)) for r in frame.itertuples()
            if r.ok and r.technique in ("sft", "documents", "workflow")]
        self.source.options = options
        self.source.value = preselect(options, TOPICS)
        self._show_topic_fields()
        self.refresh_preview()

    @staticmethod
    def _job_label(job: Any) -> str:
        """``job #12 · code_generation · 15 ok · model``: no empty part, never the word None."""
        parts = [f"job #{job.id}", job.use_case or job.technique, f"{int(job.ok):,} ok", job.model_id]
        return " · ".join(part for part in parts if isinstance(part, str) and part)

    def _show_topic_fields(self) -> None:
        """Topics and prompts per topic only matter when the prompts are written from topics."""
        self.topic_fields.layout.display = None if self.source.value == TOPICS else "none"

    def config(self) -> AlignmentJob:
        """The form as an AlignmentJob, built as ``sdstudio align`` builds one (``parse_job``). The judge
        model is another model on the same endpoint, as ``--judge-model``: its own default parameters at
        temperature 0, not the candidates' sampling; the candidates' own model is no judge of its own."""
        from ..config import parse_job

        spec = self.model.spec()
        data: dict[str, Any] = {"method": self.method.value, "candidates": self.candidates.value,
                                "min_margin": self.min_margin.value, "limit": self.limit.value or None,
                                "model": spec.model_dump()}
        judge = self.judge_model.value.strip()
        if judge and judge != spec.model:
            data["judge"] = {**spec.model_dump(exclude={"parameters"}), "model": judge}
        if self.source.value not in (TOPICS, None):
            data["source_job"] = self.source.value
        else:
            data.update(topics=text_lines(self.topics.value), prompts_per_topic=self.prompts_per_topic.value)
        return self.run_settings.apply(parse_job(AlignmentJob, data, "alignment form", self.home))

    def refresh_preview(self) -> None:
        from ..workflows.candidates import preview

        try:
            shown = preview(self.config(), home=self.home)
        except (SdstudioError, ValueError) as exc:
            self.preview.value = self.estimate.value = message("error", str(exc))
            return
        summary = (f"{shown.prompts} prompts × {shown.candidates} candidates · {shown.requests} requests in all · "
                   f"~{shown.est_tokens_in:,} tokens in · {self.run_settings.cost_text(shown)} · "
                   f"first stage: {shown.first_stage}")
        self.estimate.value = escape(summary)
        self.preview.value = preview_html(summary, shown.prompt)

    def run(self):
        from ..workflows.alignment import AlignmentRun

        return self.controls.run_job(lambda: AlignmentRun(self.config(), home=self.home), self.show)

    def show(self, result: Any) -> None:
        self.job_id = result.job_id
        self.table.show(0)
        self.balance_chart.value = self._balance_html(result.balance) if result.balance else ""
        self.outcomes.show(kept=result.ok)  # the bar's colour is the run's outcome already (outcome_kind)

    def clear_results(self) -> None:
        """A changed form (method, prompts, candidates, judge, model): the last run's pairs and dropped rows
        no longer describe it, so they leave the page (and ``results``)."""
        if self.job_id is None:
            return
        self.job_id = None
        self.table.show(0)
        self.balance_chart.value = ""
        self.outcomes.clear()

    @property
    def results(self):
        """The current job's ok rows as a pandas DataFrame: topic, prompt, then the DPO pair (chosen and
        rejected with their scores) or the KTO row (completion, label, score), then record_id."""
        import pandas as pd
        from ..workflows.alignment import rows

        if self.job_id is None:
            return pd.DataFrame()
        frame = rows(self.job_id, store=self.store)
        first = [c for c in ("topic", "prompt") if c in frame.columns]
        return frame[first + [c for c in frame.columns if c not in first]]

    def _fetch(self, offset: int, limit: int):
        from ..workflows.alignment import rows

        if self.job_id is None:
            return None, 0
        frame = rows(self.job_id, store=self.store)
        wanted = [c for c in (DPO_COLUMNS if "chosen" in frame.columns else KTO_COLUMNS) if c in frame.columns]
        return blank_cells(frame[wanted].iloc[offset:offset + limit]), len(frame)

    @staticmethod
    def _balance_html(report: dict[str, Any]) -> str:
        """The desirable:undesirable balance as a small bar chart (a PNG the page can show)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4, 2.4))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        labels = ["desirable", "undesirable", "middle band", "repeated", "not judged", "down-sampled"]
        values = [report.get(k, 0) or 0 for k in ("desirable", "undesirable", "middle_band", "repeated",
                                                   "not_judged", "downsampled")]
        ax.barh(labels, values, color=["#1a7f37", "#cf222e", "#8c959f", "#8c959f", "#8c959f", "#8c959f"])
        ax.invert_yaxis()
        ax.set_title(f"KTO balance (ratio {report.get('ratio')})", fontsize="small")
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        return (f'<img class="sds-balance" alt="KTO balance" '
                f'src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}"/>')

    def autorun(self, timeout: float = 600) -> Any:
        """Headless: 2 topic prompts x 2 candidates (what nbval executes with SDSTUDIO_AUTORUN=1)."""
        self.source.value = TOPICS
        self.topics.value = "Explaining recursion to a beginner"
        self.prompts_per_topic.value, self.candidates.value = 2, 2
        self.run()
        self.controls.wait(timeout)
        return self.table.frame
