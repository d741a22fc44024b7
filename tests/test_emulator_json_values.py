"""The JSON-mode value generator on its own: values meet their schema for many seeds, the
same seed gives the same value, and schemas it cannot meet (or that are no schemas) say so."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from pipelines.emulator import json_values

WORDS = ("alpha", "beta", "gamma", "delta")

SCHEMAS: dict[str, dict[str, Any]] = {
    "integers": {
        "type": "array",
        "items": {"type": "integer", "minimum": 3, "maximum": 50, "multipleOf": 7},
        "minItems": 2,
        "maxItems": 2,
    },
    "exclusive": {"type": "number", "exclusiveMinimum": 1, "exclusiveMaximum": 2},
    "unique": {"type": "array", "items": {"enum": [1, 2, 3]}, "minItems": 3, "uniqueItems": True},
    "all of": {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
            {"properties": {"b": {"type": "boolean"}}, "required": ["b"]},
        ]
    },
    "min properties": {
        "type": "object",
        "properties": {k: {"type": "null"} for k in "abcdef"},
        "minProperties": 5,
    },
    "prefix items": {
        "type": "array",
        "prefixItems": [{"const": "id"}, {"type": "integer"}],
        "items": False,
    },
    "strings": {
        "type": "object",
        "properties": {
            "short": {"type": "string", "minLength": 30, "maxLength": 31},
            "when": {"type": "string", "format": "date"},
        },
        "required": ["short", "when"],
    },
    "recursive": {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
            }
        },
        "$ref": "#/$defs/node",
    },
    "free object": {"type": "object", "additionalProperties": {"type": "integer"}},
}


@pytest.mark.parametrize("name", SCHEMAS)
def test_values_meet_their_schema_and_repeat_per_seed(name: str) -> None:
    schema = SCHEMAS[name]
    for seed in range(25):
        value = json_values.generate(schema, seed, WORDS)
        jsonschema.validate(value, schema)
        assert json_values.generate(schema, seed, WORDS) == value


def test_unmeetable_and_invalid_schemas_are_told_apart() -> None:
    unmeetable = [
        {"type": "string", "pattern": "^[0-9]{4}$"},
        {"type": "integer", "minimum": 5, "maximum": 4},
        {"type": "array", "items": {"enum": [1]}, "minItems": 2, "uniqueItems": True},
        False,
    ]
    for schema in unmeetable:
        with pytest.raises(json_values.Unsatisfiable):
            json_values.generate(schema, 0, WORDS)
    for invalid in ({"type": 5}, {"minItems": -1}, [1, 2]):
        with pytest.raises(json_values.InvalidSchema):
            json_values.generate(invalid, 0, WORDS)
