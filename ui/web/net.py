"""The page's network boundary: which requests come from the page itself, and the listening socket.

- **Another site's page** in the user's browser may send requests to the server (a form, a
  ``fetch``, a WebSocket): the browser names that site in ``Origin``. Requests that change
  something (every method but GET, HEAD and OPTIONS) and WebSockets must come from the page's own
  origin, or from no browser page at all (no ``Origin``: curl, scripts).
- **DNS rebinding** (another site's name resolving to 127.0.0.1) makes that site's page
  same-origin with itself; on a loopback address the server therefore also requires a loopback
  name in ``Host``. On ``0.0.0.0`` the machine's names are not known, so ``Host`` is not checked
  there (a login, ``ui.auth``, is what guards a page open to the network).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(netloc: str) -> str:
    """``127.0.0.1:7860`` → ``127.0.0.1``, ``[::1]:7860`` → ``::1``."""
    return (urlsplit("//" + netloc).hostname or "").lower()


def foreign_host(headers: dict[str, str], bind_host: str) -> str | None:
    """Why a request with these (lower-case) headers names another host than this loopback one, or None."""
    host = headers.get("host", "")
    if is_loopback(bind_host) and host_name(host) not in LOOPBACK_NAMES:
        return f"Host {host[:60]!r} is not a loopback name of this machine (DNS rebinding?)"
    return None


def foreign_origin(headers: dict[str, str]) -> str | None:
    """Why a request with these (lower-case) headers comes from another site's page, or None."""
    host, origin = headers.get("host", ""), headers.get("origin")
    if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
        return f"Origin {origin[:60]!r} is another site than {host[:60]!r}"
    return None


def foreign(headers: dict[str, str], bind_host: str) -> str | None:
    """Why a WebSocket (or a request that changes something) is not from the page itself, or None."""
    return foreign_host(headers, bind_host) or foreign_origin(headers)


class SameOrigin:
    """ASGI middleware: HTTP requests that change something from another site's page, and on a
    loopback bind any HTTP request under a foreign ``Host``, get 403 (WebSockets are checked by
    the route, which closes them with a code and a reason the page can show)."""

    def __init__(self, app, bind_host: str, refused: Callable[[str], None]):
        self.app, self.bind_host, self.refused = app, bind_host, refused

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            why = foreign_host(headers, self.bind_host)
            if why is None and scope["method"] not in SAFE_METHODS:
                why = foreign_origin(headers)
            if why is not None:
                self.refused(why)
                body = f"refused: {why}\n".encode()
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def listen_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port, or RuntimeError naming the port and the setting to change."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise RuntimeError(f"ui.host={host}: not an address of this machine ({exc.strerror}); "
                           f"allowed: an address such as 127.0.0.1 or 0.0.0.0") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart may bind while old connections linger
    try:
        sock.bind(addr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise RuntimeError(f"port {port} on {host} is already in use (by another program or another rtchat); "
                               f"choose another with ui.port=N, e.g. ui.port={port + 1 if port < 65535 else 7860}") from None
        if exc.errno == errno.EACCES:
            raise RuntimeError(f"port {port} needs more privileges than this user has; choose ui.port=N with N >= 1024") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise RuntimeError(f"ui.host={host} is not an address of this machine; allowed: an address such as "
                               f"127.0.0.1 or 0.0.0.0") from None
        raise RuntimeError(f"the web page cannot listen on {host}:{port} ({exc.strerror}); see ui.host and ui.port") from None
    return sock
