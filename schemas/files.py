"""The JSON Schema files: derive them from the models, find them, read them.

One file per event type and major version, named ``<name>.v<major>.schema.json``.
``deeptrust schemas export`` rewrites them from the models; a test fails when a file and
its model disagree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from deeptrust.schemas.events import EVENT_TYPES

SCHEMA_DIR = Path(__file__).resolve().parent
RELEASED_DIR = SCHEMA_DIR / "released"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schema_id(model: type[BaseModel]) -> str:
    """Return the stable identifier of a model's schema, e.g. ``deeptrust.upload.v1``."""
    return f"deeptrust.{model.schema_name}.v{model.schema_version}"  # type: ignore[attr-defined]


def file_name(model: type[BaseModel]) -> str:
    """Return the file name of a model's schema."""
    return f"{model.schema_name}.v{model.schema_version}.schema.json"  # type: ignore[attr-defined]


def schema_for(model: type[BaseModel]) -> dict[str, Any]:
    """Build the JSON Schema document for a model, as it is stored on disk."""
    body = model.model_json_schema(mode="serialization")
    return {"$schema": JSON_SCHEMA_DIALECT, "$id": schema_id(model), **body}


def render(schema: dict[str, Any]) -> str:
    """Serialise a schema the one way files are written, so diffs stay readable."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def load(path: Path) -> dict[str, Any]:
    """Read one schema file."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def export(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every model's schema file into ``directory``; return the paths written."""
    written = []
    for model in EVENT_TYPES:
        path = directory / file_name(model)
        path.write_text(render(schema_for(model)), encoding="utf-8")
        written.append(path)
    return written
