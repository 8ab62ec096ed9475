"""How the relay writes a stream to the app: headers with the first events, and a client
that is already gone is a ClientGone (the caller's quiet path), not a provider failure."""

from __future__ import annotations

from unittest import mock

import pytest
from aiohttp.http_writer import StreamWriter
from aiohttp.test_utils import make_mocked_request

from proxy.request.relay import _SSE_HEADERS, ClientGone, _EventStream, _prepare, _write_chunks


class _Encoder:
    def encode(self, chunk: dict) -> bytes:
        return b"data: " + chunk["text"].encode() + b"\n\n"


def _request(*, closing: bool):
    transport = mock.Mock()
    transport.is_closing.return_value = closing
    protocol = mock.Mock(transport=transport)
    writer = StreamWriter(protocol, loop=mock.Mock())
    return make_mocked_request("POST", "/v1/chat/completions", writer=writer, transport=transport), transport


async def test_headers_leave_with_the_first_events_in_one_write():
    request, transport = _request(closing=False)
    response = _EventStream(status=200, headers=_SSE_HEADERS)
    await _prepare(response, request)
    assert not transport.write.called and not transport.writelines.called  # nothing sent yet
    await _write_chunks(response, _Encoder(), [{"text": "a"}, {"text": "b"}])
    sent = [call.args[0] for call in transport.writelines.call_args_list + transport.write.call_args_list]
    assert len(sent) == 1
    data = b"".join(sent[0]) if isinstance(sent[0], list | tuple) else sent[0]
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b"text/event-stream" in data
    assert data.endswith(b"data: a\n\ndata: b\n\n\r\n")


async def test_a_client_gone_before_the_first_event_is_client_gone():
    request, _ = _request(closing=True)
    response = _EventStream(status=200, headers=_SSE_HEADERS)
    await _prepare(response, request)
    with pytest.raises(ClientGone):
        await _write_chunks(response, _Encoder(), [{"text": "a"}])
