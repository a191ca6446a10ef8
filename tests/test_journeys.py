"""The studio walked as people walk it, in a real headless Chromium (1280x800) through the Voilà pages: a data
scientist generates against the loopback fake server (two topics answer well, two answer badly), opens the Failed
tab and reads why, judges the job, two reviewers disagree on a row and the desk flags it, the reviewer-accepted
rows are exported and downloaded. A shorter walk runs the embedded model (slow). Every step leaves a screenshot in
tests/artifacts/journey-*.png for people to look at."""
from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ARTIFACTS, voila_server

GOOD_TOPICS = ("Stacks", "Queues")
PROSE_TOPIC = "Heaps"  # the model answers in prose: no JSON at all
PARTIAL_TOPIC = "Tries"  # the model answers JSON without the solution the schema requires
PROSE_REPLY = "Sorry, I can only describe heaps in words today."
PAGE_LOAD_MS = 120_000  # a Voilà page starts its own kernel; on a busy 2-core machine that is slow
STEP_MS = 60_000


def journey_reply() -> Any:
    """The fake server's answers: generation prompts (they carry <topic>) by topic, judge prompts by the schema."""
    from tests.fakes.openai_server import default_reply

    serial = itertools.count(1)

    def reply(body: dict[str, Any]) -> str:
        text = body["messages"][-1]["content"]
        if "<topic>" not in text or '"score"' in text:  # the judge (its prompt names the topic too)
            return default_reply(body)  # a score and a justification that follow the requested schema
        topic = text.split("<topic>")[1].split("</topic>")[0]
        n = next(serial)
        if topic == PROSE_TOPIC:
            return PROSE_REPLY
        if topic == PARTIAL_TOPIC:
            return json.dumps({"question": f"How does a trie store the word number {n}?", "explanation": "short"})
        return json.dumps({"question": f"How do you use {topic.lower()} in Python (case {n})?",
                           "solution": f"use collections.deque for {topic.lower()}, case {n}",
                           "explanation": f"{topic} explained, case {n}"})
    return reply


class Journey:
    """One browser walk over the studio: page loads, widgets found by what people read (labels, button
    text, tab titles, the pages' .sds-* classes), and a screenshot per step."""

    def __init__(self, page: Any, base: str, prefix: str = "journey"):
        self.page, self.base, self.prefix = page, base, prefix
        self.step = 0
        ARTIFACTS.mkdir(exist_ok=True)

    def open(self, notebook: str, ready: str) -> None:
        """Open a page and wait until the text ``ready`` shows (its kernel built the app)."""
        self.page.goto(f"{self.base}/voila/render/{notebook}", timeout=PAGE_LOAD_MS)
        self.page.get_by_text(ready).first.wait_for(timeout=PAGE_LOAD_MS)
        assert self.page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count() == 0

    def shot(self, name: str, at: Any = None) -> Path:
        """Save the viewport (scrolled to ``at`` when given) as tests/artifacts/<prefix>-NN-<name>.png, after
        checking that no table on the page shows a raw missing value."""
        self.step += 1
        raw = self.page.locator("table td").evaluate_all(
            "cells => cells.map(c => c.textContent.trim()).filter(t => ['None', 'nan', 'NaN', '<NA>', 'NaT'].includes(t))")
        assert not raw, f"{name}: table cells show raw missing values {sorted(set(raw))}"
        if at is not None:
            at.scroll_into_view_if_needed()
        else:
            self.page.evaluate("window.scrollTo(0, 0)")
        path = ARTIFACTS / f"{self.prefix}-{self.step:02d}-{name}.png"
        self.page.screenshot(path=str(path))
        return path

    def failure_shot(self) -> None:
        self.page.screenshot(path=str(ARTIFACTS / f"{self.prefix}-failure.png"), full_page=True)

    def fill(self, label: str, value: str) -> None:
        """Type into the text box whose description is ``label`` and leave it (number boxes sync on change)."""
        box = self.page.get_by_label(label, exact=True)
        box.fill(value)
        box.press("Tab")

    def slider(self, label: str, value: int) -> None:
        """Type ``value`` into the readout of the slider described as ``label``."""
        slider = self.page.locator(".widget-slider", has=self.page.get_by_text(label, exact=True))
        readout = slider.locator(".widget-readout").first
        readout.click()
        self.page.keyboard.press("Control+a")
        self.page.keyboard.type(str(value))
        self.page.keyboard.press("Enter")
        self.page.wait_for_function("([el, v]) => el.textContent.trim() === v", arg=[readout.element_handle(),
                                                                                    str(value)], timeout=STEP_MS)

    def job_from_link(self, selector: str, timeout_ms: int = STEP_MS) -> int:
        """The ?job=ID of the first link matching ``selector`` (once it shows)."""
        link = self.page.locator(selector).first
        link.wait_for(timeout=timeout_ms)
        return int(re.search(r"job=(\d+)", link.get_attribute("href") or "").group(1))

    def button(self, text: str) -> Any:
        """The button reading ``text`` (an icon may come before it)."""
        return self.page.get_by_role("button", name=re.compile(rf"^\W*{re.escape(text)}\s*$"))

    def tab(self, title: str) -> Any:
        return self.page.get_by_role("tab", name=re.compile(rf"^{re.escape(title)}"))


