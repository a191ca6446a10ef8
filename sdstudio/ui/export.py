"""06_export: pick jobs, a trainer style, a format and filters; write files (and optionally upload to the
Hugging Face Hub), download them from the page; see the export history. Wiring only: the work is
``sdstudio.export``.

The style follows the chosen job (an alignment job's dpo or kto, else sft-messages) until the user picks one.
Downloads are ``data:`` links: Voilà serves no file outside the notebooks folder, and the exports live in the
home, so a file goes into the page itself; one too large for that shows its path and the CLI command."""
from __future__ import annotations

import base64
import os
import shlex
from pathlib import Path
from typing import Any

import ipywidgets as w

from ..config import ExportJob
from ..errors import SdstudioError
from ..store import Store
from .components import escape, frame_html, message
from .nav import link, nav_bar, query_job
from .pickers import PICKER_STYLE, SFT_STYLE, job_options, style_for

STYLES = ("raw", "sft-messages", "sft-prompt-completion", "openai-chat", "dpo", "kto")
DOWNLOAD_LIMIT = 5_000_000  # bytes of a file put in the page as a data: link; larger ones: path and CLI
MIME = {".jsonl": "application/x-ndjson", ".csv": "text/csv", ".parquet": "application/vnd.apache.parquet",
        ".md": "text/markdown", ".json": "application/json"}
WIDE = {"description_width": "initial"}


def download_links_html(paths: list[str], command: str) -> str:
    """A download link per written file (a ``data:`` URL, so it works in Voilà, JupyterLab and a saved page);
    a file over ``DOWNLOAD_LIMIT`` shows its path and the command that writes the export where you want it."""
    items = []
    for name in paths:
        path = Path(name)
        try:
            size = path.stat().st_size
        except OSError:
            continue
        if size > DOWNLOAD_LIMIT:
            items.append(f'<li class="sds-too-large">{escape(path.name)} ({size / 1e6:,.1f} MB, too large to download '
                         f'from the page): <code>{escape(path)}</code><br>or write it where you want it: '
                         f"<code>{escape(command)} --out DIR</code></li>")
            continue
        data = base64.b64encode(path.read_bytes()).decode()
        href = f"data:{MIME.get(path.suffix, 'application/octet-stream')};base64,{data}"
        items.append(f"<li>{link(f'Download {path.name}', href, download=path.name, class_='sds-download')} "
                     f"<small>{size:,} bytes</small></li>")
    return f'<ul class="sds-downloads">{"".join(items)}</ul>' if items else ""


def cli_command(config: ExportJob) -> str:
    """The ``sdstudio export`` command that writes the same export."""
    words = ["sdstudio", "export", "--job", *map(str, config.jobs), "--style", config.style, "--format", config.format]
    if config.min_score is not None:
        words += ["--min-score", f"{config.min_score:g}"]
    if config.reviewed_only:
        words.append("--reviewed-only")
    if not config.prefer_edits:
        words.append("--ignore-edits")
    if config.test_fraction:
        words += ["--test-fraction", f"{config.test_fraction:g}"]
    return shlex.join(words)


