"""01_generate: pick a model and a use case, edit examples / requirements / topics, see the job's cost, run
with progress and cancel (Run sits right under the form; the exact prompt folds below it), page through the
kept rows (prompt-ish columns first) and the failed and filtered ones with their reasons, save the config as
YAML for the CLI. Wiring only: the workflow is ``sdstudio.workflows.sft``."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ipywidgets as w

from ..config import GenerationJob, ModelParameters
from ..errors import SdstudioError
from ..providers import DEFAULT_PROVIDER
from ..store import Store
from ..usecases import list_use_cases, load_use_case
from .components import (FULL, escape, json_list, message, ModelPicker, PagedTable, preview_html,
                         RunControls, text_lines, uploaded_files)
from .run_settings import RunSettingsBox
from .nav import nav_bar
from .outcomes import OutcomeTabs
from .suggest import SuggestUseCaseBox


LABELS = {"description_width": "8em"}  # "Requirements", "Instruction"... read whole at 1280 px


def cell(value: Any) -> str:
    """One table cell as text: a missing value is blank (never None, nan or <NA>), structures are JSON."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def flatten(records: list[dict[str, Any]], first: Sequence[str] = ()):
    """Kept records as a table a person reads left to right: the fields named in ``first`` (the use case's
    prompt and completion fields: what was asked, what was answered), then the item's other keys in its own
    order, then its topic and row id. No cell is None / nan: rows with different keys leave blanks."""
    import pandas as pd

    rows = []
    for rec in records:
        output = rec["output"] if isinstance(rec["output"], dict) else {"output": rec["output"]}
        rows.append({**{key: cell(value) for key, value in output.items()}, "topic": cell(rec["topic"]),
                     "row id": rec["id"]})
    frame = pd.DataFrame(rows)
    if not len(frame):
        return frame
    tail = ["topic", "row id"]
    head = [c for c in first if c in frame.columns and c not in tail]
    order = head + [c for c in frame.columns if c not in head and c not in tail] + tail
    return frame[order].fillna("")


def ok_frame(records: list[dict[str, Any]]):
    """ok records as a pandas DataFrame for the next cell: topic, the item's own fields, record_id."""
    import pandas as pd

    rows = [{"topic": r["topic"], **(r["output"] if isinstance(r["output"], dict) else {"output": r["output"]}),
             "record_id": r["id"]} for r in records]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["topic", "record_id"])


def prompt_fields(use_case: str, home: str | Path | None) -> tuple[str, ...]:
    """The use case's prompt and completion fields (the columns a results table opens with)."""
    try:
        case = load_use_case(use_case, home)
    except SdstudioError:
        return ()
    return (case.prompt_field, case.completion_field)


def collapsible(title: str, child: w.Widget) -> w.Accordion:
    """A long block (a prompt, a chunk table) folded under its title, open: below the Run button, not above it."""
    box = w.Accordion(children=[child], titles=(title,), layout=FULL)
    box.selected_index = 0
    return box


def attributes_text(attributes: dict[str, Any]) -> str:
    """A use case's attributes as the Attributes box shows them: one YAML line per dimension where it fits."""
    import yaml

    if not attributes:
        return ""
    return yaml.safe_dump(attributes, sort_keys=False, allow_unicode=True, default_flow_style=None, width=1000).strip()


def attributes_value(text: str) -> dict[str, Any] | None:
    """The Attributes box as a mapping (blank: none given); not YAML, or not a mapping, is one line."""
    import yaml

    if not text.strip():
        return None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SdstudioError(f"attributes are not valid YAML ({' '.join(str(exc).split())[:160]})") from None
    if not isinstance(data, dict):
        raise SdstudioError("attributes: one `name: values` line per dimension, e.g. difficulty: [easy, hard]")
    return data


def seed_value(text: str) -> int | None:
    if not text.strip():
        return None
    try:
        return int(text.strip())
    except ValueError:
        raise SdstudioError(f"seed {text.strip()!r} is not a whole number") from None


