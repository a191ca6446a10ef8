"""The "Run settings" fold every page that runs a job shows above Run: how many requests at once, and where they
run (this process, Spark with its master and partitions, or the provider's batch API with its own settings). One
widget for every page, so the choice reads and works the same on each; a page's ``config()`` passes its job
through ``RunSettingsBox.apply``.

These are ``RunSettings`` (``config.py``): how a job runs, not what it is. ``config_hash`` leaves ``run`` out, so
the same form run locally, on Spark or in batches is the same job (a cancelled local run resumes on Spark, and
back). Folded by default: most runs need none of it.

"batch (cheaper, slower)" is offered only while the page's provider has a batch API (its class names a
``batch_backend``): the box follows the page's ModelPicker, so switching to a provider without one falls back to
this process and says so. The batch fields a backend needs beyond the poll interval (Bedrock's S3 bucket, prefix
and role) are keyed by the backend, never by a provider name.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as w

from ..config import LOCAL_EXECUTOR, RunSettings

LABELS = {"description_width": "initial"}  # each label as wide as its text: never cut at 1280 px
EXECUTORS = [("this process (local)", LOCAL_EXECUTOR), ("Apache Spark", "spark")]
BATCH = ("batch (cheaper, slower)", "batch")
# the run settings a backend needs besides the poll interval (executors/batch_bedrock.py reads these three)
BACKEND_FIELDS: dict[str, tuple[str, ...]] = {
    "sdstudio.executors.batch_bedrock:BedrockBatch": ("batch_bucket", "batch_prefix", "batch_role_arn")}
BATCH_NOTE = ("<small>Requests go to the provider's batch API: about half the price, answers within 24 h. The job "
              "keeps its batch ids: closing the kernel loses nothing, and opening the job's page again resumes "
              "polling (README 'Batch APIs').</small>")


def batch_backend(provider: str | None) -> str | None:
    """The provider's batch backend ("module:Class"), None when it has none (or the name is unknown)."""
    if not provider:
        return None
    from ..errors import SdstudioError
    from ..providers import provider_class

    try:
        return getattr(provider_class(provider), "batch_backend", None) or None
    except SdstudioError:
        return None


