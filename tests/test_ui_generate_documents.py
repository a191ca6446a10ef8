"""The Generate (01) and Documents (02) pages without a browser, on the loopback fake server: what a run did
not keep is one click away with its reason, the form and the outcome on screen never disagree, an upload is
the user's documents (not the sample plus them), the example item is the user's to edit and reaches the
model, and the grounding verdict shows per row."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from sdstudio.ui import DocumentsApp, GenerateApp
from tests.fakes.openai_server import default_reply, requested_schema


def generate_app(server, home, topics: str = "Heaps", per_topic: int = 1) -> GenerateApp:
    app = GenerateApp(home=home, provider="openai_compatible", model="fake-model", base_url=server.url)
    app.topics.value = topics
    app.per_topic.value, app.batch_size.value = per_topic, 1
    return app


def run(app):
    app.controls.run_button.click()
    return app.controls.wait(120)


def topic_of(body) -> str:
    return body["messages"][-1]["content"].split("<topic>")[1].split("</topic>")[0]


@pytest.fixture
def guide(tmp_path):
    doc = tmp_path / "guide.md"
    doc.write_text("# Pumps\n\n" + "\n\n".join(f"Section {i}. The pump model P{i} needs oil every {i + 2} months "
                                               "and a filter change each year." for i in range(40)))
    return doc


def upload(name: str, text: bytes):
    return ({"name": name, "type": "text/plain", "size": len(text), "last_modified": datetime.now(timezone.utc),
             "content": memoryview(text)},)


def documents_app(server, home, files) -> DocumentsApp:
    app = DocumentsApp(home=home, provider="openai_compatible", model="fake-model", base_url=server.url,
                       files=[str(f) for f in files])
    app.chunk_tokens.value, app.chunk_overlap.value, app.per_chunk.value = 128, 16, 1
    return app


# -- generate: failed, filtered, why ------------------------------------------------------------------

def test_malformed_replies_show_in_the_failed_tab_with_reason_and_reply(openai_server, home):
    openai_server.reply = lambda body: "Sorry, no json here at all"
    app = generate_app(openai_server, home)
    result = run(app)
    assert result.ok == 0 and result.failed >= 1
    assert app.outcomes.tabs.titles[1] == f"Failed ({app.outcomes.failed.total})" != "Failed (0)"
    table = app.outcomes.failed.table.value
    assert "contains no JSON" in table and "Sorry, no json here at all" in table and "Heaps" in table
    assert app.failures is app.outcomes.failed


def test_a_run_that_kept_nothing_says_why_and_opens_the_failed_tab(openai_server, home):
    openai_server.reply = lambda body: "Sorry, no json here at all"
    app = generate_app(openai_server, home)
    run(app)
    assert "Nothing was kept" in app.outcomes.why.value and "contains no JSON" in app.outcomes.why.value
    assert "try:" in app.outcomes.why.value  # what usually helps
    failed, filtered = app.outcomes.failed.total, app.outcomes.filtered.total  # retried rounds count as filtered
    assert app.outcomes.tabs.selected_index == (1 if failed >= filtered else 2)  # the bigger of the two opens
    assert app.results.empty


def test_duplicates_show_in_the_filtered_tab_with_their_reason(openai_server, home):
    item = {"question": "How does a heap keep its smallest item first?", "solution": "heapq.heappush(h, x)",
            "explanation": "a binary heap"}
    openai_server.reply = lambda body: json.dumps(item)  # the same item every time: the repeats are duplicates
    app = generate_app(openai_server, home, per_topic=3)
    result = run(app)
    assert result.ok == 1 and result.filtered >= 1
    assert app.outcomes.tabs.titles == ("Results", "Failed (0)", f"Filtered ({result.filtered})")
    assert "duplicate" in app.outcomes.filtered.table.value.lower()
    assert app.outcomes.why.value == ""  # a row was kept: no "nothing was kept"
    assert len(app.results) == 1


# -- generate: the form and the outcome on screen ----------------------------------------------------

def test_switching_use_case_keeps_typed_topics_and_clears_the_old_results(openai_server, home):
    app = generate_app(openai_server, home, topics="My own topic\nAnother of mine")
    result = run(app)
    assert result.ok == 2 and app.results_table.total == 2 and app.job_id == result.job_id
    app.use_case.value = "text2sql"
    assert app.topics.value == "My own topic\nAnother of mine"
    assert app.config().topics == ["My own topic", "Another of mine"]
    assert app.job_id is None and app.results_table.total == 0 and "nothing yet" in app.results_table.table.value
    assert app.outcomes.tabs.titles == ("Results", "Failed (0)", "Filtered (0)") and app.results.empty


def test_switching_use_case_replaces_topics_still_showing_the_old_defaults(openai_server, home):
    app = GenerateApp(home=home, provider="openai_compatible", model="fake-model", base_url=openai_server.url)
    app.use_case.value = "text2sql"
    assert "Aggregations with GROUP BY" in app.topics.value and app.config().topics is None


def test_the_outcome_stays_while_the_form_still_describes_its_job(openai_server, home):
    app = generate_app(openai_server, home)
    result = run(app)
    app.per_topic.value = 1  # the same value: the same job
    assert app.job_id == result.job_id and app.results_table.total == 1
    app.model.temperature.value = 1.3  # another model setting: another job
    assert app.job_id is None and app.results_table.total == 0


def test_run_comes_before_the_prompt_preview_and_results_read_question_first(openai_server, home):
    app = generate_app(openai_server, home)
    order = list(app.children)
    preview = next(i for i, c in enumerate(order) if getattr(c, "titles", None) == ("Prompt preview",))
    assert order.index(app.controls) < preview < order.index(app.outcomes)
    assert app.children[preview].selected_index == 0  # open: the prompt is one glance away, below Run
    run(app)
    assert app.children[preview].selected_index is None  # folded: the outcome sits under Run
    frame = app.results_table.frame
    assert list(frame.columns[:2]) == ["question", "solution"] and list(frame.columns[-2:]) == ["topic", "row id"]
    assert "status" not in frame.columns
    assert list(app.results.columns[:2]) == ["topic", "question"]  # the next cell's frame keeps its shape


def test_the_results_table_never_shows_none_nan_or_na(openai_server, home):
    from sdstudio.store import Record

    app = generate_app(openai_server, home)
    job = app.store.create_job("generation")
    app.store.add_records([
        Record(job_kind="generation", job_id=job, item_key="a", status="ok", topic=None,
               output={"question": "q1", "solution": None}),
        Record(job_kind="generation", job_id=job, item_key="b", status="ok", topic="t",
               output={"question": "q2", "extra": float("nan")})])
    app.job_id = job
    app.results_table.show(0)
    table = app.results_table.table.value
    assert "q1" in table and "q2" in table
    for raw in (">None<", ">nan<", ">NaN<", "&lt;NA&gt;", ">null<"):
        assert raw not in table


# -- documents ----------------------------------------------------------------------------------------

def test_an_upload_replaces_the_sample_documents(openai_server, home, guide):
    app = documents_app(openai_server, home, [guide])
    assert "guide.md" in app.chunks.value and "chunks" in app.chunks.value and "Section 0." in app.preview.value
    app.upload.value = upload("extra.txt", b"Extra notes. The valve must be closed before any maintenance.")
    assert app.paths.value == "" and "replaces the sample" in app.source_note.value
    assert "extra.txt" in app.chunks.value and "guide.md" not in app.chunks.value
    assert [path.endswith("extra.txt") for path in app.config().files] == [True]
    assert (home / "uploads").is_dir()
    result = run(app)
    assert result.ok >= 1 and "extra.txt" in app.results_table.table.value
    assert "guide.md" not in app.results_table.table.value
    app.upload.value = ()  # every upload taken away: the sample is the default again
    assert app.paths.value == str(guide) and "guide.md" in app.chunks.value


def test_paths_the_user_typed_stay_beside_an_upload(openai_server, home, guide, tmp_path):
    mine = tmp_path / "mine.md"
    mine.write_text("# Mine\n\nThe Q7 compressor runs at 40 bar.")
    app = documents_app(openai_server, home, [guide])
    app.paths.value = str(mine)
    app.upload.value = upload("extra.txt", b"Extra notes. The valve must be closed before any maintenance.")
    assert app.paths.value == str(mine) and "mine.md" in app.chunks.value and "extra.txt" in app.chunks.value


def test_edited_examples_reach_the_model_and_the_default_ones_stay_unset(openai_server, home, guide):
    app = documents_app(openai_server, home, [guide])
    assert "X200" in app.examples.value and app.config().examples is None  # the use case's own: as on the CLI
    mine = [{"question": "How often does pump P3 need oil?", "answer": "Every five months.",
             "evidence": "The pump model P3 needs oil every 5 months"}]
    app.examples.value = json.dumps(mine)
    assert app.config().examples == mine and "X200" not in app.preview.value and "pump P3" in app.preview.value
    run(app)
    prompts = [m["content"] for body in openai_server.requests for m in body["messages"]]
    assert prompts and all("X200" not in p for p in prompts) and any("How often does pump P3" in p for p in prompts)
    app.examples.value = "[{broken"
    assert "examples are not valid JSON" in app.estimate.value and app.job_id is None


def test_the_saved_documents_config_with_edited_examples_is_the_same_job_on_the_cli(openai_server, home, guide):
    from tests.test_config_identity import cli_config, same_job

    app = documents_app(openai_server, home, [guide])
    app.examples.value = json.dumps([{"question": "What does P1 need?", "answer": "Oil.", "evidence": "needs oil"}])
    path = app.save_config()
    assert "What does P1 need?" in path.read_text() and "X200" not in path.read_text()
    same_job(app.config(), cli_config("documents", "--config", str(path), home=home))


def test_the_grounding_verdict_and_evidence_show_per_row(openai_server, home, tmp_path):
    doc = tmp_path / "valve.md"
    doc.write_text("# Valve\n\nThe valve must be closed before any maintenance.")

    def reply(body):
        schema = requested_schema(body) or {}
        if "supported" in schema.get("properties", {}):  # the grounding judge
            return json.dumps({"supported": True, "reason": "the passage says so",
                               "evidence": "The valve must be closed before any maintenance"})
        return default_reply(body)

    openai_server.reply = reply
    app = documents_app(openai_server, home, [doc])
    app.grounding.value = True
    result = run(app)
    assert result.ok == 1
    frame = app.results_table.frame
    assert list(frame.columns[:2]) == ["question", "answer"]
    assert frame["grounding"].iloc[0] == "supported: the passage says so"
    assert frame["grounding evidence"].iloc[0] == "The valve must be closed before any maintenance"
    assert "grounding evidence" in app.results_table.table.value
    assert app.results["grounded"].tolist() == [True]


def test_documents_failures_show_with_their_reason(openai_server, home, guide):
    openai_server.reply = lambda body: "I would rather not."
    app = documents_app(openai_server, home, [guide])
    app.chunk_tokens.value = 2000
    result = run(app)
    assert result.ok == 0 and app.outcomes.failed.total == result.failed > 0
    assert "I would rather not." in app.outcomes.failed.table.value and "Nothing was kept" in app.outcomes.why.value


def test_documents_run_controls_come_before_chunks_and_prompt(openai_server, home, guide):
    app = documents_app(openai_server, home, [guide])
    order = list(app.children)
    folded = [i for i, c in enumerate(order) if getattr(c, "titles", None) in (("Chunks",), ("First prompt",))]
    assert len(folded) == 2 and order.index(app.examples) < order.index(app.controls) < min(folded)
    assert "items in" in app.estimate.value and max(folded) < order.index(app.outcomes)


def test_the_chunk_table_shows_the_text_first_without_literal_line_breaks(openai_server, home, guide):
    app = documents_app(openai_server, home, [guide])
    header = app.chunks.value.split("<thead>")[1].split("</thead>")[0]
    assert header.index("text") < header.index("file") < header.index("sha256")
    assert "\\n" not in app.chunks.value and "# Pumps Section 0." in app.chunks.value
