"""The compatibility checker catches each kind of breaking change and allows additions."""

import copy

import pytest

from deeptrust.schemas.compat import breaking_changes
from deeptrust.schemas.events import DetectedEvent
from deeptrust.schemas.files import schema_for

BASE = schema_for(DetectedEvent)


def changed(edit):
    schema = copy.deepcopy(BASE)
    edit(schema)
    return breaking_changes(BASE, schema)


def test_identical_schema_is_compatible():
    assert breaking_changes(BASE, copy.deepcopy(BASE)) == []


def test_adding_an_optional_field_is_compatible():
    assert changed(lambda s: s["properties"].update(note={"type": "string", "default": ""})) == []


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda s: s["properties"].pop("uri"), "$.uri: removed"),
        (lambda s: s["properties"]["width"].update(type="string"), "$.width: type"),
        (lambda s: s["required"].append("extra"), "$.extra: became required"),
        (lambda s: s["properties"]["width"].update(minimum=10), "$.width: minimum tightened"),
        (
            lambda s: s["$defs"]["Detection"]["properties"]["label"]["enum"].remove("real"),
            "$.detection.label: enum lost",
        ),
        (
            lambda s: s["$defs"]["Detection"]["properties"].pop("model_version"),
            "$.detection.model_version: removed",
        ),
        (lambda s: s.update(additionalProperties=False), "no longer allows additional"),
    ],
    ids=["removed", "retyped", "required", "tightened", "enum", "nested-removed", "closed"],
)
def test_breaking_change_is_reported(edit, expected):
    problems = changed(edit)
    assert any(expected in problem for problem in problems), problems


def test_a_constant_may_widen_into_an_enum_that_keeps_it_but_not_lose_it():
    old = {"type": "object", "properties": {"task": {"type": "string", "const": "detect"}}}
    wider = copy.deepcopy(old)
    wider["properties"]["task"] = {"type": "string", "enum": ["detect", "caption"]}
    other = copy.deepcopy(old)
    other["properties"]["task"] = {"type": "string", "enum": ["caption"]}
    assert breaking_changes(old, wider) == []
    assert breaking_changes(old, other) == ["$.task: enum lost ['detect']"]
    assert breaking_changes(wider, old) == ["$.task: enum lost ['caption']"]
