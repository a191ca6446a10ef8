"""The review desk: judged rows one card at a time (Prompt, Response, Judge score, Justification, each
labelled), with Accept / Reject / Edit-and-accept, keyboard shortcuts, progress per reviewer, and
conflicts (two reviewers disagree) flagged and settled by a final verdict.

``ReviewApp`` is the reviewers' page (notebooks/07_review.ipynb): it holds no judge or run controls, so
a reviewer cannot reach them. ``ReviewPanel`` is the desk itself, also shown in 05_evaluate.

Verdicts and edits go to the ``reviews`` table with the reviewer's name and time (``reviews.review``);
the original output is never overwritten, and an edit counts as an accept. Everything a model wrote
is HTML-escaped: a row holding ``<script>`` shows as text and runs nothing.

Two small scripts run in the page (an ``<img onerror>`` inside an HTML widget, because widget HTML and
Voilà outputs do not run ``<script>`` tags): the keyboard shortcuts, and the reviewer's name kept in
the browser's localStorage and in the address (``?reviewer=NAME``, which the kernel reads from Voilà's
``QUERY_STRING``), so a reload keeps it. Without them (JupyterLab's sanitiser, no JavaScript), the
"Keys" box takes the same letters.
"""
from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any

import ipywidgets as w

from ..store import Store
from .components import escape, message

STORAGE_KEY = "sdstudio.reviewer"
KEYS = {"a": "accept", "r": "reject", "e": "edit", "j": "next", "k": "previous"}
HELP = ("Keys: <b>a</b> accept · <b>r</b> reject · <b>e</b> edit (then <b>Ctrl+Enter</b> saves and accepts) · "
        "<b>j</b> next · <b>k</b> previous")
PRE = "white-space:pre-wrap;margin:2px 0 8px 0;max-height:14em;overflow:auto;padding:6px;border-radius:4px"

# listens in the capture phase: ipywidgets' text boxes stop keydown from bubbling (Ctrl+Enter in the edit box)
_KEYBOARD_JS = """(function(){if(window.__sdsDesk)return;window.__sdsDesk=1;
var keys={a:'.sds-key-accept',r:'.sds-key-reject',j:'.sds-key-next',k:'.sds-key-prev'};
document.addEventListener('keydown',function(ev){var t=ev.target,tag=((t&&t.tagName)||'').toLowerCase();
if(tag==='textarea'&&(ev.ctrlKey||ev.metaKey)&&ev.key==='Enter'&&t.closest('.sds-edit')){
var s=document.querySelector('.sds-key-save');if(s){ev.preventDefault();setTimeout(function(){s.click()},50);}return;}
if(ev.ctrlKey||ev.metaKey||ev.altKey||tag==='input'||tag==='textarea'||tag==='select'||(t&&t.isContentEditable))return;
if(ev.key==='e'){var x=document.querySelector('.sds-edit textarea');if(x){ev.preventDefault();x.focus();}return;}
var sel=keys[ev.key];if(!sel)return;var b=document.querySelector(sel);if(b&&!b.disabled){ev.preventDefault();b.click();}},true);
})();"""

_RECALL_JS = """(function(){var n=null;try{n=localStorage.getItem(%(key)s)}catch(e){}if(!n)return;var tries=0;
(function fill(){var i=document.querySelector('.sds-reviewer-name input');
if(!i){if(tries++<100)setTimeout(fill,100);return;}
if(!i.value){i.value=n;i.dispatchEvent(new Event('input',{bubbles:true}));i.dispatchEvent(new Event('change',{bubbles:true}));}})();
})();"""

_REMEMBER_JS = """(function(){var n=%(name)s;try{localStorage.setItem(%(key)s,n)}catch(e){}
try{var u=new URL(window.location.href);if(u.searchParams.get('reviewer')!==n){u.searchParams.set('reviewer',n);
window.history.replaceState(window.history.state,'',u.toString());}}catch(e){}})();"""


def run_js(code: str) -> str:
    """HTML that runs ``code`` once when an HTML widget shows it (an image that fails to load on purpose)."""
    return (f'<img alt="" style="display:none" src="data:image/gif;base64,invalid" '
            f'onerror="{escape(code)}"/>')


