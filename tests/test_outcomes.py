"""The outcome tabs every workflow page ends in: a dropped row is one click away with its reason, the stage jobs'
rows count as the parent's, and a run that kept nothing says why and what usually helps."""
from __future__ import annotations

import ipywidgets as w

from sdstudio.ui.outcomes import OutcomeTabs, advice_for


def _dropped(store):
    parent = store.create_job("generation", kind="alignment", technique="alignment")
    stage = store.create_job("generation", kind="candidates", parent_id=parent)
    other = store.create_job("generation", kind="generation", technique="sft")
    store.add_records([
        {"job_kind": "generation", "job_id": stage, "item_key": "a", "status": "failed", "topic": "recursion",
         "error": "judgement cut off at max_tokens", "raw_text": '{"score": 4, "justif'},
        {"job_kind": "generation", "job_id": parent, "item_key": "b", "status": "filtered", "topic": None,
         "error": "every candidate scored 1"},
        {"job_kind": "generation", "job_id": parent, "item_key": "c", "status": "filtered", "topic": "refunds",
         "error": "every candidate scored 1"},
        {"job_kind": "generation", "job_id": other, "item_key": "d", "status": "failed", "error": "not this job"}])
    return parent, stage


def test_failed_and_filtered_tabs_read_the_job_and_its_stage_jobs(store):
    parent, stage = _dropped(store)
    tabs = OutcomeTabs(store, w.HTML("kept rows"), lambda: parent)
    tabs.show(kept=3)
    assert tabs.tabs.titles == ("Results", "Failed (1)", "Filtered (2)")
    assert tabs.why.value == ""  # rows were kept: no alarm above the tabs
    failed = tabs.failed.frame
    assert failed.iloc[0]["stage job"] == f"#{stage}" and "cut off" in failed.iloc[0]["reason"]
    assert "not this job" not in tabs.failed.table.value
    assert set(tabs.filtered.frame["reason"]) == {"every candidate scored 1"}
    assert "None" not in tabs.filtered.table.value and "nan" not in tabs.filtered.table.value


def test_a_run_that_kept_nothing_names_its_reasons_and_opens_their_tab(store):
    parent, _ = _dropped(store)
    tabs = OutcomeTabs(store, w.HTML(), lambda: parent)
    tabs.show(kept=0)
    assert "Nothing was kept" in tabs.why.value
    assert "2×" in tabs.why.value and "every candidate scored 1" in tabs.why.value
    assert "stronger or a different judge model" in tabs.why.value
    assert tabs.tabs.selected_index == 2  # more filtered than failed
    tabs.clear()
    assert tabs.why.value == "" and tabs.tabs.titles[1] == "Failed (0)" and tabs.tabs.selected_index == 0


def test_nothing_run_yet_shows_empty_tabs(store):
    tabs = OutcomeTabs(store, w.HTML(), lambda: None)
    tabs.show(kept=0)
    assert tabs.tabs.titles == ("Results", "Failed (0)", "Filtered (0)") and tabs.why.value == ""


def test_advice_matches_the_reason():
    assert "max_tokens" in advice_for("the reply was cut off (finish_reason=length)")
    assert "endpoint is up" in advice_for("HTTP 503 from http://127.0.0.1:9/v1")
    assert advice_for("something nobody anticipated") is None