class ShownJob:
    """What a page with a form and an outcome shares: the outcome on screen belongs to the job the form
    described when it ran; once the form describes another job, the old rows are cleared, not passed off as
    the new form's. The page sets ``_shown`` (that job's config, JSON) and ``job_id`` when it shows a run."""

    job_id: int | None
    _shown: dict[str, Any] | None = None
    store: Store
    results_table: PagedTable
    outcomes: OutcomeTabs

    def config(self) -> Any:
        raise NotImplementedError

    def check_shown(self, config: Any = ...) -> None:
        """Clear the shown outcome once the form no longer describes the job it came from (another use case,
        other topics, another model...): old rows under a new form read as the new form's results."""
        if self._shown is None:
            return
        if config is ...:
            try:
                config = self.config()
            except (SdstudioError, ValueError):
                config = None
        if config is None or config.model_dump(mode="json") != self._shown:
            self.clear_results()

    def clear_results(self) -> None:
        self.job_id, self._shown = None, None
        self.results_table.show(0)
        self.outcomes.clear()

    def show_job(self, result: Any, *folded: w.Accordion) -> None:
        """Show the run's kept rows, its failed and filtered ones, and why when none was kept; the ``folded``
        boxes (prompt preview, chunks) close so the outcome sits under Run."""
        self.job_id = result.job_id
        self.results_table.show(0)
        self.outcomes.show(kept=result.ok)
        for box in folded:
            box.selected_index = None

    def ok_records(self) -> list[dict[str, Any]]:
        """The shown job's ok records (none before a run is shown)."""
        return list(self.store.records("generation", self.job_id, "ok")) if self.job_id is not None else []

    def ok_page(self, offset: int, limit: int, frame: Any) -> tuple[Any, int]:
        """One page of the shown job's ok records as ``frame(records)`` and the total, for its ``PagedTable``."""
        if self.job_id is None:
            return None, 0
        records, total = self.store.records_page("generation", self.job_id, "ok", offset, limit)
        return frame(records), total


