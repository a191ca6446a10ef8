"""The reviewers' Voilà dashboard in a real headless Chromium: see the scores, accept a row, and find the
verdict in SQLite. Debian's chromium drives it (Playwright's browser download does not work here)."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sdstudio.store import Record, Store
from tests import conftest
from tests.conftest import ARTIFACTS, CHROMIUM, voila_server  # noqa: F401 (CHROMIUM: other tests import it from here)

page = conftest.page  # the fixture lives in conftest.py; other test modules import it from here


def seed_judged_job(home: Path) -> int:
    """A generation job with two rows and a finished evaluation of them, written straight to the store."""
    store = Store.open(home)
    gen = store.create_job("generation", use_case="code_generation", model_id="gen-model", status="done")
    store.add_records([Record(job_kind="generation", job_id=gen, item_key=f"g{i}", status="ok", topic="Stacks",
                              output={"question": q, "solution": s, "explanation": "e"})
                       for i, (q, s) in enumerate([("How do you push onto a stack?", "<script>window.pwned=1</script>"),
                                                    ("How do you pop from a stack?", "use list.pop()")])])
    ids = [r["id"] for r in store.records("generation", gen)]
    ev = store.create_job("evaluation", source_generation_id=gen, model_id="planted-judge", status="done",
                          scale_min=1, scale_max=5, average_score=4.0, criteria="be right")
    store.add_records([Record(job_kind="evaluation", job_id=ev, item_key=f"e{i}", status="ok", topic="Stacks",
                              input={"prompt": f"question {i}", "completion": "<script>window.pwned=1</script>"
                                     if i == 0 else "use list.pop()"},
                              output={"score": 3 + i, "justification": f"planted justification {i}"},
                              provenance={"source_record_id": rid, "source_job_id": gen})
                       for i, rid in enumerate(ids)])
    store.close()
    return ids[0]


@pytest.fixture
def voila(home):
    first_id = seed_judged_job(home)
    with voila_server(home, {"SDSTUDIO_PROVIDER": "local"}) as base:
        yield base, first_id


def screenshot_on_failure(page, name: str):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_the_home_dashboard_shows_the_job_history(voila, page):
    base, _ = voila
    try:
        page.goto(f"{base}/voila/render/00_home.ipynb", timeout=120_000)
        page.get_by_text("planted-judge").first.wait_for(timeout=120_000)
        assert page.get_by_text("gen-model").count() >= 1
        assert page.locator("a[href='05_evaluate.ipynb']").count() == 1
    except Exception:
        screenshot_on_failure(page, "home-dashboard")
        raise


def test_a_reviewer_accepts_a_row_in_the_real_dashboard(voila, page, home):
    base, first_id = voila
    try:
        page.goto(f"{base}/voila/render/05_evaluate.ipynb?mode=review", timeout=120_000)  # an old reviewer link
        page.locator("a.sds-desk-link").click(timeout=120_000)  # leads to the desk, never to the judge controls
        assert page.get_by_role("button", name="Judge").count() == 0
        page.get_by_text("planted justification 0").wait_for(timeout=120_000)
        assert "/voila/render/07_review.ipynb" in page.url
        assert page.evaluate("window.pwned") is None  # model text was shown, not run
        assert "<script>window.pwned=1</script>" in page.content().replace("&lt;", "<").replace("&gt;", ">")
        page.get_by_placeholder("your name").fill("alice")
        page.get_by_role("button", name="Accept").first.click()
        page.get_by_text("saved accept of row").wait_for(timeout=30_000)
    except Exception:
        screenshot_on_failure(page, "review-dashboard")
        raise
    with sqlite3.connect(home / "metadata.db") as conn:
        rows = conn.execute("SELECT record_id, reviewer, verdict FROM reviews").fetchall()
    assert rows == [(first_id, "alice", "accept")]


def test_home_leads_through_the_navigation_bar_to_a_job_page_with_its_failed_rows(voila, page, home):
    base, first_id = voila
    store = Store.open(home)
    gen = store.record(first_id)["job_id"]
    store.add_records([Record(job_kind="generation", job_id=gen, item_key="g-bad", status="failed", topic="Stacks",
                              raw_text="Sorry, I cannot.", error="planted reason: reply contains no JSON")])
    store.refresh_counts(None, gen)
    store.close()
    page.set_viewport_size({"width": 1280, "height": 800})
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        page.goto(f"{base}/", timeout=120_000)  # the root lands on the home page, not a file list
        page.get_by_text("planted-judge").first.wait_for(timeout=120_000)
        assert page.url.endswith("/voila/render/00_home.ipynb")
        nav = page.locator("nav.sds-nav a")
        from sdstudio.ui.nav import pages

        shown = [a.strip() for a in nav.all_inner_texts()]
        assert shown == [label for label, _ in pages()]  # the registry's pages, in the order a job travels
        assert shown == ["Home", "Generate", "Documents", "Workflow", "Alignment", "Evaluate", "Review", "Evolve",
                         "Conversations", "Export", "Jobs"]
        page.screenshot(path=str(ARTIFACTS / "home.png"))
        page.locator("nav.sds-nav a", has_text="Jobs").click()
        page.locator(f"a[href='08_job.ipynb?job={gen}']").first.click(timeout=120_000)
        page.get_by_text(f"Job #{gen}").wait_for(timeout=120_000)
        page.get_by_role("button", name="failed", exact=True).click()
        page.get_by_text("(1 row)").wait_for(timeout=30_000)  # only the failed row is listed now
        page.get_by_text("planted reason: reply contains no JSON").wait_for(timeout=30_000)
        page.get_by_text("planted reason: reply contains no JSON").scroll_into_view_if_needed()
        assert page.get_by_text("Sorry, I cannot.").count() >= 1
        assert page.locator(f"a[href='05_evaluate.ipynb?job={gen}']").count() >= 1
        page.screenshot(path=str(ARTIFACTS / "job_page.png"))
    except Exception:
        screenshot_on_failure(page, "job-page")
        raise