def diff_html(original: str, current: str) -> str:
    """Word-level changes from ``original`` to ``current``: removed words struck out, added ones marked."""
    before, after = re.split(r"(\s+)", original), re.split(r"(\s+)", current)
    parts = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, before, after, autojunk=False).get_opcodes():
        if op in ("delete", "replace"):
            parts.append(f'<del style="background:#ffebe9">{escape("".join(before[i1:i2]))}</del>')
        if op in ("insert", "replace"):
            parts.append(f'<ins style="background:#dafbe1;text-decoration:none">{escape("".join(after[j1:j2]))}</ins>')
        if op == "equal":
            parts.append(escape("".join(before[i1:i2])))
    return f'<pre class="sds-diff" style="{PRE};background:#f6f8fa">{"".join(parts)}</pre>'


def _label(text: str) -> str:
    return (f'<div class="sds-label" style="font-weight:600;font-size:12px;text-transform:uppercase;'
            f'color:#57606a;margin-top:6px">{escape(text)}</div>')


def _chip(text: str, colour: str) -> str:
    return (f'<span class="sds-chip" style="display:inline-block;padding:1px 8px;margin:0 4px 2px 0;'
            f'border-radius:10px;background:{colour};color:#fff;font-size:12px">{escape(text)}</span>')


VERDICT_COLOURS = {"accept": "#1a7f37", "reject": "#cf222e"}


class ReviewCard(w.VBox):
    """The current row: labelled Prompt, Response (the latest edit, with its diff to the original),
    Judge score and Justification; the reviewers' verdicts; the buttons and the edit box."""

    def __init__(self, panel: "ReviewPanel"):
        self.panel = panel
        self.record_id: int | None = None
        self.body = w.HTML(layout=w.Layout(width="100%"))
        self.verdicts = w.HTML()
        self.verdict = self.verdicts  # the row's reviews as the page shows them
        self.accept = w.Button(description="Accept (a)", button_style="success", icon="check", tooltip="a")
        self.reject = w.Button(description="Reject (r)", button_style="danger", icon="times", tooltip="r")
        self.edit = w.Textarea(layout=w.Layout(width="100%", height="7em"))
        self.save_edit = w.Button(description="Save edit & accept", icon="pencil", tooltip="Ctrl+Enter",
                                  layout=w.Layout(width="auto"))
        self.final_accept = w.Button(description="Final: accept", button_style="success",
                                     layout=w.Layout(width="auto"))
        self.final_reject = w.Button(description="Final: reject", button_style="danger",
                                     layout=w.Layout(width="auto"))
        self.conflict = w.HTML()
        self.conflict_box = w.VBox([self.conflict, w.HBox([self.final_accept, self.final_reject])],
                                   layout=w.Layout(border="1px solid #d4a72c", padding="4px", display="none"))
        for button, key in ((self.accept, "accept"), (self.reject, "reject"), (self.save_edit, "save")):
            button.add_class(f"sds-key-{key}")
        self.edit.add_class("sds-edit")
        self.accept.on_click(lambda _: self.decide("accept"))
        self.reject.on_click(lambda _: self.decide("reject"))
        self.save_edit.on_click(lambda _: self.save())
        self.final_accept.on_click(lambda _: self.decide("accept", final=True))
        self.final_reject.on_click(lambda _: self.decide("reject", final=True))
        super().__init__([self.body, self.verdicts, self.conflict_box, w.HBox([self.accept, self.reject]),
                          w.HTML(_label("Edit the response (an edit counts as an accept)")), self.edit,
                          w.HBox([self.save_edit])],
                         layout=w.Layout(border="1px solid #d0d7de", padding="8px", margin="4px 0", width="100%"))
        self.add_class("sds-review-card")

    def show(self, row: dict[str, Any], position: str) -> None:
        self.record_id = int(row["record_id"])
        original, current = str(row.get("completion") or ""), self.panel.current_text(row)
        failed = row.get("status") != "ok"
        score = f"failed: {row.get('error') or 'no score'}" if failed else row.get("score")
        edited = current != original
        response = _label("Response" + (" (edited)" if edited else ""))
        response += f'<pre class="sds-response" style="{PRE};background:#f6f8fa">{escape(current)}</pre>'
        if edited:
            response += _label("Changes from the original") + diff_html(original, current)
        topic = "" if row.get("topic") is None else f" · topic: {escape(row.get('topic'))}"
        self.body.value = (
            f'<div class="sds-review-row" data-record="{self.record_id}">'
            f'<div style="color:#57606a">{escape(position)} · row #{self.record_id}{topic}</div>'
            f'{_label("Prompt")}<pre class="sds-prompt" style="{PRE};background:#fff;border:1px solid #d0d7de">'
            f'{escape(row.get("prompt"))}</pre>{response}'
            f'{_label("Judge score")}<div class="sds-score" style="font-size:18px;font-weight:600">{escape(score)}</div>'
            f'{_label("Justification")}<div class="sds-justification">{escape(row.get("justification"))}</div></div>')
        standing = row.get("verdicts") or {}
        chips = "".join(_chip(f"{name}: {verdict}", VERDICT_COLOURS.get(verdict, "#57606a"))
                        for name, verdict in standing.items()) or "<i>not reviewed yet</i>"
        final = f" · final: <b>{escape(row['final'])}</b>" if row.get("final") else ""
        self.verdicts.value = f'{_label("Reviews")}<div class="sds-verdict">{chips}{final}</div>'
        if row.get("conflict"):
            who = ", ".join(f"{name} {verdict}s" for name, verdict in standing.items())
            self.conflict.value = (f'<span class="sds-conflict" style="color:#9a6700">⚠ Conflict: {escape(who)}. '
                                   "Record the final verdict:</span>")
            self.conflict_box.layout.display = "flex"
        else:
            self.conflict.value = ""
            self.conflict_box.layout.display = "none"
        self.edit.value = current
        for button in (self.accept, self.reject, self.save_edit):
            button.disabled = failed  # a failed judgement has nothing to review

    def decide(self, verdict: str, final: bool = False) -> None:
        if self.record_id is not None:
            self.panel.record(self.record_id, verdict=verdict, final=final)

    def save(self) -> None:
        if self.record_id is not None:
            self.panel.record(self.record_id, verdict="accept", completion=self.edit.value)


