"""``/v1/webhook_endpoints`` through HTTP: create (secret once), list, read, disable, the
validation codes, merchant isolation and Idempotency-Key replays."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from payments.models import IdempotencyKey
from tests.conftest import MerchantClient
from webhooks.models import WebhookEndpoint

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("private_urls_allowed")]

URL = "https://hooks.example.com/aegispay"


@pytest.fixture
def private_urls_allowed(settings: Any) -> None:
    """Development mode, as under DEBUG: no DNS is needed for example hosts."""
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = True


def create(api: APIClient, body: Any, **headers: str):
    return api.post(
        "/v1/webhook_endpoints", data=json.dumps(body), content_type="application/json", **headers
    )


def error(response) -> tuple[int, str, str | None]:
    body = response.json()["error"]
    return response.status_code, body["code"], body.get("param")


def test_create_answers_201_with_the_endpoint_and_its_secret_once(api: MerchantClient) -> None:
    response = create(api, {"url": URL, "events": ["payment.*", "refund.succeeded"]})
    body = response.json()
    stored = WebhookEndpoint.objects.get(pk=body["id"])
    assert response.status_code == 201
    assert set(body) == {
        "id",
        "object",
        "url",
        "events",
        "status",
        "livemode",
        "created_at",
        "secret",
    }
    assert body["id"].startswith("we_")
    assert (body["object"], body["url"], body["status"]) == ("webhook_endpoint", URL, "enabled")
    assert body["events"] == ["payment.*", "refund.succeeded"]
    assert body["secret"].startswith("whsec_")
    assert body["created_at"].endswith("Z")
    assert (stored.merchant_id, stored.secret) == (api.merchant.id, body["secret"])


def test_secrets_are_never_shown_again(api: MerchantClient) -> None:
    created = create(api, {"url": URL, "events": ["*"]}).json()
    listed = api.get("/v1/webhook_endpoints")
    read = api.get(f"/v1/webhook_endpoints/{created['id']}")
    deleted = api.delete(f"/v1/webhook_endpoints/{created['id']}")
    assert "secret" not in listed.json()["data"][0]
    assert "secret" not in read.json()
    assert "secret" not in deleted.json()
    assert created["secret"] not in (listed.content + read.content + deleted.content).decode()


def test_list_is_newest_first_with_cursor_pagination(api: MerchantClient) -> None:
    ids = []
    for n in range(3):
        ids.append(create(api, {"url": f"{URL}/{n}", "events": ["*"]}).json()["id"])
        time.sleep(0.002)  # ids of the same millisecond sort randomly among themselves
    first = api.get("/v1/webhook_endpoints?limit=2").json()
    rest = api.get(f"/v1/webhook_endpoints?limit=2&starting_after={ids[1]}").json()
    newer = api.get(f"/v1/webhook_endpoints?ending_before={ids[0]}").json()
    assert first["object"] == "list"
    assert ([e["id"] for e in first["data"]], first["has_more"]) == ([ids[2], ids[1]], True)
    assert ([e["id"] for e in rest["data"]], rest["has_more"]) == ([ids[0]], False)
    assert [e["id"] for e in newer["data"]] == [ids[2], ids[1]]


@pytest.mark.parametrize(
    ("query", "param"),
    [("limit=0", "limit"), ("limit=101", "limit"), ("starting_after=x", "starting_after")],
)
def test_list_parameter_errors(api: MerchantClient, query: str, param: str) -> None:
    assert error(api.get(f"/v1/webhook_endpoints?{query}")) == (400, "parameter_invalid", param)


def test_delete_disables_and_answers_the_endpoint(api: MerchantClient) -> None:
    created = create(api, {"url": URL, "events": ["*"]}).json()
    deleted = api.delete(f"/v1/webhook_endpoints/{created['id']}")
    again = api.delete(f"/v1/webhook_endpoints/{created['id']}")
    listed = api.get("/v1/webhook_endpoints").json()["data"]
    assert deleted.status_code == again.status_code == 200
    assert (deleted.json()["id"], deleted.json()["status"]) == (created["id"], "disabled")
    assert [(e["id"], e["status"]) for e in listed] == [(created["id"], "disabled")]
    assert WebhookEndpoint.objects.get(pk=created["id"]).disabled_at is not None


def test_another_merchants_endpoint_is_404_like_a_missing_one(
    api: MerchantClient, other_api: MerchantClient
) -> None:
    theirs = create(other_api, {"url": URL, "events": ["*"]}).json()["id"]
    assert error(api.get(f"/v1/webhook_endpoints/{theirs}")) == (404, "resource_missing", "id")
    assert error(api.delete(f"/v1/webhook_endpoints/{theirs}")) == (404, "resource_missing", "id")
    assert error(api.delete("/v1/webhook_endpoints/we_missing")) == (404, "resource_missing", "id")
    assert api.get("/v1/webhook_endpoints").json()["data"] == []
    assert WebhookEndpoint.objects.get(pk=theirs).status == "enabled"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ([URL], (400, "invalid_request", None)),
        ({"events": ["*"]}, (400, "parameter_missing", "url")),
        ({"url": URL}, (400, "parameter_missing", "events")),
        ({"url": URL, "events": ["*"], "secret": "mine"}, (400, "parameter_unknown", "secret")),
        ({"url": 7, "events": ["*"]}, (400, "url_invalid", "url")),
        ({"url": "ftp://hooks.example.com/", "events": ["*"]}, (400, "url_invalid", "url")),
        ({"url": "https://u:p@hooks.example.com/", "events": ["*"]}, (400, "url_invalid", "url")),
        ({"url": "https://hooks.example.com:0/", "events": ["*"]}, (400, "url_invalid", "url")),
        ({"url": "https://hooks.example.com:00/", "events": ["*"]}, (400, "url_invalid", "url")),
        ({"url": URL, "events": []}, (400, "events_invalid", "events")),
        ({"url": URL, "events": "payment.*"}, (400, "events_invalid", "events")),
        ({"url": URL, "events": ["payment.captur"]}, (400, "events_invalid", "events")),
    ],
)
def test_validation_errors_have_stable_codes_and_write_nothing(
    api: MerchantClient, body: Any, expected: tuple[int, str, str | None]
) -> None:
    response = create(api, body)
    assert error(response) == expected
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://93.184.215.14/hooks", "url_not_allowed"),
        ("https://127.0.0.1/hooks", "url_not_allowed"),
        ("https://169.254.169.254/latest/meta-data", "url_not_allowed"),
        ("https://[::ffff:10.0.0.1]/hooks", "url_not_allowed"),
    ],
)
def test_outside_debug_private_and_plain_http_urls_are_refused(
    api: MerchantClient, url: str, code: str
) -> None:
    with override_settings(WEBHOOK_ALLOW_PRIVATE_URLS=False):
        response = create(api, {"url": url, "events": ["*"]})
    assert error(response) == (400, code, "url")
    assert not WebhookEndpoint.objects.exists()


def test_idempotency_key_replays_the_create_answer(api: MerchantClient) -> None:
    body = {"url": URL, "events": ["payment.*"]}
    first = create(api, body, HTTP_IDEMPOTENCY_KEY="we-key-1")
    second = create(api, body, HTTP_IDEMPOTENCY_KEY="we-key-1")
    reused = create(api, {**body, "events": ["*"]}, HTTP_IDEMPOTENCY_KEY="we-key-1")
    assert (first.status_code, second.status_code) == (201, 201)
    # The same endpoint, but never its secret again: only the first answer shows it.
    assert second.json() == {k: v for k, v in first.json().items() if k != "secret"}
    assert second.headers["Idempotent-Replayed"] == "true"
    assert WebhookEndpoint.objects.count() == 1
    assert error(reused) == (422, "idempotency_key_reused", "Idempotency-Key")


def test_the_secret_is_not_kept_in_the_idempotency_record(api: MerchantClient) -> None:
    first = create(api, {"url": URL, "events": ["*"]}, HTTP_IDEMPOTENCY_KEY="we-key-3")
    secret = first.json()["secret"]
    stored = IdempotencyKey.objects.get(key="we-key-3")
    assert stored.response_code == 201
    assert stored.response_body["id"] == first.json()["id"]
    assert secret not in json.dumps(stored.response_body)


def test_a_replay_after_disabling_shows_the_endpoint_as_it_is(api: MerchantClient) -> None:
    body = {"url": URL, "events": ["*"]}
    first = create(api, body, HTTP_IDEMPOTENCY_KEY="we-key-4")
    api.delete(f"/v1/webhook_endpoints/{first.json()['id']}")
    again = create(api, body, HTTP_IDEMPOTENCY_KEY="we-key-4")
    assert again.status_code == 201
    assert again.json()["status"] == "disabled"
    assert first.json()["secret"] not in again.content.decode()


def test_a_refused_create_is_replayed_with_its_error(api: MerchantClient) -> None:
    body = {"url": URL, "events": ["nope"]}
    first = create(api, body, HTTP_IDEMPOTENCY_KEY="we-key-2")
    second = create(api, body, HTTP_IDEMPOTENCY_KEY="we-key-2")
    assert error(first) == error(second) == (400, "events_invalid", "events")
    assert second.headers["Idempotent-Replayed"] == "true"


def test_authentication_is_required(db: None) -> None:
    client = APIClient()
    assert error(client.get("/v1/webhook_endpoints"))[:2] == (401, "authentication_required")
    assert error(create(client, {"url": URL, "events": ["*"]}))[:2] == (
        401,
        "authentication_required",
    )


def test_the_schema_describes_the_webhook_endpoints(db: None) -> None:
    schema = APIClient().get("/api/schema/", HTTP_ACCEPT="application/json").json()
    paths = schema["paths"]
    assert {"post", "get"} <= set(paths["/v1/webhook_endpoints"])
    assert "delete" in paths["/v1/webhook_endpoints/{endpoint_id}"]
    created = schema["components"]["schemas"]["WebhookEndpointCreated"]["properties"]
    listed = schema["components"]["schemas"]["WebhookEndpointOutput"]["properties"]
    assert "secret" in created
    assert "secret" not in listed


@pytest.mark.parametrize(
    "url",
    [
        URL,
        "HTTPS://Hooks.Example.COM",
        "https://hooks.example.com:8443/a?b=c#d",
        "https://hooks.example.com:00080/",
        "https://hooks.example.com:/",
        "https://hooks.example.com:65535",
        "http://localhost:8000/hooks",
        "https://hooks.example.com:0/",
        "https://hooks.example.com:65536/",
        "https://hooks.example.com:8o/",
        "https://user@hooks.example.com/",
        "https:///path",
        "ftp://hooks.example.com/",
        "https://hooks.example.com/a b",
        "hooks.example.com",
        "",
    ],
)
def test_the_url_schema_is_the_url_guards_rule(api: MerchantClient, url: str) -> None:
    # The schema's pattern (webhooks/serializers.py) against what webhook_url_validate takes,
    # with private URLs allowed, as here (and in make schemathesis): only the syntax is checked.
    schema = APIClient().get("/api/schema/", HTTP_ACCEPT="application/json").json()
    described = schema["components"]["schemas"]["WebhookEndpointCreateInput"]["properties"]
    pattern = described["url"]["pattern"].removesuffix("$") + r"\Z"  # ECMA's $: the very end
    accepted = create(api, {"url": url, "events": ["*"]}).status_code == 201
    assert (re.match(pattern, url) is not None) is accepted


def test_the_events_schema_names_every_pattern_the_api_takes(api: MerchantClient) -> None:
    schema = APIClient().get("/api/schema/", HTTP_ACCEPT="application/json").json()
    components = schema["components"]["schemas"]
    events = components["WebhookEndpointCreateInput"]["properties"]["events"]
    names = components[events["items"]["$ref"].rsplit("/", 1)[1]]["enum"]
    assert create(api, {"url": URL, "events": names[:50]}).status_code == 201
    assert create(api, {"url": URL, "events": ["payment.paid"]}).status_code == 400
    assert (events["minItems"], events["maxItems"]) == (1, 50)
    assert error(create(api, {"url": URL, "events": ["*"] * 51}))[:2] == (400, "events_invalid")


def rotate(api: APIClient, endpoint_id: str, body: Any = None, **headers: str):
    return api.post(
        f"/v1/webhook_endpoints/{endpoint_id}/rotate_secret",
        data=json.dumps(body if body is not None else {}),
        content_type="application/json",
        **headers,
    )


def test_rotate_secret_answers_a_new_secret_once_and_keeps_the_old_one_signing(
    api: MerchantClient,
) -> None:
    created = create(api, {"url": URL, "events": ["*"]}).json()
    before = time.time()
    rotated = rotate(api, created["id"], {"expires_in": 3600})
    assert rotated.status_code == 200
    body = rotated.json()
    assert body["id"] == created["id"]
    assert body["secret"].startswith("whsec_") and body["secret"] != created["secret"]
    stored = WebhookEndpoint.objects.get(pk=created["id"])
    assert (stored.secret, stored.previous_secret) == (body["secret"], created["secret"])
    assert stored.previous_secret_expires_at is not None
    overlap = stored.previous_secret_expires_at.timestamp() - before
    assert 3590 < overlap < 3610
    assert "secret" not in api.get(f"/v1/webhook_endpoints/{created['id']}").json()


def test_rotate_secret_defaults_to_a_day_and_replays_without_the_secret(
    api: MerchantClient,
) -> None:
    created = create(api, {"url": URL, "events": ["*"]}).json()
    first = rotate(api, created["id"], HTTP_IDEMPOTENCY_KEY="rot-1")
    again = rotate(api, created["id"], HTTP_IDEMPOTENCY_KEY="rot-1")
    assert first.status_code == again.status_code == 200
    assert "secret" not in again.json() and again.headers["Idempotent-Replayed"] == "true"
    assert WebhookEndpoint.objects.get(pk=created["id"]).secret == first.json()["secret"]
    stored = WebhookEndpoint.objects.get(pk=created["id"])
    assert stored.previous_secret_expires_at is not None
    assert 86000 < stored.previous_secret_expires_at.timestamp() - time.time() <= 86400


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"expires_in": -1}, (400, "expires_in_invalid", "expires_in")),
        ({"expires_in": "60"}, (400, "expires_in_invalid", "expires_in")),
        ({"expires_in": True}, (400, "expires_in_invalid", "expires_in")),
        ({"expires_in": 7 * 24 * 3600 + 1}, (400, "expires_in_invalid", "expires_in")),
        ({"overlap": 60}, (400, "parameter_unknown", "overlap")),
    ],
)
def test_rotate_secret_refuses_bad_input_and_changes_nothing(
    api: MerchantClient, body: Any, expected: tuple[int, str, str | None]
) -> None:
    created = create(api, {"url": URL, "events": ["*"]}).json()
    assert error(rotate(api, created["id"], body)) == expected
    stored = WebhookEndpoint.objects.get(pk=created["id"])
    assert (stored.secret, stored.previous_secret) == (created["secret"], "")


def test_rotate_secret_of_another_merchants_endpoint_is_404(
    api: MerchantClient, other_api: MerchantClient
) -> None:
    theirs = create(other_api, {"url": URL, "events": ["*"]}).json()
    assert error(rotate(api, theirs["id"]))[:2] == (404, "resource_missing")
    assert WebhookEndpoint.objects.get(pk=theirs["id"]).secret == theirs["secret"]
