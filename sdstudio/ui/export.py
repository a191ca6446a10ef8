"""06_export: pick jobs, a trainer style, a format and filters; write files (and optionally upload to the
Hugging Face Hub); see the export history. Wiring only: the work is ``sdstudio.export``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ipywidgets as w

from ..config import ExportJob
from ..errors import SdstudioError
from ..store import Store
from .components import escape, frame_html, message
from .nav import nav_bar, preselect

STYLES = ("raw", "sft-messages", "sft-prompt-completion", "openai-chat", "dpo", "kto")


class ExportApp(w.VBox):
    def __init__(self, home: str | Path | None = None, hf_endpoint: str | None = None):
        self.home = home
        self.store = Store.open(home)
        self.jobs = w.SelectMultiple(description="Jobs", rows=6, layout=w.Layout(width="60%"))
        self.style = w.Dropdown(options=STYLES, value="sft-messages", description="Style")
        self.format = w.Dropdown(options=("jsonl", "csv", "parquet"), value="jsonl", description="Format")
        self.name = w.Text(placeholder="folder name (default: from the job)", description="Name")
        self.min_score = w.FloatText(value=0, description="Min score", tooltip="0: no score filter")
        self.reviewed_only = w.Checkbox(description="reviewer-accepted only")
        self.prefer_edits = w.Checkbox(value=True, description="prefer reviewed edits")
        self.test_fraction = w.FloatSlider(value=0, min=0, max=0.5, step=0.05, description="test split")
        self.hf_repo = w.Text(placeholder="owner/name (empty: files only)", description="HF repo")
        self.hf_endpoint = w.Text(value=hf_endpoint or os.environ.get("HF_ENDPOINT", ""),
                                  placeholder="https://huggingface.co", description="HF endpoint")
        self.private = w.Checkbox(value=True, description="private repo")
        self.export_button = w.Button(description="Export", button_style="primary", icon="download")
        self.status = w.HTML()
        self.history = w.HTML()
        self.last: Any = None
        self.export_button.on_click(lambda _: self.export())
        super().__init__([nav_bar("06_export.ipynb"),
            w.HTML("<h3>What to export</h3>"), self.jobs, w.HBox([self.style, self.format, self.name]),
            w.HTML("<h3>Filters</h3>"), w.HBox([self.min_score, self.reviewed_only, self.prefer_edits]),
            self.test_fraction, w.HTML("<h3>Hugging Face Hub (optional; token from HF_TOKEN)</h3>"),
            w.HBox([self.hf_repo, self.hf_endpoint, self.private]), self.export_button, self.status,
            w.HTML("<h3>Export history</h3>"), self.history])
        self.refresh()

    def refresh(self) -> None:
        frame = self.store.jobs("generation")
        self.jobs.options = [(f"#{r.id} · {r.technique}:{r.use_case} · {r.ok} ok · {r.model_id}", int(r.id))
                             for r in frame.itertuples() if r.ok]
        if self.jobs.options and not self.jobs.value:
            self.jobs.value = (preselect(self.jobs.options, self.jobs.options[0][1]),)  # ?job=ID first
        history = self.store.jobs("export")
        keep = [c for c in ("id", "created_at", "status", "source_job_ids", "destination", "style", "format",
                            "row_count", "path", "repo_id", "revision", "error") if c in history.columns]
        self.history.value = frame_html(history[keep])

    @property
    def results(self):
        """The files the last export wrote as a pandas DataFrame (path, sha256); empty before one."""
        import pandas as pd

        if self.last is None:
            return pd.DataFrame(columns=["path", "sha256"])
        hashes = self.last.file_hashes
        return pd.DataFrame([{"path": p, "sha256": hashes.get(p) or hashes.get(Path(p).name)}
                             for p in self.last.paths], columns=["path", "sha256"])

    def config(self) -> ExportJob:
        from ..config import _validate

        return _validate(ExportJob, {
            "jobs": list(self.jobs.value), "style": self.style.value, "format": self.format.value,
            "name": self.name.value.strip() or None, "min_score": self.min_score.value or None,
            "reviewed_only": self.reviewed_only.value, "prefer_edits": self.prefer_edits.value,
            "test_fraction": self.test_fraction.value or None, "hf_repo": self.hf_repo.value.strip() or None,
            "hf_endpoint": self.hf_endpoint.value.strip() or None, "private": self.private.value}, "export form")

    def export(self) -> Any:
        from ..export import ExportUploadError, export_dataset

        try:
            result = export_dataset(self.config(), home=self.home, store=self.store)
        except ExportUploadError as exc:
            self.status.value = message("error", f"{exc} (the files stay in {exc.result.directory})")
            self.refresh()
            return exc.result
        except SdstudioError as exc:
            self.status.value = message("error", str(exc))
            return None
        self.last = result
        where = f" and uploaded to {result.repo_id} @ {result.revision}" if result.repo_id else ""
        self.status.value = message("ok", f"export {result.export_id}: {result.rows} rows written to "
                                          f"{result.directory}{where}") + "".join(
            f"<br><code>{escape(p)}</code>" for p in result.paths)
        self.refresh()
        return result
