"""03_custom_workflow: upload a dataset, pick columns, write (or add from presets) the steps, run with progress
right under the form, and page through input + output columns, the failed rows and their reasons; each step's
prompt on the first row is previewed below. Wiring only: the work is ``sdstudio.workflows.custom`` and
``sdstudio.datasets``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ipywidgets as w
import yaml

from .. import safeyaml
from ..config import ModelParameters, WorkflowJob
from ..errors import SdstudioError
from ..providers import DEFAULT_PROVIDER
from ..store import Store
from .nav import nav_bar
from .components import (FULL, escape, frame_html, message, ModelPicker, PagedTable, preview_html,
                         RunControls, uploaded_files)
from .run_settings import RunSettingsBox
from .outcomes import OutcomeTabs

LABEL = {"style": {"description_width": "initial"}}  # a label as long as its words, never "K per pro…"


def wide() -> dict:
    """A picker's own layout and label style: as wide as its longest option, its label in full."""
    return {"layout": w.Layout(width="auto", min_width="22em"), "style": {"description_width": "initial"}}


def starter_steps(columns: list[str] | tuple[str, ...] = ()) -> str:
    """The step a fresh page opens with, fitted to the dataset: its output column (``answer``) is a name no input
    column has — the sample data has an ``answer`` column of its own, so there it is ``model_answer``, not a
    clash that opens the page in an error — and it reads the ``question`` column, else the first one."""
    taken = {str(c) for c in columns}
    name = next(n for n in ("answer", "model_answer", *(f"model_answer_{i}" for i in range(2, len(taken) + 3)))
                if n not in taken)
    column = "question" if "question" in taken or not columns else str(columns[0])
    reference = column if column.isidentifier() else f"row[{json.dumps(column, ensure_ascii=False)}]"
    ask = "Answer the question" if column == "question" else "Respond to the text"
    return f"- name: {name}\n  template: |-\n    {ask} below in two or three sentences.\n\n    {{{{ {reference} }}}}\n"


def blank_cells(frame):
    """A frame as the page shows it: None, NaN and <NA> as empty cells, never as the words."""
    if frame is None or not len(frame):
        return frame
    return frame.astype(object).where(frame.notna(), "")


STARTER = starter_steps()


