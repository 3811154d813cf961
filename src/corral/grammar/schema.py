"""JSON Schema adjustments before compiling: objects generate only the properties they name.

A schema without `additionalProperties` allows any extra key; a grammar that offers them
lets a model wander off into invented keys until max_tokens (small models do). Closing such
objects (`additionalProperties: false`) only narrows what is generated: the output still
validates against the original schema. llama.cpp's schema converter does the same. Branches
of `allOf` are left open, since closing each part would refuse the other parts' keys.
"""

from __future__ import annotations

from typing import Any

# keywords whose value is a map of name -> subschema
_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")
# keywords whose value is one subschema
_SCHEMA_ONE = (
    "items", "additionalItems", "additionalProperties", "unevaluatedProperties", "contains",
    "not", "if", "then", "else", "propertyNames",
)  # fmt: skip
# keywords whose value is a list of subschemas
_SCHEMA_LISTS = ("anyOf", "oneOf", "prefixItems")
_OPEN_MARKERS = ("additionalProperties", "unevaluatedProperties", "patternProperties")


def close_objects(schema: Any, _close: bool = True) -> Any:
    """A copy of `schema` where objects with `properties` and no rule for other keys get
    `additionalProperties: false`."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    named = isinstance(out.get("properties"), dict)
    if _close and named and not any(k in out for k in _OPEN_MARKERS):
        out["additionalProperties"] = False
    for key in _SCHEMA_MAPS:
        sub = out.get(key)
        if isinstance(sub, dict):
            out[key] = {name: close_objects(s) for name, s in sub.items()}
    for key in _SCHEMA_ONE:
        if key in out:
            if isinstance(out[key], list):  # old-style tuple `items`
                out[key] = [close_objects(s) for s in out[key]]
            else:
                out[key] = close_objects(out[key])
    for key in _SCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [close_objects(s) for s in out[key]]
    if isinstance(out.get("allOf"), list):
        out["allOf"] = [close_objects(s, _close=False) for s in out["allOf"]]
    return out
