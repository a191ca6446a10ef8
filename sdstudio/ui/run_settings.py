"""The "Run settings" fold every page that runs a job shows above Run: how many requests at once, and where they
run (this process, or Spark with its master and partitions). One widget for every page, so the choice reads and
works the same on each; a page's ``config()`` passes its job through ``RunSettingsBox.apply``.

These are ``RunSettings`` (``config.py``): how a job runs, not what it is. ``config_hash`` leaves ``run`` out, so
the same form run locally and on Spark is the same job (a cancelled local run resumes on Spark, and back).
Folded by default: most runs need none of it.
"""
from __future__ import annotations

from typing import Any

import ipywidgets as w

from ..config import RunSettings

LABELS = {"description_width": "initial"}  # each label as wide as its text: never cut at 1280 px
EXECUTORS = [("this process (local)", "local"), ("Apache Spark", "spark")]


class RunSettingsBox(w.Accordion):
    """Concurrency and executor; Spark's master and partitions show only when Spark is chosen."""

    def __init__(self, settings: RunSettings | None = None):
        settings = settings or RunSettings()
        self.concurrency = w.BoundedIntText(value=settings.concurrency, min=1, max=4096, description="Concurrency",
                                            tooltip="requests in flight at once, for the whole job", style=LABELS,
                                            layout=w.Layout(width="12em"))
        self.executor = w.Dropdown(options=EXECUTORS, value=settings.executor, description="Run on", style=LABELS,
                                   layout=w.Layout(width="auto"))
        self.master = w.Text(value=settings.spark_master or "", description="Spark master", style=LABELS,
                             placeholder="the running session, else local[2] (yarn, k8s://…)",
                             layout=w.Layout(width="30em"))
        self.partitions = w.BoundedIntText(value=settings.partitions or 0, min=0, max=100_000, style=LABELS,
                                           description="Partitions", tooltip="0: the cluster's task slots",
                                           layout=w.Layout(width="12em"))
        self.spark_fields = w.HBox([self.master, self.partitions])
        self.note = w.HTML()
        self.executor.observe(lambda _: self._show_spark_fields(), "value")
        super().__init__(children=[w.VBox([w.HBox([self.concurrency, self.executor]), self.spark_fields,
                                           self.note])], titles=("Run settings",), layout=w.Layout(width="100%"))
        self.selected_index = None
        self._show_spark_fields()

    def _show_spark_fields(self) -> None:
        spark = self.executor.value == "spark"
        self.spark_fields.layout.display = None if spark else "none"
        self.note.value = ("<small>Requests run in Spark partitions, each with its share of the concurrency; "
                           "the records are the same as locally (docs/spark.md).</small>" if spark else "")

    def values(self) -> dict[str, Any]:
        """The chosen fields of ``RunSettings`` (Spark's only when Spark is chosen)."""
        values: dict[str, Any] = {"concurrency": self.concurrency.value, "executor": self.executor.value}
        if self.executor.value == "spark":
            values.update(spark_master=self.master.value.strip() or None, partitions=self.partitions.value or None)
        return values

    def apply(self, config: Any) -> Any:
        """``config`` with its ``run`` settings as chosen here (the rest of its run settings kept)."""
        run = RunSettings.model_validate({**config.run.model_dump(), **self.values()})
        return config.model_copy(update={"run": run})


__all__ = ["RunSettingsBox"]
