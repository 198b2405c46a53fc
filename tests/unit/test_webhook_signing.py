"""Body signatures: what a receiver computes to check an alert came from us."""

import hashlib
import hmac

from deeptrust.webhooks.signing import sign, verify

BODY = b'{"event_id":"a-1","kind":"drift"}'


def test_signature_is_hmac_sha256_of_the_exact_body():
    expected = hmac.new(b"s3cret", BODY, hashlib.sha256).hexdigest()
    assert sign("s3cret", BODY) == f"sha256={expected}"


def test_verify_accepts_the_right_signature_only():
    signature = sign("s3cret", BODY)
    assert verify("s3cret", BODY, signature)
    assert verify("s3cret", BODY, f" {signature} ")
    assert not verify("other", BODY, signature), "another secret"
    assert not verify("s3cret", BODY + b" ", signature), "a changed body"
    assert not verify("s3cret", BODY, signature.removeprefix("sha256=")), "no scheme prefix"
    assert not verify("s3cret", BODY, None)
    assert not verify("s3cret", BODY, "")
