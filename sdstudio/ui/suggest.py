"""The generate page's "Draft a use case from example data": upload a CSV / JSONL / Parquet of rows like the ones
wanted, the model drafts the use case (instruction, requirements, output keys) with ``sdstudio suggest-prompt``'s
own function, the folder is saved in the home's templates/ (never over an existing one) and the page's Use case
dropdown selects it, so the form shows the draft to edit and run.

Why a folded section and not a page: the draft is only a starting point for the form right under it; a user
who already has a use case never needs to see it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import ipywidgets as w

from ..errors import SdstudioError
from ..usecases import list_use_cases
from .components import FULL, escape, message, ModelPicker, uploaded_files

ACCEPT = ".csv,.jsonl,.parquet"
MIN_REPLY_TOKENS = 2048  # a draft is long JSON: a form set for short answers would cut it off


def draft_html(draft: Any) -> str:
    """What the model drafted, as the user reads it before editing: the instruction, each requirement, the keys
    a generated row has (the prompt and completion fields marked), and where the folder was saved."""
    case = draft.use_case
    keys = list(case["output_schema"]["properties"])
    marks = {case["prompt_field"]: " (prompt)", case["completion_field"]: " (completion)"}
    requirements = "".join(f"<li>{escape(r)}</li>" for r in case["requirements"])
    return (f'<div class="sds-draft"><p><b>Instruction:</b> {escape(case["instruction"])}</p>'
            f"<p><b>Requirements:</b></p><ul>{requirements}</ul>"
            f"<p><b>Output keys:</b> {escape(', '.join(k + marks.get(k, '') for k in keys))}</p>"
            f"<p>Saved as use case <code>{escape(draft.name)}</code> in <code>{escape(draft.folder)}</code> "
            f"({draft.tokens_in}+{draft.tokens_out} tokens): the form below shows it; edit it, then run.</p></div>")


class SuggestUseCaseBox(w.Accordion):
    """A folded upload → "Draft use case" → the draft shown, saved, and selected in ``use_case`` (the page's
    dropdown). The model asked is the page's ``model`` picker's, its reply allowed at least 2048 tokens."""

    def __init__(self, model: ModelPicker, use_case: w.Dropdown, home: str | Path | None = None):
        self.home = home
        self.model = model
        self.use_case = use_case
        self.upload = w.FileUpload(accept=ACCEPT, multiple=False, description="Examples file")
        self.name = w.Text(description="Name", placeholder="optional: the file's name", layout=w.Layout(width="24em"))
        self.button = w.Button(description="Draft use case", icon="magic", layout=w.Layout(width="auto"),
                               tooltip="the model drafts instruction, requirements and output keys from your rows")
        self.status = w.HTML()
        self.draft = w.HTML(layout=FULL)
        self.input_file: Path | None = None  # the upload, kept in the home's uploads
        self.upload.observe(lambda _: self.keep_upload(), "value")
        self.button.on_click(lambda _: self.draft_use_case())
        body = w.VBox([w.HTML("<p>Rows like the ones you want (CSV, JSONL or Parquet): their column statistics and "
                              "a few rows go to the model, which drafts a use case saved in your templates.</p>"),
                       w.HBox([self.upload, self.name, self.button]), self.status, self.draft])
        super().__init__(children=[body], titles=("Draft a use case from example data",), layout=FULL)
        self.selected_index = None  # folded: most users pick a use case

    def keep_upload(self) -> Path | None:
        """Keep the uploaded file in the home's uploads (as every page does), so the CLI can be given it too."""
        from ..datasets import save_upload

        for name, content in uploaded_files(self.upload):
            try:
                self.input_file = save_upload(content, name, self.home)
            except SdstudioError as exc:
                self.status.value = message("error", str(exc))
            except OSError as exc:  # a read-only home
                self.status.value = message("error", f"cannot keep the upload {name}: {exc.strerror or exc}")
            else:
                self.status.value = message("info", f"{self.input_file.name} kept in {self.input_file.parent}")
        return self.input_file

    def draft_use_case(self) -> Any:
        """Ask the model (``suggest_prompt.suggest_use_case``, as the CLI), save the folder, select it; the Draft,
        or None with the reason in one line."""
        from ..suggest_prompt import suggest_use_case

        if self.input_file is None:
            self.status.value = message("error", "upload a CSV, JSONL or Parquet file of example rows first")
            return None
        self.status.value = escape("asking the model...")
        self.draft.value = ""
        try:
            spec = self.model.spec()
            spec = spec.model_copy(update={"parameters": spec.parameters.model_copy(
                update={"max_tokens": max(spec.parameters.max_tokens, MIN_REPLY_TOKENS)})})
            draft = suggest_use_case(self.input_file, spec, home=self.home, name=self.name.value.strip() or None)
        except (SdstudioError, ValueError) as exc:
            self.status.value = message("error", " ".join(str(exc).split()))
            return None
        except OSError as exc:  # the templates folder is not writable
            self.status.value = message("error", f"cannot save the use case: {exc.strerror or exc}")
            return None
        self.draft.value = draft_html(draft)
        self.use_case.options = list_use_cases(self.home)
        self.use_case.value = draft.name  # the form loads it: the user edits and runs it there
        self.status.value = message("ok", f"drafted use case {draft.name}")
        return draft
