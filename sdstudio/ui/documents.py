"""02_documents: upload PDF / DOCX / TXT / Markdown / HTML (or name paths), edit the example item the model
copies the shape of, see the chunks with their provenance and the first prompt, run grounded Q/A generation
with progress, page through the kept rows with their file, pages and grounding verdict, and the failed and
filtered ones with their reasons. Wiring only: the work is ``sdstudio.documents`` and
``sdstudio.workflows.documents``.

The paths the page opens with (the notebook's sample manual) are a default: an upload replaces them, so a
user's own document is never mixed with the sample."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ipywidgets as w

from ..config import DocumentJob, ModelParameters
from ..errors import SdstudioError
from ..providers import DEFAULT_PROVIDER
from ..store import Store
from ..usecases import load_use_case
from .components import (FULL, escape, frame_html, json_list, message, ModelPicker, PagedTable,
                         preview_html, RunControls, text_lines)
from .run_settings import RunSettingsBox
from .generate import LABELS, ShownJob, cell, collapsible, flatten, ok_frame, prompt_fields
from .nav import nav_bar
from .outcomes import OutcomeTabs

USE_CASE = DocumentJob.model_fields["use_case"].default


class DocumentsApp(ShownJob, w.VBox):
    def __init__(self, home: str | Path | None = None, provider: str = DEFAULT_PROVIDER, model: str | None = None,
                 base_url: str | None = None, files: list[str] | None = None):
        self.home = home
        self.store = Store.open(home)
        self.upload = w.FileUpload(accept=".pdf,.docx,.txt,.md,.markdown,.html,.htm", multiple=True,
                                   description="Documents")
        self.paths = w.Textarea(value="\n".join(files or []), placeholder="paths, globs or folders, one per line",
                                description="or paths", layout=w.Layout(width="100%", height="4em"), style=LABELS)
        self.source_note = w.HTML()
        self.chunk_tokens = w.BoundedIntText(value=512, min=32, max=100_000, description="Chunk tokens",
                                             style=LABELS)
        self.chunk_overlap = w.BoundedIntText(value=64, min=0, max=50_000, description="Overlap", style=LABELS)
        self.per_chunk = w.BoundedIntText(value=2, min=1, max=1000, description="Per chunk", style=LABELS)
        self.grounding = w.Checkbox(description="grounding check (a judge call per item)", indent=False,
                                    layout=w.Layout(width="auto"))
        self.examples = w.Textarea(value=self._default_examples(), description="Examples", style=LABELS,
                                   layout=w.Layout(width="100%", height="9em"))
        self.chunks = w.HTML()
        self.model = ModelPicker(provider, model, base_url, parameters=ModelParameters(max_tokens=1024))
        self.estimate = w.HTML()
        self.preview = w.HTML(layout=FULL)
        self.run_settings = RunSettingsBox(model=self.model, on_change=self.refresh)
        self.controls = RunControls()
        self.folded = (collapsible("Chunks", self.chunks), collapsible("First prompt", self.preview))
        self.results_table = PagedTable(self._fetch)
        self.outcomes = OutcomeTabs(self.store, self.results_table, lambda: self.job_id)
        self.config_path = w.Text(value="documents.yaml", description="Save as")
        self.save_button = w.Button(description="Save config as YAML", icon="save",
                                     layout=w.Layout(width="auto"))
        self.job_id: int | None = None
        self._sample = self.paths.value  # the default documents: used only while nothing is uploaded
        self._sample_replaced = False
        self._columns: tuple[str, ...] = ()
        self._starting: tuple[dict[str, Any], tuple[str, ...]] | None = None
        self.upload.observe(lambda _: self.uploaded(), "value")
        for control in (self.paths, self.chunk_tokens, self.chunk_overlap, self.per_chunk, self.grounding,
                        self.examples):
            control.observe(lambda _: self.refresh(), "value")
        for name in ("provider", *ModelPicker.SPEC_FIELDS, "temperature", "top_p", "top_k", "max_tokens"):
            getattr(self.model, name).observe(lambda _: self.check_shown(), "value")
        self.controls.run_button.on_click(lambda _: self.run())
        self.save_button.on_click(lambda _: self.save_config())
        super().__init__([nav_bar("02_documents.ipynb"),
            w.HTML("<h3>Documents</h3>"), w.HBox([self.upload]), self.paths, self.source_note,
            w.HBox([self.chunk_tokens, self.chunk_overlap, self.per_chunk]), self.grounding,
            w.HTML("<h3>Model</h3>"), self.model,
            w.HTML("<h3>Example item</h3><small>What one item looks like, shown to the model in every prompt. "
                   "An example from your own documents keeps the sample's subject out of the answers.</small>"),
            self.examples, self.estimate, self.run_settings, self.controls,
            *self.folded,
            w.HTML("<h3>Outcome</h3>"), self.outcomes, w.HBox([self.config_path, self.save_button])])
        self.refresh()

    def _default_examples(self) -> str:
        try:
            examples = load_use_case(USE_CASE, self.home).examples
        except SdstudioError:
            examples = []
        self._loaded_examples = json.dumps(examples, indent=2, ensure_ascii=False)
        return self._loaded_examples

    def uploaded(self) -> None:
        """An upload replaces the sample paths (never added to them); taking every upload away brings the
        sample back. Paths the user typed are the user's own and stay beside the uploads."""
        if self.upload.value and self._sample.strip() and self.paths.value == self._sample:
            self._sample_replaced = True
            self.source_note.value = message("info", f"your upload replaces the sample ({', '.join(text_lines(self._sample))}); "
                                                     "type paths below to add files to it")
            self.paths.value = ""  # refreshes
            return
        if not self.upload.value and self._sample_replaced and not self.paths.value.strip():
            self._sample_replaced = False
            self.source_note.value = ""
            self.paths.value = self._sample  # refreshes
            return
        self.refresh()

    def config(self) -> DocumentJob:
        """Uploads (stored under SDSTUDIO_HOME/uploads by hash) plus the typed paths, the settings and the
        examples (left unset while they are the use case's own, as on the CLI: the same job, the same hash)."""
        from ..workflows.documents import document_job

        examples = json_list(self.examples.value, "examples")
        return self.run_settings.apply(document_job([*self.upload.value, *text_lines(self.paths.value)], home=self.home,
                            chunk_tokens=self.chunk_tokens.value, chunk_overlap=self.chunk_overlap.value,
                            per_chunk=self.per_chunk.value, grounding=self.grounding.value,
                            examples=None if self.examples.value == self._loaded_examples else examples,
                            model=self.model.spec().model_dump()))

    def refresh(self) -> None:
        """Chunk table (with provenance), the estimate and the first prompt, for what is chosen now; no call."""
        from ..documents import load_corpus
        from ..workflows.documents import preview

        if not self.upload.value and not text_lines(self.paths.value):
            self._problem(message("info", "upload documents or name their paths"))
            return
        try:
            config = self.config()
        except (SdstudioError, ValueError) as exc:
            self._problem(message("error", str(exc)))
            return
        self.check_shown(config)
        try:
            corpus = load_corpus(config.files, chunk_tokens=config.chunk_tokens, chunk_overlap=config.chunk_overlap)
            shown = preview(config, home=self.home, corpus=corpus)
        except (SdstudioError, ValueError) as exc:
            self._problem(message("error", str(exc)))
            return
        notes = "".join(f"<br>{message('info', m)}" for m in corpus.messages())
        self.chunks.value = escape(f"{shown.documents} document(s), {shown.chunks} chunks") + notes + \
            frame_html(chunk_table(corpus.frame().head(20)), max_chars=160)
        self.estimate.value = escape(
            f"{shown.documents} document(s), {shown.chunks} chunks · {shown.items} items in {shown.requests} "
            f"requests · ~{shown.est_tokens_in:,} tokens in · {self.run_settings.cost_text(shown)}")
        self.preview.value = preview_html("", shown.prompt)

    def _problem(self, text: str) -> None:
        """Nothing to preview: say why next to Run (and where the chunks go), and drop a stale outcome."""
        self.chunks.value = self.estimate.value = text
        self.preview.value = ""
        self.check_shown(None)

    def save_config(self) -> Path | None:
        """The page's job (its examples included) as YAML: ``sdstudio documents --config`` runs the same job."""
        from .save_config import save_job_yaml

        return save_job_yaml(self.controls, lambda: self.config().to_yaml(), self.config_path.value,
                             Path(self.store.path).parent, "documents")

    def run(self):
        from ..workflows.documents import DocumentRun

        def build() -> DocumentRun:
            config = self.config()
            self._starting = (config.model_dump(mode="json"), prompt_fields(config.use_case, self.home))
            return DocumentRun(config, home=self.home)

        return self.controls.run_job(build, self.show)

    def show(self, result: Any) -> None:
        """RunControls' on_result: kept rows, failed and filtered ones, and why when none was kept; the chunks
        and the prompt fold so the outcome sits under Run."""
        self._shown, self._columns = self._starting or (None, ())
        self.show_job(result, *self.folded)

    @property
    def results(self):
        """The shown job's ok rows as a pandas DataFrame, each with its source (file, pages, chunk) and, when
        the job checked grounding, the judge's verdict and evidence."""
        records = self.ok_records()
        frame = ok_frame(records)
        frame.insert(1, "source", [_source(r["provenance"]) for r in records])
        if any(_verdict(r["provenance"]) for r in records):
            frame["grounded"] = [(_verdict(r["provenance"]) or {}).get("supported") for r in records]
            frame["grounding_evidence"] = [(_verdict(r["provenance"]) or {}).get("evidence") for r in records]
        return frame

    def _fetch(self, offset: int, limit: int):
        if self.job_id is None:
            return None, 0
        records, total = self.store.records_page("generation", self.job_id, "ok", offset, limit)
        frame = flatten(records, self._columns)
        if len(frame):
            at = list(frame.columns).index("topic")
            if any(_verdict(r["provenance"]) for r in records):
                verdicts = [_verdict(r["provenance"]) or {} for r in records]
                frame.insert(at, "grounding", [_verdict_text(v) for v in verdicts])
                frame.insert(at + 1, "grounding evidence", [cell(v.get("evidence")) for v in verdicts])
                at += 2
            frame.insert(at, "source", [_source(r["provenance"]) for r in records])
            frame = frame.rename(columns={"topic": "chunk"})  # a document job's topics are its chunk ids
        return frame, total

    def autorun(self, timeout: float = 600) -> Any:
        """Headless: one item per chunk of the named documents (what nbval executes)."""
        self.per_chunk.value = 1
        self.run()
        self.controls.wait(timeout)
        return self.results_table.frame


