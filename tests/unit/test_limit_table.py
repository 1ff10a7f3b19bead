"""The limits table's promise, checked on every command and event model: whatever an ingress at the
ceilings could admit, every consumer decodes; one level past what no ingress admits, every
consumer refuses with the limit named. And the raw measure both sides share (``shared.limits``)."""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from shared import commands, events
from shared.commands import Command, EditEntity, RegisterContainer
from shared.containers import ContainerSpec
from shared.events import ContainerRegistered, EntityEdited, Event, FieldChange
from shared.limits import (
    CONSUMER_DEPTH,
    ENVELOPE_DEPTH,
    JSON_DEPTH_CEILING,
    LimitExceeded,
    Limits,
    check_consumed,
    check_document,
    rows_that_fit,
    shape,
)

SPEC = {"image": "x/y:1", "image_digest": "sha256:" + "a" * 64, "tasks": {"infer": {"command": ["infer"]}}}


def nested(depth: int) -> Any:
    """A JSON value ``depth`` levels deep (a scalar is zero)."""
    value: Any = 1
    for level in range(depth):
        value = {"k": value} if level % 2 else [value]
    return value


def subclasses(base: type) -> set[type]:
    found = set()
    for sub in base.__subclasses__():
        found |= {sub} | subclasses(sub)
    return found


def in_vocabulary(model: type) -> bool:
    """Defined in shared.events or shared.commands (packages: their modules count), not in a test."""
    return any(model.__module__.startswith(f"{package.__name__}.") for package in (commands, events))


MODELS = sorted({m for m in subclasses(Command) | subclasses(Event) if in_vocabulary(m)}, key=lambda m: m.__name__)


def free_form(annotation: Any, seen: frozenset[type] = frozenset()) -> bool:
    """Whether a field of this type takes JSON of any shape (and so of any depth)."""
    if annotation in (Any, object):
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation in seen:
            return True  # a recursive model nests without bound
        return any(free_form(f.annotation, seen | {annotation}) for f in annotation.model_fields.values())
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return free_form(typing.get_args(annotation)[0], seen)
    if origin in (typing.Union, types.UnionType, list, dict, tuple, set, frozenset):
        return any(free_form(arg, seen) for arg in typing.get_args(annotation) if arg is not Ellipsis)
    return False


def takes_free_form(model: type[BaseModel]) -> bool:
    return any(free_form(field.annotation) for field in model.model_fields.values())


# The models with a free-form field, each built around a value of a given depth. A new free-form
# field fails test_every_free_form_field_is_walked until it is added here.
def container_command(value: Any) -> BaseModel:
    return RegisterContainer(
        actor="a", name="c", spec=ContainerSpec.model_validate({**SPEC, "parameters": {"p": value}})
    )


def edit_command(value: Any) -> BaseModel:
    return EditEntity(actor="a", entity="container", id=1, changes={"user_metadata": value})


def container_event(value: Any) -> BaseModel:
    spec = ContainerSpec.model_validate({**SPEC, "parameters": {"p": value}})
    return ContainerRegistered(actor="a", container_id=1, name="c", owner="a", spec=spec)


def edit_event(value: Any) -> BaseModel:
    change = FieldChange(old=value, new=value)
    return EntityEdited(actor="a", entity="container", entity_id=1, changes={"user_metadata": change})


BUILDERS = {
    RegisterContainer: container_command,
    EditEntity: edit_command,
    ContainerRegistered: container_event,
    EntityEdited: edit_event,
}


def test_every_free_form_field_is_walked() -> None:
    assert len(MODELS) > 40
    assert {m for m in MODELS if takes_free_form(m)} == set(BUILDERS)


def around(build: Any, *, exclude: set[str] | None = None) -> int:
    """The levels a model adds around its free-form value."""
    return shape(build(nested(10)).model_dump_json(exclude=exclude).encode()).depth - 10


def document_of_depth(build: Any, depth: int) -> bytes:
    """The model's JSON, its free-form value deep enough that the whole document is ``depth`` deep."""
    document = build(nested(depth - around(build))).model_dump_json().encode()
    assert shape(document).depth == depth
    return document


@pytest.mark.parametrize("model", list(BUILDERS), ids=lambda m: m.__name__)
def test_free_form_models_at_the_consumers_ceiling_decode_and_one_past_it_are_refused(model: type) -> None:
    at_ceiling = document_of_depth(BUILDERS[model], CONSUMER_DEPTH)
    check_consumed(at_ceiling)
    assert model.model_validate_json(at_ceiling).model_dump_json().encode() == at_ceiling
    past = document_of_depth(BUILDERS[model], CONSUMER_DEPTH + 1)
    with pytest.raises(LimitExceeded, match=f"is {CONSUMER_DEPTH + 1} levels; the limit is {CONSUMER_DEPTH}"):
        check_consumed(past)


