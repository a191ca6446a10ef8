"""05_evaluate: judge a generation job (or an uploaded dataset) with your criteria, scale and examples;
see scores (and the judgements that failed, with their reasons), a histogram and per-topic statistics;
filter by a threshold; then review the rows on the review desk (07_review). With ``mode="review"`` (an old
reviewers' link) it shows only the way to the desk: a reviewer never reaches the judge controls. Wiring only:
the workflow is ``sdstudio.workflows.evaluate`` and ``sdstudio.reviews``."""
from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import ipywidgets as w

from ..config import EvaluationJob, ModelParameters
from ..errors import SdstudioError
from ..providers import DEFAULT_PROVIDER
from ..store import Store
from .components import (FULL, escape, frame_html, json_list, message, ModelPicker, PagedTable,
                         preview_html, RunControls, uploaded_files)
from .run_settings import RunSettingsBox
from .nav import REVIEW_NOTEBOOK, nav_bar, query_job
from .outcomes import OutcomeTabs
from .pickers import default_job, job_dropdown, job_options

LIVE_EVERY_S = 1.0  # how often a running judge's newest judgement and the scores so far are re-read


def desk_href(job_id: int | None) -> str:
    """The review desk (07_review), on ``job_id`` when there is one."""
    return REVIEW_NOTEBOOK + ("" if job_id is None else f"?job={int(job_id)}")


def desk_link_html(job_id: int | None, text: str = "Review these rows on the review desk") -> str:
    return (f'<a class="sds-desk-link" href="{escape(desk_href(job_id))}" target="_self" '
            f'style="color:#0969da;text-decoration:underline">{escape(text)} →</a>')


def review_mode_html(job_id: int | None) -> str:
    """What an old ``05_evaluate.ipynb?mode=review`` link shows: the way to the desk, nothing else."""
    return (f'<div class="sds-review-moved"><h3>Reviewing has its own page</h3><p>Reviewers accept, reject and edit '
            f'judged rows on the review desk, which has no judge controls.</p><p>'
            f'{desk_link_html(job_id, "Open the review desk")}</p></div>')


