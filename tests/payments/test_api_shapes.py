"""One description per API shape: the input serializers' errors become the contract's codes in
one place (``payments/api_errors.py``), and the OpenAPI schema is built from the serializers
the views validate and render with, with the API key as its bearer security scheme."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from payments.api_errors import validation_failed
from payments.serializers import (
    PageParamsSerializer,
    PaymentCreateInputSerializer,
    PaymentListParamsSerializer,
)
from payments.views import PaymentListCreateApi
from tests.conftest import VISA, MerchantClient


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
