"""A small keep-alive HTTP client for the app's calls to TorchServe (or KServe).

`requests` spent about a fifth of the web app's CPU per prediction (py-spy under load: session
and adapter layers, proxy and ~/.netrc lookups on every call); these calls need none of that:
one host, bodies in memory, JSON back. `http.client` with one kept-alive connection per thread
and host does the same work for a fraction (docs/benchmarks.md).

Errors map to three exceptions the clients turn into answers a user can act on:
`ConnectFailed` (nothing listening, refused, DNS, connect timeout), `ReadTimedOut` (connected,
no answer in time) and `ConnectionLost` (the server closed or reset the connection mid-answer).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


class ConnectFailed(OSError):
    """No connection could be made."""


class ReadTimedOut(OSError):
    """Connected and sent, but no answer within the read timeout."""


class ConnectionLost(OSError):
    """The server dropped the connection before the answer was complete."""


@dataclass(frozen=True)
class Response:
    status_code: int
    content: bytes

    @property
    def ok(self) -> bool:
        return self.status_code < 400

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class Pool:
    """Per-thread kept-alive connections, one per (scheme, host, port)."""

    def __init__(self, connect_timeout: float, read_timeout: float):
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self._local = threading.local()

    def request(self, method: str, url: str, body: bytes | None, headers: dict) -> Response:
        parts = urlsplit(url)
        key = (parts.scheme, parts.hostname, parts.port)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connections = self._connections()
        connection = connections.pop(key, None)
        if connection is not None:
            try:
                return self._exchange(connections, key, connection, method, path, body, headers)
            except ConnectionLost:
                # A kept-alive connection the server had closed while idle: the request never
                # reached it. One fresh connection, once; a second loss is reported.
                pass
        connection = self._connect(*key)
        return self._exchange(connections, key, connection, method, path, body, headers)

    def _connections(self) -> dict:
        if not hasattr(self._local, "connections"):
            self._local.connections = {}
        return self._local.connections

    def _connect(self, scheme: str, host: str | None, port: int | None):
        if scheme == "https":
            connection = http.client.HTTPSConnection(
                host, port, timeout=self.connect_timeout, context=ssl.create_default_context()
            )
        else:
            connection = http.client.HTTPConnection(host, port, timeout=self.connect_timeout)
        try:
            connection.connect()
        except OSError as err:  # refused, unreachable, DNS, connect timeout
            connection.close()
            raise ConnectFailed(str(err)) from err
        connection.sock.settimeout(self.read_timeout)
        # Small requests and answers: no Nagle delay between headers and body.
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection

    def _exchange(self, connections, key, connection, method, path, body, headers) -> Response:
        """One request on `connection`, which goes back to `connections` if it stays open."""
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            content = response.read()
        except TimeoutError as err:
            connection.close()
            raise ReadTimedOut(str(err)) from err
        except (http.client.HTTPException, ConnectionError) as err:
            # RemoteDisconnected, BadStatusLine, IncompleteRead, reset, broken pipe.
            connection.close()
            raise ConnectionLost(str(err)) from err
        if response.will_close:
            connection.close()
        else:
            connections[key] = connection
        return Response(response.status, content)