class GenerateApp(ShownJob, w.VBox):
    """The generate page: the form, then Run, then the (foldable) prompt preview, then what the run kept,
    failed and filtered. ``results`` hands the shown job's ok rows to the next cell."""

    def __init__(self, home: str | Path | None = None, provider: str = DEFAULT_PROVIDER, model: str | None = None,
                 base_url: str | None = None, use_case: str = "code_generation"):
        self.home = home
        self.store = Store.open(home)
        self.model = ModelPicker(provider, model, base_url, parameters=ModelParameters(max_tokens=1024))
        self.use_case = w.Dropdown(options=list_use_cases(home), value=use_case, description="Use case",
                                   style=LABELS)
        self.draft_use_case = SuggestUseCaseBox(self.model, self.use_case, home)  # folded: a use case from rows
        self.instruction = w.Text(description="Instruction", layout=FULL, style=LABELS)
        self.examples = w.Textarea(description="Examples", layout=w.Layout(width="100%", height="10em"),
                                   style=LABELS)
        self.requirements = w.Textarea(description="Requirements", layout=w.Layout(width="100%", height="6em"),
                                       style=LABELS)
        self.topics = w.Textarea(description="Topics", layout=w.Layout(width="100%", height="6em"), style=LABELS)
        self.topics_upload = w.FileUpload(accept=".json,.txt", multiple=False, description="Topics file")
        self.suggest_count = w.BoundedIntText(value=10, min=1, max=500, description="How many", style=LABELS,
                                              layout=w.Layout(width="14em"))
        self.suggest_button = w.Button(description="Suggest topics", icon="lightbulb-o", layout=w.Layout(width="auto"),
                                       tooltip="the model proposes topics (categories, then topics) for you to edit")
        self.suggest_status = w.HTML()
        self.attributes = w.Textarea(description="Attributes", layout=w.Layout(width="100%", height="6em"),
                                     style=LABELS, placeholder='one a line, drawn per request and shown to the prompt:\n'
                                     'difficulty: [easy, medium, hard]\naudience: {beginner: 2, expert: 1}\n'
                                     'persona: "@personas.txt"')
        self.seed = w.Text(description="Seed", placeholder="0", style=LABELS, layout=w.Layout(width="14em"))
        self.per_topic = w.BoundedIntText(value=5, min=1, max=100_000, description="Per topic", style=LABELS)
        self.batch_size = w.BoundedIntText(value=5, min=1, max=100, description="Per call", style=LABELS)
        self.preview = w.HTML(layout=FULL)
        self.estimate = w.HTML()
        self.run_settings = RunSettingsBox(model=self.model, on_change=self.refresh_preview)
        self.controls = RunControls()
        self.preview_box = collapsible("Prompt preview", self.preview)  # folds once a run's outcome shows
        self.results_table = PagedTable(self._fetch)
        self.outcomes = OutcomeTabs(self.store, self.results_table, lambda: self.job_id)
        self.failures = self.outcomes.failed  # the Failed (n) tab's table
        self.config_path = w.Text(value="generate.yaml", description="Save as")
        self.save_button = w.Button(description="Save config as YAML", icon="save",
                                     layout=w.Layout(width="auto"))
        self.job_id: int | None = None  # the job whose rows are on screen (None: none, or the form moved on)
        self._loaded: dict[str, str] = {}  # what the use case filled in: unedited fields stay unset in the job
        self._columns: tuple[str, ...] = ()  # the shown job's prompt and completion fields
        self._shown: dict[str, Any] | None = None  # the shown job's config, to see when the form moved on
        self._starting: tuple[dict[str, Any], tuple[str, ...]] | None = None

        self.use_case.observe(lambda _: self.load_use_case(), "value")
        for control in (self.instruction, self.examples, self.requirements, self.topics, self.per_topic,
                        self.batch_size, self.attributes, self.seed):
            control.observe(lambda _: self.refresh_preview(), "value")
        for name in ("provider", *ModelPicker.SPEC_FIELDS, "temperature", "top_p", "top_k", "max_tokens"):
            getattr(self.model, name).observe(lambda _: self.check_shown(), "value")
        self.topics_upload.observe(lambda _: self.read_topics_upload(), "value")
        self.suggest_button.on_click(lambda _: self.suggest_topics())
        self.controls.run_button.on_click(lambda _: self.run())
        self.save_button.on_click(lambda _: self.save_config())
        super().__init__([nav_bar("01_generate.ipynb"),
            w.HTML("<h3>Model</h3>"), self.model,
            w.HTML("<h3>What to generate</h3>"), self.use_case, self.draft_use_case, self.instruction, self.examples, self.requirements,
            w.HBox([self.topics, self.topics_upload]),
            w.HBox([self.suggest_button, self.suggest_count, self.suggest_status]),
            w.HBox([self.per_topic, self.batch_size]), w.HBox([self.attributes, self.seed]),
            self.estimate, self.run_settings, self.controls, self.preview_box,
            w.HTML("<h3>Outcome</h3>"), self.outcomes,
            w.HBox([self.config_path, self.save_button])])
        self.load_use_case()

    # -- the form <-> a GenerationJob ---------------------------------------------------------------
    def load_use_case(self) -> None:
        """Fill the form with the chosen use case. Topics the user typed stay (they are the user's, not the
        use case's); topics still showing the previous use case's defaults make way for the new ones."""
        try:
            case = load_use_case(self.use_case.value, self.home)
        except SdstudioError as exc:
            # a broken use case (a user's use_case.yaml): its one line where the preview goes, not a traceback
            # in the kernel's log; the form keeps what it showed, and running it would refuse with the same line
            self.estimate.value = message("error", str(exc))
            self.preview.value = ""
            self.check_shown()
            return
        typed_topics = bool(self._loaded) and self.topics.value != self._loaded.get("topics")
        self._loading = True
        self.instruction.value = case.instruction
        self.examples.value = json.dumps(case.examples, indent=2, ensure_ascii=False)
        self.requirements.value = "\n".join(case.requirements)
        if not typed_topics:
            self.topics.value = "\n".join(case.topics)
        self.attributes.value = attributes_text(case.attributes)
        self._loaded = {"instruction": self.instruction.value, "examples": self.examples.value,
                        "requirements": self.requirements.value, "topics": "\n".join(case.topics),
                        "attributes": self.attributes.value}
        self._loading = False
        self.refresh_preview()

    def config(self) -> GenerationJob:
        """The form as a GenerationJob, built as the CLI builds one (``parse_job``). A field still showing
        what the use case filled in stays unset, as on the CLI: the same job, the same hash."""
        from ..config import parse_job

        def edited(name: str, value: Any) -> Any:
            return None if getattr(self, name).value == self._loaded.get(name) else value

        return self.run_settings.apply(parse_job(GenerationJob, {
            "use_case": self.use_case.value, "instruction": edited("instruction", self.instruction.value),
            "examples": edited("examples", json_list(self.examples.value, "examples")),
            "requirements": edited("requirements", text_lines(self.requirements.value)),
            "topics": edited("topics", text_lines(self.topics.value)),
            "num_per_topic": self.per_topic.value, "batch_size": self.batch_size.value,
            "attributes": edited("attributes", attributes_value(self.attributes.value)),
            "seed": seed_value(self.seed.value),
            "model": self.model.spec().model_dump()}, "generation form", self.home))

    def suggest_topics(self) -> list[str]:
        """Ask the model for topics (a taxonomy, near-duplicates removed) and put them in the Topics box to edit."""
        from ..topics import suggest_topics

        self.suggest_status.value = escape("asking the model...")
        try:
            spec = self.model.spec()
            spec = spec.model_copy(update={"parameters": spec.parameters.model_copy(
                update={"max_tokens": max(spec.parameters.max_tokens, 2048)})})
            taxonomy = suggest_topics(self.use_case.value, self.suggest_count.value, spec, home=self.home)
        except (SdstudioError, ValueError) as exc:
            self.suggest_status.value = message("error", str(exc))
            return []
        self.topics.value = "\n".join(taxonomy.topics)
        groups = "; ".join(f"{name} ({len(topics)})" for name, topics in taxonomy.categories.items())
        self.suggest_status.value = message("ok", f"{len(taxonomy.topics)} topics in {groups}; "
                                            f"{len(taxonomy.removed)} near-duplicates removed. Edit them, then run.")
        return taxonomy.topics

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
            config = self.config()
        except (SdstudioError, ValueError) as exc:
            self.estimate.value = message("error", str(exc))
            self.preview.value = ""
            self.check_shown(None)
            return
        self.check_shown(config)
        try:
            shown = preview(config, home=self.home)
        except (SdstudioError, ValueError) as exc:
            self.estimate.value = message("error", str(exc))
            self.preview.value = ""
            return
        approx = "" if shown.exact_tokens else "~"
        cost = self.run_settings.cost_text(shown)
        self.estimate.value = escape(
            f"First prompt: {approx}{shown.prompt_tokens} tokens · job: {shown.items} items in {shown.requests} "
            f"requests · ~{shown.est_tokens_in:,} tokens in, ~{shown.est_tokens_out:,} out · {cost}")
        self.preview.value = preview_html("", shown.prompt)

    def save_config(self) -> Path | None:
        from .save_config import save_job_yaml

        return save_job_yaml(self.controls, lambda: self.config().to_yaml(), self.config_path.value,
                             Path(self.store.path).parent, "generate")

    # -- running ------------------------------------------------------------------------------------
    def run(self):
        from ..workflows.sft import GenerationRun

        def build() -> GenerationRun:
            config = self.config()
            self._starting = (config.model_dump(mode="json"), prompt_fields(config.use_case, self.home))
            return GenerationRun(config, home=self.home)

        return self.controls.run_job(build, self.show)

    def show(self, result: Any) -> None:
        """RunControls' on_result: the run's kept rows, its failed and filtered ones, and why when none was kept;
        the prompt preview folds so the outcome sits under Run."""
        self._shown, self._columns = self._starting or (None, ())
        self.show_job(result, self.preview_box)

    @property
    def results(self):
        """The shown job's ok rows as a pandas DataFrame (topic, the item's fields, record_id)."""
        return ok_frame(self.ok_records())

    def _fetch(self, offset: int, limit: int):
        return self.ok_page(offset, limit, lambda records: flatten(records, self._columns))

    def autorun(self, topics: list[str], per_topic: int = 1, timeout: float = 600) -> Any:
        """Headless run on small settings (what nbval executes with SDSTUDIO_AUTORUN=1)."""
        self.topics.value = "\n".join(topics)
        self.per_topic.value = per_topic
        self.batch_size.value = 1
        self.model.max_tokens.value = min(self.model.max_tokens.value, 256)
        self.run()
        result = self.controls.wait(timeout)
        return self.results_table.frame if result is not None else None
