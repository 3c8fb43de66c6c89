"""One description per API shape: the input serializers' errors become the contract's codes in
one place (``payments/api_errors.py``), and the OpenAPI schema is built from the serializers
the views validate and render with, with the API key as its bearer security scheme."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
from rest_framework.test import APIClient

from payments.api_errors import validation_failed
from payments.errors import ValidationFailed
from payments.idempotency import validate_idempotency_key
from payments.serializers import (
    PageParamsSerializer,
    PaymentCreateInputSerializer,
    PaymentListParamsSerializer,
)
from payments.views import PaymentListCreateApi, parse_if_match
from tests.conftest import VISA, MerchantClient
from tests.payments.helpers import payment_in


def failure(serializer: Any) -> tuple[str, str, str | None]:
    assert not serializer.is_valid()
    error = validation_failed(serializer)
    return error.code, error.message, error.param


def test_a_missing_parameter_is_drfs_required_and_the_contracts_parameter_missing() -> None:
    body = {k: v for k, v in VISA.items() if k != "amount"}
    serializer = PaymentCreateInputSerializer(data=body)
    assert not serializer.is_valid()
    assert serializer.errors["amount"][0].code == "required"
    assert failure(serializer) == ("parameter_missing", "amount is required", "amount")


def test_a_missing_field_inside_an_object_is_a_bad_value_of_that_object() -> None:
    serializer = PaymentCreateInputSerializer(data={**VISA, "payment_method": {"token": "t"}})
    assert not serializer.is_valid()
    assert serializer.errors["payment_method"]["type"][0].code == "required"
    assert failure(serializer) == (
        "payment_method_invalid",
        "payment_method.type must be 'card'",
        "payment_method.type",
    )


@pytest.mark.parametrize(
    ("body", "drf_code", "expected"),
    [
        (
            {**VISA, "capture_method": None},
            "null",
            ("capture_method_invalid", "capture_method must be 'automatic' or 'manual'"),
        ),
        (
            {**VISA, "capture_method": "later"},
            "invalid_choice",
            ("capture_method_invalid", "capture_method must be 'automatic' or 'manual'"),
        ),
        (
            {**VISA, "currency": "usd"},
            "invalid",
            ("currency_invalid", "currency must be an upper-case ISO 4217 code such as USD"),
        ),
    ],
)
def test_drfs_codes_map_to_the_fields_contract_code(
    body: dict, drf_code: str, expected: tuple[str, str]
) -> None:
    serializer = PaymentCreateInputSerializer(data=body)
    assert not serializer.is_valid()
    name = next(iter(serializer.errors))
    assert serializer.errors[name][0].code == drf_code
    assert failure(serializer) == (*expected, name)


def test_a_body_that_is_no_object_is_invalid_request_without_a_param() -> None:
    for body in ([1], None):
        assert failure(PaymentCreateInputSerializer(data=body)) == (
            "invalid_request",
            "the body must be a JSON object",
            None,
        )


def test_a_metadata_entry_is_named_by_its_key() -> None:
    serializer = PaymentCreateInputSerializer(data={**VISA, "metadata": {"ok": "1", "n": 5}})
    assert failure(serializer)[::2] == ("metadata_invalid", "metadata[n]")


def test_every_query_parameter_error_is_parameter_invalid() -> None:
    page = PageParamsSerializer(data={"limit": "0"})
    assert not page.is_valid()
    assert page.errors["limit"][0].code == "invalid"
    assert failure(page)[::2] == ("parameter_invalid", "limit")
    status = PaymentListParamsSerializer(data={"status": "paid"})
    assert failure(status) == ("parameter_invalid", "unknown status: paid", "status")


# --- the schema ---


@pytest.fixture
def schema(db: None) -> dict[str, Any]:
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    return response.json()


def test_the_schema_has_the_api_key_as_a_bearer_security_scheme(schema: dict) -> None:
    assert schema["components"]["securitySchemes"]["bearerAuth"]["type"] == "http"
    assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    operations = {
        operation["operationId"]: operation
        for path, item in schema["paths"].items()
        if path.startswith("/v1/")
        for operation in item.values()
    }
    assert {"payments_create", "payments_list", "payments_capture"} <= set(operations)
    assert {name: op.get("security") for name, op in operations.items()} == {
        name: [{"bearerAuth": []}] for name in operations
    }


def _component(schema: dict, ref: str) -> dict:
    return schema["components"]["schemas"][ref.rsplit("/", 1)[1]]


def test_payments_create_is_described_by_the_serializer_the_view_validates_with(
    schema: dict, api: MerchantClient
) -> None:
    operation = schema["paths"]["/v1/payments"]["post"]
    ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    serializer_class = PaymentListCreateApi.input_serializers["post"]
    assert ref == "#/components/schemas/" + serializer_class.__name__.removesuffix("Serializer")
    described = _component(schema, ref)

    def create(body: dict) -> Any:
        return api.post("/v1/payments", data=json.dumps(body), content_type="application/json")

    # What the schema says is required is what the view refuses to go without, and nothing else.
    for name in described["properties"]:
        missing = create({k: v for k, v in VISA.items() if k != name}).json()
        expected = name in described["required"]
        assert (missing.get("error", {}).get("code") == "parameter_missing") is expected, name
    # Every parameter the schema names is accepted; one it does not name is refused.
    every = {
        **VISA,
        "capture_method": "manual",
        "customer": {"id": "c", "name": "n", "email": "a@example.com", "country": "US"},
        "description": "d",
        "merchant_reference": "r",
        "metadata": {"k": "v"},
    }
    assert set(every) == set(described["properties"])
    created = create(every)
    assert created.status_code == 201
    assert create({**VISA, "brand": "visa"}).json()["error"]["code"] == "parameter_unknown"
    # The answer has the keys, in order, of the 201 response's component.
    answer = operation["responses"]["201"]["content"]["application/json"]["schema"]["$ref"]
    assert list(created.json()) == list(_component(schema, answer)["properties"])


def test_an_initiated_payments_method_matches_its_schema(schema: dict, api: MerchantClient) -> None:
    # brand and last4 come from the gateway's answer: an initiated payment has neither, so the
    # output schema must not require them (it did: read-only fields are required in a schema).
    created = api.post("/v1/payments", data=json.dumps(VISA), content_type="application/json")
    method = created.json()["payment_method"]
    assert created.json()["status"] == "initiated"
    assert "brand" not in method and "last4" not in method
    payment = schema["paths"]["/v1/payments"]["post"]["responses"]["201"]["content"]
    ref = _component(schema, payment["application/json"]["schema"]["$ref"])
    described = _component(schema, ref["properties"]["payment_method"]["$ref"])
    assert set(described["required"]) <= set(method)
    assert {"brand", "last4"} <= set(described["properties"])
    # The input's component takes exactly what a request may send.
    request = schema["paths"]["/v1/payments"]["post"]["requestBody"]["content"]
    create_input = _component(schema, request["application/json"]["schema"]["$ref"])
    sent = _component(schema, create_input["properties"]["payment_method"]["$ref"])
    assert set(sent["properties"]) == {"type", "token"}


def test_every_operation_documents_the_errors_the_server_can_answer(schema: dict) -> None:
    for path, operations in schema["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            expected = {"400", "401", "403", "404", "405", "429", "500"}
            if method == "post":
                expected |= {"409", "413", "422"}
            assert expected <= set(operation["responses"]), (method, path)
            for status in expected:
                content = operation["responses"][status]["content"]["application/json"]
                assert content["schema"]["$ref"].endswith("/Error"), (method, path, status)


# --- the schema says what the API accepts: found by make schemathesis (bench/contract.py) ---


def json_schema(schema: dict, node: Any) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema: references resolved, ``nullable`` as ``null``
    allowed, ``x-property-names`` as ``propertyNames``, and each pattern's ``$`` as ECMA reads
    it (the end of the text; Python's ``$`` also matches before a final newline)."""
    if isinstance(node, list):
        return [json_schema(schema, item) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return json_schema(schema, _component(schema, node["$ref"]))
    converted = {
        key: json_schema(schema, value)
        for key, value in node.items()
        if not key.startswith("x-") and key != "nullable"
    }
    if "x-property-names" in node:
        converted["propertyNames"] = node["x-property-names"]
    if isinstance(node.get("pattern"), str):
        converted["pattern"] = re.sub(r"(?<!\\)\$", r"\\Z", node["pattern"])
    if node.get("nullable"):
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


def request_schema(schema: dict, path: str, method: str = "post") -> dict:
    content = schema["paths"][path][method]["requestBody"]["content"]["application/json"]
    return json_schema(schema, content["schema"])


def response_schema(schema: dict, path: str, status: int, method: str = "post") -> dict:
    answer = schema["paths"][path][method]["responses"][str(status)]["content"]
    return json_schema(schema, answer["application/json"]["schema"])


def described(validator_schema: dict, body: Any) -> bool:
    return jsonschema.Draft7Validator(validator_schema).is_valid(body)


def post_json(api: MerchantClient, path: str, body: Any, **headers: str) -> Any:
    return api.post(path, data=json.dumps(body), content_type="application/json", **headers)


@pytest.mark.parametrize(
    "body",
    [
        VISA,
        {**VISA, "currency": "KWD", "amount": 10**13},
        # The amount's bound depends on the currency: an anyOf per exponent.
        {**VISA, "currency": "JPY", "amount": 10**10 + 1},
        {**VISA, "currency": "XYZ"},
        # null reads as none: the schema says nullable.
        {**VISA, "description": None, "customer": None, "metadata": None},
        {**VISA, "metadata": {f"k{i}": "v" for i in range(51)}},
        {**VISA, "metadata": {"": "v"}},
        {**VISA, "metadata": {"k" * 41: "v"}},
        {**VISA, "payment_method": {"type": "card", "token": "tok_visa\n"}},
        {**VISA, "customer": {"country": "us"}},
        {**VISA, "customer": {"email": "a@example.com", "country": "US", "phone": "1"}},
        {**VISA, "surprise": 1},
    ],
)
def test_the_create_schema_takes_what_the_api_takes(
    schema: dict, api: MerchantClient, body: dict
) -> None:
    accepted = post_json(api, "/v1/payments", body).status_code == 201
    assert described(request_schema(schema, "/v1/payments"), body) is accepted


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": None},
        {"restricted": True, "scopes": ["payments:read", "payments:read"]},
        # A secret key takes no scopes, a restricted one at least one.
        {"scopes": ["payments:read"]},
        {"restricted": False, "scopes": ["payments:read"]},
        {"restricted": True},
        {"restricted": True, "scopes": []},
        {"restricted": True, "scopes": ["payments:delete"]},
        {"restricted": True, "scopes": [" payments:read"]},
    ],
)
def test_the_api_key_schema_takes_what_the_api_takes(
    schema: dict, api: MerchantClient, body: dict
) -> None:
    accepted = post_json(api, "/v1/api_keys", body).status_code == 201
    assert described(request_schema(schema, "/v1/api_keys"), body) is accepted