class ExportApp(w.VBox):
    def __init__(self, home: str | Path | None = None, hf_endpoint: str | None = None):
        self.home = home
        self.store = Store.open(home)
        self.jobs = w.SelectMultiple(description="Jobs", rows=6, layout=w.Layout(width="95%"), style=PICKER_STYLE)
        self.style = w.Dropdown(options=STYLES, value=SFT_STYLE, description="Style")
        self.style_chosen = False  # the user picked a style: the job no longer chooses it
        self.format = w.Dropdown(options=("jsonl", "csv", "parquet"), value="jsonl", description="Format")
        self.name = w.Text(placeholder="folder name (default: from the job)", description="Name")
        self.min_score = w.FloatText(value=0, description="Min score", tooltip="0: no score filter")
        self.reviewed_only = w.Checkbox(description="reviewer-accepted only", style=WIDE)
        self.prefer_edits = w.Checkbox(value=True, description="prefer reviewed edits", style=WIDE)
        self.with_reasoning = w.Checkbox(value=False, description="keep the model's reasoning", style=WIDE,
                                         tooltip="sft styles and raw: the reasoning a model returned beside its answer")
        self.test_fraction = w.FloatSlider(value=0, min=0, max=0.5, step=0.05, description="test split")
        self.hf_repo = w.Text(placeholder="owner/name (empty: files only)", description="HF repo")
        self.hf_endpoint = w.Text(value=hf_endpoint or os.environ.get("HF_ENDPOINT", ""),
                                  placeholder="https://huggingface.co", description="HF endpoint")
        self.private = w.Checkbox(value=True, description="private repo", style=WIDE)
        self.export_button = w.Button(description="Export", button_style="primary", icon="download")
        self.status = w.HTML()
        self.downloads = w.HTML()  # a download link per file the last export wrote
        self.history = w.HTML()
        self.last: Any = None
        self.export_button.on_click(lambda _: self.export())
        self._setting_style = False
        self.style.observe(self._style_picked, "value")
        self.jobs.observe(lambda _: self.follow_job(), "value")
        super().__init__([nav_bar("06_export.ipynb"),
            w.HTML("<h3>What to export</h3>"), self.jobs, w.HBox([self.style, self.format, self.name]),
            w.HTML("<h3>Filters</h3>"), w.HBox([self.min_score, self.reviewed_only, self.prefer_edits, self.with_reasoning]),
            self.test_fraction, w.HTML("<h3>Hugging Face Hub (optional; token from HF_TOKEN)</h3>"),
            w.HBox([self.hf_repo, self.hf_endpoint, self.private]), self.export_button, self.status,
            self.downloads, w.HTML("<h3>Export history</h3>"), self.history])
        self.refresh()

    def refresh(self) -> None:
        chosen = self.jobs.value
        self.jobs.options = job_options(self.store)  # the user's jobs with rows, newest first; no stage jobs
        ids = [value for _, value in self.jobs.options]
        chosen = tuple(job for job in chosen if job in ids)
        if ids and not chosen:
            wanted = self.wanted_job()
            chosen = (wanted if wanted in ids else ids[0],)
        self.jobs.value = chosen
        self.follow_job()
        history = self.store.jobs("export")
        keep = [c for c in ("id", "created_at", "status", "source_job_ids", "destination", "style", "format",
                            "row_count", "path", "repo_id", "revision", "error") if c in history.columns]
        self.history.value = frame_html(history[keep])

    def wanted_job(self) -> int | None:
        """``?job=ID``: a job to export, or an evaluation (its judged job is the one exported)."""
        job_id = query_job()
        if job_id is None:
            return None
        try:
            if self.store.job_family(job_id) == "evaluation":
                return self.store.get_job("evaluation", job_id).get("source_generation_id")
        except SdstudioError:
            return None
        return job_id

    def _style_picked(self, change: dict) -> None:
        if not self._setting_style:
            self.style_chosen = True

    def follow_job(self) -> None:
        """Until the user picks a style, the style is the one the first chosen job's rows fit."""
        if self.style_chosen or not self.jobs.value:
            return
        self._setting_style = True
        try:
            self.style.value = style_for(self.store, self.jobs.value[0])
        finally:
            self._setting_style = False

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
            "with_reasoning": self.with_reasoning.value,
            "test_fraction": self.test_fraction.value or None, "hf_repo": self.hf_repo.value.strip() or None,
            "hf_endpoint": self.hf_endpoint.value.strip() or None, "private": self.private.value}, "export form")

    def export(self) -> Any:
        from ..export import ExportUploadError, export_dataset

        self.downloads.value = ""
        try:
            config = self.config()
            result = export_dataset(config, home=self.home, store=self.store)
        except ExportUploadError as exc:
            self.status.value = message("error", f"{exc} (the files stay in {exc.result.directory})")
            self.downloads.value = download_links_html(self.written_files(exc.result), cli_command(config))
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
        self.downloads.value = download_links_html(self.written_files(result), cli_command(config))
        self.refresh()
        return result

    @staticmethod
    def written_files(result: Any) -> list[str]:
        """The data files, then the dataset card beside them when the export wrote one."""
        card = Path(result.directory) / "README.md"
        return [*result.paths, *([str(card)] if card.is_file() and str(card) not in result.paths else [])]
