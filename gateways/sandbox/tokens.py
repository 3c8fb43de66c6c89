"""The sandbox's test tokens, the cards they stand for, and the codes it answers with."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class SandboxToken(StrEnum):
    """The test tokens the sandbox understands (docs/API.md, "Sandbox gateways")."""

    VISA = "tok_visa"
    MASTERCARD = "tok_mastercard"
    CHARGE_DECLINED = "tok_chargeDeclined"
    INSUFFICIENT_FUNDS = "tok_insufficientFunds"
    PROCESSING_ERROR = "tok_processingError"
    TIMEOUT = "tok_timeout"


# Decline and error codes the sandbox answers with (GatewayResult.decline_code).
CARD_DECLINED = "card_declined"
INSUFFICIENT_FUNDS = "insufficient_funds"
INVALID_TOKEN = "invalid_token"  # noqa: S105 - a decline code, not a secret
PROCESSING_ERROR = "processing_error"
GATEWAY_TIMEOUT = "gateway_timeout"
GATEWAY_ERROR = "gateway_error"
AMOUNT_INVALID = "amount_invalid"
CURRENCY_INVALID = "currency_invalid"
CURRENCY_MISMATCH = "currency_mismatch"
CHARGE_NOT_FOUND = "charge_not_found"
AMOUNT_EXCEEDS_AUTHORIZED = "amount_exceeds_authorized"
AMOUNT_EXCEEDS_CAPTURED = "amount_exceeds_captured"
AUTHORIZATION_VOIDED = "authorization_voided"
CHARGE_ALREADY_CAPTURED = "charge_already_captured"
IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"

MESSAGES: dict[str, str] = {
    CARD_DECLINED: "The card was declined.",
    INSUFFICIENT_FUNDS: "The card has insufficient funds.",
    INVALID_TOKEN: "The payment token is not known to the gateway.",
    PROCESSING_ERROR: "The gateway failed to process the request; try again.",
    GATEWAY_TIMEOUT: "The gateway did not answer in time; the outcome is unknown.",
    GATEWAY_ERROR: "The gateway failed before taking the request; try again.",
    AMOUNT_INVALID: "The amount must be a positive integer in minor units.",
    CURRENCY_INVALID: "The currency must be an upper-case ISO 4217 code.",
    CURRENCY_MISMATCH: "The currency differs from the charge's currency.",
    CHARGE_NOT_FOUND: "The gateway has no charge with that gateway reference.",
    AMOUNT_EXCEEDS_AUTHORIZED: "The capture would exceed the authorised amount.",
    AMOUNT_EXCEEDS_CAPTURED: "The refund would exceed the captured amount not yet refunded.",
    AUTHORIZATION_VOIDED: "The authorisation has been voided.",
    CHARGE_ALREADY_CAPTURED: "A captured charge cannot be voided; refund it instead.",
    IDEMPOTENCY_KEY_REUSED: "The reference was already used for a different request.",
}

# The first this many authorize calls of an order with tok_processingError fail.
PROCESSING_ERROR_FAILURES = 2


@dataclass(frozen=True, slots=True)
class Card:
    """The card a sandbox token stands for."""

    brand: str
    last4: str


CARDS: dict[str, Card] = {
    SandboxToken.VISA: Card("visa", "4242"),
    SandboxToken.MASTERCARD: Card("mastercard", "4444"),
    SandboxToken.CHARGE_DECLINED: Card("visa", "0002"),
    SandboxToken.INSUFFICIENT_FUNDS: Card("visa", "9995"),
    SandboxToken.PROCESSING_ERROR: Card("visa", "0119"),
    SandboxToken.TIMEOUT: Card("visa", "0341"),
}

DECLINING_TOKENS: dict[str, str] = {
    SandboxToken.CHARGE_DECLINED: CARD_DECLINED,
    SandboxToken.INSUFFICIENT_FUNDS: INSUFFICIENT_FUNDS,
}
