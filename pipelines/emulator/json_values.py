"""JSON values that satisfy a JSON schema, for the emulated text models' JSON mode.

A real model under JSON mode writes a value its constrained decoder lets through; the
emulator writes one from a small deterministic generator instead: an object gets its
required properties and about half of the optional ones, an enum a member, strings a few
words, numbers a value inside ``minimum``/``maximum``, arrays ``minItems``..``maxItems``
items. ``$ref`` (local pointers), ``allOf``, ``anyOf``/``oneOf`` and ``type`` lists are
followed; ``pattern``, ``not`` and other keywords are not generated for. Every value is
checked with a validator of the schema before it is answered, and a schema the generator
cannot meet (a pattern, a contradiction) is what real JSON mode also fails on: the caller
turns :class:`Unsatisfiable` into "JSON Mode couldn't be met".

Validators are compiled once per distinct schema (keyed by its canonical JSON) and kept in
a bounded cache, so a job that sends the same schema with every row compiles it once.
Remote ``$ref`` pointers are never fetched: they count as unmet.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import orjson

# jsonschema ships no type information and its stubs are not a dependency
from jsonschema import Draft202012Validator  # type: ignore[import-untyped,unused-ignore]
from jsonschema.exceptions import SchemaError  # type: ignore[import-untyped,unused-ignore]
from referencing import Registry

MAX_DEPTH = 12
"""Deeper than this (a recursive ``$ref``), the generator gives up: :class:`Unsatisfiable`."""
ATTEMPTS = 3
"""Whole values drawn (each from the same seeded sequence) before giving up on a schema."""

_FORMATS = {
    "date": "2026-01-15",
    "date-time": "2026-01-15T12:00:00Z",
    "time": "12:00:00Z",
    "email": "someone@example.com",
    "uri": "https://example.com/item",
    "url": "https://example.com/item",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
}


class Unsatisfiable(Exception):
    """The generator found no value the schema accepts."""


class InvalidSchema(ValueError):
    """The schema itself is not a valid JSON schema."""


def canonical(schema: Any) -> str:
    """The schema as canonical JSON (sorted keys): the key validators are cached by."""
    try:
        return orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError as exc:
        raise InvalidSchema(f"not JSON: {exc}") from None


@lru_cache(maxsize=512)
def _compiled(key: str) -> Draft202012Validator:
    schema = orjson.loads(key)
    if not isinstance(schema, dict | bool):
        raise InvalidSchema("a JSON schema is an object or a boolean")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise InvalidSchema(exc.message) from None
    # An empty registry: without one, jsonschema fetches a remote ``$ref`` over the network
    # (deprecated, but still done), and a request's schema must never make the emulator
    # reach beyond loopback. A remote ``$ref`` is unresolvable instead.
    return Draft202012Validator(schema, registry=Registry())


def validator(schema: Any) -> Draft202012Validator:
    """A compiled validator for ``schema`` (cached); :class:`InvalidSchema` if it is none."""
    return _compiled(canonical(schema))


def is_valid(schema: Any, value: Any) -> bool:
    """Whether ``value`` satisfies ``schema`` (an unresolvable ``$ref`` counts as no)."""
    try:
        return bool(validator(schema).is_valid(value))
    except InvalidSchema:
        raise
    except Exception:  # e.g. a remote $ref, which is never fetched
        return False


def generate(schema: Any, seed: int, vocabulary: Sequence[str]) -> Any:
    """A value that satisfies ``schema``, the same for the same schema, seed and words."""
    validator(schema)  # an invalid schema is the caller's error, not an unmet one
    rng = random.Random(seed)
    for _ in range(ATTEMPTS):
        try:
            value = _Generator(schema, rng, vocabulary).value(schema, 0)
        except Unsatisfiable:
            continue
        if is_valid(schema, value):
            return value
    raise Unsatisfiable("no generated value satisfies the schema")


class _Generator:
    """One draw of a value; ``root`` is what local ``$ref`` pointers resolve against."""

    def __init__(self, root: Any, rng: random.Random, vocabulary: Sequence[str]) -> None:
        self.root = root
        self.rng = rng
        self.words = list(vocabulary) or ["value"]

    def value(self, schema: Any, depth: int) -> Any:
        if depth > MAX_DEPTH or schema is False:
            raise Unsatisfiable("too deep, or a false schema")
        if schema is True or not isinstance(schema, dict):
            return self.text(1, 4)
        schema = self.resolved(schema, depth)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return self.rng.choice(schema["enum"])
        branches = schema.get("anyOf") or schema.get("oneOf")
        if isinstance(branches, list) and branches:
            rest = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
            return self.value(_merge(rest, self.rng.choice(branches)), depth + 1)
        kind = self.kind(schema)
        if kind == "object":
            return self.obj(schema, depth)
        if kind == "array":
            return self.array(schema, depth)
        if kind in ("integer", "number"):
            return self.number(schema, kind == "integer")
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        return self.string(schema)

    def resolved(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        """``schema`` with its ``$ref`` and ``allOf`` folded in."""
        ref = schema.get("$ref")
        if isinstance(ref, str):
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = _merge(self.pointer(ref), rest)
        parts = schema.get("allOf")
        if isinstance(parts, list):
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for part in parts:
                if isinstance(part, dict):
                    merged = _merge(merged, self.resolved(part, depth + 1))
            schema = merged
        if "$ref" in schema or "allOf" in schema:
            if depth > MAX_DEPTH:
                raise Unsatisfiable("recursive $ref")
            return self.resolved(schema, depth + 1)
        return schema

    def pointer(self, ref: str) -> dict[str, Any]:
        if not ref.startswith("#"):
            raise Unsatisfiable(f"only local $ref pointers are followed, not {ref!r}")
        node: Any = self.root
        for raw in ref[1:].split("/")[1:] if ref != "#" else []:
            part = raw.replace("~1", "/").replace("~0", "~")
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            raise Unsatisfiable(f"$ref {ref!r} points at nothing")
        return node

    def kind(self, schema: dict[str, Any]) -> str:
        declared = schema.get("type")
        if isinstance(declared, list):
            # a nullable field ("type": ["string", "null"]) is usually filled in
            real = [t for t in declared if t != "null"]
            return str(real[0] if real else "null")
        if isinstance(declared, str):
            return declared
        if "properties" in schema or "required" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
        if "minimum" in schema or "maximum" in schema:
            return "number"
        return "string"

    def obj(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        required = [r for r in schema.get("required") or [] if isinstance(r, str)]
        extra = schema.get("additionalProperties", True)
        names = list(required)
        # optional properties: about half, fewer as objects nest, so values stay small
        keep = 0.5 if depth < 3 else 0.0
        names += [n for n in props if n not in required and self.rng.random() < keep]
        if not props and extra is not False and not required:
            names += self.rng.sample(self.words, min(len(self.words), self.rng.randint(1, 3)))
        least = int(schema.get("minProperties", 0))
        for name in props:  # minProperties: take more of the listed ones first
            if len(names) >= least:
                break
            if name not in names:
                names.append(name)
        out: dict[str, Any] = {}
        for name in dict.fromkeys(names):
            sub = props.get(name, extra if isinstance(extra, dict) else True)
            out[name] = self.value(sub, depth + 1)
        return out

    def array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        prefix = schema.get("prefixItems")
        prefix = prefix if isinstance(prefix, list) else []
        items = schema.get("items", True)
        high = int(schema.get("maxItems", 1 << 30))
        if items is False:  # nothing may follow the prefix
            high = min(high, len(prefix))
        low = min(max(int(schema.get("minItems", 1)), len(prefix)), high)
        if low < int(schema.get("minItems", 0)):
            raise Unsatisfiable("fewer items allowed than required")
        count = self.rng.randint(low, min(high, low + 3))
        out = [self.value(sub, depth + 1) for sub in prefix[:count]]
        unique = bool(schema.get("uniqueItems"))
        tries = 0
        while len(out) < count:
            item = self.value(items, depth + 1)
            tries += 1
            if not unique or item not in out:
                out.append(item)
            elif tries > 10 * count:  # few distinct values: stop once there are enough
                if len(out) < low:
                    raise Unsatisfiable("not enough distinct items")
                break
        return out

    def number(self, schema: dict[str, Any], integer: bool) -> int | float:
        low = float(schema.get("minimum", schema.get("exclusiveMinimum", 0)))
        high = float(schema.get("maximum", schema.get("exclusiveMaximum", low + 100)))
        if integer:
            lo = int(-(-low // 1)) + (1 if "exclusiveMinimum" in schema and low.is_integer() else 0)
            hi = int(high // 1) - (1 if "exclusiveMaximum" in schema and high.is_integer() else 0)
            if hi < lo:
                raise Unsatisfiable("no integer in range")
            step = schema.get("multipleOf")
            if isinstance(step, int) and step > 0:
                first = -(-lo // step) * step
                if first > hi:
                    raise Unsatisfiable("no multiple in range")
                return int(first + step * self.rng.randint(0, (hi - first) // step))
            return self.rng.randint(lo, hi)
        if high < low:
            raise Unsatisfiable("maximum below minimum")
        # the middle half of the range keeps clear of exclusive bounds
        return round(low + (high - low) * (0.25 + 0.5 * self.rng.random()), 4)

    def string(self, schema: dict[str, Any]) -> str:
        fmt = schema.get("format")
        text = _FORMATS.get(fmt, "") if isinstance(fmt, str) else ""
        text = text or self.text(1, 6)
        least, most = int(schema.get("minLength", 0)), schema.get("maxLength")
        while len(text) < least:
            text += " " + self.rng.choice(self.words)
        if isinstance(most, int):
            text = text[:most].rstrip() or text[:most]
        return text

    def text(self, low: int, high: int) -> str:
        return " ".join(self.rng.choice(self.words) for _ in range(self.rng.randint(low, high)))


def _merge(base: dict[str, Any], extra: Any) -> dict[str, Any]:
    """Two schemas that must both hold, folded into one (properties and required joined)."""
    if not isinstance(extra, dict):
        return dict(base)
    out = {**base, **extra}
    if isinstance(base.get("properties"), dict) and isinstance(extra.get("properties"), dict):
        out["properties"] = {**base["properties"], **extra["properties"]}
    if isinstance(base.get("required"), list) and isinstance(extra.get("required"), list):
        out["required"] = list(dict.fromkeys([*base["required"], *extra["required"]]))
    return out
