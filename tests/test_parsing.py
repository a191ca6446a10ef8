"""parsing: sloppy model replies -> exactly the complete items, each validated against the schema."""
from __future__ import annotations

import json

import json_repair
import pytest

from sdstudio import parsing, validation
from sdstudio.errors import ConfigError, SdstudioError
from sdstudio.parsing import ParsedItem, ParseError, ParseResult, extract_json, parse_items, validate_item

QA = {
    "type": "object",
    "properties": {"q": {"type": "string", "minLength": 1}, "a": {"type": "string", "minLength": 1}},
    "required": ["q", "a"],
}
STRICT = {
    "type": "object",
    "properties": {"question": {"type": "string", "minLength": 1},
                   "solution": {"type": "string", "minLength": 1},
                   "tags": {"type": "array", "items": {"type": "string"}}},
    "required": ["question", "solution"],
    "additionalProperties": False,
}
AB = {"q": "a", "a": "b"}
CD = {"q": "c", "a": "d"}
EF = {"q": "e", "a": "f"}
CODE = 'def f(): return {"a": 1}  # }]'

# raw reply -> (items kept, truncated, repaired); every kept item is valid under QA.
CORPUS = [
    pytest.param('{"q": "a", "a": "b"}', [AB], False, False, id="bare-object-is-one-item"),
    pytest.param('[{"q": "a", "a": "b"}, {"q": "c", "a": "d"}]', [AB, CD], False, False,
                 id="bare-array"),
    pytest.param('{"items": [{"q": "a", "a": "b"}, {"q": "c", "a": "d"}]}', [AB, CD], False, False,
                 id="wrapped-under-items"),
    pytest.param('{"questions": [{"q": "a", "a": "b"}]}', [AB], False, False,
                 id="wrapped-under-any-single-key"),
    pytest.param('{"topic": "sorting", "count": 2, "questions": [{"q": "a", "a": "b"}, {"q": "c", "a": "d"}]}',
                 [AB, CD], False, False, id="wrapped-with-metadata-keys"),
    pytest.param('```json\n[{"q": "a", "a": "b"}]\n```', [AB], False, False, id="json-fence"),
    pytest.param('Here you go:\n```\n{"q": "a", "a": "b"}\n```\nLet me know if you need more!', [AB],
                 False, False, id="bare-fence-with-prose-around"),
    pytest.param('Sure! Here are the items: {"q": "a", "a": "b"} Hope this helps', [AB], False, False,
                 id="prose-around-object"),
    pytest.param("{'q': 'a', 'a': 'b', 'ok': True, 'n': None, 'no': False}",
                 [{**AB, "ok": True, "n": None, "no": False}], False, True, id="python-literals"),
    pytest.param('[{"q": "a", "a": "b",}, {"q": "c", "a": "d",},]', [AB, CD], False, True,
                 id="trailing-commas"),
    pytest.param('```json\n[\n  // first\n  {"q": "a", /* inline */ "a": "b"}\n]\n```', [AB], False, True,
                 id="comments"),
    pytest.param('[{q: "a", a: "b"}, {q: "c", a: "d"}]', [AB, CD], False, True, id="unquoted-keys"),
    pytest.param('{"items": [{"q": "a", "a": "b"}, {"q": "c", "a": "d"}, {"q": "e", "a":', [AB, CD], True,
                 True, id="truncated-after-key-of-third-item"),
    pytest.param('{"items": [{"q": "a", "a": "b"}, {"q": "c", "a": "d"}, {"q": "e", "a": "the ans',
                 [AB, CD], True, True, id="truncated-inside-string-of-third-item"),
    pytest.param('[{"q": "a", "a": "b"}, {"q": "e", "a": "f", "tags": ["x", "y"], "more": "z', [AB], True, True,
                 id="truncated-after-nested-list-of-second-item"),
    pytest.param('[{"q": "a", "a": "b"}, {"q": "c", "a": "def f():\\n    return {\\"a\\": [1, 2', [AB], True,
                 True, id="truncated-inside-code-with-brackets"),
    pytest.param('[{"q": "a", "a": "b"}, {"q": "c", "a": "d"},', [AB, CD], True, True,
                 id="truncated-after-comma-keeps-complete-items"),
    pytest.param('{"items": [{"q": "a", "a": "b"}, {"q": "c", "a": "d"}]', [AB, CD], True, True,
                 id="truncated-before-wrapper-close"),
    pytest.param('```json\n{"items": [{"q": "a", "a": "b"}, {"q": "c"', [AB], True, True,
                 id="truncated-inside-unclosed-fence"),
    pytest.param('{"topic": "t", "questions": [{"q": "a", "a": "b"}, {"q": "c", "a": "d"}, {"q": "e", "a": "f"',
                 [AB, CD], True, True, id="truncated-inside-other-key-wrapper"),
    pytest.param('{"items": [{"q": "a", "a": "b"}, {"q": "c", "a": "d"}], "note": "these cover', [AB, CD], True,
                 True, id="truncated-after-the-item-list-closed"),
    pytest.param(json.dumps(json.dumps([AB, CD])), [AB, CD], False, True, id="double-encoded-reply"),
    pytest.param(json.dumps([json.dumps(AB), json.dumps(CD)]), [AB, CD], False, True,
                 id="double-encoded-items"),
    pytest.param('{"q": "¿Qué es π?", "a": "≈ 3.14159 — 円周率 😀 \\u00e9"}',
                 [{"q": "¿Qué es π?", "a": "≈ 3.14159 — 円周率 😀 é"}], False, False, id="unicode"),
    pytest.param('{"q": "line1\\nline2\\ttab \\"quoted\\"", "a": "b"}',
                 [{"q": 'line1\nline2\ttab "quoted"', "a": "b"}], False, False, id="escaped-newlines"),
    pytest.param('{"q": "line1\nline2", "a": "b"}', [{"q": "line1\nline2", "a": "b"}], False, True,
                 id="raw-newlines-in-strings"),
    pytest.param('Answer: {"q": "Write f", "a": ' + json.dumps(CODE) + '} Done. {not json}',
                 [{"q": "Write f", "a": CODE}], False, False, id="braces-in-strings-inside-prose"),
    pytest.param('Item 1:\n```json\n{"q": "a", "a": "b"}\n```\nItem 2:\n```json\n[{"q": "c", "a": "d"}]\n```',
                 [AB, CD], False, False, id="every-fenced-block-counts"),
    pytest.param('{"q": "a", "a": "b"}\n{"q": "c", "a": "d"}\n{"q": "e", "a": "f"}\n', [AB, CD, EF], False,
                 False, id="json-lines"),
    pytest.param('<think>They want {"q": "draft"} items [{"q": "x"}]</think>\n{"q": "a", "a": "b"}', [AB],
                 False, False, id="reasoning-block-ignored"),
    pytest.param('```python\nx = {"q": "no", "a": "code"}\n```\nAs JSON: {"q": "a", "a": "b"}', [AB], False,
                 False, id="other-language-fence-ignored"),
    pytest.param('Per RFC [8259] and {this}, see [1]: [{"q": "a", "a": "b"}]', [AB], False, False,
                 id="prose-brackets-are-not-json"),
    pytest.param('```json\n{"q": "Sort", "a": "```python\nsorted(x)\n```"}\n```',
                 [{"q": "Sort", "a": "```python\nsorted(x)\n```"}], False, True,
                 id="fence-inside-json-string-does-not-close-block"),
    pytest.param("{'q': 'What's up?', 'a': 'b'}", [{"q": "What's up?", "a": "b"}], False, True,
                 id="apostrophe-in-single-quoted-string"),
    pytest.param('\ufeff  \n{"q": "a", "a": "b"}\n\n', [AB], False, False, id="bom-and-whitespace"),
]


