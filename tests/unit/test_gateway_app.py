"""The gateway's pure logic: type sniffing, limits, settings, body caps, the status store."""

import asyncio
import io
import json
import sqlite3
import time
from datetime import UTC, datetime

import pytest
from PIL import Image
from pydantic import ValidationError
from starlette.datastructures import Headers

from deeptrust.gateway.settings import GatewaySettings
from deeptrust.gateway.sniff import Limits, Rejection, UploadRejected, sniff
from deeptrust.gateway.sources import (
    FORM_OVERHEAD,
    check_declared_length,
    read_multipart_file,
    read_uri_body,
)
from deeptrust.gateway.status import State, StatusStore, Update, pending, update_from
from deeptrust.schemas.events import (
    Caption,
    DeadLetterEvent,
    Detection,
    EnrichedEvent,
    Tags,
)
from deeptrust.streams.codec import encode
from deeptrust.streams.errors import InvalidInput
from deeptrust.streams.topics import Topic, TopicNames
from tests.events import upload_event
from tests.images import SAMPLES, corrupt_bytes, generator_png, jpeg_bytes, truncated_jpeg

LIMITS = Limits(
    max_bytes=1_000_000,
    max_pixels=1_000_000,
    allowed_types=frozenset({"image/jpeg", "image/png", "image/webp", "image/gif"}),
)


def encoded_image(fmt: str, size: tuple[int, int] = (32, 24)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, fmt)
    return buffer.getvalue()


def refusal(call, *args) -> UploadRejected:
    with pytest.raises(UploadRejected) as caught:
        call(*args)
    return caught.value


# --- type sniffing and limits ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [
        ("JPEG", "image/jpeg"),
        ("PNG", "image/png"),
        ("WEBP", "image/webp"),
        ("GIF", "image/gif"),
        ("BMP", "image/bmp"),
        ("TIFF", "image/tiff"),
    ],
)
def test_the_type_comes_from_the_bytes(fmt, mime):
    signature = sniff(encoded_image(fmt))
    assert signature is not None
    assert signature.mime == mime


def test_no_signature_for_text_or_a_riff_that_is_not_webp():
    assert sniff(b"hello, world") is None
    assert sniff(b"") is None
    assert sniff(b"RIFF\x00\x00\x00\x00WAVEfmt ") is None
    assert sniff(b"XXXX\x00\x00\x00\x00WEBPVP8 ") is None


def test_real_photographs_pass_with_their_sniffed_type():
    assert LIMITS.check_image((SAMPLES / "astronaut.jpg").read_bytes()).mime == "image/jpeg"
    assert LIMITS.check_image((SAMPLES / "chelsea.png").read_bytes()).mime == "image/png"
    assert LIMITS.check_image(encoded_image("WEBP")).suffix == ".webp"
    assert LIMITS.check_image(generator_png()).mime == "image/png"


def test_a_disallowed_type_is_415_whatever_the_name_says():
    bmp = refusal(LIMITS.check_image, encoded_image("BMP"))
    assert (bmp.status, bmp.reason) == (415, Rejection.UNSUPPORTED_TYPE)
    assert "image/bmp" in bmp.detail
    text = refusal(LIMITS.check_image, b"GET / HTTP/1.1\r\n" * 10)
    assert (text.status, text.reason) == (415, Rejection.UNSUPPORTED_TYPE)


def test_a_known_signature_with_a_broken_header_is_422():
    broken = refusal(LIMITS.check_image, b"\x89PNG\r\n\x1a\n" + corrupt_bytes())
    assert (broken.status, broken.reason) == (422, Rejection.UNDECODABLE_IMAGE)
    jpeg = refusal(LIMITS.check_image, b"\xff\xd8\xff" + corrupt_bytes())
    assert jpeg.status == 422


def test_a_truncated_body_passes_the_header_check():
    """Decoding every pixel costs the request's budget; the detect stage dead-letters it."""
    assert LIMITS.check_image(truncated_jpeg()).mime == "image/jpeg"


def test_too_many_bytes_or_pixels_is_413():
    big = refusal(LIMITS.check_image, b"\xff\xd8\xff" + b"\x00" * LIMITS.max_bytes)
    assert (big.status, big.reason) == (413, Rejection.TOO_LARGE)
    wide = refusal(LIMITS.check_image, jpeg_bytes(size=(2000, 600)))
    assert (wide.status, wide.reason) == (413, Rejection.TOO_MANY_PIXELS)
    assert "2000x600" in wide.detail


# --- settings -------------------------------------------------------------------------------


