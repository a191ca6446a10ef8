"""The fast schema predicate (validation.fast_predicate) agrees with jsonschema: it passes only values jsonschema
accepts, it compiles only well-formed schemas, and every verdict and reason through it is jsonschema's own."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from sdstudio import validation
from sdstudio.usecases import schema_from_examples, schema_from_keys
from sdstudio.validation import check_schema, compiled, fast_predicate, jsonschema_module, reason

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def shipped_schemas() -> list[dict]:
    """Every shipped use case's output schema, and the ones plans build from keys and examples."""
    import yaml

    schemas = []
    for path in sorted(TEMPLATES.glob("*/use_case.yaml")):
        spec = yaml.safe_load(path.read_text())
        if spec.get("output_schema"):
            schemas.append(spec["output_schema"])
        if spec.get("examples"):
            schemas.append(schema_from_examples([dict(e) for e in spec["examples"]]))
    schemas.append(schema_from_keys(["question", "answer"]))
    schemas.append(schema_from_examples([{"n": 1, "x": 1.5, "ok": True, "tags": ["a"], "meta": {"k": "v"}}]))
    return schemas


def reference(value, schema) -> str | None:
    """What validation.reason said before the fast path: jsonschema alone."""
    jsonschema = jsonschema_module()
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.validators.Draft202012Validator)
    return reason(value, schema, cls(schema))


def plain_validator(schema):
    jsonschema = jsonschema_module()
    return jsonschema.validators.validator_for(schema, default=jsonschema.validators.Draft202012Validator)(schema)


SCALARS = ["", "a", "short", "a longer piece of text", "x" * 9, "x" * 10, "ü" * 10, 0, 1, -3, 2.0, 2.5,
           float("nan"), True, False, None]


def random_value(rng: random.Random, depth: int = 0):
    roll = rng.random()
    if depth < 3 and roll < 0.2:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if depth < 3 and roll < 0.35:
        return {rng.choice(["question", "answer", "q", "a", "extra", "priority"]): random_value(rng, depth + 1)
                for _ in range(rng.randint(0, 4))}
    return rng.choice(SCALARS)


