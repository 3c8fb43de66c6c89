"""API keys through the API: create, list, roll with an overlap, revoke; restricted keys and
their scopes; no way up from a restricted key; and no secret in any replay or stored answer."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from rest_framework.test import APIClient, APIRequestFactory
from rest_framework.views import APIView

from payments.authentication import MerchantUser
from payments.merchants import ApiKeyRolled, api_key_create, api_key_roll
from payments.models import ApiKey, IdempotencyKey, Payment
from payments.scopes import SCOPES, ScopeMissing, ScopePermission
from tests.conftest import VISA, MerchantClient, make_client
from tests.payments.test_api import error

pytestmark = pytest.mark.django_db


def post(client: APIClient, path: str, body: object = None, **headers: str):
    data = json.dumps(body) if body is not None else None
    return client.post(path, data=data, content_type="application/json", **headers)


def client_for(raw_key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client


def restricted(api: MerchantClient, *scopes: str) -> APIClient:
    response = post(api, "/v1/api_keys", {"restricted": True, "scopes": list(scopes)})
    assert response.status_code == 201, response.content
    return client_for(response.json()["secret"])


# --- create and list ---


def test_a_new_secret_key_is_shown_once_and_works(api: MerchantClient) -> None:
    response = post(api, "/v1/api_keys", {"name": "checkout server"})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["secret"].startswith("sk_test_")
    assert (body["object"], body["name"], body["restricted"], body["livemode"]) == (
        "api_key",
        "checkout server",
        False,
        False,
    )
    assert body["scopes"] == list(SCOPES)
    assert body["prefix"] == body["secret"][:12]
    assert post(client_for(body["secret"]), "/v1/payments", VISA).status_code == 201

    listed = api.get("/v1/api_keys").json()
    assert body["id"] in [key["id"] for key in listed["data"]]
    assert "secret" not in json.dumps(listed)
    assert body["secret"] not in json.dumps(listed)
    # Only the hash is stored.
    assert not ApiKey.objects.filter(key_hash=body["secret"]).exists()


def test_a_replayed_create_never_shows_the_key_again(api: MerchantClient) -> None:
    first = post(api, "/v1/api_keys", {"name": "k"}, HTTP_IDEMPOTENCY_KEY="key-1")
    again = post(api, "/v1/api_keys", {"name": "k"}, HTTP_IDEMPOTENCY_KEY="key-1")
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "secret" not in again.json()
    assert again.json()["id"] == first.json()["id"]
    stored = IdempotencyKey.objects.get(merchant=api.merchant, key="key-1")
    assert first.json()["secret"] not in json.dumps(stored.response_body)
    assert ApiKey.objects.filter(merchant=api.merchant).count() == 2  # the fixture's and this


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"restricted": True}, "scopes_invalid", "scopes"),
        ({"restricted": True, "scopes": ["payments:delete"]}, "scopes_invalid", "scopes"),
        ({"scopes": ["payments:read"]}, "scopes_invalid", "scopes"),
        # A scope is taken as sent: DRF's trimming made " payments:read" one.
        ({"restricted": True, "scopes": [" payments:read"]}, "scopes_invalid", "scopes"),
        ({"restricted": "yes"}, "restricted_invalid", "restricted"),
        ({"scopes": "payments:read"}, "scopes_invalid", "scopes"),
        ({"name": "x" * 101}, "name_invalid", "name"),
        ({"live": True}, "parameter_unknown", "live"),
    ],
)
def test_bad_key_requests_are_refused_and_make_no_key(
    api: MerchantClient, body: dict, code: str, param: str
) -> None:
    assert error(post(api, "/v1/api_keys", body)) == (400, code, param)
    assert ApiKey.objects.filter(merchant=api.merchant).count() == 1


# --- restricted keys and scopes ---


def test_a_restricted_key_does_only_what_its_scopes_grant(api: MerchantClient) -> None:
    reader = restricted(api, "payments:read")
    payment = post(api, "/v1/payments", VISA).json()
    assert reader.get(f"/v1/payments/{payment['id']}").status_code == 200
    assert reader.get("/v1/payments").status_code == 200

    refused = post(reader, "/v1/payments", VISA, HTTP_IDEMPOTENCY_KEY="never-stored")
    status, code, _ = error(refused)
    assert (status, code, refused.json()["error"]["type"]) == (
        403,
        "scope_missing",
        "permission_error",
    )
    assert "payments:write" in refused.json()["error"]["message"]
    assert Payment.objects.filter(merchant=api.merchant).count() == 1
    assert not IdempotencyKey.objects.filter(key="never-stored").exists()
    for path in ("/v1/events", "/v1/webhook_endpoints", "/v1/api_keys"):
        assert error(reader.get(path))[:2] == (403, "scope_missing"), path
    assert error(post(reader, f"/v1/payments/{payment['id']}/refunds", {}))[:2] == (
        403,
        "scope_missing",
    )


def test_write_grants_read(api: MerchantClient) -> None:
    writer = restricted(api, "payments:write")
    created = post(writer, "/v1/payments", VISA)
    assert created.status_code == 201
    assert writer.get(f"/v1/payments/{created.json()['id']}").status_code == 200
    webhooks = restricted(api, "webhooks:write")
    assert webhooks.get("/v1/webhook_endpoints").status_code == 200


def test_a_restricted_key_cannot_make_or_change_a_key_that_may_do_more(
    api: MerchantClient,
) -> None:
    keys = restricted(api, "keys:write", "payments:read")
    assert error(post(keys, "/v1/api_keys", {}))[:2] == (403, "scope_missing")
    wider = {"restricted": True, "scopes": ["payments:write"]}
    assert error(post(keys, "/v1/api_keys", wider))[:2] == (403, "scope_missing")
    narrower = post(keys, "/v1/api_keys", {"restricted": True, "scopes": ["payments:read"]})
    assert narrower.status_code == 201
    assert narrower.json()["secret"].startswith("rk_test_")
    # Nor roll or revoke one: the fixture's secret key is beyond it.
    secret_key = ApiKey.objects.get(merchant=api.merchant, restricted=False)
    assert error(post(keys, f"/v1/api_keys/{secret_key.id}/roll", {}))[:2] == (
        403,
        "scope_missing",
    )
    assert error(keys.delete(f"/v1/api_keys/{secret_key.id}"))[:2] == (403, "scope_missing")
    assert ApiKey.objects.get(pk=secret_key.pk).revoked_at is None


def test_every_api_view_names_the_scope_of_each_of_its_methods() -> None:
    def views(patterns: list, prefix: str = "") -> list[tuple[str, type]]:
        found = []
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                found += views(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                view_class = getattr(pattern.callback, "view_class", None)
                if view_class is not None and issubclass(view_class, APIView):
                    found.append((prefix + str(pattern.pattern), view_class))
        return found

    api_views = [
        (path, view) for path, view in views(get_resolver().url_patterns) if path.startswith("v1/")
    ]
    assert len(api_views) >= 15
    for path, view in api_views:
        methods = {m for m in ("get", "post", "delete", "put", "patch") if hasattr(view, m)}
        assert methods == set(view.required_scopes), path
        assert set(view.required_scopes.values()) <= set(SCOPES), path


def test_a_view_that_names_no_scope_refuses_restricted_keys(api: MerchantClient) -> None:
    key, _raw = api_key_create(merchant=api.merchant, restricted=True, scopes=["payments:read"])
    request = APIRequestFactory().get("/v1/anything")
    request.user = MerchantUser(merchant=api.merchant, api_key=key)

    class Unscoped(APIView):
        pass

    with pytest.raises(ScopeMissing):
        ScopePermission().has_permission(request, Unscoped())
    secret_key = ApiKey.objects.get(merchant=api.merchant, restricted=False)
    request.user = MerchantUser(merchant=api.merchant, api_key=secret_key)
    assert ScopePermission().has_permission(request, Unscoped()) is True


# --- roll and revoke ---


def _later(monkeypatch: pytest.MonkeyPatch, delta: timedelta) -> None:
    """The authentication's clock moved ``delta`` ahead (its kept keys see the time pass too; a
    raw UPDATE of a key would not be announced to them, payments/authentication.py)."""
    from types import SimpleNamespace

    monkeypatch.setattr(
        "payments.authentication.timezone", SimpleNamespace(now=lambda: timezone.now() + delta)
    )


def test_roll_gives_a_new_key_and_keeps_the_old_one_for_the_overlap(
    api: MerchantClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_key = ApiKey.objects.get(merchant=api.merchant)
    response = post(api, f"/v1/api_keys/{old_key.id}/roll", {"expires_in": 3600})
    assert response.status_code == 201, response.content
    new_raw = response.json()["secret"]
    assert response.json()["id"] != old_key.id
    assert client_for(new_raw).get("/v1/payments").status_code == 200
    assert api.get("/v1/payments").status_code == 200  # the old key, inside the overlap
    old_key.refresh_from_db()
    assert old_key.expires_at is not None
    assert timedelta(minutes=59) < old_key.expires_at - timezone.now() <= timedelta(hours=1)

    # Past the overlap, the old key is refused.
    _later(monkeypatch, timedelta(hours=1, seconds=1))
    assert error(api.get("/v1/payments"))[:2] == (401, "invalid_api_key")
    assert client_for(new_raw).get("/v1/payments").status_code == 200


def test_roll_with_no_overlap_stops_the_old_key_at_once(api: MerchantClient) -> None:
    old_key = ApiKey.objects.get(merchant=api.merchant)
    new_raw = post(api, f"/v1/api_keys/{old_key.id}/roll", {"expires_in": 0}).json()["secret"]
    assert error(api.get("/v1/payments"))[:2] == (401, "invalid_api_key")
    assert client_for(new_raw).get("/v1/payments").status_code == 200


def test_a_rolled_key_cannot_be_rolled_again(api: MerchantClient) -> None:
    old_key = ApiKey.objects.get(merchant=api.merchant)
    assert post(api, f"/v1/api_keys/{old_key.id}/roll", {}).status_code == 201
    assert error(post(api, f"/v1/api_keys/{old_key.id}/roll", {}))[:2] == (409, "api_key_rolled")
    assert error(post(api, f"/v1/api_keys/{old_key.id}/roll", {"expires_in": -1})) == (
        400,
        "expires_in_invalid",
        "expires_in",
    )


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_rolls_of_one_key_make_one_new_key() -> None:
    client = make_client()
    old_key = ApiKey.objects.get(merchant=client.merchant)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def roll() -> None:
        try:
            barrier.wait()
            api_key_roll(merchant=client.merchant, caller=old_key, key_id=old_key.id, expires_in=60)
            outcomes.append("rolled")
        except ApiKeyRolled:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=roll) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["refused", "rolled"]
    assert ApiKey.objects.filter(merchant=client.merchant).count() == 2


def test_revoke_stops_a_key_at_once(api: MerchantClient) -> None:
    created = post(api, "/v1/api_keys", {}).json()
    other = client_for(created["secret"])
    assert other.get("/v1/payments").status_code == 200
    response = api.delete(f"/v1/api_keys/{created['id']}")
    assert response.status_code == 200
    assert response.json()["revoked_at"] is not None
    assert error(other.get("/v1/payments"))[:2] == (401, "invalid_api_key")
    assert created["id"] not in [key["id"] for key in api.get("/v1/api_keys").json()["data"]]
    assert error(api.delete(f"/v1/api_keys/{created['id']}"))[:2] == (404, "resource_missing")


def test_another_merchants_or_the_other_modes_keys_are_not_found(
    api: MerchantClient, other_api: MerchantClient
) -> None:
    theirs = ApiKey.objects.get(merchant=other_api.merchant)
    assert error(api.delete(f"/v1/api_keys/{theirs.id}"))[:2] == (404, "resource_missing")
    assert error(post(api, f"/v1/api_keys/{theirs.id}/roll", {}))[:2] == (404, "resource_missing")
    live, _raw = api_key_create(merchant=api.merchant, live=True)
    assert error(api.delete(f"/v1/api_keys/{live.id}"))[:2] == (404, "resource_missing")
    assert live.id not in [key["id"] for key in api.get("/v1/api_keys").json()["data"]]
    assert ApiKey.objects.get(pk=theirs.pk).revoked_at is None


def test_last_used_is_written_at_most_once_a_minute(
    api: MerchantClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = ApiKey.objects.get(merchant=api.merchant)
    assert key.last_used_at is None
    api.get("/v1/payments")
    first = ApiKey.objects.get(pk=key.pk).last_used_at
    assert first is not None
    api.get("/v1/payments")
    assert ApiKey.objects.get(pk=key.pk).last_used_at == first
    _later(monkeypatch, timedelta(minutes=2))
    api.get("/v1/payments")
    assert ApiKey.objects.get(pk=key.pk).last_used_at > first


# --- the back office ---


@pytest.fixture
def staff() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("ops", "ops@example.com", "pw-123456789"))
    return client


def test_staff_make_a_restricted_key_shown_once(staff: Client, api: MerchantClient) -> None:
    response = staff.post(
        "/admin/payments/apikey/add/",
        {
            "merchant": api.merchant.id,
            "name": "reporting",
            "restricted": "on",
            "scopes": ["payments:read", "events:read"],
        },
        follow=True,
    )
    assert response.status_code == 200
    [message] = [str(m) for m in response.context["messages"] if "shown this once" in str(m)]
    raw = message.rsplit(" ", 1)[-1]
    assert raw.startswith("rk_test_")
    key = ApiKey.objects.get(merchant=api.merchant, name="reporting")
    assert (key.restricted, key.scopes, key.prefix) == (
        True,
        ["payments:read", "events:read"],
        raw[:12],
    )
    reader = client_for(raw)
    assert reader.get("/v1/events").status_code == 200
    assert error(post(reader, "/v1/payments", VISA))[:2] == (403, "scope_missing")
    # The change page shows the prefix, never the key.
    assert raw not in staff.get(f"/admin/payments/apikey/{key.pk}/change/").content.decode()


def test_staff_cannot_make_a_secret_key_with_scopes(staff: Client, api: MerchantClient) -> None:
    response = staff.post(
        "/admin/payments/apikey/add/",
        {"merchant": api.merchant.id, "name": "x", "scopes": ["payments:read"]},
    )
    assert response.status_code == 200  # the form again, with its error
    assert "restricted keys only" in response.content.decode()
    assert not ApiKey.objects.filter(name="x").exists()


def test_staff_roll_and_revoke_keys_from_the_list(staff: Client, api: MerchantClient) -> None:
    key = ApiKey.objects.get(merchant=api.merchant)
    rolled = staff.post(
        "/admin/payments/apikey/",
        {"action": "roll_keys", "_selected_action": [key.pk]},
        follow=True,
    )
    [message] = [str(m) for m in rolled.context["messages"] if "shown this once" in str(m)]
    new_raw = message.rsplit(" ", 1)[-1]
    assert client_for(new_raw).get("/v1/payments").status_code == 200
    assert api.get("/v1/payments").status_code == 200  # a day's overlap
    staff.post("/admin/payments/apikey/", {"action": "revoke_keys", "_selected_action": [key.pk]})
    assert error(api.get("/v1/payments"))[:2] == (401, "invalid_api_key")
    assert client_for(new_raw).get("/v1/payments").status_code == 200