ReviewRow = ReviewCard  # the name 05_evaluate's tests knew


class ReviewPanel(w.VBox):
    """The desk: reviewer, evaluation, which rows, progress per reviewer, and one card at a time."""

    def __init__(self, home: str | Path | None = None, job_id: int | None = None, store: Store | None = None,
                 reviewer: str | None = None, desk_link: bool = True, signed_in: str | None = None):
        self.store = store or Store.open(home)
        self.signed_in = signed_in  # the user Cloudera AI's proxy signed in: the only name verdicts go under
        self.desk_link = w.HTML(layout=w.Layout(display=None if desk_link else "none"))
        self.reviewer = w.Text(value=signed_in or reviewer or "", placeholder="your name", description="Reviewer",
                               disabled=bool(signed_in))
        self.reviewer.add_class("sds-reviewer-name")
        self.job = w.Dropdown(description="Evaluation", layout=w.Layout(width="28em"))
        self.only_unreviewed = w.Checkbox(value=False, description="only rows I have not reviewed", indent=False)
        self.conflicts_only = w.Checkbox(value=False, description="only conflicts", indent=False)
        self.prev = w.Button(description="◀ previous (k)", tooltip="k", layout=w.Layout(width="auto"))
        self.next = w.Button(description="next (j) ▶", tooltip="j", layout=w.Layout(width="auto"))
        self.prev.add_class("sds-key-prev")
        self.next.add_class("sds-key-next")
        self.shortcut = w.Text(placeholder="a r e j k", description="Keys", layout=w.Layout(width="12em"))
        self.info = w.HTML()
        self.progress = w.HTML()
        self.status = w.HTML()
        self.card = ReviewCard(self)
        self.rows = w.VBox()
        self.memory = w.HTML(run_js(_KEYBOARD_JS + _RECALL_JS % {"key": json.dumps(STORAGE_KEY)}))
        self.position = 0
        self.frame: Any = None
        self._fields: dict[int, str | None] = {}
        self.prev.on_click(lambda _: self.go(self.position - 1))
        self.next.on_click(lambda _: self.go(self.position + 1))
        self.job.observe(lambda _: self.show(0), "value")
        self.only_unreviewed.observe(lambda _: self.show(0), "value")
        self.conflicts_only.observe(lambda _: self.show(0), "value")
        self.reviewer.observe(lambda _: self.remember(), "value")
        self.shortcut.observe(self._typed, "value")
        super().__init__([self.desk_link, w.HBox([self.reviewer, self.job]),
                          w.HBox([self.only_unreviewed, self.conflicts_only]), self.progress,
                          w.HBox([self.prev, self.info, self.next, self.shortcut]), w.HTML(f"<small>{HELP}</small>"),
                          self.status, self.rows, self.memory], layout=w.Layout(width="100%"))
        self.load_jobs(job_id)
        self.remember()

    # -- what is shown --------------------------------------------------------------------------------
    def load_jobs(self, job_id: int | None = None) -> None:
        frame = self.store.jobs("evaluation")
        options = [(f"#{r.id} · {r.model_id} · avg {r.average_score if r.average_score == r.average_score else '-'}",
                    int(r.id)) for r in frame.itertuples() if r.status in ("done", "cancelled")]
        self.job.options = options
        if job_id is not None and job_id in [v for _, v in options]:
            self.job.value = job_id
        elif options:
            self.job.value = options[0][1]

    def show(self, position: int = 0, record_id: int | None = None) -> None:
        """Reload the rows and show the one at ``position`` (or the row ``record_id`` while it is listed)."""
        from ..reviews import desk, progress

        job = "" if self.job.value is None else f"?job={self.job.value}"
        self.desk_link.value = (f'<a class="sds-desk-link" href="07_review.ipynb{job}" target="_blank" '
                                'style="color:#0969da;text-decoration:underline">Open the review desk on its own '
                                "page (for reviewers: no judge controls)</a>")
        if self.job.value is None:
            self.rows.children = ()
            self.info.value = "no judged rows yet: run a judge in 05_evaluate first"
            self.progress.value = ""
            return
        frame = desk(self.job.value, self.store)
        self._show_progress(progress(frame))
        name = self.reviewer.value.strip()
        if self.only_unreviewed.value:
            frame = frame[[name not in v for v in frame["verdicts"]]] if name else frame[frame["verdict"].isna()]
        if self.conflicts_only.value:
            frame = frame[frame["conflict"].astype(bool)]
        self.frame = frame.reset_index(drop=True)
        if record_id is not None and record_id in set(self.frame["record_id"]):
            position = int(self.frame.index[self.frame["record_id"] == record_id][0])
        self.go(position)

    def go(self, position: int) -> None:
        total = 0 if self.frame is None else len(self.frame)
        if not total:
            self.rows.children = ()
            self.info.value = escape(" no rows to show ")
            self.prev.disabled = self.next.disabled = True
            return
        self.position = min(max(position, 0), total - 1)
        label = f"row {self.position + 1} of {total}"
        self.card.show(self.frame.iloc[self.position].to_dict(), label)
        self.rows.children = (self.card,)
        self.info.value = escape(f" {label} ")
        self.prev.disabled, self.next.disabled = self.position == 0, self.position >= total - 1

    def _show_progress(self, figures: dict[str, Any]) -> None:
        total = figures["total"]
        people = " · ".join(f"{escape(name)}: <b>{done}</b> / {total}" for name, done in figures["reviewers"].items())
        conflicts = figures["conflicts"]
        flag = (f' · <span class="sds-conflicts" style="color:#9a6700">⚠ {conflicts} conflict'
                f'{"s" if conflicts != 1 else ""}</span>') if conflicts else ""
        self.progress.value = (f'<div class="sds-progress">Progress per reviewer: '
                               f'{people or "nobody has reviewed yet"} ({total} rows){flag}</div>')

    def current_text(self, row: dict[str, Any]) -> str:
        """The response as it stands: the latest edit of its completion field, else the judged text."""
        original = str(row.get("completion") or "")
        edited = row.get("edited")
        if edited is None or (not isinstance(edited, dict) and edited != edited):
            return original
        if not isinstance(edited, dict):
            return str(edited)
        field = self._field(row)
        if field is None:
            return json.dumps(edited, ensure_ascii=False, indent=2)
        return original if edited.get(field) is None else str(edited[field])

    def _field(self, row: dict[str, Any]) -> str | None:
        source = row.get("source_record_id")
        if source is None or source != source or str(source) == "<NA>":
            return "completion"  # a row judged from a file: the edit is over {prompt, completion}
        source = int(source)
        if source not in self._fields:
            from ..workflows.fields import job_fields

            judged = self.store.record(source)
            self._fields[source] = job_fields(self.store, judged["job_id"]).completion if judged else "completion"
        return self._fields[source]

    # -- actions ----------------------------------------------------------------------------------------
    def key(self, letter: str) -> None:
        """What a shortcut key does (the page's key handler and the Keys box both end here or on a button)."""
        action = KEYS.get(letter.lower())
        if action == "accept":
            self.card.accept.click()
        elif action == "reject":
            self.card.reject.click()
        elif action == "edit":
            self.status.value = message("info", "edit the response below, then Save edit & accept")
        elif action == "next":
            self.go(self.position + 1)
        elif action == "previous":
            self.go(self.position - 1)

    def _typed(self, change: dict[str, Any]) -> None:
        if change["new"]:
            letter = change["new"][-1]
            self.shortcut.value = ""
            self.key(letter)

    def remember(self) -> None:
        """Keep the reviewer's name in the browser (localStorage and the page address) for the next visit."""
        name = self.reviewer.value.strip()
        recall = _KEYBOARD_JS + _RECALL_JS % {"key": json.dumps(STORAGE_KEY)}
        if name:
            recall += _REMEMBER_JS % {"name": json.dumps(name), "key": json.dumps(STORAGE_KEY)}
        self.memory.value = run_js(recall)

    def record(self, record_id: int, verdict: str | None = None, completion: str | None = None,
               final: bool = False) -> bool:
        """Store a verdict (and an edited completion, which counts as an accept) for a row; False (with a
        message) when it cannot."""
        from ..errors import SdstudioError
        from ..reviews import FINAL_NOTE, review

        name = self.reviewer.value.strip()
        if self.signed_in and name != self.signed_in:
            self.status.value = message("error", f"you are signed in as {self.signed_in}: verdicts go under that name")
            return False
        if not name:
            self.status.value = message("error", "enter your name as reviewer first")
            return False
        edited = None
        if completion is not None:
            verdict = verdict or "accept"
            edited = self._edit_for(record_id, completion)
        try:
            review(record_id, name, verdict=verdict, edited_output=edited, note=FINAL_NOTE if final else None,
                   store=self.store)
        except SdstudioError as exc:
            self.status.value = message("error", str(exc))
            return False
        what = ("final " if final else "") + ("edit (accepted)" if completion is not None else str(verdict))
        self.status.value = message("ok", f"saved {what} of row #{record_id} by {name}")
        self.show(self.position, record_id=record_id)
        return True

    def _edit_for(self, record_id: int, completion: str) -> Any:
        """An edited completion as the partial output the review API merges (its completion field)."""
        row = self.store.record(record_id)
        provenance = row["provenance"] or {}
        source = provenance.get("source_record_id")
        if row["job_kind"] == "evaluation" and source is None:
            return {"completion": completion}
        from ..workflows.fields import job_fields

        judged = self.store.record(source) if source is not None else None
        field = job_fields(self.store, judged["job_id"]).completion if judged else "completion"
        if not field:  # a freeform row has no completion field: the edit is the whole row, as JSON
            try:
                return json.loads(completion)
            except json.JSONDecodeError:
                return {"completion": completion}
        return {field: completion}


