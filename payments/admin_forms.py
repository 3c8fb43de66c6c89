"""The staff actions of the back office: their forms, and which service each one calls.

A form only parses what staff typed (an amount in major units, a reason, the version the page
showed) and hands it to the same service the merchant API calls, with the staff user as the
actor. Whether the action is allowed (state, amounts, version, an operation in flight) is the
service's decision alone; it raises a ``PaymentError`` and writes nothing when it refuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django import forms
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser

from . import currencies
from .api_errors import validation_failed
from .models import PaymentStatus
from .serializers import CaptureInputSerializer
from .services import payment_cancel, payment_capture, payment_retry, refund_create


def staff_actor(user: AbstractBaseUser | AnonymousUser) -> str:
    """How events name a staff user: ``staff:<username>``, beside the API's ``api_key:<prefix>``."""
    return f"staff:{user.get_username()}"


def format_amount(amount: int, currency: str) -> str:
    """Minor units shown in major units with the currency's exponent: ``1,234.50 USD``."""
    places = currencies.EXPONENTS.get(currency, 2)
    major = Decimal(amount).scaleb(-places)
    return f"{major:,.{places}f} {currency}"


def parse_major_amount(text: str, currency: str) -> int:
    """``"12.34"`` USD -> ``1234``. Refuses more decimals than the currency has (JPY has none,
    KWD has three), so an amount is never rounded behind the operator's back."""
    places = currencies.EXPONENTS[currency]
    try:
        value = Decimal(text.strip().replace(",", ""))
    except InvalidOperation:
        example = format_amount(1234, currency)
        raise forms.ValidationError(f"Enter an amount such as {example}.") from None
    if not value.is_finite() or value <= 0:
        raise forms.ValidationError("Enter an amount above zero.")
    minor = value.scaleb(places)
    if minor != minor.to_integral_value():
        raise forms.ValidationError(
            f"{currency} has {places} decimal place(s); this amount has more."
        )
    # The merchant API's own amount rule (positive, within the currency's bound).
    serializer = CaptureInputSerializer(data={"amount": int(minor)}, context={"currency": currency})
    if not serializer.is_valid():
        raise forms.ValidationError(validation_failed(serializer).message)
    return int(serializer.validated_data["amount"])


class PaymentActionForm(forms.Form):
    """The version the confirmation page showed: the service refuses if the payment moved on."""

    version = forms.IntegerField(min_value=0, widget=forms.HiddenInput)

    def __init__(self, *args: Any, currency: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.currency = currency

    def submit(self, *, payment_id: str, actor: str) -> str:
        """Call the service; return the message to show. Raises the service's PaymentError."""
        raise NotImplementedError


class RetryForm(PaymentActionForm):
    def submit(self, *, payment_id: str, actor: str) -> str:
        payment = payment_retry(
            payment_id=payment_id, actor=actor, expected_version=self.cleaned_data["version"]
        )
        return f"Payment {payment.id} is {payment.status} again; processing is queued."


class CancelForm(PaymentActionForm):
    def submit(self, *, payment_id: str, actor: str) -> str:
        payment = payment_cancel(
            payment_id=payment_id, actor=actor, expected_version=self.cleaned_data["version"]
        )
        if payment.status == PaymentStatus.CANCELLED:
            return f"Payment {payment.id} is cancelled."
        return f"Cancellation of {payment.id} requested: the authorisation is being voided."


class _AmountForm(PaymentActionForm):
    """An optional amount typed in major units; empty means the service's default (all)."""

    amount = forms.CharField(required=False, max_length=40)
    amount_help = ""

    def __init__(self, *args: Any, currency: str, **kwargs: Any) -> None:
        super().__init__(*args, currency=currency, **kwargs)
        example = format_amount(1234, currency).split(" ")[0]
        self.fields["amount"].label = f"Amount in {currency}, major units (e.g. {example})"
        self.fields["amount"].help_text = self.amount_help

    def clean_amount(self) -> int | None:
        text = self.cleaned_data["amount"].strip()
        return parse_major_amount(text, self.currency) if text else None


class CaptureForm(_AmountForm):
    amount_help = "Leave empty to capture everything authorised."

    def submit(self, *, payment_id: str, actor: str) -> str:
        amount = self.cleaned_data["amount"]
        payment = payment_capture(
            payment_id=payment_id,
            actor=actor,
            amount=amount,
            expected_version=self.cleaned_data["version"],
        )
        shown = format_amount(amount or payment.amount_authorized, payment.currency)
        return f"Capture of {shown} requested for {payment.id}."


class RefundForm(_AmountForm):
    amount_help = "Leave empty to refund everything captured and not yet refunded."
    reason = forms.CharField(
        required=False, max_length=500, widget=forms.Textarea(attrs={"rows": 3})
    )

    def submit(self, *, payment_id: str, actor: str) -> str:
        refund = refund_create(
            payment_id=payment_id,
            actor=actor,
            amount=self.cleaned_data["amount"],
            reason=self.cleaned_data["reason"],
            expected_version=self.cleaned_data["version"],
        )
        return (
            f"Refund {refund.id} of {format_amount(refund.amount, refund.currency)} started "
            f"for {refund.payment_id}."
        )


@dataclass(frozen=True, slots=True)
class PaymentAction:
    """One action of the payment page: its URL segment, texts, permission and form.

    ``offered_in`` only decides where the page shows the button; the service decides whether
    the action is allowed, so a stale page or a hand-made POST is still refused.
    """

    name: str
    button: str
    confirm: str
    permission: str
    form_class: type[PaymentActionForm]
    offered_in: frozenset[str]
    explanation: str


S = PaymentStatus

ACTIONS: dict[str, PaymentAction] = {
    action.name: action
    for action in (
        PaymentAction(
            name="retry",
            button="Retry payment",
            confirm="Yes, retry this payment",
            permission="payments.retry_payment",
            form_class=RetryForm,
            offered_in=frozenset({S.FAILED}),
            explanation=(
                "The payment goes back to initiated and is processed again with a new attempt "
                "(routing chooses the gateway). Only a payment that holds no funds can be retried."
            ),
        ),
        PaymentAction(
            name="refund",
            button="Refund payment",
            confirm="Yes, refund",
            permission="payments.refund_payment",
            form_class=RefundForm,
            offered_in=frozenset({S.COMPLETED, S.PARTIALLY_REFUNDED}),
            explanation=(
                "A refund is created and sent to the gateway; the payment is refund_initiated "
                "until the gateway answers."
            ),
        ),
        PaymentAction(
            name="capture",
            button="Capture payment",
            confirm="Yes, capture",
            permission="payments.capture_payment",
            form_class=CaptureForm,
            offered_in=frozenset({S.AUTHORIZED}),
            explanation=(
                "A capture is sent to the gateway; the payment becomes captured when the gateway "
                "confirms."
            ),
        ),
        PaymentAction(
            name="cancel",
            button="Cancel payment",
            confirm="Yes, cancel this payment",
            permission="payments.cancel_payment",
            form_class=CancelForm,
            offered_in=frozenset({S.INITIATED, S.AUTHORIZED}),
            explanation=(
                "An initiated payment is cancelled at once; an authorised one is voided at the "
                "gateway and becomes cancelled when the gateway confirms."
            ),
        ),
    )
}