@pytest.mark.parametrize("raw, kept, truncated, repaired", CORPUS)
def test_corpus_reply_yields_exactly_the_complete_items(raw, kept, truncated, repaired):
    result = parse_items(raw, QA)
    assert result.items == [ParsedItem(item) for item in kept]
    assert result.error is None
    assert (result.truncated, result.repaired) == (truncated, repaired)


NOTHING = [
    pytest.param("", "reply is empty", False, id="empty"),
    pytest.param("  \n\t ", "reply is empty", False, id="whitespace"),
    pytest.param("Sure, here are three questions about sorting algorithms.",
                 "reply contains no JSON (starts with: 'Sure, here are three questions ...')", False,
                 id="pure-prose"),
    pytest.param("I think {this} is fine [1]",
                 "reply contains no JSON (starts with: 'I think {this} is fine [1]')",
                 False, id="prose-with-brackets"),
    pytest.param("42", "reply contains no JSON (starts with: '42')", False, id="scalar"),
    pytest.param("[]", "reply contains no items (an empty list or object)", False, id="empty-list"),
    pytest.param("Here: {}", "reply contains no items (an empty list or object)", False, id="empty-object"),
    pytest.param('{"items": [{"q": "e", "a":',
                 "reply ends before its JSON closes (no complete item)", True,
                 id="cut-before-first-item"),
    pytest.param('{"q": "a", "a": "an answer that goes on',
                 "reply ends before its JSON closes (no complete item)", True,
                 id="cut-lone-object"),
    pytest.param("<think>First I'll list {\"q\": ",
                 "reply contains no JSON (starts with: '<think>First I\\'ll list {\"q\":')", False,
                 id="cut-inside-reasoning"),
]