class ReviewApp(w.VBox):
    """The reviewers' page (07_review): the desk alone. No judge, model or run controls exist here, so a
    reviewer's link leads to nothing but reviewing. ``?job=ID`` picks the evaluation, ``?reviewer=NAME``
    fills the name (the page writes it there once one is entered); ``signed_in`` (Cloudera AI's user) fixes it."""

    def __init__(self, home: str | Path | None = None, job_id: int | None = None, reviewer: str | None = None,
                 store: Store | None = None, signed_in: str | None = None):
        self.store = store or Store.open(home)
        self.panel = ReviewPanel(store=self.store, job_id=job_id, reviewer=reviewer, desk_link=False,
                                 signed_in=signed_in)
        from .nav import LABEL_CSS  # the pages' label style, without their navigation: a reviewer only reviews

        super().__init__([w.HTML(LABEL_CSS + "<h2>Review desk</h2><p>Accept, reject or edit judged rows. Your name is kept in "
                                 "this browser; an edit counts as an accept.</p>"), self.panel],
                         layout=w.Layout(width="100%"))
        self.panel.show(0)

    @property
    def results(self):
        """The rows with every reviewer's verdict, as a DataFrame (for the next notebook cell)."""
        from ..reviews import desk

        return None if self.panel.job.value is None else desk(self.panel.job.value, self.store)