def test_settings_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPTRUST_GATEWAY_API_KEYS", '["key-a", "key-b"]')
    monkeypatch.setenv("DEEPTRUST_GATEWAY_MAX_BYTES", "1048576")
    monkeypatch.setenv("DEEPTRUST_GATEWAY_FETCH_HOSTS", '["images.example.com"]')
    monkeypatch.setenv("DEEPTRUST_GATEWAY_STATUS_DB", str(tmp_path / "s.db"))
    settings = GatewaySettings()
    assert [key.get_secret_value() for key in settings.api_keys] == ["key-a", "key-b"]
    assert "key-a" not in repr(settings)
    assert settings.max_bytes == 1048576
    assert settings.fetch_hosts == ["images.example.com"]
    assert settings.status_db == tmp_path / "s.db"


def test_defaults_are_safe(monkeypatch):
    monkeypatch.setenv("DEEPTRUST_GATEWAY_API_KEYS", '["k"]')
    settings = GatewaySettings()
    assert settings.max_bytes == 20 * 1024 * 1024
    # What phones save (JPEG, HEIC; AVIF on newer Android), browsers send, and the long tail
    # the stages decode; never RAW, JPEG XL, SVG, PSD or icons (docs/formats.md).
    assert set(settings.allowed_types) == {
        *("image/jpeg", "image/png", "image/webp", "image/gif"),
        *("image/heic", "image/heif", "image/avif", "image/tiff", "image/bmp"),
    }
    assert settings.fetch_hosts == [], "no remote fetching unless hosts are named"
    assert settings.status_lookback_s == 3600, "a new replica reads an hour back, not a week"


def test_status_lookback_from_the_environment(monkeypatch):
    monkeypatch.setenv("DEEPTRUST_GATEWAY_API_KEYS", '["k"]')
    monkeypatch.setenv("DEEPTRUST_GATEWAY_STATUS_LOOKBACK_S", "600")
    assert GatewaySettings().status_lookback_s == 600
    monkeypatch.setenv("DEEPTRUST_GATEWAY_STATUS_LOOKBACK_S", "-1")
    with pytest.raises(ValidationError, match="status_lookback_s"):
        GatewaySettings()


@pytest.mark.parametrize("keys", [None, "[]", '[""]'])
def test_no_anonymous_gateway(monkeypatch, keys):
    monkeypatch.delenv("DEEPTRUST_GATEWAY_API_KEYS", raising=False)
    if keys is not None:
        monkeypatch.setenv("DEEPTRUST_GATEWAY_API_KEYS", keys)
    with pytest.raises(ValidationError, match="API key"):
        GatewaySettings()


def test_keys_can_come_from_a_mounted_file(monkeypatch, tmp_path):
    monkeypatch.delenv("DEEPTRUST_GATEWAY_API_KEYS", raising=False)
    keys = tmp_path / "api-keys"
    keys.write_text("key-from-file\n\n  rotated-key \n")
    monkeypatch.setenv("DEEPTRUST_GATEWAY_API_KEYS_FILE", str(keys))
    settings = GatewaySettings()
    assert [k.get_secret_value() for k in settings.api_keys] == ["key-from-file", "rotated-key"]
    assert "key-from-file" not in repr(settings)
    keys.write_text("\n")
    with pytest.raises(ValidationError, match="at least one API key"):
        GatewaySettings()
    monkeypatch.setenv("DEEPTRUST_GATEWAY_API_KEYS_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValidationError, match="cannot read api_keys_file"):
        GatewaySettings()


# --- body caps ------------------------------------------------------------------------------


async def chunks(*parts: bytes):
    for part in parts:
        yield part


def multipart(fields: list[tuple[str, str | None, bytes]], boundary: str = "b0undary"):
    body = b""
    for name, filename, data in fields:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        body += data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    headers = Headers({"content-type": f"multipart/form-data; boundary={boundary}"})
    return headers, body


def test_declared_length_is_checked_before_reading():
    check_declared_length(Headers({"content-length": "100"}), 100)
    check_declared_length(Headers({}), 100)
    over = refusal(check_declared_length, Headers({"content-length": "101"}), 100)
    assert (over.status, over.reason) == (413, Rejection.TOO_LARGE)
    bad = refusal(check_declared_length, Headers({"content-length": "-1"}), 100)
    assert bad.status == 400


def test_multipart_file_is_read_in_chunks_under_the_cap():
    photo = (SAMPLES / "coins.jpg").read_bytes()
    headers, body = multipart([("note", None, b"hi"), ("file", "coins.jpg", photo)])
    pieces = [body[i : i + 1000] for i in range(0, len(body), 1000)]
    data, name = asyncio.run(read_multipart_file(headers, chunks(*pieces), len(photo)))
    assert data == photo
    assert name == "coins.jpg"


def test_multipart_over_the_cap_is_413_after_the_file_part_is_parsed():
    photo = (SAMPLES / "coins.jpg").read_bytes()
    headers, body = multipart([("file", "coins.jpg", photo)])
    with pytest.raises(UploadRejected) as caught:
        asyncio.run(read_multipart_file(headers, chunks(body), len(photo) - 1))
    assert caught.value.status == 413


class CountingBody:
    """A multipart body of ``total`` file bytes in chunks, counting the chunks read."""

    def __init__(self, total: int, chunk: int = 16 * 1024) -> None:
        self.headers, body = multipart([("file", "big.jpg", b"\xff\xd8\xff" + b"\0" * total)])
        self.chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)]
        self.read = 0

    async def stream(self):
        for piece in self.chunks:
            self.read += 1
            yield piece


