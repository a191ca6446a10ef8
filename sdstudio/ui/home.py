"""00_home: the navigation bar, job history from metadata.db (each job linking to its page; alignment's stage jobs
show on its page only), which providers are configured (and a check)."""
from __future__ import annotations

from pathlib import Path

import ipywidgets as w

from ..store import Store
from ..workflows import registry
from .components import escape, message
from .nav import HOME_NOTEBOOK, SHORT, nav_bar

NOTEBOOKS = tuple(registry.notebooks())


def configured_providers() -> dict[str, str]:
    """Which providers have what they need, judged from the environment alone (no network): each
    provider's own ``status()``."""
    from ..providers import statuses

    return statuses()


class HomeApp(w.VBox):
    def __init__(self, home: str | Path | None = None, notebook_dir: str | Path | None = None):
        self.store = Store.open(home)
        # the same short names as the navigation bar, each button as wide as its name (never "Custom workflows …")
        kinds = [(SHORT.get(entry.kind, entry.title.split(" ")[0]), entry.kind) for entry in registry.WORKFLOWS]
        self.kind = w.ToggleButtons(options=[("All", None), *kinds], description="Jobs",
                                    style={"button_width": "auto", "description_width": "initial"})
        self.jobs = w.HTML()
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.providers = w.HTML()
        self.check_button = w.Button(description="Check local model", icon="heartbeat")
        self.check_status = w.HTML()
        self.kind.observe(lambda _: self.refresh(), "value")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.check_button.on_click(lambda _: self.check_local())
        # the bar is the list of workflows (each page once, as on every page); notebook_dir is kept for callers
        super().__init__([nav_bar(HOME_NOTEBOOK), w.HTML("<h3>Job history</h3>"),
                          w.HBox([self.kind, self.refresh_button]), self.jobs, w.HTML("<h3>Providers</h3>"),
                          self.providers, w.HBox([self.check_button, self.check_status])])
        self.refresh()

    def refresh(self) -> None:
        from .job import jobs_table, top_level_jobs

        # every kind in one id space (interrupted runs show so); alignment's stage jobs show on its job page
        frame = top_level_jobs(self.store.jobs())
        if self.kind.value is not None:
            frame = frame[frame["kind"] == self.kind.value]
        self.frame = frame
        self.jobs.value = jobs_table(frame)
        rows = "".join(f"<tr><td>{escape(name)}</td><td>{'✔' if why else '—'}</td><td>{escape(why)}</td></tr>"
                       for name, why in configured_providers().items())
        self.providers.value = f'<table class="sds-providers">{rows}</table>'

    def check_local(self) -> str:
        """Load the embedded model and ask it for its health (seconds on a laptop, no network)."""
        from ..config import ModelSpec
        from ..errors import SdstudioError
        from ..providers import DEFAULT_PROVIDER, get_provider, run_sync

        try:
            result = run_sync(get_provider(ModelSpec(provider=DEFAULT_PROVIDER)).check())
        except SdstudioError as exc:
            self.check_status.value = message("error", str(exc))
            return str(exc)
        self.check_status.value = message("ok" if result.ok else "error", result.message)
        return result.message
