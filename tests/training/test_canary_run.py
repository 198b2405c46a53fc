"""The canary's own housekeeping: the detect stage's options, and its topics cleared after.

Runs in .venv-train (the canary's module imports the registry, which imports mlflow).
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from datetime import UTC, datetime

import pytest

pytest.importorskip("mlflow")

from confluent_kafka.admin import AdminClient

from deeptrust.processors.settings import ProcessorSettings
from deeptrust.schemas.events import ModelUpdateEvent
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.topics import Topic, create_topics
from deeptrust.training.canary.run import _candidate_detector, delete_topics
from tests.conftest import wait_for


def probe_event(store) -> ModelUpdateEvent:
    data = b"a head"
    stored = store.put("models/m/head.npz", data)
    return ModelUpdateEvent(
        event_id=str(uuid.uuid4()),
        model="m",
        version="7",
        alias="candidate",
        task="detect",
        backend="mobilenet-probe",
        artifact_uri=stored.uri,
        artifact_sha256=hashlib.sha256(data).hexdigest(),
        run_id="run",
        updated_at=datetime.now(UTC),
    )


def test_the_candidates_options_are_merged_into_productions(store, tmp_path):
    inherited = json.dumps(
        {
            "device": "cuda",
            "dtype": "float16",
            "embed": {"path": "/models/embedder"},
            "detect": {"head": "/models/production.npz", "batch": 8},
        }
    )
    env = _candidate_detector(store, probe_event(store), tmp_path / "heads", inherited)
    options = json.loads(env["DEEPTRUST_MODEL_OPTIONS"])
    head = str(tmp_path / "heads" / f"{hashlib.sha256(b'a head').hexdigest()}.npz")
    assert options == {
        "device": "cuda",
        "dtype": "float16",
        "embed": {"path": "/models/embedder"},
        "detect": {"head": head, "batch": 8},
    }
    # As the canary's detect stage reads them: shared keys, the candidate's head.
    stage = ProcessorSettings(detect_backend="mobilenet-probe", model_options=options)
    spec = stage.model_spec("detect").options
    assert (spec["head"], spec["device"], spec["dtype"], spec["batch"]) == (
        head,
        "cuda",
        "float16",
        "8",
    )

    bare = _candidate_detector(store, probe_event(store), tmp_path / "heads")
    assert json.loads(bare["DEEPTRUST_MODEL_OPTIONS"]) == {"detect": {"head": head}}
    with pytest.raises(ValueError, match="must be a JSON object"):
        _candidate_detector(store, probe_event(store), tmp_path / "heads", "[1]")


@pytest.mark.integration
def test_the_canarys_topics_are_deleted_and_productions_kept(kafka, topics):
    prefix = f"{kafka.topic_prefix}canary-v1-{uuid.uuid4().hex[:6]}."
    create_topics(kafka.model_copy(update={"topic_prefix": prefix}))
    admin = AdminClient(kafka.client_config())

    def named(start: str) -> set[str]:
        return {t for t in admin.list_topics(timeout=10).topics if t.startswith(start)}

    wait_for(lambda: len(named(prefix)) == len(Topic), 30, "the canary's topics to be listed")
    created = named(prefix)
    assert sorted(delete_topics(kafka, prefix)) == sorted(created)
    wait_for(lambda: not named(prefix), 30, "the deleted topics to go from the listing")
    assert named(kafka.topic_prefix), "production's topics stay"
    assert delete_topics(kafka, prefix) == [], "nothing left: nothing to do"


def test_a_broker_that_cannot_delete_is_logged_not_raised(caplog):
    unreachable = KafkaSettings(bootstrap_servers="127.0.0.1:1", topic_prefix="x.")
    with caplog.at_level(logging.WARNING, logger="deeptrust.training.canary.run"):
        assert delete_topics(unreachable, "x.canary-v1-abc.", timeout_s=1.0) == []
    assert "could not delete the canary's topics" in caplog.text
