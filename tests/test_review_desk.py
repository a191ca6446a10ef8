"""The review desk (07_review): labelled cards with the current text, edits that count as accepts and reach a
reviewer-accepted export, progress per reviewer, conflicts flagged and settled; and the page in Chromium."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from sdstudio.config import ExportJob
from sdstudio.export import export_dataset
from sdstudio.store import Store
from sdstudio.ui.review import ReviewApp
from tests.test_browser import ARTIFACTS, seed_judged_job, voila  # noqa: F401 (fixtures; page is conftest.py's)


def desk(home: Path) -> ReviewApp:
    seed_judged_job(home)
    return ReviewApp(home=home)


def test_the_card_labels_prompt_response_score_and_justification(home):
    card = desk(home).panel.card
    for label in ("Prompt", "Response", "Judge score", "Justification", "Reviews"):
        assert f">{label}<" in card.body.value + card.verdicts.value
    assert "&lt;script&gt;" in card.body.value and "<script>" not in card.body.value


def test_the_review_page_has_no_judge_or_run_controls(home):
    import ipywidgets as w

    app = desk(home)

    def walk(widget):
        yield widget
        for child in getattr(widget, "children", ()):
            yield from walk(child)

    descriptions = {getattr(x, "description", "") for x in walk(app) if isinstance(x, (w.Button, w.Dropdown, w.Text))}
    assert not {"Judge", "Run", "Provider", "Model", "Criteria"} & descriptions
    assert not any(type(x).__name__ in ("ModelPicker", "RunControls") for x in walk(app))


def test_the_desk_inside_05_evaluate_links_to_the_review_only_page(home):
    from sdstudio.ui.review import ReviewPanel

    seed_judged_job(home)
    panel = ReviewPanel(home=home)
    panel.show(0)
    assert f'href="07_review.ipynb?job={panel.job.value}"' in panel.desk_link.value
    assert ReviewApp(home=home).panel.desk_link.layout.display == "none"


def test_an_edit_counts_as_an_accept_and_the_card_shows_the_edited_text_with_a_diff(home):
    panel = desk(home).panel
    panel.reviewer.value = "alice"
    panel.card.edit.value = "use stack.append(x)"
    panel.card.save_edit.click()
    assert "saved edit (accepted)" in panel.status.value
    assert "Response (edited)" in panel.card.body.value and ">use stack.append(x)</pre>" in panel.card.body.value
    assert "<ins" in panel.card.body.value and "<del" in panel.card.body.value  # diff to the original
    assert "alice: accept" in panel.card.verdicts.value


def test_an_edited_row_is_in_the_reviewer_accepted_export_with_its_edited_output(home):
    panel = desk(home).panel
    panel.reviewer.value = "alice"
    panel.card.edit.value = "use stack.append(x)"
    panel.card.save_edit.click()
    generation = panel.store.jobs("generation").iloc[0]["id"]
    result = export_dataset(ExportJob(jobs=[int(generation)], style="sft-prompt-completion", reviewed_only=True),
                            store=Store.open(home))
    rows = [json.loads(line) for line in Path(result.paths[0]).read_text().splitlines()]
    assert rows == [{"prompt": "How do you push onto a stack?", "completion": "use stack.append(x)"}]


def test_two_reviewers_disagree_the_conflict_shows_both_and_a_final_verdict_settles_it(home):
    panel = desk(home).panel
    panel.reviewer.value = "alice"
    panel.key("a")
    panel.reviewer.value = "bob"
    panel.key("r")
    assert "Conflict: alice accepts, bob rejects" in panel.card.conflict.value
    assert panel.card.conflict_box.layout.display == "flex"
    assert "alice: <b>1</b> / 2" in panel.progress.value and "bob: <b>1</b> / 2" in panel.progress.value
    assert "1 conflict" in panel.progress.value
    panel.conflicts_only.value = True
    assert len(panel.frame) == 1
    panel.reviewer.value = "carol"
    panel.card.final_accept.click()
    assert len(panel.frame) == 0 and "no rows" in panel.info.value  # no conflict left to show
    panel.conflicts_only.value = False
    assert panel.card.conflict_box.layout.display == "none" and "conflict" not in panel.progress.value
    assert "final: <b>accept by carol</b>" in panel.card.verdicts.value
    with sqlite3.connect(home / "metadata.db") as conn:
        assert conn.execute("SELECT reviewer, verdict, note FROM reviews ORDER BY id DESC LIMIT 1").fetchone() == (
            "carol", "accept", "final verdict")


def test_shortcut_keys_move_between_rows_and_need_a_name(home):
    panel = desk(home).panel
    panel.shortcut.value = "a"
    assert "enter your name" in panel.status.value and panel.shortcut.value == ""
    panel.shortcut.value = "j"
    assert panel.position == 1 and "row 2 of 2" in panel.info.value
    panel.key("k")
    assert panel.position == 0


def test_only_rows_i_have_not_reviewed_moves_on_after_a_verdict(home):
    panel = desk(home).panel
    panel.reviewer.value = "alice"
    panel.only_unreviewed.value = True
    first = panel.card.record_id
    panel.key("a")
    assert len(panel.frame) == 1 and panel.card.record_id != first


def test_the_reviewer_name_comes_from_the_address_and_is_written_back_for_the_browser(home):
    seed_judged_job(home)
    app = ReviewApp(home=home, reviewer="alice")
    assert app.panel.reviewer.value == "alice"
    assert "localStorage.setItem" in app.panel.memory.value and "&quot;alice&quot;" in app.panel.memory.value


def test_the_review_desk_in_chromium_accepts_by_key_edits_and_remembers_the_name(voila, page, home):
    base, first_id = voila
    page.set_viewport_size({"width": 1280, "height": 800})
    url = f"{base}/voila/render/07_review.ipynb"
    try:
        page.goto(url, timeout=120_000)
        page.get_by_text("planted justification 0").wait_for(timeout=120_000)
        assert page.evaluate("window.pwned") is None
        assert page.get_by_role("button", name="Judge").count() == 0
        page.get_by_placeholder("your name").fill("alice")
        page.locator(".sds-prompt").click()  # focus leaves the name box; keys go to the page
        page.keyboard.press("a")
        page.get_by_text("saved accept of row").wait_for(timeout=30_000)
        page.get_by_text("alice: accept").wait_for(timeout=30_000)
        page.keyboard.press("e")
        page.keyboard.press("Control+a")
        page.keyboard.type("use stack.append(x)")
        page.keyboard.press("Control+Enter")
        page.get_by_text("saved edit (accepted)").wait_for(timeout=30_000)
        page.locator(".sds-response", has_text="use stack.append(x)").wait_for(timeout=30_000)
        page.locator(".sds-diff ins").first.wait_for(timeout=30_000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(ARTIFACTS / "review_desk.png"))
        page.reload(timeout=120_000)
        page.get_by_text("planted justification 0").wait_for(timeout=120_000)
        page.wait_for_function("document.querySelector('.sds-reviewer-name input').value === 'alice'",
                               timeout=30_000)
    except Exception:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "review_desk-failure.png"), full_page=True)
        raise
    with sqlite3.connect(home / "metadata.db") as conn:
        rows = conn.execute("SELECT record_id, reviewer, verdict, json_extract(edited_output, '$.solution') "
                            "FROM reviews ORDER BY id").fetchall()
    assert rows == [(first_id, "alice", "accept", None), (first_id, "alice", "accept", "use stack.append(x)")]