@pytest.mark.parametrize("raw, error, truncated", NOTHING)
def test_reply_without_items_has_error_and_no_items(raw, error, truncated):
    result = parse_items(raw, QA)
    assert result == ParseResult([], error, truncated, truncated)


PREFIX_ITEMS = [{"q": "What's {x}?", "a": 'def f(): return {"a": [1, 2]}'},
                {"q": "π ≈ 3.14", "a": "b\nc", "tags": ["x", "y"]}, {"q": "e", "a": "f"}]


@pytest.mark.parametrize("full", [
    pytest.param(json.dumps({"items": PREFIX_ITEMS}), id="wrapped"),
    pytest.param(json.dumps(PREFIX_ITEMS, indent=2), id="bare-indented"),
    pytest.param("Sure:\n```json\n" + json.dumps({"questions": PREFIX_ITEMS}) + "\n```", id="fenced"),
    pytest.param(repr(PREFIX_ITEMS), id="python-repr"),
])
def test_reply_cut_at_any_character_keeps_only_a_prefix_of_whole_items(full):
    for cut in range(1, len(full) + 1):
        result = parse_items(full[:cut], QA)
        assert result.invalid == [], cut
        assert result.valid == PREFIX_ITEMS[:len(result.valid)], cut
    assert result.valid == PREFIX_ITEMS


def test_json_repair_alone_would_keep_the_half_written_item():
    """Why truncation is judged on the raw text: the library "completes" the cut-off item."""
    raw = '{"items": [{"q": "a", "a": "b"}, {"q": "e", "a":'
    assert json_repair.repair_json(raw, return_objects=True)["items"][-1] == {"q": "e", "a": ""}
    assert parse_items(raw, QA).valid == [AB]