def variants(schema: dict, rng: random.Random, count: int = 300) -> list:
    """Items near the schema's edge: a valid one built from it, then that item with fields dropped, added,
    emptied, retyped, and random values."""
    props = schema.get("properties", {})

    def good(sub):
        if "enum" in sub:
            return sub["enum"][0]
        kind = sub.get("type", "string")
        kind = kind[0] if isinstance(kind, list) else kind
        return {"string": "x" * max(sub.get("minLength", 0), 12), "integer": 3, "number": 1.5, "boolean": True,
                "array": [], "object": {}, "null": None}[kind]

    base = {name: good(sub) for name, sub in props.items()}
    out = [base, {}, [], "text", 1, None, [base], {"items": [base]}]
    for _ in range(count):
        item = dict(base)
        for _ in range(rng.randint(1, 3)):
            action = rng.random()
            names = list(props) or ["x"]
            name = rng.choice(names)
            if action < 0.25:
                item.pop(name, None)
            elif action < 0.45:
                item[rng.choice(["extra", "Question", name + "_"])] = random_value(rng)
            elif action < 0.7:
                item[name] = rng.choice(SCALARS)
            else:
                item[name] = random_value(rng)
        out.append(item)
    out.extend(random_value(rng) for _ in range(count // 3))
    return out


@pytest.mark.parametrize("schema", shipped_schemas(), ids=lambda s: ",".join(s.get("properties", {}))[:40])
def test_every_shipped_schema_compiles_and_agrees_with_jsonschema(schema):
    fast = fast_predicate(schema)
    assert fast is not None  # the shipped use cases take the fast path
    plain = plain_validator(schema)
    rng = random.Random(24)
    valid = invalid = 0
    for value in variants(schema, rng):
        truth = plain.is_valid(value)
        if fast(value):
            assert truth, value  # never "valid" for a value jsonschema refuses
        assert compiled(schema).is_valid(value) == truth
        assert validation.validate_item(value, schema) == reference(value, schema)
        valid += truth
        invalid += not truth
    assert valid and invalid  # both sides of the edge were tried


SUBSET_SCHEMAS = [
    {"type": "object", "properties": {"q": {"type": "string", "minLength": 1}, "a": {"type": "string", "minLength": 1}},
     "required": ["q", "a"]},
    {"type": ["string", "null"], "maxLength": 3},
    {"type": "integer"},
    {"type": ["integer", "boolean"]},
    {"type": "number"},
    {"enum": ["a", "b"]},
    {"enum": []},
    {"type": "array", "items": {"type": "string", "minLength": 2}, "minItems": 1, "maxItems": 2},
    {"type": "object", "additionalProperties": {"type": "integer"}, "properties": {"s": {"type": "string"}}},
    {"type": "object", "additionalProperties": False},
    {"properties": {"k": True, "m": {}}, "required": [], "title": "t", "description": "d", "format": "email",
     "default": 3, "examples": [1], "deprecated": False, "$comment": "c"},
    {"minLength": 2, "minItems": 1},
    {},
    True,
]


@pytest.mark.parametrize("schema", SUBSET_SCHEMAS, ids=lambda s: json.dumps(s)[:50])
def test_subset_schemas_agree_on_random_values(schema):
    fast = fast_predicate(schema)
    assert fast is not None
    plain = plain_validator(schema)
    rng = random.Random(7)
    values = [random_value(rng) for _ in range(600)] + [1.0, 3.0, 2.5, True, 0, "abc", "abcd", ["ab"], ["ab"] * 3,
                                                        {"s": "x", "n": 1}, {"s": 1}, {"n": 1.0}, {"n": True}]
    for value in values:
        if fast(value):
            assert plain.is_valid(value), (schema, value)


class Text(str):
    """A str subclass: jsonschema takes it for a string; the predicate leaves it to jsonschema."""


def test_values_of_other_types_go_to_jsonschema():
    schema = {"type": "object", "properties": {"q": {"type": "string", "minLength": 1}}, "required": ["q"]}
    fast = fast_predicate(schema)
    assert not fast({"q": Text("a")}) and not fast({"q": 1.0 + 0j})
    assert validation.validate_item({"q": Text("a")}, schema) is None  # jsonschema's verdict stands
    assert fast_predicate({"type": "integer"})(2.0) and not fast_predicate({"type": "integer"})(2.5)


OUTSIDE_OR_MALFORMED = [
    {"type": "string", "pattern": "^a"}, {"$ref": "#/$defs/x", "$defs": {"x": {}}}, {"anyOf": [{}]},
    {"$schema": "http://json-schema.org/draft-07/schema#", "type": "string"}, {"minimum": 1}, {"const": "a"},
    {"enum": [1, "a"]}, {"items": False}, {"properties": {"a": False}},
    {"type": "no-such-type"}, {"type": []}, {"type": ["string", "string"]}, {"type": 5},
    {"minLength": -1}, {"minLength": 1.5}, {"minLength": "1"}, {"minLength": True}, {"maxItems": 2.0},
    {"required": "q"}, {"required": ["q", "q"]}, {"required": [1]}, {"enum": "a"}, {"title": 5},
    {"examples": {}}, {"deprecated": "yes"}, {"properties": []}, {"properties": {"a": {"type": "nope"}}},
    {"additionalProperties": 3}, {"items": {"minLength": -2}}, False, [], "string",
]


@pytest.mark.parametrize("schema", OUTSIDE_OR_MALFORMED, ids=lambda s: json.dumps(s)[:50])
def test_schemas_outside_the_subset_are_left_to_jsonschema(schema):
    assert fast_predicate(schema) is None
    jsonschema = jsonschema_module()
    try:
        jsonschema.validators.validator_for(schema, default=jsonschema.validators.Draft202012Validator
                                            ).check_schema(schema)
        expected = None
    except jsonschema.exceptions.SchemaError as exc:
        expected = exc.message
    except Exception:  # noqa: BLE001 - jsonschema's own failure on a non-schema: check_schema fails the same way
        with pytest.raises(Exception):
            check_schema(schema)
        return
    try:
        check_schema(schema)
        got = None
    except jsonschema.exceptions.SchemaError as exc:
        got = exc.message
    assert got == expected


@pytest.mark.parametrize("schema", [*shipped_schemas(), *SUBSET_SCHEMAS], ids=lambda s: json.dumps(s)[:50])
def test_a_schema_the_predicate_compiles_is_valid_for_jsonschema(schema):
    assert fast_predicate(schema) is not None
    plain_validator(schema).check_schema(schema)  # raises if not
    check_schema(schema)


def test_a_changed_schema_dict_is_compiled_again():
    schema = {"type": "object", "properties": {"q": {"type": "string"}}}
    first = compiled(schema)
    assert first.is_valid({"q": "x"})
    schema["properties"]["q"]["minLength"] = 3
    assert compiled(schema) is not first
    assert validation.validate_item({"q": "x"}, schema) == reference({"q": "x"}, schema) is not None


def test_a_use_case_file_with_a_bad_schema_still_gets_jsonschemas_reason():
    from sdstudio.errors import ConfigError
    from sdstudio.usecase_file import parse

    with pytest.raises(ConfigError, match=r"not a valid JSON schema at properties\.q\.minLength: -1 is less than the "
                                          r"minimum of 0$"):
        parse({"output_schema": {"type": "object", "properties": {"q": {"minLength": -1}}}}, "x.yaml")
    with pytest.raises(ConfigError, match=r"not a valid JSON schema at type: 'objekt' is not valid under any"):
        parse({"output_schema": {"type": "objekt"}}, "x.yaml")
    good = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
    assert parse({"output_schema": good}, "x.yaml").output_schema == good
