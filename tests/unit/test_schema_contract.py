"""The schema files and the event models must agree, and stay backward compatible."""

from pathlib import Path

import jsonschema
import pytest

from deeptrust.schemas.compat import breaking_changes
from deeptrust.schemas.events import EVENT_TYPES, UploadEvent
from deeptrust.schemas.files import RELEASED_DIR, SCHEMA_DIR, file_name, load, render, schema_for
from tests.events import upload_event


@pytest.mark.parametrize("model", EVENT_TYPES, ids=lambda m: m.__name__)
def test_file_matches_model(model):
    path = SCHEMA_DIR / file_name(model)
    assert path.exists(), f"missing {path.name}: run `deeptrust schemas export`"
    assert path.read_text() == render(schema_for(model)), (
        f"{path.name} disagrees with {model.__name__}: run `deeptrust schemas export`"
    )


@pytest.mark.parametrize("model", EVENT_TYPES, ids=lambda m: m.__name__)
def test_file_is_a_valid_json_schema(model):
    jsonschema.Draft202012Validator.check_schema(load(SCHEMA_DIR / file_name(model)))


def released_pairs():
    for released in sorted(RELEASED_DIR.glob("*.schema.json")):
        name, major, _revision = released.name.split(".")[:3]
        yield pytest.param(released, SCHEMA_DIR / f"{name}.{major}.schema.json", id=released.name)


@pytest.mark.parametrize(("released", "current"), list(released_pairs()))
def test_current_schema_is_compatible_with_released_revision(released: Path, current: Path):
    assert breaking_changes(load(released), load(current)) == []


def test_every_schema_has_a_released_revision():
    released = {p.name.split(".r")[0] for p in RELEASED_DIR.glob("*.schema.json")}
    assert {file_name(m).removesuffix(".schema.json") for m in EVENT_TYPES} <= released


def test_an_event_validates_against_its_file():
    event = upload_event()
    jsonschema.validate(event.model_dump(mode="json"), load(SCHEMA_DIR / file_name(UploadEvent)))
