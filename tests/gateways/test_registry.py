"""The gateway registry: default sandbox accounts, lookup by name, registering adapters."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateways.base import (
    CaptureRequest,
    ChargeRequest,
    GatewayAdapter,
    GatewayError,
    GatewayResult,
    Outcome,
    RefundRequest,
    UnknownGateway,
    VoidRequest,
)
from gateways.registry import gateway_names, get_gateway, register, unregister
from gateways.sandbox.adapter import SandboxGateway


class FakeGateway:
    """A minimal adapter that declines everything, to exercise the registry."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _declined(self, operation: str, reference: str) -> GatewayResult:
        return GatewayResult(Outcome.DECLINED, self.name, operation, reference)

    def authorize(self, request: ChargeRequest) -> GatewayResult:
        return self._declined("authorize", request.reference)

    def capture(self, request: CaptureRequest) -> GatewayResult:
        return self._declined("capture", request.reference)

    def void(self, request: VoidRequest) -> GatewayResult:
        return self._declined("void", request.reference)

    def refund(self, request: RefundRequest) -> GatewayResult:
        return self._declined("refund", request.reference)

    def lookup(self, reference: str, operation: str = "authorize") -> GatewayResult:
        return GatewayResult(Outcome.NOT_FOUND, self.name, "lookup", reference)


@pytest.fixture
def fake_gateway() -> Iterator[FakeGateway]:
    adapter = FakeGateway("fake_registry_test")
    register(adapter)
    yield adapter
    unregister(adapter.name)


@pytest.mark.parametrize("name", ["sandbox_a", "sandbox_b"])
def test_default_sandbox_accounts_are_registered(name: str) -> None:
    adapter = get_gateway(name)

    assert isinstance(adapter, SandboxGateway)
    assert isinstance(adapter, GatewayAdapter)
    assert adapter.name == name
    assert name in gateway_names()


def test_the_two_sandbox_accounts_are_distinct_instances() -> None:
    assert get_gateway("sandbox_a") is not get_gateway("sandbox_b")
    assert get_gateway("sandbox_a") is get_gateway("sandbox_a")


def test_gateway_names_are_sorted() -> None:
    names = gateway_names()

    assert names == sorted(names)


def test_unknown_gateway_raises() -> None:
    with pytest.raises(UnknownGateway, match="nope") as caught:
        get_gateway("nope")

    assert isinstance(caught.value, GatewayError)
    assert caught.value.name == "nope"


def test_registered_adapter_is_found_by_name(fake_gateway: FakeGateway) -> None:
    assert get_gateway("fake_registry_test") is fake_gateway
    assert "fake_registry_test" in gateway_names()


def test_registering_a_name_again_replaces_the_adapter(fake_gateway: FakeGateway) -> None:
    replacement = register(FakeGateway("fake_registry_test"))

    assert get_gateway("fake_registry_test") is replacement
    assert replacement is not fake_gateway


def test_unregistered_adapter_is_gone() -> None:
    register(FakeGateway("fake_short_lived"))

    unregister("fake_short_lived")

    assert "fake_short_lived" not in gateway_names()
    with pytest.raises(UnknownGateway):
        get_gateway("fake_short_lived")


def test_unregistering_an_unknown_name_raises() -> None:
    with pytest.raises(UnknownGateway):
        unregister("never_registered")


def test_registering_something_that_is_not_an_adapter_raises() -> None:
    with pytest.raises(TypeError, match="GatewayAdapter"):
        register(object())  # type: ignore[arg-type]

    assert "object" not in gateway_names()