def generate(journey: Journey, topics: list[str], per_topic: int = 1, max_tokens: int | None = None,
             timeout_ms: int = STEP_MS) -> int:
    """01_generate: topics, one item per call (and a max_tokens), Run; the id of the job it ran (once the run
    ended)."""
    page = journey.page
    journey.open("01_generate.ipynb", "Prompt preview")
    page.get_by_text("First prompt:").first.wait_for(timeout=STEP_MS)  # the preview built the job from the form
    journey.fill("Topics", "\n".join(topics))
    journey.fill("Per topic", str(per_topic))
    journey.fill("Per call", "1")
    if max_tokens is not None:  # the slider's readout takes a typed value
        journey.slider("max_tokens", max_tokens)
    journey.button("Run").click()
    return journey.job_from_link(".sds-next-steps a[href^='08_job.ipynb?job=']", timeout_ms)


@pytest.fixture
def studio(openai_server, home, tmp_path):
    """Voilà whose pages talk to the loopback fake server (the parameters cells read these variables)."""
    openai_server.reply = journey_reply()
    env = {"SDSTUDIO_PROVIDER": "openai_compatible", "SDSTUDIO_GENERATE_PROVIDER": "openai_compatible",
           "SDSTUDIO_BASE_URL": openai_server.url, "SDSTUDIO_MODEL": "fake-model"}
    with voila_server(home, env, log=tmp_path / "voila.log") as base:
        yield base


