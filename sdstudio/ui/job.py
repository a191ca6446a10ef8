"""08_job: one job's page (``08_job.ipynb?job=ID``): what it is and how it went, its config, its rows (ok /
failed / filtered with their reasons) with search, filter and sort, a generation job's diversity report
(ui/diversity.py), its stage jobs, evaluations and exports, its timeline, and what to do next — Resume for a job
that stopped (interrupted, cancelled, failed), run from its stored config on a background thread with the same
progress as every page. A batch job shows its provider batches (ui/batches.py); opened while batches it
submitted still wait and no live process runs it, the page resumes it at once, so the kernel that submitted them
may have been closed for days. Without an id it lists the jobs to open."""
from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import ipywidgets as w

from ..errors import SdstudioError
from ..store import Store
from .batches import BatchesSection, resumes_on_open
from .diversity import section_html as diversity_section
from .components import PagedTable, RunControls, escape, message
from .nav import JOB_NOTEBOOK, job_link, link, nav_bar, next_steps
from .timeline import job_ids

STATUS_COLOURS = {"done": "#1a7f37", "running": "#0969da", "queued": "#57606a", "interrupted": "#9a6700",
                  "failed": "#cf222e", "cancelled": "#9a6700"}
STAGE_PARENTS = ("alignment", "evolve")  # kinds whose child jobs are internal stages, shown only under their parent
SORTS = {"oldest first": ("id", True), "newest first": ("id", False), "status": ("status", True),
         "topic": ("topic", True)}
POLLING_NOTE = ("<p>This job's batches are waiting at the provider: this page polls them in the background and "
                "writes their answers as they come. Closing the kernel loses nothing: opening this page again "
                "(or <code>sdstudio KIND --resume ID</code>) polls on.</p>")
DOWNLOAD_LIMIT = 5_000_000  # characters of JSONL put inline in the page; larger jobs: `sdstudio export`


def badge(status: Any) -> str:
    colour = STATUS_COLOURS.get(str(status), "#57606a")
    return (f'<span class="sds-badge sds-status-{escape(status)}" style="background:{colour};color:#fff;'
            f'border-radius:10px;padding:1px 8px;font-size:90%">{escape(status)}</span>')


def blank(value: Any) -> Any:
    """None, NaN and <NA> as an empty cell."""
    try:
        import pandas as pd

        return "" if value is None or (not isinstance(value, (list, dict)) and pd.isna(value)) else value
    except (TypeError, ValueError):
        return value


