"""The web app's keep-alive client against tiny loopback servers that misbehave on purpose."""

from __future__ import annotations

import socket
import threading

import pytest

from webapp import upstream_http

ANSWER = (
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok": "1"}'
)


def serve(handle) -> tuple[str, socket.socket]:
    """A loopback listener calling `handle(connection)` per accepted connection."""
    listener = socket.create_server(("127.0.0.1", 0))

    def loop():
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(connection,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/x", listener


def read_request(connection: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(4096)
        if not chunk:
            return data
        data += chunk
    return data


def test_a_kept_alive_connection_the_server_closed_is_replaced_once():
    accepted = []

    def answer_once_then_close(connection):  # keep-alive promised, then closed while idle
        accepted.append(connection)
        if read_request(connection):
            connection.sendall(ANSWER)
        connection.close()

    url, listener = serve(answer_once_then_close)
    pool = upstream_http.Pool(connect_timeout=2, read_timeout=2)
    try:
        for _ in range(3):
            response = pool.request("POST", url, b"body", {})
            assert response.ok and response.json() == {"ok": "1"}
        assert len(accepted) == 3  # one fresh connection per request after each close
    finally:
        listener.close()


def test_no_answer_is_a_read_timeout_and_nothing_listening_a_connect_failure():
    held = []  # open, so the client waits for an answer that never comes
    url, listener = serve(lambda connection: (held.append(connection), read_request(connection)))
    pool = upstream_http.Pool(connect_timeout=1, read_timeout=0.3)
    try:
        with pytest.raises(upstream_http.ReadTimedOut):
            pool.request("GET", url, None, {})
    finally:
        listener.close()
        for connection in held:
            connection.close()
    unused = socket.socket()
    unused.bind(("127.0.0.1", 0))  # a port nobody listens on
    port = unused.getsockname()[1]
    unused.close()
    with pytest.raises(upstream_http.ConnectFailed):
        pool.request("GET", f"http://127.0.0.1:{port}/x", None, {})


def test_an_answer_cut_short_is_a_lost_connection():
    def half_answer(connection):
        read_request(connection)
        connection.sendall(ANSWER[:-5])
        connection.close()

    url, listener = serve(half_answer)
    try:
        with pytest.raises(upstream_http.ConnectionLost):
            upstream_http.Pool(connect_timeout=1, read_timeout=1).request("GET", url, None, {})
    finally:
        listener.close()