def chunk_table(frame):
    """The chunk preview as a person reads it: the text first (its line breaks as spaces: pandas would print
    them as literal \\n), then where it comes from; the sha256 shortened (the full one is in provenance)."""
    if not len(frame):
        return frame
    view = frame.copy()
    view["text"] = view["text"].map(lambda text: " ".join(str(text).split()))
    view["chars"] = [f"{a}–{b}" for a, b in zip(view["char_start"], view["char_end"])]
    view["sha256"] = view["sha256"].map(lambda h: str(h or "")[:12])
    return view[["text", "file", "pages", "chars", "tokens", "chunk", "sha256"]]


def _source(provenance: dict[str, Any] | None) -> str:
    prov = provenance or {}
    pages = prov.get("pages")
    where = f", pages {pages[0]}-{pages[-1]}" if pages and len(pages) > 1 else f", page {pages[0]}" if pages else ""
    return f"{prov.get('file', '?')}{where}, chunk {prov.get('chunk_index', '?')}"


def _verdict(provenance: dict[str, Any] | None) -> dict[str, Any] | None:
    """The grounding check's verdict a row carries (``provenance.grounding``), None when it was not checked."""
    verdict = (provenance or {}).get("grounding")
    return verdict if isinstance(verdict, dict) else None


def _verdict_text(verdict: dict[str, Any]) -> str:
    if verdict.get("pending"):
        return "not checked yet"
    said = "supported" if verdict.get("supported") else "not supported"
    reason = cell(verdict.get("reason"))
    return f"{said}: {reason}" if reason else said