def test_clean_replies_never_reach_json_repair(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("json_repair called on clean JSON")

    monkeypatch.setattr(json_repair, "repair_json", refuse)
    for raw in ('[{"q": "a", "a": "b"}]', '```json\n{"q": "a", "a": "b"}\n```', 'Here: {"q": "a", "a": "b"}.'):
        assert parse_items(raw, QA).valid == [AB]


def test_missing_required_key_names_item_and_key_and_keeps_valid_siblings():
    result = parse_items('[{"question": "q1", "solution": "s1"}, {"question": "q2"}]', STRICT)
    assert result.valid == [{"question": "q1", "solution": "s1"}]
    assert result.invalid == [ParsedItem({"question": "q2"}, "item 2: 'solution' is a required property")]
    assert result.error is None


def test_empty_string_under_min_length_names_the_field():
    raw = json.dumps([{"question": "q", "solution": "s"}] * 2 + [{"question": "", "solution": "s"}])
    assert [item.error for item in parse_items(raw, STRICT).items] == [
        None, None, "item 3: 'question' should be non-empty"]


def test_wrong_type_names_the_field():
    result = parse_items('{"question": "q", "solution": 42}', STRICT)
    assert result.invalid[0].error == "item 1: 'solution' is not of type 'string'"


def test_nested_error_names_the_path():
    result = parse_items('{"question": "q", "solution": "s", "tags": ["ok", 7]}', STRICT)
    assert result.invalid[0].error == "item 1: 'tags[1]' is not of type 'string'"


def test_extra_key_is_rejected_when_additional_properties_false():
    result = parse_items('{"question": "q", "solution": "s", "notes": "x"}', STRICT)
    assert result.invalid[0].error == "item 1: Additional properties are not allowed ('notes' was unexpected)"


def test_non_object_item_is_invalid_when_schema_wants_an_object():
    result = parse_items('[{"q": "a", "a": "b"}, "just text", 3]', QA)
    assert [(item.value, item.error) for item in result.items] == [
        (AB, None), ("just text", "item 2: expected a JSON object, got a string"),
        (3, "item 3: expected a JSON object, got a number")]


def test_long_reasons_are_one_line_and_at_most_200_chars():
    schema = {"type": "object", "properties": {"k": {"enum": [f"choice-{i}\nline" for i in range(60)]}}}
    error = parse_items('{"k": "nope"}', schema).invalid[0].error
    assert error.startswith("item 1: 'k' is not one of") and len(error) <= 200 and "\n" not in error


def test_object_that_validates_is_one_item_despite_list_valued_field():
    item = {"question": "q", "solution": "s", "tags": ["a", "b"]}
    schema = {**STRICT, "properties": {**STRICT["properties"], "items": {"type": "array"}}}
    with_items_key = {**item, "items": [{"x": 1}]}
    assert parse_items(json.dumps(item), STRICT).valid == [item]
    assert parse_items(json.dumps(with_items_key), schema).valid == [with_items_key]


def test_schema_field_holding_objects_is_not_taken_for_a_wrapper():
    schema = {"type": "object", "properties": {"question": {"type": "string"},
                                               "tests": {"type": "array"}}, "required": ["question", "answer"]}
    reply = {"question": "q", "tests": [{"in": 1, "out": 2}]}
    result = parse_items(json.dumps(reply), schema)
    assert result.invalid == [ParsedItem(reply, "item 1: 'answer' is a required property")]


def test_without_schema_an_object_with_several_keys_is_one_item():
    reply = {"question": "q", "examples": [{"in": 1}]}
    assert parse_items(json.dumps(reply)).valid == [reply]


def test_list_key_can_be_renamed():
    reply = {"data": [AB], "meta": [{"page": 1}]}
    assert parse_items(json.dumps(reply), QA, list_key="data").valid == [AB]


def test_item_numbers_run_across_fenced_blocks():
    raw = '```json\n[{"q": "a", "a": "b"}]\n```\n```json\n[{"q": "c"}]\n```'
    assert parse_items(raw, QA).invalid == [ParsedItem({"q": "c"}, "item 2: 'a' is a required property")]


def test_result_splits_valid_values_from_invalid_items():
    result = parse_items('[{"q": "a", "a": "b"}, {"q": ""}]', QA)
    assert result.valid == [AB]
    assert [item.value for item in result.invalid] == [{"q": ""}]


def test_without_schema_every_item_is_valid():
    assert parse_items('[{"x": 1}, "text"]').valid == [{"x": 1}, "text"]


def test_validate_item_returns_none_when_valid_or_without_schema():
    assert validate_item(AB, QA) is None
    assert validate_item("anything", None) is None
    assert validate_item({"q": "a"}, QA) == "'a' is a required property"


def test_equal_schemas_share_one_compiled_validator(monkeypatch):
    calls = []
    validators = parsing.jsonschema_module().validators
    original = validators.validator_for

    def counting(schema, *args, **kwargs):
        if isinstance(schema, dict) and schema.get("title") == "cache-test":  # jsonschema calls it too
            calls.append(schema)
        return original(schema, *args, **kwargs)

    monkeypatch.setattr(validators, "validator_for", counting)
    schema = {"title": "cache-test", **QA}
    reordered = dict(reversed(list(schema.items())))
    candidates = (schema, reordered, json.loads(json.dumps(schema)))
    for candidate in candidates:
        assert validate_item(AB, candidate) is None
        # an invalid item goes to jsonschema (the fast predicate never says "invalid"): built once for all three
        assert validate_item({"q": "a"}, candidate) == "'a' is a required property"
    assert len(calls) == 1
    assert len({id(validation.compiled(candidate)) for candidate in candidates}) == 1


def test_invalid_schema_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match=r"^output JSON schema is invalid: .*output_schema$"):
        parse_items('{"q": "a"}', {"type": "no-such-type"})


def test_extract_json_reports_repaired_and_truncated():
    assert extract_json('{"q": "a", "a": "b"}') == (AB, False, False)
    assert extract_json("Sure: {'q': 'a', 'a': 'b',}") == (AB, True, False)
    assert extract_json('[{"q": "a", "a": "b"}, {"q": "c", "a": "d"}, {"q": "e"') == ([AB, CD], True, True)


def test_extract_json_cuts_a_truncated_wrapper_back_to_complete_items():
    raw = '{"items": [{"q": "a", "a": "b"}, {"q": "c", "a": "d"}, {"q": "e", "a": "f'
    value, _, truncated = extract_json(raw)
    assert (value, truncated) == ({"items": [AB, CD]}, True)


def test_extract_json_returns_the_first_of_several_values():
    assert extract_json('```json\n{"q": "a", "a": "b"}\n```\n```json\n{"q": "c", "a": "d"}\n```')[0] == AB


def test_extract_json_raises_a_user_facing_parse_error_without_json():
    with pytest.raises(ParseError, match=r"^reply contains no JSON \(starts with: 'Sorry, I can") as caught:
        extract_json("Sorry, I cannot help with that request right now.")
    assert isinstance(caught.value, SdstudioError)


def test_extract_json_raises_when_only_a_cut_off_object_is_there():
    with pytest.raises(ParseError, match=r"ends before its JSON closes \(no complete item\)$"):
        extract_json('{"q": "a", "a": "unfinis')  # no "raise max_tokens": the text cannot tell why it ended
