"""The SSRF guard: a webhook URL must not become a way into AegisPay's own network.

Unless ``WEBHOOK_ALLOW_PRIVATE_URLS`` (DEBUG, tests), URLs are https only, and a URL whose host
resolves to any non-public address is refused at creation (``webhook_url_validate``) and again
before every send (``webhook_url_target``), because DNS can change in between. The send then
goes to the very address that was checked (``transport.py``).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from django.conf import settings

from .errors import WebhookUrlInvalid, WebhookUrlNotAllowed

_MAX_URL_LENGTH = 2048
# NAT64 (RFC 6052) embeds an IPv4 address in the last 32 bits; the gateway would reach it.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address really reaches (mapped, 6to4, Teredo, NAT64)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_is_public(address: IPAddress) -> bool:
    """True only for a globally routable unicast address.

    ``is_global`` alone lets multicast through, and an IPv4-mapped IPv6 address such as
    ``::ffff:127.0.0.1`` is judged by the IPv4 address it embeds.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return address_is_public(embedded)
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """Where one request goes: the checked address, and the name the receiver knows."""

    scheme: str
    host: str
    port: int
    path: str
    address: str

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def _split(url: object) -> SplitResult:
    """Syntax and policy checks that need no DNS."""
    if not isinstance(url, str) or not url:
        raise WebhookUrlInvalid("url is required and must be a string")
    if len(url) > _MAX_URL_LENGTH or not url.isprintable() or any(c.isspace() for c in url):
        raise WebhookUrlInvalid(
            f"url must be at most {_MAX_URL_LENGTH} printable characters without spaces"
        )
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port that is no number or above 65535
    except ValueError:
        raise WebhookUrlInvalid("url is not a valid URL") from None
    if port == 0:  # no server listens there; _port would have read it as the default
        raise WebhookUrlInvalid("url's port must be from 1 to 65535")
    if parts.scheme not in ("https", "http"):
        raise WebhookUrlInvalid("url must start with https://")
    if parts.scheme == "http" and not settings.WEBHOOK_ALLOW_PRIVATE_URLS:
        raise WebhookUrlNotAllowed("url must use https")
    if "@" in parts.netloc:
        raise WebhookUrlInvalid("url must not contain a user name or password")
    if not parts.hostname:
        raise WebhookUrlInvalid("url has no host")
    return parts


def _port(parts: SplitResult) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


def _resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to now (an IP literal is itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise WebhookUrlInvalid(f"the host {host!r} does not resolve") from None
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise WebhookUrlInvalid(f"the host {host!r} does not resolve")
    return addresses


def _check_public(addresses: Iterable[IPAddress]) -> None:
    """Refuse if *any* address is not public: a host that answers with a public and a private
    address must not reach the private one."""
    if settings.WEBHOOK_ALLOW_PRIVATE_URLS:
        return
    for address in addresses:
        if not address_is_public(address):
            raise WebhookUrlNotAllowed(
                f"url must not point at a private or reserved address ({address})"
            )


def webhook_url_validate(url: object) -> str:
    """``url`` if an endpoint may use it.

    Raises ``WebhookUrlInvalid`` (syntax, scheme, credentials, unresolvable host) or
    ``WebhookUrlNotAllowed`` (http, or a host that resolves to any private, loopback,
    link-local, multicast, reserved or unspecified address, IPv4 or IPv6, mapped forms
    included). With ``WEBHOOK_ALLOW_PRIVATE_URLS`` (development) only the syntax is checked,
    so a host that does not resolve yet can be registered.
    """
    parts = _split(url)
    if not settings.WEBHOOK_ALLOW_PRIVATE_URLS:
        _check_public(_resolve(parts.hostname or "", _port(parts)))
    return parts.geturl()


def webhook_url_target(url: str) -> WebhookTarget:
    """Check ``url`` as ``webhook_url_validate`` does, at send time, and pick the address.

    The request must go to the returned ``address``: that is the one that was checked.
    """
    parts = _split(url)
    host = parts.hostname or ""
    port = _port(parts)
    addresses = _resolve(host, port)
    _check_public(addresses)
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return WebhookTarget(
        scheme=parts.scheme, host=host, port=port, path=path, address=str(addresses[0])
    )