def compact(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def top_level_jobs(frame: Any) -> Any:
    """Jobs without internal stage jobs (children of an alignment job): what pickers and lists show."""
    kinds = dict(zip(frame["id"], frame["kind"]))
    return _where(frame, "parent_id", lambda p: not (blank(p) != "" and kinds.get(int(p)) in STAGE_PARENTS))


def _where(frame: Any, column: str, keep: Any) -> Any:
    """Rows whose ``column`` passes ``keep`` (an empty frame stays a frame with its columns)."""
    return frame.loc[[bool(keep(v)) for v in frame[column]]]


class JobApp(w.VBox):
    def __init__(self, store: Store | None = None, job_id: int | None = None, home: str | Path | None = None,
                 page_size: int = 20):
        self.store = store if store is not None else Store.open(home)
        self.job_id = job_id
        self.job: dict[str, Any] = {}
        self.header = w.HTML()
        self.actions = w.HTML()
        self.config_view = w.HTML()
        self.status_filter = w.ToggleButtons(options=[("All", None), ("ok", "ok"), ("failed", "failed"),
                                                      ("filtered", "filtered")], description="Rows")
        self.search = w.Text(placeholder="search text", description="Search", continuous_update=False)
        self.sort = w.Dropdown(options=list(SORTS), value="oldest first", description="Sort")
        self.rows = PagedTable(self._fetch_rows, page_size=page_size)
        self.related = w.HTML()
        self.timeline = w.HTML()
        self.diversity = w.HTML()
        self.resume_note = w.HTML()
        self.resume_controls = RunControls("Resume")
        self.resume_controls.run_button.on_click(lambda _: self.resume())
        self.resume_box = w.VBox([self.resume_note, self.resume_controls], layout=w.Layout(display="none"))
        self.polling = False  # this page resumed the job on opening to poll its batches
        self.batches = BatchesSection(self.store, job_id if job_id is not None else 0, running=self.own_run)
        self.error = w.HTML()
        for control in (self.status_filter, self.search, self.sort):
            control.observe(lambda _: self.rows.show(0), "value")
        body: list[w.Widget] = [nav_bar(JOB_NOTEBOOK), self.error]
        if job_id is None:
            body += [w.HTML("<h3>Jobs</h3>"), self.related]
            super().__init__(body)
            self.related.value = self.job_list()
            return
        body += [self.header, self.actions, self.resume_box, self.batches, w.HTML("<h3>Rows</h3>"),
                 w.HBox([self.status_filter, self.search, self.sort]), self.rows, self.diversity, self.related,
                 w.HTML("<h3>Timeline</h3>"), self.timeline, w.HTML("<h3>Config</h3>"), self.config_view]
        super().__init__(body)
        self.refresh()
        self.resume_waiting()

    # -- what the page shows ---------------------------------------------------------------------------
    def job_list(self) -> str:
        frame = top_level_jobs(self.store.jobs())
        return self._jobs_table(frame)

    def refresh(self) -> None:
        try:
            family = self.store.job_family(self.job_id)
            common = self.store.get_job(None, self.job_id)  # notes and lease columns live on jobs alone
            self.job = {**common, **self.store.get_job(family, self.job_id), "family": family,
                        "notes": common.get("notes")}
        except SdstudioError as exc:
            self.error.value = message("error", str(exc))
            self.job = {}
            return
        self.header.value = self.header_html()
        self.actions.value = self.actions_html()
        self.config_view.value = self.config_html()
        self.related.value = self.related_html()
        self.timeline.value = self.timeline_html()
        self.diversity.value = diversity_section(self.store, self.job_id)  # generation jobs only
        self.batches.show()
        self.show_resume()
        self.rows.show(0)

    # -- resume ----------------------------------------------------------------------------------------
    def show_resume(self) -> None:
        """Resume shows for a job that stopped before it finished; a stage job points at its parent."""
        from ..resume import RESUMABLE, stage_of

        handle = self.resume_controls.handle
        running = handle is not None and not handle.done()
        stopped = self.job.get("status") in RESUMABLE
        # a resume this page ran stays on screen with its outcome once the job is done
        self.resume_box.layout.display = None if stopped or handle is not None else "none"
        stage = stage_of(self.store, self.job) if stopped else None  # (parent id, alignment | evolve)
        self.resume_controls.run_button.disabled = running or not stopped or stage is not None
        if stage is not None:
            self.resume_note.value = (f"<p>This is a stage of {escape(stage[1])} job {job_link(stage[0])}: resume "
                                      "that job and it continues this stage.</p>")
        elif running and self.polling:
            self.resume_note.value = POLLING_NOTE
        elif stopped:
            self.resume_note.value = (f"<p>This job is {escape(self.job.get('status'))}. Resume continues it from "
                                      "its stored config: saved rows are kept and not asked for again.</p>")
        else:
            self.resume_note.value = ""

    def own_run(self) -> Any:
        """This page's run of the job while it is live (None otherwise)."""
        handle = self.resume_controls.handle
        return handle if handle is not None and not handle.done() else None

    def resume_waiting(self) -> Any:
        """Opened on a job whose submitted batches still wait and that no live process runs: continue it in the
        background so they are polled (ui/batches.py says why); its run handle, or None."""
        if not self.job or not resumes_on_open(self.store, {**self.job, "id": int(self.job_id)}):
            return None
        self.polling = True
        handle = self.resume()
        if handle is None:
            self.polling = False
            return None
        self.resume_box.layout.display = None
        self.resume_note.value = POLLING_NOTE
        return handle

    def resume(self) -> Any:
        """Continue this job in the background (``sdstudio.resume``); the page refreshes when it ends."""
        from ..resume import stored_run

        try:
            run = stored_run(int(self.job_id), store=self.store)
        except SdstudioError as exc:
            self.resume_controls.error(str(exc))
            return None
        job_id = int(self.job_id)
        handle = self.resume_controls.start(
            lambda handle: run.run(resume=job_id, on_progress=handle.report, cancel_event=handle.cancel_event),
            lambda _result: self.refresh())
        self.batches.watch(handle)  # the batches' states redraw as the run polls them
        return handle

    def timeline_html(self) -> str:
        from .timeline import timeline_events, timeline_html

        return timeline_html(timeline_events(self.store, {**self.job, "id": int(self.job_id)}))

    def header_html(self) -> str:
        job = self.job
        model = job.get("model_id") or job.get("repo_id") or job.get("path")
        notes = job.get("notes") or []
        notes = notes if isinstance(notes, list) else [notes]
        facts = [("Model", model), ("Created", job.get("created_at")), ("Started", job.get("started_at")),
                 ("Finished", job.get("finished_at")), ("Requested", job.get("requested")),
                 ("Rows", (f"{job.get('ok') or 0} ok · {job.get('failed') or 0} failed · "
                           f"{job.get('filtered') or 0} filtered")),
                 ("Requests / attempts", f"{job.get('requests') or 0} / {job.get('attempts') or 0}"),
                 ("Tokens", f"{job.get('tokens_in') or 0:,} in · {job.get('tokens_out') or 0:,} out"),
                 ("Cost", f"${float(job.get('cost_usd') or 0):.4f}")]
        facts = [(k, v) for k, v in facts if blank(v) != ""]  # a job not started yet has no times to show
        if job.get("parent_id"):
            facts.insert(0, ("Part of", None))
        rows = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{escape(k)}</th><td>"
                       f"{job_link(job['parent_id']) if k == 'Part of' else escape(blank(v))}</td></tr>"
                       for k, v in facts)
        what = " · ".join(escape(v) for v in (job.get("technique"), job.get("use_case")) if blank(v) != "")
        error = f"<p>{message('error', job['error'])}</p>" if job.get("error") else ""
        note_list = "".join(f"<li>{escape(n)}</li>" for n in notes)
        return (f"<h2>Job #{int(self.job_id)} · {escape(job.get('kind'))} {badge(job.get('status'))}</h2>"
                f"<p>{what}</p>{error}<table class='sds-job-facts'>{rows}</table>"
                + (f"<h4>Notes</h4><ul class='sds-notes'>{note_list}</ul>" if note_list else ""))

    def actions_html(self) -> str:
        steps = [(label, href) for label, href in next_steps(self.job_id, self.job.get("kind", "")) if "?job=" in href
                 and not href.startswith(JOB_NOTEBOOK)]
        if self.job.get("kind") not in ("evaluation", "export"):
            from .nav import review_href

            href = review_href()
            steps.append(("Review", f"{href}{'&' if '?' in href else '?'}job={int(self.job_id)}"))
        items = "".join(link(label, href, class_="sds-action") for label, href in steps)
        return f'<div class="sds-actions"><b>Actions:</b> {items}{self.download_html()}</div>'

    def download_html(self) -> str:
        text = self.jsonl()
        if not text:
            return ""
        if len(text) > DOWNLOAD_LIMIT:
            return message("info", f" rows too large to download here; `sdstudio export --job {self.job_id}`")
        data = base64.b64encode(text.encode()).decode()
        return link("Download rows (JSONL)", f"data:application/x-ndjson;base64,{data}",
                    download=f"job-{int(self.job_id)}.jsonl", class_="sds-download")

    def jsonl(self) -> str:
        rows = self.store.records(self.job["family"], self.job_id)
        return "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)

    def config_html(self) -> str:
        import yaml

        from ..commands.jobs import masked

        config = masked(self.job.get("config"), "config")
        if isinstance(config, str):
            try:
                config = json.loads(config)
            except ValueError:
                pass
        if not config:
            return '<p class="sds-empty"><i>no config stored</i></p>'
        text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
        return f'<pre class="sds-config" style="white-space:pre-wrap">{escape(text)}</pre>'

    def related_html(self) -> str:
        all_jobs = self.store.jobs()
        children = _where(all_jobs, "parent_id", lambda p: blank(p) != "" and int(p) == int(self.job_id))
        evaluations = _where(self.store.jobs("evaluation"), "source_generation_id",
                             lambda s: blank(s) != "" and int(s) == int(self.job_id))
        evaluation_ids = set(evaluations["id"]) | set(children[children["kind"] == "evaluation"]["id"])
        stages = children[~children["id"].isin(evaluation_ids)]
        exports = self.store.jobs("export")
        exports = _where(exports, "source_job_ids", lambda s: int(self.job_id) in job_ids(s))
        parts = []
        if len(stages):
            parts.append(f"<h3>Stage jobs</h3>{self._jobs_table(stages)}")
        parts.append(f"<h3>Evaluations</h3>{self._jobs_table(all_jobs[all_jobs['id'].isin(evaluation_ids)])}")
        keep = [c for c in ("id", "created_at", "status", "destination", "style", "format", "row_count", "path",
                            "repo_id") if c in exports.columns]
        exports = exports[keep].astype(object).copy()
        for column in exports.columns:
            exports[column] = exports[column].map(
                (lambda i: job_link(int(i))) if column == "id" else (lambda v: escape(blank(v))))
        parts.append(f"<h3>Exports</h3>{_linked_html(exports)}")
        return "".join(parts)

    def _jobs_table(self, frame: Any) -> str:
        return jobs_table(frame)

    # -- rows ----------------------------------------------------------------------------------------
    def _fetch_rows(self, offset: int, limit: int) -> tuple[Any, int]:
        import pandas as pd

        frame = self.store.records_frame(self.job["family"], self.job_id, self.status_filter.value)
        if len(frame) and self.search.value.strip():
            needle = self.search.value.strip().lower()
            text = frame.apply(lambda r: " ".join(compact(r[c]) for c in ("topic", "input", "output", "error",
                                                                          "raw_text")).lower(), axis=1)
            frame = frame[text.str.contains(needle, regex=False)]
        column, ascending = SORTS[self.sort.value]
        frame = frame.sort_values([column, "id"], ascending=[ascending, True], kind="stable", na_position="last")
        page = frame.iloc[offset:offset + limit]
        shown = pd.DataFrame({
            "id": page["id"], "status": page["status"], "topic": page["topic"].map(blank),
            "input": page["input"].map(compact), "output": page["output"].map(compact),
            "reason": page["error"].map(blank),
            "raw reply": [blank(t) if s != "ok" else "" for t, s in zip(page["raw_text"], page["status"])],
            "tokens": (page["tokens_in"].fillna(0) + page["tokens_out"].fillna(0)).astype(int)})
        shown = shown.astype(object).where(shown.notna(), "")
        return shown, len(frame)


def _linked_html(frame: Any) -> str:
    """A table whose cells are already-escaped HTML (links, badges)."""
    if frame is None or len(frame) == 0:
        return '<p class="sds-empty"><i>none</i></p>'
    return frame.to_html(index=False, escape=False, classes="sds-table", border=0, na_rep="", justify="left")


def jobs_table(frame: Any) -> str:
    """Jobs as a table whose ids link to their job pages and whose statuses are badges."""
    keep = [c for c in ("id", "kind", "created_at", "status", "what", "model_id", "ok", "failed", "filtered",
                        "tokens_in", "tokens_out", "cost_usd", "error") if c in frame.columns]
    shown = frame[keep].astype(object).copy()
    if len(shown):
        shown["id"] = shown["id"].map(lambda i: job_link(int(i)))
        shown["status"] = shown["status"].map(badge)
        for column in shown.columns:
            if column not in ("id", "status"):
                shown[column] = shown[column].map(lambda v: escape(blank(v)))
    return _linked_html(shown)