def test_a_stream_over_the_cap_is_refused_before_it_is_read_whole():
    """The cap holds while streaming: the body stops being read a chunk past the limit."""
    max_bytes = 100_000
    limit = max_bytes + FORM_OVERHEAD
    body = CountingBody(total=10 * limit)
    with pytest.raises(UploadRejected) as caught:
        asyncio.run(read_multipart_file(body.headers, body.stream(), max_bytes))
    assert (caught.value.status, caught.value.reason) == (413, Rejection.TOO_LARGE)
    assert caught.value.detail == f"over {limit} bytes", "the streaming cap, not the parsed size"
    read_bytes = sum(len(piece) for piece in body.chunks[: body.read])
    assert limit < read_bytes <= limit + len(body.chunks[0])
    assert body.read < len(body.chunks) / 5


def test_multipart_without_a_file_field_is_400():
    headers, body = multipart([("file", None, b"not a file part")])
    with pytest.raises(UploadRejected) as caught:
        asyncio.run(read_multipart_file(headers, chunks(body), 1000))
    assert (caught.value.status, caught.value.reason) == (400, Rejection.BAD_REQUEST)
    headers = Headers({"content-type": "multipart/form-data"})  # no boundary
    with pytest.raises(UploadRejected) as caught:
        asyncio.run(read_multipart_file(headers, chunks(b"x"), 1000))
    assert caught.value.status == 400


def test_uri_body():
    uri = asyncio.run(read_uri_body(chunks(b'{"uri": ', b'"file:///x.jpg"}')))
    assert uri == "file:///x.jpg"
    for bad in [b"{", b'{"uri": ""}', b'{"url": "x"}', b'{"uri": "x", "more": 1}', b"[]"]:
        with pytest.raises(UploadRejected) as caught:
            asyncio.run(read_uri_body(chunks(bad)))
        assert caught.value.status == 400, bad
    with pytest.raises(UploadRejected) as caught:
        asyncio.run(read_uri_body(chunks(b'{"uri": "' + b"a" * 20_000 + b'"}')))
    assert caught.value.status == 413


# --- the status store -----------------------------------------------------------------------


@pytest.fixture
def status(tmp_path):
    store = StatusStore(tmp_path / "status" / "gateway.db")
    yield store
    store.close()


def enriched(image_id: str = "img-1", caption: str = "A cat.") -> Update:
    body = json.dumps({"image_id": image_id, "caption": caption})
    return Update(image_id, State.ENRICHED, body)


def dead(image_id: str = "img-1") -> Update:
    return Update(image_id, State.DEAD_LETTERED, json.dumps({"reason": "undecodable_image"}))


def test_unknown_image_has_no_status(status):
    assert status.get("img-1") is None


def test_states_only_rise(status):
    status.mark_pending("img-1")
    assert status.get("img-1").state is State.PENDING
    status.apply([dead()], {})
    assert status.get("img-1").state is State.DEAD_LETTERED
    status.apply([enriched()], {})
    assert status.get("img-1").state is State.ENRICHED
    status.apply([pending("img-1"), dead()], {})  # a late upload event or dead letter
    assert status.get("img-1").state is State.ENRICHED


def test_a_later_result_of_the_same_state_replaces_the_earlier(status):
    status.apply([enriched(caption="first")], {})
    status.apply([enriched(caption="second")], {})
    assert json.loads(status.get("img-1").body)["caption"] == "second"