class RunSettingsBox(w.Accordion):
    """Concurrency and executor; Spark's master and partitions show only when Spark is chosen, the batch settings
    only when batch is. ``model``: the page's ModelPicker, whose provider decides whether batch is offered;
    ``on_change``: called when the executor changes (the page redraws its estimate: batch prices differ)."""

    def __init__(self, settings: RunSettings | None = None, model: Any = None, provider: str | None = None,
                 on_change: Callable[[], Any] | None = None):
        settings = settings or RunSettings()
        self.on_change: Callable[[], Any] | None = None  # set once built: the page is still being built too
        self.applied: Any = None  # the last config passed through apply(): what the page's estimate priced
        self.concurrency = w.BoundedIntText(value=settings.concurrency, min=1, max=4096, description="Concurrency",
                                            tooltip="requests in flight at once, for the whole job", style=LABELS,
                                            layout=w.Layout(width="12em"))
        self.executor = w.Dropdown(options=EXECUTORS, value=LOCAL_EXECUTOR, description="Run on", style=LABELS,
                                   layout=w.Layout(width="auto"))
        self.master = w.Text(value=settings.spark_master or "", description="Spark master", style=LABELS,
                             placeholder="the running session, else local[2] (yarn, k8s://…)",
                             layout=w.Layout(width="30em"))
        self.partitions = w.BoundedIntText(value=settings.partitions or 0, min=0, max=100_000, style=LABELS,
                                           description="Partitions", tooltip="0: the cluster's task slots",
                                           layout=w.Layout(width="12em"))
        self.spark_fields = w.HBox([self.master, self.partitions])
        self.poll_s = w.BoundedFloatText(value=settings.batch_poll_s, min=0.01, max=86_400, style=LABELS,
                                         description="Poll every (s)", layout=w.Layout(width="14em"),
                                         tooltip="seconds between status polls at first, backing off to "
                                                 f"{settings.batch_poll_max_s:g}")
        self.bucket = w.Text(value=settings.batch_bucket or "", description="S3 bucket", style=LABELS,
                             placeholder="where the request and result files go", layout=w.Layout(width="24em"))
        self.prefix = w.Text(value=settings.batch_prefix or "", description="Prefix", style=LABELS,
                             placeholder="sdstudio-batch", layout=w.Layout(width="18em"))
        self.role_arn = w.Text(value=settings.batch_role_arn or "", description="Role ARN", style=LABELS,
                               placeholder="arn:aws:iam::ACCOUNT:role/NAME (Bedrock reads and writes as it)",
                               layout=w.Layout(width="34em"))
        self.backend_fields = {"batch_bucket": self.bucket, "batch_prefix": self.prefix,
                               "batch_role_arn": self.role_arn}
        self.batch_fields = w.VBox([self.poll_s, w.HBox([self.bucket, self.prefix]), self.role_arn])
        self.note = w.HTML()
        self.provider: str | None = None
        self._quiet = False
        self.executor.observe(self._executor_changed, "value")
        super().__init__(children=[w.VBox([w.HBox([self.concurrency, self.executor]), self.spark_fields,
                                           self.batch_fields, self.note])],
                         titles=("Run settings",), layout=w.Layout(width="100%"))
        self.selected_index = None
        if model is not None:
            self.follow(model)
        else:
            self.set_provider(provider)
        if settings.executor in [value for _, value in self.executor.options]:
            self.executor.value = settings.executor
        self._show_fields()
        self.on_change = on_change

    # -- following the page's provider -------------------------------------------------------------------
    def follow(self, picker: Any) -> None:
        """Offer batch exactly while ``picker`` (a ModelPicker) names a provider with a batch API."""
        picker.provider.observe(lambda change: self.set_provider(change["new"]), "value")
        self.set_provider(picker.provider.value)

    def set_provider(self, provider: str | None) -> None:
        """The executors ``provider`` can run on; a batch choice its new provider cannot take falls back to this
        process, with a line saying why (a job never silently runs elsewhere than shown)."""
        self.provider = provider
        options = EXECUTORS + ([BATCH] if batch_backend(provider) else [])
        if list(self.executor.options) == options:
            self._show_fields()
            return
        was = self.executor.value
        self._quiet = True  # a Dropdown given new options picks its first one: put the choice back, unseen
        try:
            self.executor.options = options
            self.executor.value = was if was in [value for _, value in options] else LOCAL_EXECUTOR
        finally:
            self._quiet = False
        self._show_fields()
        if was != self.executor.value:
            self.note.value = (f"<small>{provider} has no batch API: the job runs in this process (batch: "
                               "openai, openai_compatible servers with /v1/batches, bedrock).</small>")
            if self.on_change is not None:
                self.on_change()

    def batch_offered(self) -> bool:
        return any(value == "batch" for _, value in self.executor.options)

    # -- what shows --------------------------------------------------------------------------------------
    def _executor_changed(self, change: dict) -> None:
        if self._quiet:
            return
        self._show_fields()
        if self.on_change is not None and change.get("old") != change.get("new"):
            self.on_change()

    def _show_fields(self) -> None:
        executor = self.executor.value
        self.spark_fields.layout.display = None if executor == "spark" else "none"
        self.batch_fields.layout.display = None if executor == "batch" else "none"
        needed = BACKEND_FIELDS.get(batch_backend(self.provider) or "", ())
        for name, field in self.backend_fields.items():
            field.layout.display = None if name in needed else "none"
        if executor == "spark":
            self.note.value = ("<small>Requests run in Spark partitions, each with its share of the concurrency; "
                               "the records are the same as locally (docs/spark.md).</small>")
        elif executor == "batch":
            self.note.value = BATCH_NOTE
        else:
            self.note.value = ""

    # -- the job's run settings --------------------------------------------------------------------------
    def values(self) -> dict[str, Any]:
        """The chosen fields of ``RunSettings`` (Spark's only when Spark is chosen, batch's when batch is)."""
        values: dict[str, Any] = {"concurrency": self.concurrency.value, "executor": self.executor.value}
        if self.executor.value == "spark":
            values.update(spark_master=self.master.value.strip() or None, partitions=self.partitions.value or None)
        elif self.executor.value == "batch":
            values["batch_poll_s"] = self.poll_s.value
            for name in BACKEND_FIELDS.get(batch_backend(self.provider) or "", ()):
                values[name] = self.backend_fields[name].value.strip() or None
        return values

    def apply(self, config: Any) -> Any:
        """``config`` with its ``run`` settings as chosen here (the rest of its run settings kept)."""
        run = RunSettings.model_validate({**config.run.model_dump(), **self.values()})
        self.applied = config.model_copy(update={"run": run})
        return self.applied

    def cost_text(self, estimate: Any) -> str:
        """The page's cost estimate (``components.cost_text``), with the batch figure next to the on-demand one
        when batch is chosen: the CLI's dry run's ``est_batch_cost_usd``, for the config last applied here."""
        from ..commands.common import batch_estimate
        from .components import cost_text

        text = cost_text(estimate)
        if self.executor.value != "batch" or not getattr(estimate, "price_known", False):
            return text
        batch = batch_estimate(estimate, self.applied)
        return text if batch is None else f"{text} on demand, ${batch:.4f} through the batch API"


__all__ = ["RunSettingsBox", "batch_backend"]
