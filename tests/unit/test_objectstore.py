import io

import pytest
from botocore.response import StreamingBody

from deeptrust.streams.errors import InvalidInput, Reason
from deeptrust.streams.objectstore import (
    FetchPolicy,
    LocalObjectStore,
    content_hash,
    read_capped,
    refusal_of,
)


@pytest.fixture
def store(tmp_path):
    return LocalObjectStore.at(tmp_path / "objects", max_bytes=1000)


def test_put_then_get_returns_the_bytes_and_their_hash(store):
    stored = store.put("images/a.jpg", b"abc")
    assert stored.uri.startswith("file://")
    assert stored.sha256 == content_hash(b"abc")
    assert store.get(stored.uri) == b"abc"


def reason_of(store, uri):
    with pytest.raises(InvalidInput) as caught:
        store.get(uri)
    return caught.value.reason


def test_missing_object(store):
    assert reason_of(store, (store.root / "images/none.jpg").as_uri()) is Reason.MISSING_OBJECT


def test_path_outside_the_root_is_refused(store, tmp_path):
    (tmp_path / "secret.txt").write_text("secret")
    assert reason_of(store, (tmp_path / "secret.txt").as_uri()) is Reason.DISALLOWED_URI
    assert reason_of(store, store.root.as_uri() + "/../secret.txt") is Reason.DISALLOWED_URI


def test_symlink_escaping_the_root_is_refused(store, tmp_path):
    (tmp_path / "secret.txt").write_text("secret")
    (store.root / "images").mkdir(parents=True)
    (store.root / "images" / "link.jpg").symlink_to(tmp_path / "secret.txt")
    assert reason_of(store, (store.root / "images" / "link.jpg").as_uri()) is Reason.DISALLOWED_URI


@pytest.mark.parametrize(
    "uri",
    ["http://169.254.169.254/latest/meta-data", "s3://bucket/key", "file://evil.host/etc/passwd"],
)
def test_other_schemes_and_hosts_are_refused(store, uri):
    assert reason_of(store, uri) is Reason.DISALLOWED_URI


def test_objects_over_the_byte_limit_are_refused(store):
    stored = store.put("images/big.bin", b"x" * 1001)
    assert reason_of(store, stored.uri) is Reason.OBJECT_TOO_LARGE


def test_keys_cannot_climb_out_of_the_root(store):
    with pytest.raises(ValueError, match="relative"):
        store.put("../escape.jpg", b"x")


def test_bucket_policy_allows_only_listed_buckets():
    policy = FetchPolicy(buckets=("uploads",))
    assert policy.bucket_key("s3://uploads/images/a.jpg") == ("uploads", "images/a.jpg")
    with pytest.raises(InvalidInput):
        policy.bucket_key("s3://other/images/a.jpg")
    with pytest.raises(InvalidInput):
        policy.bucket_key("s3://uploads/images/../../a.jpg")


def s3_answer(status: int, code: str) -> dict:
    """An S3 error answer as botocore parses it (``ClientError.response``)."""
    return {
        "Error": {"Code": code, "Message": "..."},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }


@pytest.mark.parametrize(
    ("status", "code"), [(404, "NoSuchKey"), (404, "NoSuchBucket"), (404, "NotFound")]
)
def test_an_s3_not_found_is_a_missing_object(status, code):
    refusal = refusal_of("s3://b/k", s3_answer(status, code))
    assert refusal is not None
    assert refusal.reason is Reason.MISSING_OBJECT


def test_an_s3_access_denied_reads_as_missing_and_says_why():
    # S3 answers 403 for a missing key when the credentials lack s3:ListBucket.
    refusal = refusal_of("s3://b/k", s3_answer(403, "AccessDenied"))
    assert refusal is not None
    assert refusal.reason is Reason.MISSING_OBJECT
    assert "access denied" in refusal.detail


@pytest.mark.parametrize(("status", "code"), [(503, "SlowDown"), (500, "InternalError")])
def test_server_trouble_is_not_a_refusal_but_a_fault_to_retry(status, code):
    assert refusal_of("s3://b/k", s3_answer(status, code)) is None


def streamed(data: bytes) -> StreamingBody:
    return StreamingBody(io.BytesIO(data), len(data))


def test_a_body_is_read_whole_under_the_cap():
    data = bytes(range(256)) * 4000  # several chunks
    assert read_capped(streamed(data), len(data), len(data), "s3://b/k") == data


def test_a_body_longer_than_declared_is_cut_off_at_the_cap():
    body = streamed(b"x" * 1_000_000)
    with pytest.raises(InvalidInput) as caught:
        read_capped(body, 10, 300_000, "s3://b/k")  # the declared length lies
    assert caught.value.reason is Reason.OBJECT_TOO_LARGE
    assert body._raw_stream.closed