def test_generate_see_failures_evaluate_review_with_a_conflict_export_and_download(studio, page, home):
    journey = Journey(page, studio)
    try:
        # 1. generate: four topics, two of them answered badly
        gen = generate(journey, [*GOOD_TOPICS, PROSE_TOPIC, PARTIAL_TOPIC])
        page.get_by_text(f"job {gen} done: 2 ok, 2 failed").first.wait_for(timeout=STEP_MS)
        journey.shot("generate", page.locator(".sds-next-steps"))

        # 2. the Failed tab lists each bad topic with its reason
        journey.tab("Failed").click()
        failed_table = page.locator("table.sds-table", has_text="reply contains no JSON").first
        failed_table.wait_for(timeout=STEP_MS)
        listed = failed_table.inner_text()
        assert PROSE_TOPIC in listed and PROSE_REPLY in listed  # the reason and the reply it came from
        assert PARTIAL_TOPIC in listed and "'solution' is a required property" in listed
        journey.shot("failed", failed_table)

        # 3. evaluate this job (the page preselects it from ?job=)
        journey.open(f"05_evaluate.ipynb?job={gen}", "Judge prompt preview")
        journey.button("Judge").click()
        evaluation = journey.job_from_link(".sds-next-steps a[href^='07_review.ipynb?job=']")
        page.get_by_role("tab", name="Scores").click()
        page.get_by_text("(2 rows)").first.wait_for(timeout=STEP_MS)
        journey.shot("evaluate", page.locator(".sds-next-steps"))

        # 4. review: alice accepts both rows, bob rejects the first; the desk flags the conflict
        journey.open(f"07_review.ipynb?job={evaluation}", "Review desk")
        page.locator(".sds-review-row").wait_for(timeout=STEP_MS)
        journey.fill("Reviewer", "alice")
        first = int(page.locator(".sds-review-row").get_attribute("data-record"))
        journey.button("Accept (a)").click()
        page.get_by_text(f"saved accept of row #{first} by alice").wait_for(timeout=STEP_MS)
        journey.button("next (j) ▶").click()
        page.locator(f".sds-review-row:not([data-record='{first}'])").wait_for(timeout=STEP_MS)
        second = int(page.locator(".sds-review-row").get_attribute("data-record"))
        kept_prompt = page.locator(".sds-review-row .sds-prompt").inner_text().strip()  # nobody rejects this one
        journey.button("Accept (a)").click()
        page.get_by_text(f"saved accept of row #{second} by alice").wait_for(timeout=STEP_MS)
        journey.shot("review-alice")
        journey.fill("Reviewer", "bob")
        journey.button("◀ previous (k)").click()
        page.locator(f".sds-review-row[data-record='{first}']").wait_for(timeout=STEP_MS)
        journey.button("Reject (r)").click()
        page.get_by_text("Conflict: alice accepts, bob rejects").wait_for(timeout=STEP_MS)
        page.locator(".sds-conflicts", has_text="1 conflict").wait_for(timeout=STEP_MS)
        journey.shot("review-conflict")
        journey.button("Final: reject").click()
        page.get_by_text("final: reject by bob").wait_for(timeout=STEP_MS)

        # 5. home: the history lists the generation and its evaluation, each linked to its job page
        journey.open("00_home.ipynb", "Job history")
        page.locator(f"a[href='08_job.ipynb?job={evaluation}']").first.wait_for(timeout=STEP_MS)
        assert page.locator(f"a[href='08_job.ipynb?job={gen}']").count() >= 1
        journey.shot("home")

        # 6. export the reviewer-accepted rows: the rejected row stays out
        journey.open(f"06_export.ipynb?job={gen}", "What to export")
        page.get_by_label("Style", exact=True).select_option("sft-prompt-completion")
        page.get_by_label("reviewer-accepted only").check()
        journey.button("Export").click()
        page.locator(".sds-ok", has_text="1 rows written").wait_for(timeout=STEP_MS)
        journey.shot("export", page.locator(".sds-ok").first)
        with page.expect_download() as download:  # the export page's own link to each file it wrote
            page.get_by_role("link", name="Download train.jsonl").click()
        rows = [json.loads(line) for line in Path(download.value.path()).read_text().splitlines()]
        assert [row["prompt"] for row in rows] == [kept_prompt]

        # 7. the job page: counts, reasons, and its rows as a JSONL download
        journey.open(f"08_job.ipynb?job={gen}", f"Job #{gen}")
        journey.shot("job")
        with page.expect_download() as download:
            page.get_by_role("link", name="Download rows (JSONL)").click()
        assert download.value.suggested_filename == f"job-{gen}.jsonl"
        rows = [json.loads(line) for line in Path(download.value.path()).read_text().splitlines()]
        ok = [r for r in rows if r["status"] == "ok"]
        assert sorted(r["topic"] for r in ok) == sorted(GOOD_TOPICS)
        assert {r["topic"] for r in rows if r["status"] == "failed"} == {PROSE_TOPIC, PARTIAL_TOPIC}
        assert any(PROSE_REPLY in (r["raw_text"] or "") for r in rows if r["topic"] == PROSE_TOPIC)

    except Exception:
        journey.failure_shot()
        raise


@pytest.mark.slow
def test_the_embedded_model_generates_one_row_and_its_job_page_opens(home, page, tmp_path):
    with voila_server(home, {"SDSTUDIO_PROVIDER": "local", "SDSTUDIO_GENERATE_PROVIDER": "local"},
                      log=tmp_path / "voila.log") as base:
        journey = Journey(page, base, prefix="journey-local")
        try:
            gen = generate(journey, ["Reversing a string in Python"], max_tokens=256, timeout_ms=600_000)
            journey.shot("generate", page.locator(".sds-next-steps"))
            page.locator(f".sds-next-steps a[href='08_job.ipynb?job={gen}']").click()
            page.get_by_text(f"Job #{gen}").wait_for(timeout=PAGE_LOAD_MS)
            assert page.locator(".sds-badge", has_text="done").count() >= 1
            assert page.get_by_text("SmolLM2").count() >= 1  # the job records the model that answered
            journey.shot("job")
        except Exception:
            journey.failure_shot()
            raise
