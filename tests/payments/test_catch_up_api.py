"""What a merchant catches up with: every event (``GET /v1/events``), refunds across payments
(``GET /v1/refunds``), and its own fields of a payment (``POST /v1/payments/{id}``)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from payments.eventstore import payment_transition
from payments.models import Payment, PaymentEvent, Refund
from payments.projections.verify import payment_verify
from payments.selectors import settlements_due
from payments.services import payment_settle, refund_create
from tests.conftest import MerchantClient
from tests.payments.helpers import payment_in
from tests.payments.test_api import error

pytestmark = pytest.mark.django_db


def post(api: MerchantClient, path: str, body: object, **headers: str):
    return api.post(path, data=json.dumps(body), content_type="application/json", **headers)


# --- GET /v1/events ---


def test_events_lists_every_event_of_the_merchant_newest_first_with_real_has_more(
    api: MerchantClient,
) -> None:
    first = payment_in(api.merchant, "completed")  # initiated, processing, authorized, ...
    second = payment_in(api.merchant, "authorized")
    expected = list(
        PaymentEvent.objects.filter(payment__in=[first, second])
        .order_by("-id")
        .values_list("id", flat=True)
    )
    assert len(expected) == 8

    seen: list[str] = []
    page = api.get("/v1/events?limit=3").json()
    pages = [page]
    while page["has_more"]:
        page = api.get(f"/v1/events?limit=3&starting_after={page['data'][-1]['id']}").json()
        pages.append(page)
    for one in pages:
        seen += [event["id"] for event in one["data"]]
    assert seen == expected
    assert [p["has_more"] for p in pages] == [True, True, False]
    assert pages[0]["data"][0]["object"] == "event"
    assert pages[0]["data"][0]["payment"] == second.id

    back = api.get(f"/v1/events?limit=3&ending_before={expected[5]}").json()
    assert [event["id"] for event in back["data"]] == expected[2:5]
    assert back["has_more"] is True


def test_events_of_another_merchant_are_never_listed_or_found(
    api: MerchantClient, other_api: MerchantClient
) -> None:
    payment_in(other_api.merchant, "authorized")
    assert api.get("/v1/events").json()["data"] == []
    theirs = PaymentEvent.objects.filter(payment__merchant=other_api.merchant).first()
    assert theirs is not None
    assert error(api.get(f"/v1/events/{theirs.id}"))[:2] == (404, "resource_missing")
    assert error(api.get("/v1/events/evt_00000000000000000000000000"))[:2] == (
        404,
        "resource_missing",
    )


def test_an_event_is_fetched_by_id_as_its_webhook_carried_it(api: MerchantClient) -> None:
    payment = payment_in(api.merchant, "authorized")
    event = PaymentEvent.objects.get(payment=payment, type="payment.authorized")
    body = api.get(f"/v1/events/{event.id}").json()
    assert (body["id"], body["type"], body["payment"], body["sequence"]) == (
        event.id,
        "payment.authorized",
        payment.id,
        3,
    )
    assert (body["from_status"], body["to_status"]) == ("processing", "authorized")


def test_events_filter_by_type_exact_or_by_pattern(api: MerchantClient) -> None:
    payment = payment_in(api.merchant, "completed")
    refund_create(payment_id=payment.id, actor="test", amount=100)

    def types(query: str) -> list[str]:
        return [event["type"] for event in api.get(f"/v1/events?{query}").json()["data"]]

    assert types("type=payment.captured") == ["payment.captured"]
    assert types("type=refund.*") == ["refund.created"]
    assert set(types("type=payment.*")) == {
        "payment.initiated",
        "payment.processing",
        "payment.authorized",
        "payment.captured",
        "payment.completed",
        "payment.refund_initiated",
    }
    assert len(types("type=*")) == 7


def test_events_filter_by_created_time(api: MerchantClient) -> None:
    payment = payment_in(api.merchant, "processing")
    events = list(PaymentEvent.objects.filter(payment=payment).order_by("sequence"))
    cut = events[1].created_at
    later = api.get("/v1/events", {"created_gte": cut.isoformat()}).json()["data"]
    earlier = api.get("/v1/events", {"created_lt": cut.isoformat()}).json()["data"]
    assert [e["id"] for e in later] == [events[1].id]
    assert [e["id"] for e in earlier] == [events[0].id]


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("type=payment.capturd", "type"),
        ("type=payment", "type"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("starting_after=nope", "starting_after"),
        ("created_gte=yesterday", "created_gte"),
        (
            "starting_after=evt_00000000000000000000000000&ending_before=evt_00000000000000000000000001",
            "ending_before",
        ),
    ],
)
def test_events_parameter_errors(api: MerchantClient, query: str, param: str) -> None:
    assert error(api.get(f"/v1/events?{query}")) == (400, "parameter_invalid", param)


# --- GET /v1/refunds ---


def _refunded(api: MerchantClient, count: int) -> list[Refund]:
    """``count`` settled refunds of one payment, oldest first (one is in flight at a time)."""
    payment = payment_in(api.merchant, "completed")
    refunds = []
    for _ in range(count):
        refund = refund_create(payment_id=payment.id, actor="test", amount=10)
        Refund.objects.filter(pk=refund.pk).update(status="succeeded")
        payment_transition(
            payment_id=payment.id,
            transition="mark_partially_refunded",
            actor="test",
            changes={"amount_refunded": Payment.objects.get(pk=payment.id).amount_refunded + 10},
        )
        refunds.append(refund)
    return refunds


def test_refunds_list_across_payments_newest_first_with_real_has_more(
    api: MerchantClient, other_api: MerchantClient
) -> None:
    mine = _refunded(api, 2) + _refunded(api, 1)
    _refunded(other_api, 1)
    newest_first = [refund.id for refund in reversed(mine)]

    page1 = api.get("/v1/refunds?limit=2").json()
    assert [r["id"] for r in page1["data"]] == newest_first[:2]
    assert page1["has_more"] is True
    page2 = api.get(f"/v1/refunds?limit=2&starting_after={newest_first[1]}").json()
    assert [r["id"] for r in page2["data"]] == newest_first[2:]
    assert page2["has_more"] is False
    assert page1["data"][0]["object"] == "refund"

    one_payment = api.get(f"/v1/refunds?payment={mine[0].payment_id}").json()["data"]
    assert [r["id"] for r in one_payment] == [mine[1].id, mine[0].id]
    assert api.get("/v1/refunds?status=pending").json()["data"] == []
    assert len(api.get("/v1/refunds?status=succeeded").json()["data"]) == 3


def test_a_refund_is_fetched_by_id_and_only_by_its_merchant(
    api: MerchantClient, other_api: MerchantClient
) -> None:
    [refund] = _refunded(api, 1)
    body = api.get(f"/v1/refunds/{refund.id}").json()
    assert (body["id"], body["payment"], body["amount"], body["status"]) == (
        refund.id,
        refund.payment_id,
        10,
        "succeeded",
    )
    assert error(other_api.get(f"/v1/refunds/{refund.id}"))[:2] == (404, "resource_missing")
    assert error(api.get("/v1/refunds/re_00000000000000000000000000"))[:2] == (
        404,
        "resource_missing",
    )


@pytest.mark.parametrize(
    ("query", "param"),
    [("status=done", "status"), ("payment=pay", "payment"), ("limit=x", "limit")],
)
def test_refunds_parameter_errors(api: MerchantClient, query: str, param: str) -> None:
    assert error(api.get(f"/v1/refunds?{query}")) == (400, "parameter_invalid", param)


# --- POST /v1/payments/{id} ---


def test_update_merges_metadata_replaces_description_and_records_an_event(
    api: MerchantClient,
) -> None:
    payment = payment_in(
        api.merchant, "completed", metadata={"order": "1", "drop": "x"}, description="old"
    )
    response = post(
        api,
        f"/v1/payments/{payment.id}",
        {"metadata": {"shipped": "yes", "drop": ""}, "description": "Order 1, shipped"},
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["metadata"] == {"order": "1", "shipped": "yes"}
    assert body["description"] == "Order 1, shipped"
    assert (body["status"], body["version"]) == ("completed", payment.version + 1)

    event = PaymentEvent.objects.get(payment=payment, type="payment.updated")
    assert event.data["changes"] == {
        "metadata": {"order": "1", "shipped": "yes"},
        "description": "Order 1, shipped",
    }
    assert (event.from_status, event.to_status) == ("completed", "completed")
    assert event.actor == f"api_key:{api.api_key[:12]}"
    # The events still rebuild the row exactly.
    assert payment_verify(payment.id, repair=False) == []


def test_an_update_that_changes_nothing_writes_nothing(api: MerchantClient) -> None:
    payment = payment_in(api.merchant, "authorized", metadata={"a": "1"}, description="d")
    response = post(api, f"/v1/payments/{payment.id}", {"metadata": {"a": "1"}, "description": "d"})
    assert response.status_code == 200
    assert response.json()["version"] == payment.version
    assert not PaymentEvent.objects.filter(payment=payment, type="payment.updated").exists()


def test_update_takes_if_match(api: MerchantClient) -> None:
    payment = payment_in(api.merchant, "authorized")
    stale = post(
        api,
        f"/v1/payments/{payment.id}",
        {"description": "x"},
        HTTP_IF_MATCH=str(payment.version - 1),
    )
    assert error(stale)[:2] == (409, "version_conflict")
    fresh = post(
        api, f"/v1/payments/{payment.id}", {"description": "x"}, HTTP_IF_MATCH=str(payment.version)
    )
    assert fresh.status_code == 200
    assert Payment.objects.get(pk=payment.id).description == "x"


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"amount": 1}, "parameter_unknown", "amount"),
        ({"status": "completed"}, "parameter_unknown", "status"),
        ({"description": 5}, "description_invalid", "description"),
        ({"description": "x" * 1001}, "description_invalid", "description"),
        ({"metadata": {"k": 1}}, "metadata_invalid", "metadata[k]"),
        ({"metadata": {f"k{i}": "v" for i in range(50)}}, "metadata_invalid", "metadata"),
        ({"metadata": {"card": "4242 4242 4242 4242"}}, "card_data_not_allowed", None),
    ],
)
def test_update_refuses_bad_input_and_changes_nothing(
    api: MerchantClient, body: dict, code: str, param: str | None
) -> None:
    payment = payment_in(api.merchant, "authorized", metadata={"a": "1"})
    status, got_code, got_param = error(post(api, f"/v1/payments/{payment.id}", body))
    assert (status, got_code) == (400, code)
    if param is not None:
        assert got_param == param
    after = Payment.objects.get(pk=payment.id)
    assert (after.version, after.metadata) == (payment.version, {"a": "1"})


def test_update_of_another_merchants_payment_is_404(
    api: MerchantClient, other_api: MerchantClient
) -> None:
    payment = payment_in(other_api.merchant, "authorized")
    assert error(post(api, f"/v1/payments/{payment.id}", {"description": "x"}))[:2] == (
        404,
        "resource_missing",
    )
    assert Payment.objects.get(pk=payment.id).description == ""


def test_update_is_idempotent(api: MerchantClient) -> None:
    payment = payment_in(api.merchant, "authorized")
    first = post(
        api, f"/v1/payments/{payment.id}", {"metadata": {"n": "1"}}, HTTP_IDEMPOTENCY_KEY="u-1"
    )
    again = post(
        api, f"/v1/payments/{payment.id}", {"metadata": {"n": "1"}}, HTTP_IDEMPOTENCY_KEY="u-1"
    )
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert PaymentEvent.objects.filter(payment=payment, type="payment.updated").count() == 1


def test_updating_a_captured_payment_does_not_hold_off_its_settlement(
    api: MerchantClient, settings
) -> None:
    # Settlement waits for the capture to sit still; a merchant's edits are not the system
    # moving the payment on, so editing metadata again and again never postpones it.
    settings.SETTLEMENT_DELAY_SECONDS = 60
    payment = payment_in(api.merchant, "captured")
    an_hour_ago = timezone.now() - timedelta(hours=1)
    Payment.objects.filter(pk=payment.pk).update(updated_at=an_hour_ago, progressed_at=an_hour_ago)
    assert post(api, f"/v1/payments/{payment.id}", {"metadata": {"n": "1"}}).status_code == 200
    assert payment.id in set(settlements_due(timezone.now()).values_list("id", flat=True))
    settled = payment_settle(payment_id=payment.id)
    assert settled is not None and settled.status == "completed"
