"""02_documents: upload PDF / DOCX / TXT / Markdown / HTML (or name paths), see the chunks with their
provenance, preview the first prompt, run grounded Q/A generation with progress, page through the rows
with their file and pages. Wiring only: the work is ``sdstudio.documents`` and
``sdstudio.workflows.documents``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import ipywidgets as w

from ..config import DocumentJob, ModelParameters
from ..errors import SdstudioError
from ..providers import DEFAULT_PROVIDER
from ..store import Store
from .nav import nav_bar
from .components import (FULL, cost_text, escape, frame_html, message, ModelPicker, PagedTable, preview_html,
                         RunControls, text_lines)
from .generate import flatten, ok_frame


class DocumentsApp(w.VBox):
    def __init__(self, home: str | Path | None = None, provider: str = DEFAULT_PROVIDER, model: str | None = None,
                 base_url: str | None = None, files: list[str] | None = None):
        self.home = home
        self.store = Store.open(home)
        self.upload = w.FileUpload(accept=".pdf,.docx,.txt,.md,.markdown,.html,.htm", multiple=True,
                                   description="Documents")
        self.paths = w.Textarea(value="\n".join(files or []), placeholder="paths, globs or folders, one per line",
                                description="or paths", layout=w.Layout(width="100%", height="4em"))
        self.chunk_tokens = w.BoundedIntText(value=512, min=32, max=100_000, description="Chunk tokens")
        self.chunk_overlap = w.BoundedIntText(value=64, min=0, max=50_000, description="Overlap")
        self.per_chunk = w.BoundedIntText(value=2, min=1, max=1000, description="Per chunk")
        self.grounding = w.Checkbox(description="grounding check (a judge call per item)")
        self.chunks = w.HTML()
        self.model = ModelPicker(provider, model, base_url, parameters=ModelParameters(max_tokens=1024))
        self.preview = w.HTML(layout=FULL)
        self.controls = RunControls()
        self.results_table = PagedTable(self._fetch)
        self.job_id: int | None = None
        self.upload.observe(lambda _: self.refresh(), "value")
        for control in (self.paths, self.chunk_tokens, self.chunk_overlap, self.per_chunk, self.grounding):
            control.observe(lambda _: self.refresh(), "value")
        self.controls.run_button.on_click(lambda _: self.run())
        super().__init__([nav_bar("02_documents.ipynb"),
            w.HTML("<h3>Documents</h3>"), w.HBox([self.upload]), self.paths,
            w.HBox([self.chunk_tokens, self.chunk_overlap, self.per_chunk]), self.grounding, self.chunks,
            w.HTML("<h3>Model</h3>"), self.model, w.HTML("<h3>First prompt</h3>"), self.preview,
            self.controls, self.results_table])
        self.refresh()

    def config(self) -> DocumentJob:
        """Uploads (stored under SDSTUDIO_HOME/uploads by hash) plus the typed paths, and the settings."""
        from ..workflows.documents import document_job

        return document_job([*self.upload.value, *text_lines(self.paths.value)], home=self.home,
                            chunk_tokens=self.chunk_tokens.value, chunk_overlap=self.chunk_overlap.value,
                            per_chunk=self.per_chunk.value, grounding=self.grounding.value,
                            model=self.model.spec().model_dump())

    def refresh(self) -> None:
        """Chunk table (with provenance) and the first prompt, for what is chosen now; no call."""
        from ..workflows.documents import preview

        if not self.upload.value and not text_lines(self.paths.value):
            self.chunks.value = message("info", "upload documents or name their paths")
            self.preview.value = ""
            return
        try:
            config = self.config()
            from ..documents import load_corpus

            corpus = load_corpus(config.files, chunk_tokens=config.chunk_tokens, chunk_overlap=config.chunk_overlap)
            shown = preview(config, home=self.home, corpus=corpus)
        except (SdstudioError, ValueError) as exc:
            self.chunks.value = message("error", str(exc))
            self.preview.value = ""
            return
        notes = "".join(f"<br>{message('info', m)}" for m in corpus.messages())
        self.chunks.value = escape(f"{shown.documents} document(s), {shown.chunks} chunks") + notes + \
            frame_html(corpus.frame().head(20), max_chars=160)
        cost = cost_text(shown)
        self.preview.value = preview_html(
            f"{shown.items} items in {shown.requests} requests · ~{shown.est_tokens_in:,} tokens in · {cost}",
            shown.prompt)

    def run(self):
        from ..workflows.documents import DocumentRun

        return self.controls.run_job(lambda: DocumentRun(self.config(), home=self.home), self.show)

    def show(self, result: Any) -> None:
        self.job_id = result.job_id
        self.results_table.show(0)

    @property
    def results(self):
        """The current job's ok rows as a pandas DataFrame, each with its source (file, pages, chunk)."""
        records = list(self.store.records("generation", self.job_id, "ok")) if self.job_id is not None else []
        frame = ok_frame(records)
        frame.insert(1, "source", [_source(r["provenance"]) for r in records])
        return frame

    def _fetch(self, offset: int, limit: int):
        if self.job_id is None:
            return None, 0
        records, total = self.store.records_page("generation", self.job_id, "ok", offset, limit)
        frame = flatten(records)
        if len(frame):
            frame.insert(2, "source", [_source(r["provenance"]) for r in records])
        return frame, total

    def autorun(self, timeout: float = 600) -> Any:
        """Headless: one item per chunk of the named documents (what nbval executes)."""
        self.per_chunk.value = 1
        self.run()
        self.controls.wait(timeout)
        return self.results_table.frame


def _source(provenance: dict[str, Any] | None) -> str:
    prov = provenance or {}
    pages = prov.get("pages")
    where = f", pages {pages[0]}-{pages[-1]}" if pages and len(pages) > 1 else f", page {pages[0]}" if pages else ""
    return f"{prov.get('file', '?')}{where}, chunk {prov.get('chunk_index', '?')}"
