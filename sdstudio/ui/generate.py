"""01_generate: pick a model and a use case, edit examples / requirements / topics, preview the exact
prompt and the job's cost, run with progress and cancel, page through results and failures, save the
config as YAML for the CLI. Wiring only: the workflow is ``sdstudio.workflows.sft``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ipywidgets as w

from ..config import GenerationJob, ModelParameters
from ..errors import SdstudioError
from ..providers import DEFAULT_PROVIDER
from ..store import Store
from ..usecases import list_use_cases, load_use_case
from .nav import nav_bar
from .components import (FULL, cost_text, escape, json_list, message, ModelPicker, PagedTable, preview_html,
                         RunControls, text_lines, uploaded_files)


def flatten(records: list[dict[str, Any]], failed: bool = False):
    """Records -> a table: topic, then the item's own keys (or the error and raw text for failures)."""
    import pandas as pd

    rows = []
    for rec in records:
        row: dict[str, Any] = {"id": rec["id"], "topic": rec["topic"], "status": rec["status"]}
        if failed or rec["status"] != "ok":
            row.update(error=rec["error"], raw_text=rec["raw_text"])
        output = rec["output"]
        if isinstance(output, dict) and not failed:
            row.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in output.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def ok_frame(records: list[dict[str, Any]]):
    """ok records as a pandas DataFrame for the next cell: topic, the item's own fields, record_id."""
    import pandas as pd

    rows = [{"topic": r["topic"], **(r["output"] if isinstance(r["output"], dict) else {"output": r["output"]}),
             "record_id": r["id"]} for r in records]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["topic", "record_id"])


