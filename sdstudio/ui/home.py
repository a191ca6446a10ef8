"""00_home: job history from metadata.db, which providers are configured (and a check), links onward."""
from __future__ import annotations

from pathlib import Path

import ipywidgets as w

from ..store import Store
from ..workflows import registry
from .components import escape, frame_html, message

NOTEBOOKS = tuple(registry.notebooks())


def configured_providers() -> dict[str, str]:
    """Which providers have what they need, judged from the environment alone (no network): each
    provider's own ``status()``."""
    from ..providers import statuses

    return statuses()


class HomeApp(w.VBox):
    def __init__(self, home: str | Path | None = None, notebook_dir: str | Path | None = None):
        self.store = Store.open(home)
        kinds = [(entry.title.split(" (")[0], entry.kind) for entry in registry.WORKFLOWS]
        self.kind = w.ToggleButtons(options=[("All", None), *kinds], description="Jobs")
        self.jobs = w.HTML()
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.providers = w.HTML()
        self.check_button = w.Button(description="Check local model", icon="heartbeat")
        self.check_status = w.HTML()
        here = Path(notebook_dir) if notebook_dir else None
        links = "".join(f'<li><a href="{name}" target="_self">{escape(label)}</a></li>' for name, label in NOTEBOOKS
                        if here is None or (here / name).is_file())
        self.kind.observe(lambda _: self.refresh(), "value")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.check_button.on_click(lambda _: self.check_local())
        super().__init__([w.HTML(f"<h3>Workflows</h3><ul>{links}</ul>"), w.HTML("<h3>Job history</h3>"),
                          w.HBox([self.kind, self.refresh_button]), self.jobs, w.HTML("<h3>Providers</h3>"),
                          self.providers, w.HBox([self.check_button, self.check_status])])
        self.refresh()

    def refresh(self) -> None:
        frame = self.store.jobs(kind=self.kind.value)  # every kind in one id space; interrupted runs show so
        keep = [c for c in ("id", "kind", "parent_id", "created_at", "status", "what", "model_id", "requested", "ok",
                            "failed", "filtered", "tokens_in", "tokens_out", "cost_usd", "error")
                if c in frame.columns]
        self.jobs.value = frame_html(frame[keep])
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
