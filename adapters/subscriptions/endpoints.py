"""Where a rest-hook may post (issue 31; OWASP SSRF prevention): https in production,
a host of ``TELEIMG_SUBSCRIPTION_HOSTS`` when the list is set, and never an internal
address — loopback, private, link-local, reserved, multicast — as its name *resolves*,
unless the host is explicitly allowed. Checked when the Subscription is written and again
before each send (a name may resolve elsewhere later)."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from adapters.subscriptions.settings import SubscriptionSettings


class Refused(ValueError):
    """The endpoint may not be notified (the reason, without the URL's credentials)."""


def allowed_host(host: str, settings: SubscriptionSettings) -> bool:
    host = host.lower().rstrip(".")
    return any(host == h or (h.startswith("*.") and host.endswith(h[1:]))
               for h in settings.hosts)


def check(endpoint: str | None, settings: SubscriptionSettings) -> None:
    """Raise :class:`Refused` unless ``endpoint`` may be notified."""
    if not endpoint:
        raise Refused("a rest-hook needs channel.endpoint")
    parts = urlsplit(endpoint)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise Refused("channel.endpoint must be an absolute http(s) URL")
    if parts.username or parts.password:
        raise Refused("channel.endpoint may not carry credentials (use channel.header)")
    if settings.https_only and parts.scheme != "https":
        raise Refused("channel.endpoint must be https (TELEIMG_ENV=production)")
    host = parts.hostname
    listed = allowed_host(host, settings)
    if settings.hosts and not listed:
        raise Refused(f"host {host} is not in TELEIMG_SUBSCRIPTION_HOSTS")
    if listed:
        return  # an operator allowed it by name, internal or not
    try:
        infos = socket.getaddrinfo(host, parts.port or (443 if parts.scheme == "https"
                                                        else 80), type=socket.SOCK_STREAM)
    except OSError as exc:
        raise Refused(f"host {host} does not resolve") from exc
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not address.is_global or address.is_multicast:
            raise Refused(f"host {host} resolves to an internal address ({address}); "
                          "allow it by name in TELEIMG_SUBSCRIPTION_HOSTS")