class WorkflowApp(w.VBox):
    def __init__(self, home: str | Path | None = None, provider: str = DEFAULT_PROVIDER, model: str | None = None,
                 base_url: str | None = None, input_file: str | None = None):
        from ..workflows.presets import list_presets

        self.home = home
        self.store = Store.open(home)
        self.upload = w.FileUpload(accept=".csv,.tsv,.jsonl,.json,.parquet,.xlsx", multiple=False,
                                   description="Dataset")
        self.input_file = w.Text(value=input_file or "", description="or path", layout=w.Layout(width="50%"))
        self.dataset = w.HTML()
        self.columns = w.SelectMultiple(description="Columns", rows=5)
        self.limit = w.IntText(value=0, description="Row limit", tooltip="0: all rows", **LABEL)
        self.sample = w.Checkbox(description="random sample (seed 42)")
        self.steps = w.Textarea(value=STARTER, description="Steps (YAML)",
                                layout=w.Layout(width="100%", height="12em"), **LABEL)
        self.preset = w.Dropdown(options=sorted(list_presets(home)), description="Preset", **wide())
        self.preset_column = w.Dropdown(description="on column", **wide())
        self.add_preset = w.Button(description="Add preset steps", icon="plus")
        self.model = ModelPicker(provider, model, base_url, parameters=ModelParameters(max_tokens=512))
        self.estimate = w.HTML(layout=FULL)  # rows, requests, tokens, cost (or what is wrong), next to Run
        self.preview = w.HTML(layout=FULL)
        self.run_settings = RunSettingsBox(model=self.model, on_change=self.refresh_preview)
        self.controls = RunControls()
        self.results_table = PagedTable(self._fetch)
        self.outcomes = OutcomeTabs(self.store, self.results_table, lambda: self.job_id)
        self.config_path = w.Text(value="workflow.yaml", description="Save as", **LABEL)
        self.save_button = w.Button(description="Save workflow as YAML", icon="save", layout=w.Layout(width="auto"))
        self.job_id: int | None = None
        self._starter = STARTER  # the starter step as last fitted to a dataset: replaced only while untouched

        self.upload.observe(lambda _: self.read_upload(), "value")
        self.input_file.observe(lambda _: self.load_dataset(), "value")
        for control in (self.columns, self.limit, self.sample, self.steps):
            control.observe(lambda _: self.refresh_preview(), "value")
        for control in (self.input_file, self.columns, self.limit, self.sample, self.steps, self.model.provider,
                        self.model.model):
            control.observe(lambda _: self.clear_results(), "value")
        self.add_preset.on_click(lambda _: self.apply_preset())
        self.controls.run_button.on_click(lambda _: self.run())
        self.save_button.on_click(lambda _: self.save())
        super().__init__([nav_bar("03_custom_workflow.ipynb"),
            w.HTML("<h3>Your data</h3>"), w.HBox([self.upload, self.input_file]), self.dataset,
            w.HBox([self.columns, w.VBox([self.limit, self.sample])]),
            w.HTML("<h3>Steps</h3>"), self.steps, w.HBox([self.preset, self.preset_column, self.add_preset]),
            w.HTML("<h3>Model</h3>"), self.model, self.estimate, self.run_settings, self.controls, self.outcomes,
            w.HBox([self.config_path, self.save_button]),
            w.HTML("<h3>Prompt preview (first row)</h3>"), self.preview])
        self.load_dataset()

    # -- the dataset --------------------------------------------------------------------------------
    def read_upload(self) -> None:
        from ..datasets import save_upload

        for name, content in uploaded_files(self.upload):
            try:
                self.input_file.value = str(save_upload(content, name, self.home))
            except (SdstudioError, OSError) as exc:  # a read-only home: one line, not a traceback in the log
                self.dataset.value = message("error", str(exc) if isinstance(exc, SdstudioError)
                                             else f"cannot keep the upload {name}: {exc.strerror or exc}")

    def load_dataset(self) -> None:
        from ..datasets import preview_dataset

        if not self.input_file.value.strip():
            self.dataset.value = message("info", "upload a CSV, JSONL, JSON, Parquet or Excel file")
            return
        try:
            head, types = preview_dataset(self.input_file.value.strip())
        except SdstudioError as exc:
            self.dataset.value = message("error", str(exc))
            return
        names = [str(c) for c in head.columns]
        if self.steps.value in (STARTER, self._starter):  # untouched: fit it to this data
            self._starter = self.steps.value = starter_steps(names)
        self.columns.options = names
        self.columns.value = tuple(names)
        kept = self.preset_column.value
        self.preset_column.options = names  # ipywidgets leaves a Dropdown blank here: pick one on screen
        self.preset_column.value = next((c for c in (kept, "question") if c in names), names[0] if names else None)
        self.dataset.value = frame_html(blank_cells(head)) + frame_html(types)
        self.refresh_preview()

    # -- the workflow -------------------------------------------------------------------------------
    def config(self) -> WorkflowJob:
        """The form as a WorkflowJob, built as ``sdstudio workflow`` builds one (``parse_job``); every column
        chosen is ``columns: None`` (all), as without ``--columns``."""
        from ..config import parse_job

        try:
            steps = safeyaml.load(self.steps.value, "workflow steps") or []
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise SdstudioError(f"steps are not valid YAML{f' (line {mark.line + 1})' if mark else ''}") from None
        columns = list(self.columns.value)
        return self.run_settings.apply(parse_job(WorkflowJob, {
            "input_file": self.input_file.value.strip() or None,
            "columns": None if not columns or set(columns) == set(self.columns.options) else columns,
            "limit": self.limit.value or None, "sample": self.sample.value, "steps": steps,
            "model": self.model.spec().model_dump()}, "workflow form", self.home))

    def apply_preset(self) -> None:
        from ..workflows.presets import apply_preset

        try:
            config = apply_preset(self.config(), self.preset.value, home=self.home, column=self.preset_column.value)
        except (SdstudioError, TypeError) as exc:
            self.controls.error(str(exc))
            return
        self.steps.value = yaml.safe_dump([s.model_dump(mode="json", exclude_none=True) for s in config.steps],
                                          sort_keys=False, allow_unicode=True)

    def refresh_preview(self) -> None:
        from ..workflows.custom_plan import preview

        try:
            shown = preview(self.config(), home=self.home)
        except (SdstudioError, ValueError) as exc:
            self.preview.value = self.estimate.value = message("error", str(exc))
            return
        self.estimate.value = escape(f"{shown.rows} rows · {shown.requests} requests · ~{shown.est_tokens_in:,} "
                                     f"tokens in · {self.run_settings.cost_text(shown)}")
        parts = [self.estimate.value]
        for step in shown.steps:
            parts.append(preview_html(f"{step.step} → {step.output_column} ({step.model_id})", step.prompt))
        self.preview.value = "".join(parts)

    def save(self) -> Path | None:
        from ..workflows.custom import save_workflow

        try:
            path = Path(self.config_path.value).expanduser()
            path = path if path.is_absolute() else Path(self.store.path).parent / path
            save_workflow(self.config(), path)
        except SdstudioError as exc:
            self.controls.error(str(exc))
            return None
        self.controls.status.value = message("ok", f"saved {path} — run it with: sdstudio workflow --config {path}")
        return path

    # -- running ------------------------------------------------------------------------------------
    def run(self):
        from ..workflows.custom import WorkflowRun

        return self.controls.run_job(lambda: WorkflowRun(self.config(), home=self.home), self.show)

    def show(self, result: Any) -> None:
        self.job_id = result.job_id
        self.results_table.show(0)
        self.outcomes.show(kept=result.ok)  # the bar's colour is the run's outcome already (outcome_kind)

    def clear_results(self) -> None:
        """A changed form: the last run's rows no longer describe it, so they leave the page (``results`` too)."""
        if self.job_id is None:
            return
        self.job_id = None
        self.results_table.show(0)
        self.outcomes.clear()

    @property
    def results(self):
        """The current job's ok rows as a pandas DataFrame: input columns, each step's output, source row."""
        import pandas as pd
        from ..workflows.custom import results_frame

        if self.job_id is None:
            return pd.DataFrame()
        frame = results_frame(self.job_id, store=self.store, include_failed=False)
        # status and error say nothing on ok rows (an input column of that name pushed them to sdstudio_*)
        meta = [c for c in ("sdstudio_status", "sdstudio_error") if c in frame.columns] or ["status", "error"]
        return frame.drop(columns=[c for c in meta if c in frame.columns])

    def _fetch(self, offset: int, limit: int):
        """The Results tab: ok rows (failed ones are in the Failed tab, with their reasons), no empty words."""
        if self.job_id is None:
            return None, 0
        frame = self.results
        return blank_cells(frame.iloc[offset:offset + limit]), len(frame)

    def autorun(self, limit: int = 2, timeout: float = 600) -> Any:
        """Headless run over the first rows (what nbval executes with SDSTUDIO_AUTORUN=1): every row it wrote,
        ok and failed, with ``status`` and ``error``, so a notebook run shows what went wrong too."""
        from ..workflows.custom import results_frame

        self.limit.value = limit
        self.run()
        self.controls.wait(timeout)
        if self.job_id is None:
            return self.results_table.frame
        return blank_cells(results_frame(self.job_id, store=self.store))
