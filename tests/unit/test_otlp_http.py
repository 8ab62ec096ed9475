"""The OTLP exporter's own HTTP/1.1 exchange (proxy.telemetry.otlp_http) against collectors that answer
in each way HTTP allows: by Content-Length, chunked, up to the close, after an interim 100, or not at all."""

from __future__ import annotations

import http.client
import socket
import threading

import pytest

from proxy.telemetry.otlp_http import Connection, request_head

HEAD = request_head(path="/v1/traces", host="127.0.0.1", port=4318, default_port=80, headers={"a": "1"})


def _exchange(answer: bytes, body=b"body") -> tuple[tuple[int, str, dict[str, str], bytes, bool], bytes]:
    """What `post` makes of `answer` (sent in pieces, as a network may), and the bytes the collector got."""
    ours, theirs = socket.socketpair()
    got: list[bytes] = []

    def collector() -> None:
        data = b""
        while b"\r\n\r\nbody" not in data:
            data += theirs.recv(65536)
        got.append(data)
        for i in range(0, len(answer), 7):
            theirs.sendall(answer[i : i + 7])
        theirs.close()

    thread = threading.Thread(target=collector)
    thread.start()
    try:
        return Connection(ours).post(HEAD, body), got[0] if got else b""
    finally:
        thread.join(5)
        ours.close()


def test_the_request_is_one_post_with_its_length():
    _, sent = _exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert sent == b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1:4318\r\na: 1\r\nContent-Length: 4\r\n\r\nbody"


def test_a_body_in_parts_is_sent_as_one_body_with_their_length():
    """The span queue's batches are posted as parts (the request's head, each scope's spans in a
    bytearray): the collector gets them in order, as one body of their summed length."""
    _, sent = _exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", [b"bo", bytearray(b"d"), b"", b"y"])
    assert sent == b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1:4318\r\na: 1\r\nContent-Length: 4\r\n\r\nbody"


def test_a_body_by_content_length_keeps_the_connection():
    (status, reason, headers, body, closes), _ = _exchange(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 3\r\n\r\nabc"
    )
    assert (status, reason, body, closes) == (200, "OK", b"abc", False)
    assert headers["content-type"] == "application/x-protobuf"


def test_a_chunked_body_after_an_interim_answer():
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Busy\r\nRetry-After: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
    answer += b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: t\r\n\r\n"
    (status, reason, headers, body, closes), _ = _exchange(answer)
    assert (status, reason, body, closes) == (503, "Busy", b"abcde", False)
    assert headers["retry-after"] == "2"


def test_a_body_up_to_the_close_and_http_1_0_close_the_connection():
    (status, _, _, body, closes), _ = _exchange(b"HTTP/1.0 200 OK\r\n\r\nall of it")
    assert (status, body, closes) == (200, b"all of it", True)
    (_, _, _, _, closes), _ = _exchange(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    assert closes


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"", http.client.RemoteDisconnected),  # a kept-alive connection the collector had closed
        (b"garbage\r\n\r\n", http.client.BadStatusLine),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", http.client.IncompleteRead),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", http.client.HTTPException),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", http.client.HTTPException),
    ],
)
def test_broken_answers_raise_what_http_client_would(answer, error):
    with pytest.raises(error):
        _exchange(answer)


def test_a_header_that_would_split_the_head_is_refused():
    with pytest.raises(ValueError):
        request_head(path="/", host="h", port=80, default_port=80, headers={"x": "a\r\nInjected: 1"})


class _ShortSends:
    """A socket whose gathering send takes only part of what it is given (as a full send buffer does)."""

    def __init__(self, sock: socket.socket, first: int) -> None:
        self._sock, self._first = sock, first

    def sendmsg(self, parts: tuple[bytes | bytearray | memoryview, ...]) -> int:
        return self._sock.send(b"".join(parts)[: self._first])

    def __getattr__(self, name: str) -> object:
        return getattr(self._sock, name)


@pytest.mark.parametrize("first", [1, 30, 90, 120, 20_100, 60_000])
def test_a_post_cut_short_by_the_socket_is_sent_whole(first):
    """Whatever part the send stops in (the head, a small part, a large buffer's middle), the rest follows
    in order: small parts joined, large ones (a batch's spans) written from where the send stopped."""
    ours, theirs = socket.socketpair()
    large = bytes(range(256)) * 80
    body = [bytes(range(256)) * 4, b"", bytearray(b"xy"), memoryview(large)[:20_000], large * 2, b"z"]
    try:
        theirs.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        got = b""
        whole = b"".join(body)
        expected = HEAD + str(len(whole)).encode() + b"\r\n\r\n" + whole

        def collector() -> None:
            nonlocal got
            while len(got) < len(expected):
                got += theirs.recv(65536)

        thread = threading.Thread(target=collector)
        thread.start()
        status = Connection(_ShortSends(ours, first)).post(HEAD, body)[0]  # type: ignore[arg-type]
        thread.join(5)
    finally:
        ours.close()
        theirs.close()
    assert status == 200
    assert got == expected
