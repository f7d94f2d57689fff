"""The tests' network guard: no connection, and no name lookup, beyond loopback.

Two ways in, one code:

- in the pytest process, ``tests/conftest.py`` imports this module (as
  ``tests.support.netguard.sitecustomize``) and calls ``install()``;
- in every Python subprocess a test starts, Python itself imports it at start-up as
  ``sitecustomize``, because the tests put this folder first on ``PYTHONPATH``; it then
  installs itself. It must stay importable with the standard library alone.

A refused attempt raises ``NetworkGuardRefusal`` (a ``socket.gaierror`` for a lookup, a
``ConnectionRefusedError`` for a connect or send, so library code sees what an offline
machine would show it) *before* the real call, so no packet leaves. It is also appended
to the file named by ``CV_TESTS_NETGUARD_LOG``, where the tests' fixture finds it and
fails the test during which it happened, even when the code that tried swallowed the error.
"""

from __future__ import annotations

import errno
import os
import socket
import sys

# Every Python start of the tests' subprocesses imports this module: typing and ipaddress
# would add tens of milliseconds to each, so neither is imported at run time.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: The file every refused attempt is appended to, one line each.
LOG_ENV = "CV_TESTS_NETGUARD_LOG"


class NetworkGuardRefusal(OSError):
    """A connection or lookup beyond loopback, refused by the tests' network guard."""


class LookupRefused(socket.gaierror, NetworkGuardRefusal):
    """A name lookup of something that is not loopback (it could send a DNS query)."""


class ConnectRefused(ConnectionRefusedError, NetworkGuardRefusal):
    """A connect or send to an address that is not loopback."""


_REAL: dict[str, Any] = {}


_V4_MAPPED = bytes(10) + b"\xff\xff"


def _is_local_address(host: str) -> bool | None:
    """True for a loopback or unspecified IP literal, False for another one, None when ``host`` is no IP literal.

    Unspecified (0.0.0.0, ::) counts as local: Linux connects to it over loopback.
    """
    try:
        v4 = socket.inet_pton(socket.AF_INET, host)
    except OSError:
        try:
            v6 = socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
        except OSError:
            return None
        if not v6.startswith(_V4_MAPPED):
            return v6 in (bytes(16), bytes(15) + b"\x01")
        v4 = v6[len(_V4_MAPPED) :]
    return v4[0] == 127 or v4 == bytes(4)


def _is_local_name(name: str) -> bool:
    name = name.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


def _record(what: str) -> str:
    message = f"network guard: {what} refused; tests may only reach loopback (tests/support/netguard)"
    log = os.environ.get(LOG_ENV)
    if log:
        try:
            with open(log, "a", encoding="utf-8") as sink:  # one short append: whole lines even from many processes
                sink.write(f"{os.getpid()} {sys.argv[0] or '-c'}: {what}\n")
        except OSError:
            pass
    return message


def _host_text(host: object) -> str | None:
    if isinstance(host, bytes):
        return host.decode("ascii", "replace")
    return host if isinstance(host, str) else None


def _check_lookup(host: object, port: object = None) -> None:
    text = _host_text(host)
    if text is None or text == "" or _is_local_address(text) is not None:
        return  # the wildcard a server binds, or an IP literal: no query is sent (connecting is checked)
    if _is_local_name(text) or text == socket.gethostname():
        return  # answered from /etc/hosts
    raise LookupRefused(socket.EAI_NONAME, _record(f"looking up {text!r} (port {port})"))


def _check_address(family: int, address: object, action: str) -> None:
    if family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, tuple) or not address:
        return  # Unix sockets, netlink...: never the network
    text = _host_text(address[0])
    if text is None or text == "":
        return
    local = _is_local_address(text)
    if local is None and _is_local_name(text):
        resolved = _REAL["getaddrinfo"](text, address[1] if len(address) > 1 else None, family)
        local = all(_is_local_address(info[4][0]) for info in resolved)
    if not local:
        raise ConnectRefused(errno.ECONNREFUSED, _record(f"{action} {address[:2]}"))


def _connect(self: socket.socket, address: Any) -> None:
    _check_address(self.family, address, "connecting to")
    return _REAL["connect"](self, address)


def _connect_ex(self: socket.socket, address: Any) -> int:
    _check_address(self.family, address, "connecting to")
    return _REAL["connect_ex"](self, address)


def _sendto(self: socket.socket, data: Any, *args: Any) -> int:
    _check_address(self.family, args[-1] if args else None, "sending to")
    return _REAL["sendto"](self, data, *args)


def _getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list:
    _check_lookup(host, port)
    return _REAL["getaddrinfo"](host, port, *args, **kwargs)


def _create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
    _check_lookup(address[0], address[1])
    return _REAL["create_connection"](address, *args, **kwargs)


def _gethostbyname(host: Any) -> str:
    _check_lookup(host)
    return _REAL["gethostbyname"](host)


def _gethostbyname_ex(host: Any) -> tuple:
    _check_lookup(host)
    return _REAL["gethostbyname_ex"](host)


_PATCHES: dict[tuple[Any, str], Any] = {
    (socket.socket, "connect"): _connect,
    (socket.socket, "connect_ex"): _connect_ex,
    (socket.socket, "sendto"): _sendto,
    (socket, "getaddrinfo"): _getaddrinfo,
    (socket, "create_connection"): _create_connection,
    (socket, "gethostbyname"): _gethostbyname,
    (socket, "gethostbyname_ex"): _gethostbyname_ex,
}


def install() -> None:
    """Refuse, from now on in this process, every connection, send and name lookup beyond loopback."""
    if _REAL:
        return
    for (owner, name), guarded in _PATCHES.items():
        _REAL[name] = getattr(owner, name)
        setattr(owner, name, guarded)


def uninstall() -> None:
    """Put the socket module back as it was before ``install()``."""
    for (owner, name), _ in _PATCHES.items():
        if name in _REAL:
            setattr(owner, name, _REAL[name])
    _REAL.clear()


if __name__ == "sitecustomize":
    install()