class EvaluateApp(w.VBox):
    def __init__(self, home: str | Path | None = None, provider: str = DEFAULT_PROVIDER, model: str | None = None,
                 base_url: str | None = None, mode: str = "judge"):
        self.home = home
        self.store = Store.open(home)
        self.mode = mode
        self.evaluation: int | None = None
        if mode == "review":  # no judge, model or run control is even built: the page cannot reach them
            self.desk = w.HTML(review_mode_html(query_job()))
            super().__init__([nav_bar(REVIEW_NOTEBOOK), self.desk])
            return
        self.source = job_dropdown("What to judge")
        self.upload = w.FileUpload(accept=".csv,.jsonl,.json,.parquet", multiple=False, description="Dataset")
        self.prompt_column = w.Text(placeholder="prompt column", description="Prompt col")
        self.completion_column = w.Text(placeholder="completion column", description="Completion col")
        self.criteria = w.Textarea(description="Criteria", layout=w.Layout(width="100%", height="7em"))
        self.scale_min = w.IntText(value=1, description="Scale from")
        self.scale_max = w.IntText(value=5, description="to")
        self.examples = w.Textarea(value="[]", description="Examples", placeholder='[{"prompt": "...", '
                                   '"completion": "...", "score": 5, "justification": "..."}]',
                                   layout=w.Layout(width="100%", height="5em"))
        self.model = ModelPicker(provider, model, base_url, parameters=ModelParameters(temperature=0.0, max_tokens=256))
        self.preview = w.HTML(layout=FULL)
        self.run_settings = RunSettingsBox(model=self.model, on_change=self.refresh_preview)
        self.controls = RunControls("Judge")
        self.live = w.HTML()  # the newest judgement while the judge runs: a sign of life per judged row
        self.scores_table = PagedTable(self._fetch_scores)
        self.outcomes = OutcomeTabs(self.store, self.scores_table, lambda: self.evaluation, results_title="Scores")
        self.histogram = w.HTML()
        self.topics = w.HTML()
        self.threshold = w.FloatSlider(value=0, min=0, max=10, step=1, description="min score")
        self.accepted_only = w.Checkbox(description="reviewer-accepted only")
        self.selection = w.HTML()
        self.desk = w.HTML(desk_link_html(None))
        self._live_at, self._live_done = 0.0, 0
        self.dataset_path: Path | None = None

        self.source.observe(lambda _: self.load_source(), "value")
        self.upload.observe(lambda _: self.read_upload(), "value")
        for control in (self.criteria, self.scale_min, self.scale_max, self.examples, self.prompt_column,
                        self.completion_column):
            control.observe(lambda _: self.refresh_preview(), "value")
        self.threshold.observe(lambda _: self.refresh_selection(), "value")
        self.accepted_only.observe(lambda _: self.refresh_selection(), "value")
        self.controls.run_button.on_click(lambda _: self.run())
        self.statistics = w.Tab([w.VBox([self.histogram, self.topics]),
                                 w.VBox([w.HBox([self.threshold, self.accepted_only]), self.selection])])
        self.statistics.titles = ("Histogram & topics", "Filter")
        super().__init__([nav_bar("05_evaluate.ipynb"), w.HTML("<h3>What to judge</h3>"), self.source,
                          w.HBox([self.upload, self.prompt_column, self.completion_column]),
                          w.HTML("<h3>Criteria</h3>"), self.criteria, w.HBox([self.scale_min, self.scale_max]),
                          self.examples, w.HTML("<h3>Judge model</h3>"), self.model,
                          w.HTML("<h3>Judge prompt preview</h3>"), self.preview, self.run_settings, self.controls, self.live,
                          self.outcomes, self.statistics, self.desk])
        self.load_jobs()

    # -- inputs -------------------------------------------------------------------------------------
    def load_jobs(self) -> None:
        """The user's jobs with rows (no alignment stage job), the newest (or ``?job=ID``) chosen."""
        options = [("an uploaded dataset", None), *job_options(self.store)]
        self.source.options = options
        chosen = default_job(options)
        if chosen is None:
            self.source.index = 0  # "an uploaded dataset" shown by its label (value None alone shows a blank)
        else:
            self.source.value = chosen
        self.load_source()

    def load_source(self) -> None:
        from ..usecases import load_use_case

        use_case = "custom"
        if self.source.value is not None:
            use_case = self.store.get_job("generation", self.source.value).get("use_case") or "custom"
        try:
            case = load_use_case(use_case, self.home)
        except SdstudioError as exc:  # a broken use_case.yaml: one line, as on the CLI
            self.preview.value = message("error", str(exc))
            return
        self._loading = True
        self.criteria.value = case.judge_criteria
        self.scale_min.value, self.scale_max.value = case.judge_scale
        self._loaded = (self.criteria.value, (self.scale_min.value, self.scale_max.value))
        self._loading = False
        self.refresh_preview()

    def read_upload(self) -> None:
        from ..home import init_home

        for name, content in uploaded_files(self.upload):
            try:  # kept in the home's uploads (a read-only home says so in one line)
                path = init_home(Path(self.store.path).parent) / "uploads" / Path(name).name
                path.write_bytes(content)
            except (SdstudioError, OSError) as exc:
                text = str(exc) if isinstance(exc, SdstudioError) else f"cannot keep the upload {name}: {exc.strerror}"
                self.preview.value = message("error", text)
                return
            self.dataset_path = path
            self.source.value = None
        self.refresh_preview()

    def config(self) -> EvaluationJob:
        from ..config import parse_job

        # criteria and scale still as the use case filled them in stay unset, as without --criteria-file/--scale
        criteria, scale = self.criteria.value, (self.scale_min.value, self.scale_max.value)
        loaded_criteria, loaded_scale = getattr(self, "_loaded", (None, None))
        data: dict[str, Any] = {"criteria": None if criteria == loaded_criteria else criteria,
                                "scale": None if scale == loaded_scale else list(scale),
                                "examples": json_list(self.examples.value, "judge examples"),
                                "model": self.model.spec().model_dump()}
        if self.source.value is not None:
            data["source_job"] = self.source.value
        else:
            data.update(input_file=str(self.dataset_path) if self.dataset_path else None,
                        prompt_column=self.prompt_column.value or None,
                        completion_column=self.completion_column.value or None)
        return self.run_settings.apply(parse_job(EvaluationJob, data, "evaluation form", self.home))

    def refresh_preview(self) -> None:
        if getattr(self, "_loading", False):
            return
        from ..workflows.evaluate import preview

        try:
            shown = preview(self.config(), home=self.home)
        except (SdstudioError, ValueError) as exc:
            self.preview.value = message("error", str(exc))
            return
        cost = self.run_settings.cost_text(shown)
        self.preview.value = preview_html(f"{shown.rows} rows · {shown.requests} requests · ~{shown.est_tokens_in:,} "
                                          f"tokens in · {cost}", shown.prompt)

    # -- running and results ------------------------------------------------------------------------
    def run(self):
        from ..workflows.evaluate import EvaluationRun

        self.evaluation = None
        self.outcomes.clear()
        self.live.value = self.histogram.value = self.topics.value = self.selection.value = ""
        self._live_at, self._live_done = 0.0, 0
        self.scores_table.show(0)
        handle = self.controls.run_job(lambda: EvaluationRun(self.config(), home=self.home), self.show)
        if handle is not None:
            handle.add_listener(self._judged_so_far)
        return handle

    def _judged_so_far(self, progress: Any) -> None:
        """Per judged row (at most once a second): how many are judged, the newest saved judgement and the scores
        so far, so a slow judge (the embedded model: a minute a row) shows it is working between rows. Rows are
        saved in batches just after they are counted, so the newest saved one may be the row before."""
        import time

        from ..reviews import scores

        now = time.monotonic()
        if progress.done == self._live_done or (now - self._live_at < LIVE_EVERY_S and progress.done < progress.total):
            return  # nothing newly judged, or the last refresh was a moment ago (the last row always shows)
        self._live_at, self._live_done = now, progress.done
        job_id = self._running_evaluation()
        if job_id is None:
            return
        self.evaluation = job_id
        self.scores_table.show(self.scores_table.page)
        frame = scores(job_id, self.store)
        frame = frame[frame["status"] == "ok"]
        latest = ""
        if len(frame):
            row = frame.loc[frame["record_id"].idxmax()]
            latest = (f" · latest saved: {row['topic'] or ''} scored {row['score']}: "
                      f"{str(row['justification'] or '')[:160]}")
        self.live.value = f'<div class="sds-live">{escape(f"judged {progress.done} of {progress.total}{latest}")}</div>'

    def _running_evaluation(self) -> int | None:
        """The evaluation job this page's run opened (the runner's job on this thread, else the newest running)."""
        from ..runner import current_job_id

        job_id = current_job_id()
        if job_id is not None:
            return job_id
        running = self.store.jobs("evaluation")
        running = running[running["status"] == "running"]
        return int(running["id"].max()) if len(running) else None

    def show(self, result: Any) -> None:
        from ..reviews import histogram, summary

        self.evaluation = result.job_id
        self.live.value = ""
        self.scores_table.show(0)
        self.outcomes.show(kept=result.ok)
        self.desk.value = desk_link_html(result.job_id)
        if not result.ok:
            return
        figure = histogram(result.job_id, self.store)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        self.histogram.value = (f'<img class="sds-histogram" alt="score histogram" '
                                f'src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}"/>')
        stats = summary(result.job_id, self.store)
        import pandas as pd

        topics = pd.DataFrame([{"topic": t, **v} for t, v in (stats["topics"] or {}).items()])
        self.topics.value = escape(f"average {stats['average_score']} · {stats['judged']} judged · "
                                   f"{stats['failed']} failed") + frame_html(topics)
        self.threshold.min, self.threshold.max = stats["scale"]
        self.threshold.value = stats["scale"][0]
        self.refresh_selection()

    @property
    def results(self):
        """The current evaluation's judged rows as a pandas DataFrame: topic, prompt, completion, score,
        justification, the latest review (verdict, edit, reviewer), record ids."""
        import pandas as pd
        from ..reviews import scores

        if self.evaluation is None:
            return pd.DataFrame()
        frame = scores(self.evaluation, self.store)
        frame = frame[frame["status"] == "ok"].drop(columns=["status", "error"]).reset_index(drop=True)
        first = ["topic", "prompt", "completion", "score", "justification"]
        return frame[first + [c for c in frame.columns if c not in first]]

    def _fetch_scores(self, offset: int, limit: int):
        from ..reviews import scores

        if self.evaluation is None:
            return None, 0
        frame = scores(self.evaluation, self.store)  # failed judgements are on the Failed tab, with their reasons
        frame = frame[frame["status"] == "ok"]
        columns = ["record_id", "topic", "prompt", "completion", "score", "justification", "verdict"]
        shown = frame[columns].iloc[offset:offset + limit].astype(object)
        return shown.where(shown.notna(), ""), len(frame)

    def refresh_selection(self) -> None:
        from ..reviews import select

        if self.evaluation is None:
            return
        kept = select(self.evaluation, min_score=self.threshold.value, accepted_only=self.accepted_only.value,
                      store=self.store)
        flags = f"--min-score {self.threshold.value:g}" + (" --reviewed-only" if self.accepted_only.value else "")
        self.selection.value = (escape(f"{len(kept)} rows kept (export takes the same filter: {flags})")
                                + frame_html(kept[["record_id", "topic", "prompt", "score", "verdict"]].head(50)))

    def autorun(self, timeout: float = 600) -> Any:
        """Headless: judge the newest generation job (generating 2 items first if there is none)."""
        if self.source.value is None:
            from ..config import GenerationJob
            from ..workflows.sft import GenerationRun

            GenerationRun(GenerationJob(topics=["Stacks", "Queues"], num_per_topic=1, batch_size=1,
                                        model=self.model.spec()), home=self.home).run()
            self.load_jobs()
        self.run()
        self.controls.wait(timeout)
        return self.scores_table.frame