@pytest.mark.parametrize("body", [None, {}, {"amount": 10}, {"amount": 0}, {"reason": "x"}])
def test_the_capture_schema_takes_what_the_api_takes(
    schema: dict, api: MerchantClient, body: Any
) -> None:
    # A JSON null is read as no body: the schema says nullable (schemathesis found it accepted).
    payment = payment_in(api.merchant, "authorized")
    path = "/v1/payments/{payment_id}/capture"
    accepted = post_json(api, f"/v1/payments/{payment.id}/capture", body).status_code == 200
    assert described(request_schema(schema, path), body) is accepted


@pytest.mark.parametrize("path", ["/v1/api_keys", "/v1/webhook_endpoints"])
def test_a_replayed_create_matches_the_schema_of_its_answer(
    schema: dict, api: MerchantClient, path: str, settings: Any
) -> None:
    # A replay answers without the secret, which the 201 schema required (schemathesis, ST108).
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = True
    body = {"url": "https://example.com/hooks", "events": ["*"]} if "webhook" in path else {}
    first = post_json(api, path, body, HTTP_IDEMPOTENCY_KEY="replayed")
    again = post_json(api, path, body, HTTP_IDEMPOTENCY_KEY="replayed")
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "secret" in first.json()
    assert "secret" not in again.json()
    for answer in (first, again):
        assert described(response_schema(schema, path, 201), answer.json())


def _header_schema(schema: dict, name: str) -> dict:
    operation = schema["paths"]["/v1/payments/{payment_id}/capture"]["post"]
    (parameter,) = [p for p in operation["parameters"] if p["name"] == name]
    return json_schema(schema, parameter["schema"])


@pytest.mark.parametrize("value", ["k", "~" * 255, "a-b_c.d:e/f", "", " k", "k" * 256, "é"])
def test_the_idempotency_key_schema_is_the_keys_rule(schema: dict, value: str) -> None:
    try:
        validate_idempotency_key(value)
        accepted = True
    except ValidationFailed:
        accepted = False
    assert described(_header_schema(schema, "Idempotency-Key"), value) is accepted


@pytest.mark.parametrize("value", ["3", '"3"', "03", '"3', "3.0", "\u00b2", "-1", ""])
def test_the_if_match_schema_is_the_headers_rule(schema: dict, value: str) -> None:
    try:
        parse_if_match(value)
        accepted = True
    except ValidationFailed:
        accepted = False
    assert described(_header_schema(schema, "If-Match"), value) is accepted