def test_positions_only_advance_and_are_kept_with_the_results(status, tmp_path):
    assert status.position("t", 0) is None
    status.apply([enriched()], {("t", 0): 10, ("t", 1): 3})
    status.apply([], {("t", 0): 7})  # another worker behind this one
    assert status.position("t", 0) == 10
    assert status.position("t", 1) == 3
    status.close()
    reopened = StatusStore(tmp_path / "status" / "gateway.db")
    assert reopened.position("t", 0) == 10
    assert reopened.get("img-1").state is State.ENRICHED
    reopened.close()


def test_prune_drops_old_results(status, tmp_path):
    status.apply([enriched("old"), enriched("new")], {})
    with sqlite3.connect(tmp_path / "status" / "gateway.db") as db:
        db.execute("UPDATE images SET updated_at = 0 WHERE image_id = 'old'")
    assert status.prune(time.time() - 60) == 1
    assert status.get("old") is None
    assert status.get("new") is not None


def test_prune_deletes_in_bounded_transactions(status, tmp_path):
    """Each transaction deletes at most ``chunk`` rows, so the lock is released between."""
    status.apply([enriched(f"old-{n}") for n in range(7)] + [enriched("new")], {})
    with sqlite3.connect(tmp_path / "status" / "gateway.db") as db:
        db.execute("UPDATE images SET updated_at = 0 WHERE image_id LIKE 'old-%'")
    statements: list[str] = []
    status._db.set_trace_callback(statements.append)
    assert status.prune(time.time() - 60, chunk=3) == 7
    status._db.set_trace_callback(None)
    deletes = [sql for sql in statements if sql.lstrip().startswith("DELETE")]
    commits = [sql for sql in statements if sql.strip().upper() == "COMMIT"]
    assert len(deletes) == 3, "3 + 3 + 1 rows"
    assert len(commits) == 3, "one transaction per chunk"
    assert status.get("new") is not None
    assert status.prune(time.time() - 60, chunk=3) == 0


# --- messages into updates ------------------------------------------------------------------

NAMES = TopicNames("p.")


def message_update(topic: Topic | str, event, key: str = "img-1"):
    encoded = encode(event, key=key)
    name = NAMES(topic) if isinstance(topic, Topic) else topic
    return update_from(NAMES, name, encoded.value, encoded.headers)


def enriched_event() -> EnrichedEvent:
    return EnrichedEvent(
        event_id="e-2",
        image_id="img-1",
        uri="file:///x.jpg",
        uploaded_at=datetime(2026, 1, 1, tzinfo=UTC),
        width=10,
        height=10,
        detection=Detection(ai_probability=0.1, label="real", model="m", model_version="1"),
        caption=Caption(text="A cat.", model="c"),
        tags=Tags(values=["cat"], model="t"),
    )


def dead_letter_event(source: str, key: str | None = "img-1") -> DeadLetterEvent:
    return DeadLetterEvent(
        stage="caption",
        reason="missing_object",
        detail="no object at 'file:///x.jpg'",
        source_topic=source,
        source_partition=0,
        source_offset=4,
        original_key=key,
        original_value_b64="",
        failed_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_an_upload_event_means_pending():
    update = message_update(Topic.UPLOADS, upload_event())
    assert update == pending("img-1")


def test_an_enriched_event_is_kept_whole():
    update = message_update(Topic.ENRICHED, enriched_event())
    assert update.state is State.ENRICHED
    assert EnrichedEvent.model_validate_json(update.body) == enriched_event()


def test_dead_letters_of_image_stages_fail_the_image():
    update = message_update(Topic.DEAD_LETTERS, dead_letter_event(NAMES(Topic.DETECTED)))
    assert update.state is State.DEAD_LETTERED
    assert json.loads(update.body) == {
        "status": "dead_lettered",
        "image_id": "img-1",
        "stage": "caption",
        "reason": "missing_object",
        "detail": "no object at 'file:///x.jpg'",
        "failed_at": "2026-01-01T00:00:00+00:00",
    }


def test_other_dead_letters_are_not_about_an_image():
    assert message_update(Topic.DEAD_LETTERS, dead_letter_event(NAMES(Topic.EMBEDDINGS))) is None
    assert message_update(Topic.DEAD_LETTERS, dead_letter_event("q.uploads.v1")) is None
    assert message_update(Topic.DEAD_LETTERS, dead_letter_event(NAMES(Topic.UPLOADS), None)) is None


def test_a_message_of_the_wrong_schema_is_refused():
    with pytest.raises(InvalidInput):
        message_update(Topic.ENRICHED, upload_event())
