"""The merchant's verification helper agrees with the sender and refuses everything else."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest

from webhooks.signing import SignatureVerificationError, sign, verify

SECRET = "whsec_test_secret"
BODY = b'{"id":"evt_1","object":"event","type":"payment.captured"}'
NOW = 1_780_000_000


def test_a_signed_body_verifies_and_returns_its_timestamp() -> None:
    header = sign(SECRET, BODY, NOW)
    assert verify(secret=SECRET, body=BODY, header=header, now=NOW) == NOW


def test_the_header_is_the_documented_hmac_of_t_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, BODY, NOW) == f"t={NOW},v1={expected}"


def test_verify_uses_the_clock_when_no_now_is_given() -> None:
    stamp = int(time.time())
    assert verify(secret=SECRET, body=BODY, header=sign(SECRET, BODY, stamp)) == stamp


def test_any_one_of_several_v1_values_may_match() -> None:
    good = sign(SECRET, BODY, NOW).split(",")[1]
    header = f"t={NOW},v1={'0' * 64},{good},v0=ignored"
    assert verify(secret=SECRET, body=BODY, header=header, now=NOW) == NOW


@pytest.mark.parametrize(
    ("secret", "body"),
    [("whsec_other", BODY), (SECRET, BODY + b" "), (SECRET, BODY.replace(b"captured", b"voided"))],
    ids=["wrong secret", "extra byte", "changed body"],
)
def test_a_bad_signature_is_refused(secret: str, body: bytes) -> None:
    header = sign(SECRET, BODY, NOW)
    with pytest.raises(SignatureVerificationError) as refused:
        verify(secret=secret, body=body, header=header, now=NOW)
    assert refused.value.reason == "no_signature_match"


def test_a_signature_moved_to_another_timestamp_is_refused() -> None:
    signature = sign(SECRET, BODY, NOW).split(",")[1]
    with pytest.raises(SignatureVerificationError) as refused:
        verify(secret=SECRET, body=BODY, header=f"t={NOW + 1},{signature}", now=NOW)
    assert refused.value.reason == "no_signature_match"


@pytest.mark.parametrize("age", [301, 3600, -301, -86400], ids=["stale", "old", "future", "day"])
def test_a_timestamp_outside_the_tolerance_is_refused(age: int) -> None:
    header = sign(SECRET, BODY, NOW - age)
    with pytest.raises(SignatureVerificationError) as refused:
        verify(secret=SECRET, body=BODY, header=header, now=NOW)
    assert refused.value.reason == "timestamp_outside"


@pytest.mark.parametrize("age", [300, -300, 0])
def test_a_timestamp_at_the_edge_of_the_tolerance_passes(age: int) -> None:
    header = sign(SECRET, BODY, NOW - age)
    assert verify(secret=SECRET, body=BODY, header=header, now=NOW) == NOW - age


def test_the_tolerance_is_a_parameter() -> None:
    header = sign(SECRET, BODY, NOW - 60)
    with pytest.raises(SignatureVerificationError):
        verify(secret=SECRET, body=BODY, header=header, tolerance=30, now=NOW)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        "v1=abc",
        f"t={NOW}",
        f"t=,v1={'a' * 64}",
        f"t=soon,v1={'a' * 64}",
        f"t=-5,v1={'a' * 64}",
        f"t={NOW},t={NOW},v1={'a' * 64}",
        f"t={NOW},v1=",
        f"t={NOW},v1={'é' * 64}",
    ],
)
def test_a_malformed_header_is_refused(header: str) -> None:
    with pytest.raises(SignatureVerificationError) as refused:
        verify(secret=SECRET, body=BODY, header=header, now=NOW)
    assert refused.value.reason == "malformed_header"
