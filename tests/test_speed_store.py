"""The store's writer takes a record's fields without asdict's deep copy (issue 24): the rows it writes are the
ones the copy gave, for plain JSON values and for the values json cannot take as they are."""
from __future__ import annotations

import datetime
from collections import namedtuple
from dataclasses import asdict, dataclass

import pytest

from sdstudio.store import Record, Store
from sdstudio.store.records import _JSON_RECORD_FIELDS, _dumps, _row_fields


@dataclass
class Point:
    x: int
    y: list


Pair = namedtuple("Pair", "a b")


def before(rec: Record) -> dict:
    """What add_records built from a record before: asdict, then each JSON field as JSON text."""
    data = asdict(rec)
    for name in _JSON_RECORD_FIELDS:
        data[name] = _dumps(data[name])
    return data


VALUES = [
    None, {}, [], {"question": "q" * 30, "n": 3, "ok": True, "none": None, "x": 1.5, "nested": {"k": ["a", {"b": 2}]}},
    {"unicode": "héllo ✓", "nan": float("nan")}, {1: "int key"}, ["a", ("t", "u")], {"point": Point(1, [Point(2, [])])},
    [Point(3, ["z"])], {"when": datetime.datetime(2026, 1, 2, 3, 4, 5)}, {"pair": Pair(1, Point(0, []))}, "text", 7,
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: repr(v)[:40])
def test_row_fields_are_what_asdict_gave(value):
    rec = Record(job_kind="generation", job_id=1, item_key="k:0", status="ok", topic="t", input=value,
                 output=value, provenance=value, raw_text="raw", tokens_in=3, tokens_out=4)
    assert _row_fields(rec) == before(rec)
    assert rec.output is value  # nothing of the record was replaced


def test_rows_and_stamps_round_trip_through_the_store(tmp_path):
    store = Store.open(tmp_path / "home")
    job_id = store.create_job("generation")
    ok = Record(job_kind="generation", job_id=job_id, item_key="a:0", request_key="a", status="ok", topic="t",
                input={"topic": "t"}, output={"q": "x", "p": Point(1, [])}, provenance={"attributes": {"k": "v"}})
    stamp = Record(job_kind="generation", job_id=job_id, item_key="a:0", request_key="a", status="failed",
                   topic="t", error="grounding: no", provenance={"grounding": Pair(1, 2)}, stamp=True)
    assert store.add_records([ok]) == 1
    assert store.add_records([stamp]) == 1
    (row,) = list(store.records("generation", job_id))
    assert row["output"] == {"q": "x", "p": {"x": 1, "y": []}}
    assert row["provenance"] == {"attributes": {"k": "v"}, "grounding": [1, 2]}
    assert (row["status"], row["error"]) == ("failed", "grounding: no")
