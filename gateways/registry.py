"""The registry of gateway adapters, by gateway account name.

Two sandbox accounts, ``sandbox_a`` and ``sandbox_b``, are registered the first time the registry
is used (and at Django start-up by ``GatewaysConfig.ready``). The registry is per process and
thread-safe; every process builds the same defaults, so a name means the same account everywhere.
"""

from __future__ import annotations

import threading

from gateways.base import GatewayAdapter, UnknownGateway

DEFAULT_SANDBOX_ACCOUNTS = ("sandbox_a", "sandbox_b")

_lock = threading.RLock()
_adapters: dict[str, GatewayAdapter] = {}
_defaults_registered = False


def _ensure_defaults() -> None:
    global _defaults_registered
    with _lock:
        if _defaults_registered:
            return
        # Imported here: the sandbox needs the app registry (its ledger is a model), and this
        # module must stay importable before Django is set up.
        from gateways.sandbox.adapter import SandboxGateway

        for name in DEFAULT_SANDBOX_ACCOUNTS:
            _adapters.setdefault(name, SandboxGateway(name))
        _defaults_registered = True


def register(adapter: GatewayAdapter) -> GatewayAdapter:
    """Register ``adapter`` under ``adapter.name``, replacing any adapter of that name.

    Returns the adapter. Raises ``TypeError`` when it does not implement ``GatewayAdapter``.
    """
    if not isinstance(adapter, GatewayAdapter):
        raise TypeError(f"{adapter!r} does not implement the GatewayAdapter protocol")
    with _lock:
        _ensure_defaults()
        _adapters[adapter.name] = adapter
    return adapter


def unregister(name: str) -> None:
    """Remove the adapter registered under ``name``; raises ``UnknownGateway`` if there is none."""
    with _lock:
        _ensure_defaults()
        if name not in _adapters:
            raise UnknownGateway(name)
        del _adapters[name]


def get_gateway(name: str) -> GatewayAdapter:
    """The adapter registered under ``name``; raises ``UnknownGateway`` if there is none."""
    with _lock:
        _ensure_defaults()
        try:
            return _adapters[name]
        except KeyError:
            raise UnknownGateway(name) from None


def gateway_names() -> list[str]:
    """The names of every registered gateway account, sorted."""
    with _lock:
        _ensure_defaults()
        return sorted(_adapters)