class GenerateApp(w.VBox):
    def __init__(self, home: str | Path | None = None, provider: str = DEFAULT_PROVIDER, model: str | None = None,
                 base_url: str | None = None, use_case: str = "code_generation"):
        self.home = home
        self.store = Store.open(home)
        self.model = ModelPicker(provider, model, base_url, parameters=ModelParameters(max_tokens=1024))
        self.use_case = w.Dropdown(options=list_use_cases(home), value=use_case, description="Use case")
        self.instruction = w.Text(description="Instruction", layout=FULL)
        self.examples = w.Textarea(description="Examples", layout=w.Layout(width="100%", height="10em"))
        self.requirements = w.Textarea(description="Requirements", layout=w.Layout(width="100%", height="6em"))
        self.topics = w.Textarea(description="Topics", layout=w.Layout(width="100%", height="6em"))
        self.topics_upload = w.FileUpload(accept=".json,.txt", multiple=False, description="Topics file")
        self.per_topic = w.BoundedIntText(value=5, min=1, max=100_000, description="Per topic")
        self.batch_size = w.BoundedIntText(value=5, min=1, max=100, description="Per call")
        self.preview = w.HTML(layout=FULL)
        self.estimate = w.HTML()
        self.controls = RunControls()
        self.results_table = PagedTable(self._fetch("ok"))
        self.failures = PagedTable(self._fetch("failed"), page_size=10)
        self.config_path = w.Text(value="generate.yaml", description="Save as")
        self.save_button = w.Button(description="Save config as YAML", icon="save")
        self.job_id: int | None = None

        self.use_case.observe(lambda _: self.load_use_case(), "value")
        for control in (self.instruction, self.examples, self.requirements, self.topics, self.per_topic,
                        self.batch_size):
            control.observe(lambda _: self.refresh_preview(), "value")
        self.topics_upload.observe(lambda _: self.read_topics_upload(), "value")
        self.controls.run_button.on_click(lambda _: self.run())
        self.save_button.on_click(lambda _: self.save_config())
        tabs = w.Tab([self.results_table, self.failures])
        tabs.set_title(0, "Results")
        tabs.set_title(1, "Failed")
        super().__init__([nav_bar("01_generate.ipynb"),
            w.HTML("<h3>Model</h3>"), self.model,
            w.HTML("<h3>What to generate</h3>"), self.use_case, self.instruction, self.examples, self.requirements,
            w.HBox([self.topics, self.topics_upload]), w.HBox([self.per_topic, self.batch_size]),
            w.HTML("<h3>Prompt preview</h3>"), self.estimate, self.preview,
            self.controls, tabs,
            w.HBox([self.config_path, self.save_button])])
        self.load_use_case()

    # -- the form <-> a GenerationJob ---------------------------------------------------------------
    def load_use_case(self) -> None:
        try:
            case = load_use_case(self.use_case.value, self.home)
        except SdstudioError as exc:
            # a broken use case (a user's use_case.yaml): its one line where the preview goes, not a traceback
            # in the kernel's log; the form keeps what it showed, and running it would refuse with the same line
            self.estimate.value = message("error", str(exc))
            self.preview.value = ""
            return
        self._loading = True
        self.instruction.value = case.instruction
        self.examples.value = json.dumps(case.examples, indent=2, ensure_ascii=False)
        self.requirements.value = "\n".join(case.requirements)
        self.topics.value = "\n".join(case.topics)
        self._loaded = {name: getattr(self, name).value for name in ("instruction", "examples", "requirements",
                                                                      "topics")}
        self._loading = False
        self.refresh_preview()

    def config(self) -> GenerationJob:
        """The form as a GenerationJob, built as the CLI builds one (``parse_job``). A field still showing
        what the use case filled in stays unset, as on the CLI: the same job, the same hash."""
        from ..config import parse_job

        def edited(name: str, value: Any) -> Any:
            return None if getattr(self, name).value == self._loaded.get(name) else value

        return parse_job(GenerationJob, {
            "use_case": self.use_case.value, "instruction": edited("instruction", self.instruction.value),
            "examples": edited("examples", json_list(self.examples.value, "examples")),
            "requirements": edited("requirements", text_lines(self.requirements.value)),
            "topics": edited("topics", text_lines(self.topics.value)),
            "num_per_topic": self.per_topic.value, "batch_size": self.batch_size.value,
            "model": self.model.spec().model_dump()}, "generation form", self.home)

    def read_topics_upload(self) -> None:
        from ..commands.generate import read_topics
        from ..home import init_home

        for name, content in uploaded_files(self.topics_upload):
            try:  # kept in the home's uploads (a read-only home says so in one line)
                path = init_home(Path(self.store.path).parent) / "uploads" / Path(name).name
                path.write_bytes(content)
                self.topics.value = "\n".join(read_topics(str(path)))
            except SdstudioError as exc:
                self.controls.status.value = message("error", str(exc))
            except OSError as exc:
                self.controls.status.value = message("error", f"cannot keep the upload {name}: {exc.strerror or exc}")

    def refresh_preview(self) -> None:
        if getattr(self, "_loading", False):
            return
        from ..workflows.sft import preview

        try:
            shown = preview(self.config(), home=self.home)
        except (SdstudioError, ValueError) as exc:
            self.estimate.value = message("error", str(exc))
            self.preview.value = ""
            return
        approx = "" if shown.exact_tokens else "~"
        cost = cost_text(shown)
        self.estimate.value = escape(
            f"First prompt: {approx}{shown.prompt_tokens} tokens · job: {shown.items} items in {shown.requests} "
            f"requests · ~{shown.est_tokens_in:,} tokens in, ~{shown.est_tokens_out:,} out · {cost}")
        self.preview.value = preview_html("", shown.prompt)

    def save_config(self) -> Path | None:
        try:
            text = self.config().to_yaml()
        except SdstudioError as exc:
            self.controls.status.value = message("error", str(exc))
            return None
        path = Path(self.config_path.value).expanduser()
        if not path.is_absolute():
            path = Path(self.store.path).parent / path
        try:
            path.write_text(text)
        except OSError as exc:  # a read-only home, a folder that does not exist
            self.controls.status.value = message("error", f"cannot save {path}: {exc.strerror or exc}")
            return None
        self.controls.status.value = message("ok", f"saved {path} — run it with: sdstudio generate --config {path}")
        return path

    # -- running ------------------------------------------------------------------------------------
    def run(self):
        from ..workflows.sft import GenerationRun

        return self.controls.run_job(lambda: GenerationRun(self.config(), home=self.home), self.show)

    def show(self, result: Any) -> None:
        self.job_id = result.job_id
        self.results_table.show(0)
        self.failures.show(0)

    @property
    def results(self):
        """The current job's ok rows as a pandas DataFrame (topic, the item's fields, record_id)."""
        records = list(self.store.records("generation", self.job_id, "ok")) if self.job_id is not None else []
        return ok_frame(records)

    def _fetch(self, status: str):
        def fetch(offset: int, limit: int):
            if self.job_id is None:
                return None, 0
            records, total = self.store.records_page("generation", self.job_id, status, offset, limit)
            return flatten(records, failed=status == "failed"), total
        return fetch

    def autorun(self, topics: list[str], per_topic: int = 1, timeout: float = 600) -> Any:
        """Headless run on small settings (what nbval executes with SDSTUDIO_AUTORUN=1)."""
        self.topics.value = "\n".join(topics)
        self.per_topic.value = per_topic
        self.batch_size.value = 1
        self.model.max_tokens.value = min(self.model.max_tokens.value, 256)
        self.run()
        result = self.controls.wait(timeout)
        return self.results_table.frame if result is not None else None