PAIRS = [(RegisterContainer, ContainerRegistered), (EditEntity, EntityEdited)]


@pytest.mark.parametrize(("request_model", "event_model"), PAIRS)
def test_an_event_adds_no_more_than_the_envelope_to_what_its_request_carried(
    request_model: type, event_model: type
) -> None:
    """The ingress counts depth from the HTTP body, the command without the caller: an event may
    wrap the same value in at most ENVELOPE_DEPTH more levels, so nothing admitted at the
    ceiling is past what consumers take."""
    body = around(BUILDERS[request_model], exclude={"actor", "is_admin"})
    event = around(BUILDERS[event_model])
    assert event - body <= ENVELOPE_DEPTH
    assert CONSUMER_DEPTH == JSON_DEPTH_CEILING + ENVELOPE_DEPTH


def schema_depth(schema: dict[str, Any], definitions: dict[str, Any], seen: tuple[str, ...] = ()) -> int:
    """The deepest JSON a schema admits (objects and arrays count one level each)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        assert name not in seen, f"{name} is recursive: no depth bound"
        return schema_depth(definitions[name], definitions, (*seen, name))
    children = [
        *(schema.get("properties") or {}).values(),
        *([schema["items"]] if isinstance(schema.get("items"), dict) else []),
        *([schema["additionalProperties"]] if isinstance(schema.get("additionalProperties"), dict) else []),
        *schema.get("anyOf", []),
        *schema.get("oneOf", []),
        *schema.get("allOf", []),
    ]
    deepest = max((schema_depth(child, definitions, seen) for child in children), default=0)
    container = schema.get("type") in ("object", "array") or "properties" in schema
    return deepest + (1 if container else 0)


@pytest.mark.parametrize("model", [m for m in MODELS if not takes_free_form(m)], ids=lambda m: m.__name__)
def test_models_without_free_form_fields_stay_under_the_ingress_limit(model: type[BaseModel]) -> None:
    schema = model.model_json_schema()
    assert schema_depth(schema, schema.get("$defs", {})) <= Limits().json_depth


# --- the measure ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "depth", "longest"),
    [
        (b"", 0, 0),
        (b"1", 0, 0),
        (b'"abc"', 0, 3),
        (b"[]", 1, 0),
        (b'{"a": [1, {"b": "]]]]"}]}', 3, 4),  # brackets inside strings do not count
        (b'["a\\"]]", "\\\\"]', 1, 5),  # escaped quotes and backslashes end no string early
        (b"[[[[", 4, 0),  # malformed: measured as well as it can be
    ],
)
def test_shape_measures_depth_and_the_longest_string_without_parsing(document: bytes, depth: int, longest: int) -> None:
    assert (shape(document).depth, shape(document).longest_string) == (depth, longest)


def test_shape_agrees_with_a_parser_on_real_documents() -> None:
    document = json.dumps({"a": [{"b": [1, 2, {"c": "x" * 100}]}], "d": 'é"]'}).encode()
    assert shape(document).depth == 5 and shape(document).longest_string == 100


def test_check_document_names_the_limit_and_the_setting() -> None:
    with pytest.raises(LimitExceeded, match=r"nesting is 5 levels; the limit is 4 \(MEDPERF_LIMIT_JSON_DEPTH\)"):
        check_document(json.dumps(nested(5)).encode(), depth=4, string_bytes=1000)
    with pytest.raises(LimitExceeded, match=r"longest string is 1,001 bytes; the limit is 1,000"):
        check_document(json.dumps(["x" * 1001]).encode(), depth=4, string_bytes=1000)
    check_document(json.dumps([nested(3), "x" * 1000]).encode(), depth=4, string_bytes=1000)


def test_a_hostile_body_of_brackets_is_measured_quickly() -> None:
    assert shape(b"[" * 262_144).depth == 262_144


def test_rows_that_fit_stop_before_the_answer_would_be_too_large() -> None:
    row = {"blob": "x" * 100_000}
    assert rows_that_fit([row] * 3) == 3
    assert 8 <= rows_that_fit([row] * 50) <= 10  # ~1 MiB of 100 kB rows
    assert rows_that_fit([{"blob": "x" * 2_000_000}]) == 1  # one too large is reported, not hidden


def test_the_docs_list_every_limit_with_its_default() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "reliability.md").read_text().splitlines()
    for name, field in Limits.model_fields.items():
        rows = [line for line in docs if line.startswith(f"| `{name.upper()}` |")]
        assert rows, f"docs/reliability.md's limits table lacks MEDPERF_LIMIT_{name.upper()}"
        default = field.default
        shown = str(int(default)) if default == int(default) else str(default)
        assert rows[0].split("|")[2].strip().split(" ")[0] == shown, rows[0]
