"""Fifty JSON Schemas for the structured-output proof: nested objects, enums, arrays with
bounds, numbers with ranges, required and optional fields, anyOf. Strings are mostly
bounded so that a 135M model's answers end within a short max_tokens."""

from __future__ import annotations

from typing import Any

S = {"type": "string", "maxLength": 16}
NAME = {"type": "string", "minLength": 1, "maxLength": 20}


def obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props) if required is None
            else required}  # fmt: skip


HAND: list[dict[str, Any]] = [
    obj({"name": NAME, "age": {"type": "integer", "minimum": 0, "maximum": 120}}),
    obj({"city": NAME, "population": {"type": "integer", "minimum": 1000, "maximum": 40000000}}),
    obj({"color": {"enum": ["red", "green", "blue"]}}),
    obj({"ok": {"type": "boolean"}, "reason": S}, ["ok"]),
    obj({"temperature": {"type": "number", "minimum": -50, "maximum": 60}}),
    obj({"probability": {"type": "number", "minimum": 0, "maximum": 1}}),
    obj({"tags": {"type": "array", "items": S, "minItems": 1, "maxItems": 3}}),
    obj(
        {
            "scores": {
                "type": "array",
                "items": {"type": "integer", "minimum": 0, "maximum": 10},
                "minItems": 2,
                "maxItems": 4,
            }
        }
    ),  # fmt: skip
    obj({"user": obj({"id": {"type": "integer", "minimum": 1}, "name": NAME})}),
    obj(
        {
            "order": obj(
                {
                    "item": NAME,
                    "qty": {"type": "integer", "minimum": 1, "maximum": 9},
                    "express": {"type": "boolean"},
                },
                ["item", "qty"],
            )
        }
    ),  # fmt: skip
    obj({"point": obj({"x": {"type": "number"}, "y": {"type": "number"}})}),
    obj({"value": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 99}, {"type": "null"}]}}),
    obj({"id": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 999}, S]}}),
    obj(
        {
            "answer": {"enum": ["yes", "no", "maybe"]},
            "confidence": {"type": "integer", "minimum": 0, "maximum": 100},
        }
    ),  # fmt: skip
    obj(
        {
            "status": {"const": "active"},
            "since": {"type": "integer", "minimum": 1990, "maximum": 2030},
        }
    ),  # fmt: skip
    {
        "type": "array",
        "items": obj({"k": S, "v": {"type": "integer", "maximum": 9}}),
        "minItems": 1,
        "maxItems": 2,
    },  # fmt: skip
    {"type": "array", "items": {"enum": ["a", "b", "c"]}, "minItems": 2, "maxItems": 3},
    {"enum": ["north", "south", "east", "west"]},
    {"type": "integer", "minimum": 10, "maximum": 20},
    {"type": "boolean"},
    obj(
        {
            "book": obj(
                {
                    "title": NAME,
                    "year": {"type": "integer", "minimum": 1450, "maximum": 2025},
                    "authors": {"type": "array", "items": NAME, "minItems": 1, "maxItems": 2},
                }
            )
        }
    ),  # fmt: skip
    obj(
        {
            "event": obj(
                {
                    "name": NAME,
                    "day": {"type": "integer", "minimum": 1, "maximum": 31},
                    "month": {"enum": ["jan", "feb", "mar", "apr"]},
                }
            )
        }
    ),  # fmt: skip
    obj(
        {
            "rgb": {
                "type": "array",
                "items": {"type": "integer", "minimum": 0, "maximum": 255},
                "minItems": 3,
                "maxItems": 3,
            }
        }
    ),  # fmt: skip
    obj(
        {
            "shape": {
                "anyOf": [
                    obj(
                        {
                            "kind": {"const": "circle"},
                            "r": {"type": "number", "minimum": 0, "maximum": 10},
                        }
                    ),
                    obj(
                        {
                            "kind": {"const": "square"},
                            "side": {"type": "integer", "minimum": 1, "maximum": 10},
                        }
                    ),
                ]
            }
        }
    ),  # fmt: skip
    obj(
        {
            "price": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000},
            "currency": {"enum": ["EUR", "USD"]},
        }
    ),  # fmt: skip
    obj({"a": obj({"b": obj({"c": obj({"d": {"type": "integer", "maximum": 5}})})})}),
    obj(
        {"name": NAME, "nickname": S, "age": {"type": "integer", "minimum": 0, "maximum": 99}},
        ["name"],
    ),  # fmt: skip
    obj(
        {
            "matrix": {
                "type": "array",
                "maxItems": 2,
                "minItems": 1,
                "items": {
                    "type": "array",
                    "items": {"type": "integer", "maximum": 9},
                    "minItems": 1,
                    "maxItems": 2,
                },
            }
        }
    ),  # fmt: skip
    obj({"email": {"type": "string", "pattern": "^[a-z]{1,8}@[a-z]{1,8}\\.(com|org)$"}}),
    obj({"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{3}$"}}),
]

_ENUMS = [["low", "mid", "high"], ["cat", "dog"], ["on", "off"], ["s", "m", "l", "xl"],
          ["alpha", "beta", "gamma"]]  # fmt: skip
_RANGES = [(0, 5), (-10, 10), (100, 200), (1, 12), (0, 1000)]


def generated() -> list[dict[str, Any]]:
    """Twenty more: an enum, a bounded integer and an optional bounded list, in turn nested."""
    out = []
    for i in range(20):
        values = _ENUMS[i % len(_ENUMS)]
        lo, hi = _RANGES[(i // len(_ENUMS)) % len(_RANGES)]
        inner = obj(
            {"level": {"enum": values}, "count": {"type": "integer", "minimum": lo, "maximum": hi},
             "notes": {"type": "array", "items": S, "maxItems": 1 + i % 3}},
            ["level", "count"],
        )  # fmt: skip
        out.append(inner if i % 2 == 0 else obj({f"item{i}": inner, "flag": {"type": "boolean"}}))
    return out


SCHEMAS = HAND + generated()
assert len(SCHEMAS) == 50
