"""The pipeline and the model follower on a real S3 API server (moto's), through boto3.

Every stage reads the bytes from the bucket, the detect stage fetches a promoted model
artefact from it, and what the bucket does not hold (or holds too much of) is
dead-lettered with its reason while the rest is enriched.
"""

from __future__ import annotations

import uuid

import pytest

from deeptrust.schemas.events import DeadLetterEvent, DetectedEvent, EnrichedEvent
from deeptrust.streams.dead_letters import REASON_HEADER
from deeptrust.streams.objectstore import FetchPolicy, S3ObjectStore
from deeptrust.streams.producer import UploadProducer
from deeptrust.streams.reader import read_until
from deeptrust.streams.topics import Topic
from tests.conftest import send_raw_upload
from tests.events import pointing_at
from tests.images import sample_paths, small_photo
from tests.integration.test_hot_reload import MODEL, PROMOTED_VERSION, announce, shifted_head

pytestmark = pytest.mark.integration
LIMIT = 200_000
"""The stages' byte cap here: every photograph is under it, the large upload over it."""


@pytest.fixture
def bucket(s3_server) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(name)
    return name


@pytest.fixture
def s3_env(s3_server, bucket, monkeypatch) -> dict[str, str]:
    env = {**s3_server.environment(bucket), "DEEPTRUST_MAX_IMAGE_BYTES": str(LIMIT)}
    for name, value in env.items():  # the test's own clients find the same credentials
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def s3_store(s3_server, bucket, s3_env) -> S3ObjectStore:
    policy = FetchPolicy(buckets=(bucket,), max_bytes=10 * LIMIT)
    return S3ObjectStore(bucket, s3_server.endpoint_url, policy)


def test_the_pipeline_reads_every_image_from_the_bucket(
    kafka, topics, raw_producer, start_stage, s3_env, s3_store, bucket
):
    for name in ("detect", "caption", "tag"):
        start_stage(name, **s3_env)
    uploads = UploadProducer(kafka, s3_store, source="test")
    photos = [small_photo(path, 160) for path in sample_paths()]
    sent = [uploads.upload(data, f"{i}.jpg", image_id=f"s3-{i}") for i, data in enumerate(photos)]
    large = max((path.read_bytes() for path in sample_paths()), key=len)
    assert len(large) > LIMIT
    uploads.upload(large, "large.jpg", image_id="s3-large")
    uploads.flush()
    send_raw_upload(raw_producer, topics, pointing_at(f"s3://{bucket}/gone.jpg", "s3-missing"))
    send_raw_upload(raw_producer, topics, pointing_at("s3://another-bucket/x.jpg", "s3-other"))
    assert all(event.uri.startswith(f"s3://{bucket}/") for event in sent)

    wanted = {event.image_id for event in sent}
    enriched = read_until(
        kafka,
        topics(Topic.ENRICHED),
        EnrichedEvent,
        lambda got: wanted <= {item.event.image_id for item in got},
        120,
    )
    assert sorted(item.event.image_id for item in enriched) == sorted(wanted)

    refused = {"s3-large", "s3-missing", "s3-other"}
    letters = read_until(
        kafka,
        topics(Topic.DEAD_LETTERS),
        DeadLetterEvent,
        lambda got: refused <= {item.event.original_key for item in got},
        60,
    )
    reasons = {item.event.original_key: item.headers[REASON_HEADER] for item in letters}
    assert reasons == {
        "s3-large": "object_too_large",
        "s3-missing": "missing_object",
        "s3-other": "disallowed_uri",
    }


def test_the_detect_stage_follows_a_model_stored_in_the_bucket(
    kafka, topics, start_stage, s3_env, s3_store, tmp_path
):
    detect = start_stage(
        "detect", DEEPTRUST_DETECT_FOLLOW=MODEL, DEEPTRUST_MODEL_MAX_BYTES="10000000", **s3_env
    )
    path = tmp_path / "shifted.npz"
    shifted_head().save(path)
    stored = s3_store.put(f"models/{MODEL}/2/head.npz", path.read_bytes())
    assert stored.uri.startswith("s3://")
    announce(kafka, topics, stored)
    uploads = UploadProducer(kafka, s3_store, source="test")
    photo = small_photo(sample_paths()[0], 96)

    def promoted(got) -> bool:
        return any(item.event.detection.model_version == PROMOTED_VERSION for item in got)

    def upload_until_promoted(got) -> bool:
        """Keep uploads flowing until one is judged by the version in the bucket."""
        if promoted(got):
            return True
        uploads.upload(photo, "p.jpg")
        uploads.flush()
        return False

    detected = read_until(kafka, topics(Topic.DETECTED), DetectedEvent, upload_until_promoted, 120)
    assert promoted(detected), detect.log_tail()
    assert detect.metric("deeptrust_model_reloads_total", model=MODEL, outcome="loaded") == 1
