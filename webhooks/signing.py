"""Webhook signatures: what AegisPay sends and how a receiver checks it.

Standard library only, so a merchant can copy this file into their own service. Every delivery
carries the header::

    AegisPay-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>

The timestamp is signed together with the body, so a captured request cannot be replayed
later than the tolerance allows. A receiver must verify the raw bytes it received, before any
JSON parsing (re-serialising changes the bytes and breaks the signature)::

    from signing import SignatureVerificationError, verify

    try:
        verify(secret=WHSEC, body=request.body, header=request.headers["AegisPay-Signature"])
    except SignatureVerificationError:
        return HttpResponse(status=400)

The header may hold several ``v1`` values (for example while a secret is being rotated); one
match is enough. Unknown schemes (``v0=…``) are ignored so that new ones can be added. The
scheme is byte for byte Stripe's, so Stripe's own ``stripe.WebhookSignature.verify_header``
verifies it too, with the endpoint's secret.

Every delivery also carries the three headers of the Standard Webhooks specification, so that
its libraries (``standardwebhooks``, Svix's) verify it as they are::

    webhook-id: <the event id, the same on every retry>
    webhook-timestamp: <unix seconds>
    webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<raw body>")>

where ``key`` is the secret after ``whsec_``, base64-decoded (``standard_key``). Secrets are in
the specification's form, ``whsec_`` and base64 of 32 random bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

HEADER = "AegisPay-Signature"
STANDARD_ID_HEADER = "webhook-id"
STANDARD_TIMESTAMP_HEADER = "webhook-timestamp"
STANDARD_SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of every secret, not a secret
DEFAULT_TOLERANCE_SECONDS = 300


class SignatureVerificationError(ValueError):
    """The header is malformed, no signature matches, or the timestamp is outside tolerance.

    ``reason`` is one of ``malformed_header``, ``no_signature_match``, ``timestamp_outside``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _digest(secret: str, body: bytes, timestamp: int) -> str:
    signed = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``AegisPay-Signature`` header value for ``body`` sent at ``timestamp`` (unix)."""
    return f"t={int(timestamp)},v1={_digest(secret, body, int(timestamp))}"


def standard_key(secret: str) -> bytes:
    """The Standard Webhooks signing key of ``secret``: the base64 after ``whsec_``. Secrets
    made before AegisPay used that form are URL-safe base64 without padding, read as such."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))


def standard_signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value (one ``v1,<base64>`` entry) for ``body``."""
    signed = f"{message_id}.{int(timestamp)}.".encode() + body
    digest = hmac.new(standard_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_headers(
    secrets: list[str], message_id: str, body: bytes, timestamp: int
) -> dict[str, str]:
    """Every signature header of one delivery, signed with each of ``secrets`` (two while a
    secret is being rotated: a receiver holding either verifies it)."""
    stamp = int(timestamp)
    return {
        HEADER: ",".join(
            [f"t={stamp}"] + [f"v1={_digest(secret, body, stamp)}" for secret in secrets]
        ),
        STANDARD_ID_HEADER: message_id,
        STANDARD_TIMESTAMP_HEADER: str(stamp),
        STANDARD_SIGNATURE_HEADER: " ".join(
            standard_signature(secret, message_id, stamp, body) for secret in secrets
        ),
    }


def _parse(header: str) -> tuple[int, list[str]]:
    if not isinstance(header, str) or not header.isascii():
        raise SignatureVerificationError("malformed_header", "the header is not ASCII text")
    timestamps: list[str] = []
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or not value:
            raise SignatureVerificationError("malformed_header", f"bad header item: {item!r}")
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            signatures.append(value)
    if len(timestamps) != 1 or not timestamps[0].isdigit():
        raise SignatureVerificationError(
            "malformed_header", "the header needs exactly one t=<unix seconds>"
        )
    if not signatures:
        raise SignatureVerificationError("malformed_header", "the header has no v1 signature")
    return int(timestamps[0]), signatures


def verify(
    *,
    secret: str,
    body: bytes,
    header: str,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> int:
    """Check ``header`` against the raw ``body``; return the signed timestamp.

    Raises ``SignatureVerificationError`` for a malformed header, when no ``v1`` value matches
    (compared in constant time, so timing reveals nothing about the right value), or when the
    timestamp is more than ``tolerance`` seconds from ``now`` in either direction: a stale one
    may be a replay, and one from the future would otherwise stay valid for too long.
    """
    timestamp, signatures = _parse(header)
    expected = _digest(secret, body, timestamp)
    # Check every candidate, so the time taken does not depend on which one matched.
    matched = False
    for candidate in signatures:
        matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureVerificationError(
            "no_signature_match", "no signature in the header matches the body"
        )
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise SignatureVerificationError(
            "timestamp_outside",
            f"the timestamp is {int(current - timestamp)}s away from now (tolerance {tolerance}s)",
        )
    return timestamp
