"""Fuzz the gateway's OpenAPI schema with schemathesis: no 5xx, every answer as documented.

Uploads produce to Kafka, so the app runs on the real broker (its producer and status
follower are started here, the app is driven in-process over ASGI). Hypothesis draws the
bodies from the schema, negative cases included; a drawn multipart upload is sometimes
swapped for a real photograph so that the accepted path (202) is checked against the
schema too, not only the refusals.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    positive_data_acceptance,
)

from deeptrust.gateway.runtime import GatewayParts
from deeptrust.gateway.settings import GatewaySettings
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.objectstore import LocalObjectStore
from tests.conftest import wait_for
from tests.images import sample_paths, small_photo

pytestmark = pytest.mark.integration

KEY = "fuzz-key-0123456789"
# Negative data must be refused. A body drawn past the gateway's JSON limit (a 24 KB "uri"
# breaking its maxLength) is refused with the declared 413 before it is parsed: a refusal
# too, which schemathesis's default list of rejection codes leaves out.
REJECTIONS = schemathesis.config.SchemathesisConfig.from_dict(
    {
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [
                    400,
                    401,
                    403,
                    404,
                    405,
                    406,
                    409,
                    413,
                    415,
                    422,
                    428,
                    429,
                    "5xx",
                ]
            }
        }
    }
)
PHOTO = st.sampled_from([None, *(small_photo(path, size=128) for path in sample_paths()[:3])])


@pytest.fixture
def gateway_schema(
    kafka: KafkaSettings, store: LocalObjectStore, tmp_path: Path
) -> Iterator[schemathesis.BaseSchema]:
    gateway = GatewaySettings.model_validate(
        {"api_keys": [KEY], "max_bytes": 256 * 1024, "status_db": tmp_path / "status.db"}
    )
    parts = GatewayParts(gateway, kafka, store)
    parts.start()
    try:
        wait_for(parts.follower.ready, 60, "the status follower's partitions")
        yield schemathesis.openapi.from_asgi(
            "/openapi.json", parts.app(managed=False), config=REJECTIONS
        )
    finally:
        parts.close()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_api_keeps_its_schema(gateway_schema, mode):
    # schemathesis.pytest.from_fixture needs a pytest internal that pytest 9 removed, so
    # each operation's strategy runs under a plain Hypothesis test instead.
    operations = [result.ok() for result in gateway_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/uploads", "/v1/uploads/{image_id}"}
    for operation in operations:
        if not mode.is_positive and operation.path in {"/healthz", "/readyz"}:
            continue  # no parameters, no body: nothing to make invalid

        @given(case=operation.as_strategy(generation_mode=mode), photo=PHOTO)
        @settings(
            max_examples=40,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        def holds(case, photo):
            # Valid by the schema is not valid by content: the schema cannot say "a JPEG",
            # so drawn bytes are rightly refused (415/422); positive acceptance does not apply.
            excluded = [positive_data_acceptance]
            swapped = photo is not None and case.media_type == "multipart/form-data"
            if swapped:  # no longer the drawn case: a real photo with the real key
                case.body = {"file": photo}
                case.headers = {**(case.headers or {}), "X-API-Key": KEY}
                excluded.append(negative_data_rejection)
            response = case.call_and_validate(headers={"X-API-Key": KEY}, excluded_checks=excluded)
            if swapped and mode.is_positive:
                assert response.status_code == 202, response.text

        holds()
