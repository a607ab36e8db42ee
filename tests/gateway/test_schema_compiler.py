"""The compiled schema checks (rpc._validator: references written in place, enums as sets)
decide exactly as fastjsonschema's own compilation of the same schema: for every schema of
every version, on a payload built from the schema and on each of its mutations, the same
pass or failure, the same rule, message, path and value, and the same defaults filled in."""

from __future__ import annotations

import copy
import os
from typing import Any

import fastjsonschema
import orjson
import pytest

from cocharge.gateway import rpc

# What each value of a payload is replaced by, in turn (types, bounds, enums of other fields).
_BAD = (None, True, 0, -1, 2**40, 1.5, "", "x", "Voltage", "Accepted", "9" * 600, [], ["x"],
        {}, {"a": 1})


def _schemas(version: str) -> list[tuple[str, bool]]:
    folder = os.path.dirname(rpc._schema_path(version, "x"))
    found = []
    for file in sorted(os.listdir(folder)):
        name = file.removesuffix(".json")
        if version == "1.6":
            found.append((name.removesuffix("Response"), name.endswith("Response")))
        elif name.endswith("Request"):
            found.append((name.removesuffix("Request"), False))
        elif name.endswith("Response"):
            found.append((name.removesuffix("Response"), True))
        elif name in rpc.SEND_ACTIONS:
            found.append((name, False))
    return found


def _instance(node: Any, definitions: dict[str, Any], depth: int = 0) -> Any:
    """A payload with every property of the schema filled in (valid or not: both are compared)."""
    if depth > 12 or not isinstance(node, dict):
        return "x"
    ref = node.get("$ref")
    if isinstance(ref, str):
        return _instance(definitions.get(ref.rsplit("/", 1)[-1], {}), definitions, depth + 1)
    if node.get("enum"):
        return node["enum"][-1]
    kind = node.get("type")
    if kind == "object":
        return {key: _instance(value, definitions, depth + 1)
                for key, value in node.get("properties", {}).items()}
    if kind == "array":
        return [_instance(node.get("items", {}), definitions, depth + 1)
                for _ in range(max(1, node.get("minItems", 1)))]
    if kind == "integer":
        return max(node.get("minimum", 1), 1)
    if kind == "number":
        return 2.5
    if kind == "boolean":
        return False
    if node.get("format") == "date-time":
        return "2026-12-05T10:00:00Z"
    return "x" * max(1, node.get("minLength", 1))


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*path, index))
    return found


def _copy(payload: Any) -> Any:
    return orjson.loads(orjson.dumps(payload))


def _variants(payload: dict[str, Any]) -> list[Any]:
    """The payload, and for each of its values: that value replaced by three others of _BAD
    (a different three along the paths, all of them over a schema) and removed."""
    variants: list[Any] = [_copy(payload)]
    for number, path in enumerate(_paths(payload)[1:]):
        for bad in (_BAD[number % len(_BAD)], _BAD[(number + 5) % len(_BAD)],
                    _BAD[(number + 10) % len(_BAD)]):
            changed = _copy(payload)
            parent = changed
            for step in path[:-1]:
                parent = parent[step]
            parent[path[-1]] = _copy(bad)
            variants.append(changed)
        if not isinstance(path[-1], int):
            removed = _copy(payload)
            parent = removed
            for step in path[:-1]:
                parent = parent[step]
            del parent[path[-1]]
            variants.append(removed)
    extra = _copy(payload)
    extra["notInTheSchema"] = 1
    variants.append(extra)
    return variants


def _outcome(check: Any, payload: Any) -> tuple[Any, ...]:
    try:
        check(payload)
    except fastjsonschema.JsonSchemaValueException as exc:
        return (exc.rule, exc.message, exc.name, repr(exc.rule_definition), repr(exc.value),
                repr(payload))
    return ("valid", repr(payload))  # with the defaults it filled in


@pytest.mark.parametrize("version", ["1.6", "2.0.1", "2.1"])
def test_the_compiled_checks_decide_as_fastjsonschema_does(version):
    compared = 0
    for action, response in _schemas(version):
        schema = rpc.strict_schema(version, action, response)
        reference = fastjsonschema.compile(copy.deepcopy(schema))
        ours = rpc._validator(version, action, response)
        payload = _instance(schema, schema.get("definitions", {}))
        for variant in _variants(payload):
            expected = _outcome(reference, _copy(variant))
            assert _outcome(ours, variant) == expected, (version, action, response, variant)
            compared += 1
    assert compared > 1000, compared  # every schema was read and mutated
