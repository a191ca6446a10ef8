"""03_custom_workflow: upload a dataset, pick columns, write (or add from presets) the steps, preview each
step's prompt on the first row, run with progress, and page through input + output columns. Wiring only:
the work is ``sdstudio.workflows.custom`` and ``sdstudio.datasets``."""
from __future__ import annotations

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
from .components import (FULL, cost_text, escape, frame_html, message, ModelPicker, PagedTable, preview_html,
                         RunControls, uploaded_files)

STARTER = """\
- name: answer
  template: |-
    Answer the question below in two or three sentences.

    {{ question }}
"""


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
        self.limit = w.IntText(value=0, description="Row limit", tooltip="0: all rows")
        self.sample = w.Checkbox(description="random sample (seed 42)")
        self.steps = w.Textarea(value=STARTER, description="Steps (YAML)",
                                layout=w.Layout(width="100%", height="12em"))
        self.preset = w.Dropdown(options=sorted(list_presets(home)), description="Preset")
        self.preset_column = w.Dropdown(description="on column")
        self.add_preset = w.Button(description="Add preset steps", icon="plus")
        self.model = ModelPicker(provider, model, base_url, parameters=ModelParameters(max_tokens=512))
        self.preview = w.HTML(layout=FULL)
        self.controls = RunControls()
        self.results_table = PagedTable(self._fetch)
        self.config_path = w.Text(value="workflow.yaml", description="Save as")
        self.save_button = w.Button(description="Save workflow as YAML", icon="save")
        self.job_id: int | None = None

        self.upload.observe(lambda _: self.read_upload(), "value")
        self.input_file.observe(lambda _: self.load_dataset(), "value")
        for control in (self.columns, self.limit, self.sample, self.steps):
            control.observe(lambda _: self.refresh_preview(), "value")
        self.add_preset.on_click(lambda _: self.apply_preset())
        self.controls.run_button.on_click(lambda _: self.run())
        self.save_button.on_click(lambda _: self.save())
        super().__init__([nav_bar("03_custom_workflow.ipynb"),
            w.HTML("<h3>Your data</h3>"), w.HBox([self.upload, self.input_file]), self.dataset,
            w.HBox([self.columns, w.VBox([self.limit, self.sample])]),
            w.HTML("<h3>Steps</h3>"), self.steps, w.HBox([self.preset, self.preset_column, self.add_preset]),
            w.HTML("<h3>Model</h3>"), self.model, w.HTML("<h3>Prompt preview (first row)</h3>"), self.preview,
            self.controls, self.results_table, w.HBox([self.config_path, self.save_button])])
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
        names = list(head.columns)
        self.columns.options = names
        self.columns.value = tuple(names)
        self.preset_column.options = names
        self.dataset.value = frame_html(head) + frame_html(types)
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
        return parse_job(WorkflowJob, {
            "input_file": self.input_file.value.strip() or None,
            "columns": None if not columns or set(columns) == set(self.columns.options) else columns,
            "limit": self.limit.value or None, "sample": self.sample.value, "steps": steps,
            "model": self.model.spec().model_dump()}, "workflow form", self.home)

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
            self.preview.value = message("error", str(exc))
            return
        parts = [escape(f"{shown.rows} rows · {shown.requests} requests · ~{shown.est_tokens_in:,} tokens in · "
                        f"{cost_text(shown)}")]
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
        from ..workflows.custom import results_frame

        if self.job_id is None:
            return None, 0
        frame = results_frame(self.job_id, store=self.store)
        return frame.iloc[offset:offset + limit], len(frame)

    def autorun(self, limit: int = 2, timeout: float = 600) -> Any:
        """Headless run over the first rows (what nbval executes with SDSTUDIO_AUTORUN=1)."""
        self.limit.value = limit
        self.run()
        self.controls.wait(timeout)
        return self.results_table.frame
