"""Widgets every notebook shares: the model picker, the progress panel, the paged table.

Controls are public attributes so tests (and power users) can set values and ``.click()`` buttons
without a browser. Model text is always HTML-escaped before it reaches the page: a generated row that
contains ``<script>`` is shown, never run.
"""
from __future__ import annotations

import html
import math
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from ..config import ModelParameters, ModelSpec
from ..providers import DEFAULT_PROVIDER, describe, provider_names

FULL = w.Layout(width="100%")


def escape(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def message(kind: str, text: str) -> str:
    """A one-line status message as HTML (kind: ok | warning | error | info)."""
    colour = {"ok": "#1a7f37", "warning": "#9a6700", "error": "#cf222e"}.get(kind, "#57606a")
    return f'<span class="sds-{kind}" style="color:{colour}">{escape(text)}</span>'


def outcome_kind(result: Any) -> str:
    """How a finished run went, the one judgement the bar's colour and the status line both show: ok only for a
    job done that kept rows and lost none; error for a job that failed (a run that raised never gets here: it is
    an error too); warning for the rest: cancelled, nothing kept (the pages then say why), some items failed."""
    if result.status == "failed":
        return "error"
    if result.status == "cancelled" or not result.ok or result.failed:
        return "warning"
    return "ok"


def outcome_message(result: Any) -> str:
    """What a finished run means, in words: a run that sent nothing says the job was already done (and how to
    get a new one), a run that saved nothing says where the reasons are and what usually helps."""
    job, kind = f"job {result.job_id}", outcome_kind(result)
    if result.status == "cancelled":
        return message(kind, f"{job} cancelled: {result.ok} row{plural(result.ok)} saved; items not answered yet "
                             "stay unsent: Run again resumes it")
    if result.resumed and not result.requests_sent:
        return message(kind, f"{job} was already done: {result.ok} rows saved, nothing sent again. Change a "
                             "setting (topics, prompt, model...) to make a new job, or open the job page")
    if not result.ok:
        return message(kind, f"{job} {result.status} but saved no rows ({result.failed} failed, {result.filtered} "
                             "filtered): the job page lists each reason. Raising max_tokens, a stronger model or "
                             "fewer items per call usually helps")
    if result.failed:
        return message(kind, f"{job} {result.status}: {result.ok} row{plural(result.ok)} saved, {result.failed} "
                             "failed (their reasons are under Failed); Run again retries them")
    return message(kind, f"{job} {result.status}")


def plural(count: int) -> str:
    return "" if count == 1 else "s"


def _blank_missing(column: Any) -> Any:
    """A column with None, NaN, pandas NA and NaT cells as empty strings: a table shows a blank, never "None"."""
    missing = column.isna()
    return column.astype(object).where(~missing, "") if missing.any() else column


def frame_html(frame, max_chars: int = 400) -> str:
    """A DataFrame as an escaped HTML table, long cells cut so a page stays light."""
    if frame is None or len(frame) == 0:
        return '<p class="sds-empty"><i>nothing yet</i></p>'
    shown = frame.copy()
    for column in shown.columns:
        shown[column] = _blank_missing(shown[column])
        if shown[column].dtype == object:
            shown[column] = shown[column].map(lambda v: v if not isinstance(v, str) or len(v) <= max_chars
                                              else v[:max_chars] + "…")
    return shown.to_html(index=False, escape=True, classes="sds-table", border=0, na_rep="", justify="left")


def _masked_url(url: str | None) -> str | None:
    """A base URL as the field shows it: credentials masked, kept in this kernel's memory (``urlsecrets``), so a
    URL passed from a notebook's parameters cell never reaches the page or the saved widget state."""
    from ..urlsecrets import protect

    try:
        return protect(url)
    except ValueError:  # malformed: spec() reports it in one line, without echoing it
        return url


class ModelPicker(w.VBox):
    """Provider, model (listed by the provider), endpoint, and the sampling parameters.

    Which of the ModelSpec fields (model, base_url, region, api_key_env) show is what the chosen
    provider declares in ``ui_fields``; a hidden field keeps its value and still goes into ``spec()``."""

    SPEC_FIELDS = ("model", "base_url", "region", "api_key_env")

    def __init__(self, provider: str = DEFAULT_PROVIDER, model: str | None = None, base_url: str | None = None,
                 region: str | None = None, parameters: ModelParameters | None = None,
                 api_key_env: str | None = None):
        params = parameters or ModelParameters()
        self.provider = w.Dropdown(options=provider_names(), value=provider, description="Provider")
        self.model = w.Combobox(value=model or "", placeholder="model id", description="Model",
                                ensure_option=False)
        self.base_url = w.Text(value=_masked_url(base_url) or "", placeholder="http://host:port/v1",
                               description="Base URL")
        self.region = w.Text(value=region or "", placeholder="us-east-1", description="Region")
        self.api_key_env = w.Text(value=api_key_env or "", description="Key env var")
        self.temperature = w.FloatSlider(value=params.temperature or 0.0, min=0, max=2, step=0.05,
                                         description="temperature")
        self.top_p = w.FloatSlider(value=params.top_p or 1.0, min=0.05, max=1, step=0.05, description="top_p")
        self.top_k = w.IntSlider(value=params.top_k or 0, min=0, max=200, description="top_k (0=off)")
        self.max_tokens = w.IntSlider(value=params.max_tokens, min=16, max=8192, step=16, description="max_tokens")
        self.refresh = w.Button(description="List models", icon="refresh")
        self.status = w.HTML()
        self.refresh.on_click(lambda _: self.list_models())
        self._model_of: dict[str, str] = {}  # provider -> the model id typed for it: each keeps its own
        self.provider.observe(self._switch_provider, "value")
        super().__init__([w.HBox([self.provider, self.model, self.refresh]),
                          w.HBox([self.base_url, self.region, self.api_key_env]),
                          w.HBox([self.temperature, self.top_p]), w.HBox([self.top_k, self.max_tokens]),
                          self.status])
        self._show_fields()

    def _switch_provider(self, change: dict) -> None:
        """A model id belongs to its provider: switching keeps the old one for that provider and shows the new
        provider's own (blank: its default), so a job never runs one provider under another's model id."""
        self._model_of[change["old"]] = self.model.value
        self.model.options = ()
        self.model.value = self._model_of.get(change["new"], "")
        self._show_fields()

    def _show_fields(self) -> None:
        info = describe(self.provider.value)
        for name in self.SPEC_FIELDS:
            getattr(self, name).layout.display = None if name in info.ui_fields else "none"
        self.api_key_env.placeholder = info.key_env or "NAME of the variable holding the key"

    def shown_fields(self) -> tuple[str, ...]:
        """The ModelSpec fields on screen for the chosen provider."""
        return tuple(name for name in self.SPEC_FIELDS if getattr(self, name).layout.display != "none")

    def spec(self) -> ModelSpec:
        params = ModelParameters(temperature=self.temperature.value,
                                 top_p=None if self.top_p.value >= 1 else self.top_p.value,
                                 top_k=self.top_k.value or None, max_tokens=self.max_tokens.value)
        spec = ModelSpec(provider=self.provider.value, model=self.model.value.strip() or None,
                         base_url=self.base_url.value.strip() or None, region=self.region.value.strip() or None,
                         api_key_env=self.api_key_env.value.strip() or None, parameters=params)
        if spec.base_url and spec.base_url != self.base_url.value.strip():
            # the field now shows what is stored (user:password and query values masked): the credentials stay
            # in this kernel's memory, not in the page or in the notebook's saved widget state
            self.base_url.value = spec.base_url
        return spec

    def list_models(self) -> list[str]:
        """Ask the provider for its models (also a health check: errors say what is wrong)."""
        from pydantic import ValidationError

        from ..errors import SdstudioError
        from ..providers import list_models

        try:
            models = list_models(self.spec())
        except ValidationError as exc:  # e.g. a key typed where its variable's NAME belongs: never echo the input
            self.status.value = message("error", "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_input=False)))
            return []
        except SdstudioError as exc:
            self.status.value = message("error", str(exc))
            return []
        self.model.options = tuple(models)
        if not self.model.value and models:
            self.model.value = models[0]
        self.status.value = message("ok", f"{len(models)} model(s)")
        return models


BAR_STYLES = {"ok": "success", "warning": "warning", "error": "danger"}
LIVE_INTERVAL_S = 0.25  # the in-flight line redraws at most this often: a few updates a second, not one per token
LIVE_CHARS = 600  # the tail of the text being written that the page shows


class ProgressPanel(w.VBox):
    """Done / failed / in flight / tokens / cost / ETA, fed by the engine's progress callback; and, while requests
    are in flight, a line that ticks (how long the oldest has been waiting, for which item) with the text the
    embedded model is writing for it (``watch`` a ``live.LiveActivity``)."""

    def __init__(self) -> None:
        self.bar = w.IntProgress(value=0, min=0, max=1, description="", layout=FULL)
        self.label = w.HTML(value="")
        self.live = w.HTML(value="", layout=FULL)
        self.last: Any = None
        self.activity: Any = None
        self._drawn = 0.0
        super().__init__([self.bar, self.label, self.live])

    def watch(self, activity: Any) -> None:
        """Show ``activity``'s requests in flight with each progress update (the engine sends one every 0.2 s
        while a request is in flight, so the line ticks even when nothing finishes)."""
        self.activity, self._drawn = activity, 0.0
        self.bar.bar_style = ""

    def update(self, progress: Any) -> None:
        self.last = progress
        self.bar.max = max(progress.total, 1)
        self.bar.value = min(progress.done, self.bar.max)
        eta = "" if progress.eta_s is None else f" · ETA {progress.eta_s:,.0f}s"
        self.label.value = escape(
            f"{progress.done}/{progress.total} done · {progress.failed} failed · {progress.in_flight} in flight · "
            f"{progress.attempts:,} attempts · {progress.tokens_in + progress.tokens_out:,} tokens · "
            f"${progress.cost_usd:.4f}{eta}")
        self.show_live()

    def show_live(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.activity is None or (not force and now - self._drawn < LIVE_INTERVAL_S):
            return
        self._drawn = now
        flights = self.activity.in_flight()
        self.live.value = live_html(flights, now) if flights else ""

    def finish(self, text: str, kind: str = "ok") -> None:
        self.activity = None
        self.live.value = ""
        self.bar.bar_style = BAR_STYLES.get(kind, "")
        self.label.value = message(kind, text)


def live_html(flights: list[Any], now: float) -> str:
    """The oldest request in flight (how long, which item, how many others) and the end of what it wrote so far."""
    oldest = flights[0]
    seconds = int(oldest.elapsed_s(now))
    waited = f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
    others = f" · {len(flights) - 1} more in flight" if len(flights) > 1 else ""
    head = f'<div class="sds-live">⏳ {escape(waited)} on {escape(oldest.label)}{escape(others)}</div>'
    if not oldest.text:
        return head
    tail = oldest.text if len(oldest.text) <= LIVE_CHARS else "…" + oldest.text[-LIVE_CHARS:]
    return (head + '<pre class="sds-live-text" style="white-space:pre-wrap;max-height:8em;overflow:auto;'
            f'margin:2px 0">{escape(tail)}</pre>')


class PagedTable(w.VBox):
    """One page of a large result at a time: ``fetch(offset, limit) -> (DataFrame, total)`` is called per
    page, so a 100k-row job never lands in the browser (or in memory) at once."""

    def __init__(self, fetch: Callable[[int, int], tuple[Any, int]] | None = None, page_size: int = 20):
        self.fetch = fetch
        self.page_size = page_size
        self.page = 0
        self.total = 0
        self.frame: Any = None
        self.prev = w.Button(description="◀", layout=w.Layout(width="3em"))
        self.next = w.Button(description="▶", layout=w.Layout(width="3em"))
        self.info = w.HTML()
        self.table = w.HTML(layout=FULL)
        self.prev.on_click(lambda _: self.show(self.page - 1))
        self.next.on_click(lambda _: self.show(self.page + 1))
        super().__init__([w.HBox([self.prev, self.info, self.next]), self.table])

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.page_size))

    def show(self, page: int = 0) -> None:
        if self.fetch is None:
            return
        self.page = min(max(page, 0), self.pages - 1)
        self.frame, self.total = self.fetch(self.page * self.page_size, self.page_size)
        self.page = min(self.page, self.pages - 1)
        self.table.value = frame_html(self.frame)
        self.info.value = escape(f" page {self.page + 1} of {self.pages} ({self.total:,} row{plural(self.total)}) ")
        self.prev.disabled = self.page == 0
        self.next.disabled = self.page >= self.pages - 1


def cost_text(estimate: Any) -> str:
    """A preview's cost estimate, or why there is none."""
    return f"${estimate.est_cost_usd:.4f}" if estimate.price_known else "unknown cost (no price for this model)"


def preview_html(summary: str, prompt: str) -> str:
    """A one-line estimate over the exact prompt, both escaped (prompts hold user and model text)."""
    return f'{escape(summary)}<pre class="sds-prompt" style="white-space:pre-wrap">{escape(prompt)}</pre>'


def json_list(value: str, what: str) -> list[Any]:
    """A textarea holding a JSON list (one object alone counts as a list of one); bad JSON is one line."""
    import json

    from ..errors import SdstudioError

    try:
        data = json.loads(value or "[]")
    except json.JSONDecodeError as exc:
        raise SdstudioError(f"{what} are not valid JSON (line {exc.lineno}: {exc.msg})") from None
    return data if isinstance(data, list) else [data]


def text_lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


def uploaded_files(upload: w.FileUpload) -> list[tuple[str, bytes]]:
    """(name, content) of each file in an ipywidgets 8 FileUpload."""
    return [(item["name"], bytes(item["content"])) for item in upload.value]


class RunControls(w.VBox):
    """Run / Cancel, the progress panel and a status line around one background job at a time.

    ``start(job, on_result)`` runs ``job(handle)`` with the engine's background ``submit`` so the page
    stays live; ``on_result(result)`` runs when it ends (on the worker thread; widget updates are safe).
    """

    def __init__(self, label: str = "Run"):
        from ..runner import RunHandle

        self.run_button = w.Button(description=label, button_style="primary", icon="play")
        self.cancel_button = w.Button(description="Cancel", icon="stop", disabled=True)
        self.progress = ProgressPanel()
        self.status = w.HTML()
        self.next_steps = w.HTML()  # links onward (job page, evaluate, review, export) once a run finished
        self.handle: RunHandle | None = None
        self.cancel_button.on_click(lambda _: self.cancel())
        super().__init__([w.HBox([self.run_button, self.cancel_button]), self.progress, self.status,
                          self.next_steps])

    def error(self, text: str) -> None:
        self.status.value = message("error", text)

    def start(self, job: Callable[[Any], Any], on_result: Callable[[Any], None]):
        from ..runner import RunHandle, submit

        def done(handle) -> None:
            self.run_button.disabled, self.cancel_button.disabled = False, True
            if handle.error is not None:
                self.progress.finish(f"failed: {handle.error}", "error")
                self.error(str(handle.error))
                return
            result = handle.result()
            self.progress.finish(f"job {result.job_id} {result.status}: {result.ok} ok, {result.failed} failed, "
                                 f"{result.filtered} filtered · {result.requests_sent} requests, {result.attempts} "
                                 f"attempts · ${result.cost_usd:.4f} · {result.elapsed_s:.1f}s", outcome_kind(result))
            self.status.value = outcome_message(result)
            from .nav import next_steps_html

            self.next_steps.value = next_steps_html(result.job_id, getattr(result, "kind", ""))
            on_result(result)

        self.run_button.disabled, self.cancel_button.disabled = True, False
        self.status.value = message("info", "running…")
        self.next_steps.value = ""
        handle = RunHandle()  # watched before it starts: a run that ends at once still ends with its colour
        self.progress.watch(handle.live)
        handle.add_listener(self.progress.update)
        self.handle = submit(lambda handle: job(handle), on_done=done, handle=handle)
        return self.handle

    def run_job(self, build: Callable[[], Any], on_result: Callable[[Any], None]):
        """Build a workflow run (``.run(on_progress=, cancel_event=)``) from the form and start it; a
        form or config problem shows as one line instead of starting anything."""
        from ..errors import SdstudioError

        try:
            job = build()
        except SdstudioError as exc:
            self.error(str(exc))
            return None
        return self.start(lambda handle: job.run(on_progress=handle.report, cancel_event=handle.cancel_event),
                          on_result)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.status.value = message("info", "cancelling: nothing new is sent; replies already arriving are kept, "
                                                "the rest stay unsent for Run again; saved rows stay")

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the run and its result display are finished (tests, headless notebooks)."""
        if self.handle is None:
            return None
        result = self.handle.result(timeout)
        self.handle.thread.join(timeout)  # on_done (the result tables) runs after the result is set
        return result
