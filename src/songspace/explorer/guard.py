"""Who may talk to the explorer server: the Host names it answers and the origins it obeys.

A server on 127.0.0.1 is still reachable from any web page the user opens: through DNS
rebinding (a page's own name made to resolve to 127.0.0.1, so its script reads the server
as same-origin) or through plain cross-site requests. `Guard` stops both before routing:

* every request must carry a `Host` header naming the server as it was bound (127.0.0.1,
  localhost or [::1] with the port, for a loopback or all-interfaces bind) or a name given
  with `--allowed-host`; otherwise 400;
* a request that changes state or costs work (any method but GET, HEAD and OPTIONS: the
  upload POST and the judge's answers; the lists, whose answers take real work to compute,
  and the judge's next question, which is logged: `COSTLY_PATHS`) is
  refused with 403 when its `Origin` is not the server's own origin or its
  `Sec-Fetch-Site` says it comes from another site. Clients that are not browsers send
  neither header and pass; the Host check still applies to them.

Errors are JSON (`{"error": ...}`) like the server's other errors.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.responses import JSONResponse

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
COSTLY_PATHS = ("/api/radio", "/api/path", "/api/playlists",   # GETs that cost work or write a log:
                "/api/judge/next")                              # same-origin only
FOREIGN_FETCH_SITES = ("cross-site", "same-site")
DEFAULT_HTTP_PORT = 80  # a Host header without a port means this one
HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?")  # a DNS name or a dotted IPv4 address


def is_loopback(host: str) -> bool:
    """Whether a bind address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def bracketed(name: str) -> str:
    """An IPv6 address in brackets, as a Host header writes it; other names as given."""
    return f"[{name}]" if ":" in name and not name.startswith("[") else name


def _ipv6(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 6
    except ValueError:
        return False


def normalise_host(value: str, default_port: int = DEFAULT_HTTP_PORT) -> str | None:
    """`name:port` in lower case from a Host header or an --allowed-host value; None if malformed.

    A name is a DNS name or an IPv4 address, or an IPv6 address in brackets (bare, too, for
    --allowed-host); without a port, default_port.
    """
    value = value.strip().lower()
    if value.startswith("["):  # [v6]:port or [v6]
        name, closed, rest = value[1:].partition("]")
        if not closed or not _ipv6(name) or (rest and not rest.startswith(":")):
            return None
        name, port = f"[{name}]", rest[1:]
    elif _ipv6(value):  # bare, only from --allowed-host
        name, port = f"[{value}]", ""
    else:
        name, _, port = value.partition(":")
        if not HOST_NAME.fullmatch(name):
            return None
    if port and not (port.isdigit() and 0 < int(port) <= 65535):
        return None
    return f"{name}:{int(port) if port else default_port}"


def allowed_hosts(bind_host: str, port: int, extra: Iterable[str] = ()) -> frozenset[str]:
    """The `name:port` Host values the server answers when bound to bind_host:port.

    The bound address itself; the loopback names when the bind reaches loopback (a loopback
    address or all interfaces); each of extra (`name` or `name:port`; the server's port
    when none is given). Raises ValueError for a malformed extra name.
    """
    names = {bracketed(bind_host.lower())} if bind_host not in WILDCARD_HOSTS else set()
    if is_loopback(bind_host) or bind_host in WILDCARD_HOSTS:
        names.update(LOOPBACK_NAMES)
    hosts = {f"{n}:{port}" for n in names}
    for value in extra:
        norm = normalise_host(value, default_port=port)
        if norm is None:
            raise ValueError(f"--allowed-host {value!r}: not a host name (NAME or NAME:PORT)")
        hosts.add(norm)
    return frozenset(hosts)


def refusal(headers: Headers, method: str, hosts: frozenset[str], path: str = "") -> tuple[int, str] | None:
    """(status, message) when a request must be refused, None when it may proceed."""
    raw = headers.get("host", "")
    host = normalise_host(raw)
    if host not in hosts:
        return 400, (f"host {raw!r} is not served here; this server answers "
                     f"{', '.join(sorted(hosts))} (add names with --allowed-host)")
    if method in SAFE_METHODS and path not in COSTLY_PATHS:
        return None
    site = headers.get("sec-fetch-site", "").lower()
    if site in FOREIGN_FETCH_SITES:
        return 403, f"refused: a {site} request (only the explorer's own page may send this)"
    origin = headers.get("origin")
    if origin is not None and origin.lower() not in (f"http://{raw.lower()}", f"https://{raw.lower()}"):
        return 403, f"refused: origin {origin!r} is not this server's (only the explorer's own page may send this)"
    return None


class Guard:
    """ASGI middleware applying `refusal` to every HTTP request before the app sees it."""

    def __init__(self, app, hosts: frozenset[str]):
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            refused = refusal(Headers(scope=scope), scope["method"], self.hosts, scope.get("path", ""))
            if refused is not None:
                status, message = refused
                await JSONResponse({"error": message}, status_code=status)(scope, receive, send)
                return
        await self.app(scope, receive, send)
