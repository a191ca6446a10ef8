"""09_evolve: Evol-Instruct over one of your generation jobs: pick the job, the rounds and the methods, see the first
rewriting request and the estimate, run; the evolved instructions with their answers and lineage (round, methods,
what each was rewritten from, its ancestor), and in the Filtered tab the eliminated rewrites with their reasons
(copy, refusal, template leak, unanswerable). Wiring only: the work is ``sdstudio.workflows.evolve``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import ipywidgets as w

from ..configs.evolve import METHODS, EvolveJob
from ..config import ModelParameters
from ..errors import SdstudioError
from ..providers import DEFAULT_PROVIDER
from ..store import Store
from .components import FULL, ModelPicker, PagedTable, RunControls, cost_text, escape, message, preview_html
from .job import top_level_jobs
from .nav import nav_bar, preselect
from .outcomes import OutcomeTabs
from .run_settings import RunSettingsBox
from .workflow import LABEL, blank_cells, wide

SHOWN = ["round", "methods", "prompt", "completion", "evolved_from", "ancestor"]
NOTEBOOK = "09_evolve.ipynb"


class EvolveApp(w.VBox):
    def __init__(self, home: str | Path | None = None, provider: str = DEFAULT_PROVIDER, model: str | None = None,
                 base_url: str | None = None):
        self.home = home
        self.store = Store.open(home)
        self.source = w.Dropdown(description="Instructions from", **wide())
        self.rounds = w.BoundedIntText(value=1, min=1, max=10, description="Rounds", **LABEL)
        self.limit = w.IntText(value=0, description="Max instructions", tooltip="0: all", **LABEL)
        self.methods = w.SelectMultiple(options=list(METHODS), value=list(METHODS), rows=len(METHODS),
                                        description="Methods", **LABEL)
        self.model = ModelPicker(provider, model, base_url, parameters=ModelParameters(max_tokens=512))
        self.estimate = w.HTML(layout=FULL)
        self.preview = w.HTML(layout=FULL)
        self.run_settings = RunSettingsBox(model=self.model, on_change=self.refresh_preview)
        self.controls = RunControls()
        self.table = PagedTable(self._fetch, page_size=10)
        self.outcomes = OutcomeTabs(self.store, self.table, lambda: self.job_id)
        self.job_id: int | None = None
        for control in (self.source, self.rounds, self.limit, self.methods):
            control.observe(lambda _: self.refresh_preview(), "value")
        for control in (self.source, self.rounds, self.limit, self.methods, self.model.provider, self.model.model):
            control.observe(lambda _: self.clear_results(), "value")
        self.controls.run_button.on_click(lambda _: self.run())
        super().__init__([
            nav_bar(NOTEBOOK), self.source, w.HBox([self.rounds, self.limit]), self.methods,
            w.HTML("<p>deepen, concretize, constraints and reasoning make an instruction harder by one step; breadth "
                   "writes a new, rarer one of the same domain. One method per instruction and round.</p>"),
            self.model, self.estimate, self.run_settings, self.controls, self.outcomes,
            w.HTML("<h3>First request</h3>"), self.preview])
        self.load_sources()

    def load_sources(self) -> None:
        """Your generation jobs with ok rows (``?job=ID`` preselects one); never an alignment's stage jobs."""
        frame = top_level_jobs(self.store.jobs("generation"))
        options = [(f"job #{r.id} · {r.use_case or r.technique} · {int(r.ok):,} ok", int(r.id))
                   for r in frame.itertuples() if r.ok and r.technique not in ("evolutions", "candidates")]
        self.source.options = options
        self.source.value = preselect(options, options[0][1] if options else None)
        self.refresh_preview()

    def config(self) -> EvolveJob:
        """The form as an EvolveJob, built as ``sdstudio evolve`` builds one (``parse_job``)."""
        from ..config import parse_job
        from ..errors import ConfigError

        if self.source.value is None:
            raise ConfigError("no generation job with ok rows yet: generate some instructions first")
        data = {"source_job": self.source.value, "rounds": self.rounds.value, "limit": self.limit.value or None,
                "methods": list(self.methods.value), "model": self.model.spec().model_dump()}
        return self.run_settings.apply(parse_job(EvolveJob, data, "evolve form", self.home))

    def refresh_preview(self) -> None:
        from ..workflows.evolve import preview

        try:
            shown = preview(self.config(), home=self.home)
        except (SdstudioError, ValueError) as exc:
            self.preview.value = self.estimate.value = message("error", str(exc))
            return
        summary = (f"{shown.seeds} instructions × {shown.rounds} round(s) · up to {shown.requests} requests "
                   f"(rewrites and answers) · ~{shown.est_tokens_in:,} tokens in · {cost_text(shown)}")
        self.estimate.value = escape(summary)
        self.preview.value = preview_html(summary, shown.prompt)

    def run(self):
        from ..workflows.evolve import EvolveRun

        return self.controls.run_job(lambda: EvolveRun(self.config(), home=self.home), self.show)

    def show(self, result: Any) -> None:
        self.job_id = result.job_id
        self.table.show(0)
        self.outcomes.show(kept=result.ok)

    def clear_results(self) -> None:
        if self.job_id is None:
            return
        self.job_id = None
        self.table.show(0)
        self.outcomes.clear()

    @property
    def results(self):
        """The current job's evolved instructions, their answers and lineage, as a pandas DataFrame."""
        import pandas as pd

        from ..workflows.evolve import rows

        return rows(self.job_id, store=self.store) if self.job_id is not None else pd.DataFrame()

    def _fetch(self, offset: int, limit: int):
        if self.job_id is None:
            return None, 0
        frame = self.results
        return blank_cells(frame[SHOWN].iloc[offset:offset + limit]), len(frame)

    def autorun(self, timeout: float = 600) -> Any:
        """Headless: one round over 2 instructions (written first when there is no job yet), as nbval runs it."""
        if self.source.value is None:
            from ..config import GenerationJob
            from ..workflows.sft import GenerationRun

            GenerationRun(GenerationJob(topics=["Stacks", "Queues"], num_per_topic=1, batch_size=1,
                                        model=self.model.spec()), home=self.home).run()
            self.load_sources()
        self.rounds.value, self.limit.value = 1, 2
        self.run()
        self.controls.wait(timeout)
        return self.table.frame
