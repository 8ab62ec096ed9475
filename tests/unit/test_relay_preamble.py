"""What the relay holds before an answer's first content is bounded by events, however the reads fall."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from proxy.providers.base import UpstreamProtocolError
from proxy.providers.openai import OpenAIStreamDecoder
from proxy.request.relay import MAX_CHUNKS_BEFORE_CONTENT, _read_until_content

EMPTY = b'data: {"choices": []}\n\n'
CONTENT = b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}}]}\n\n'


class _OneRead:
    """An upstream answer whose whole body arrives in the reads given."""

    def __init__(self, *reads: bytes) -> None:
        self.reads = reads

    async def iter_any(self) -> AsyncIterator[bytes]:
        for data in self.reads:
            yield data


def _read(*reads: bytes) -> tuple[list[Any], bool]:
    resp = cast(Any, _OneRead(*reads))
    return asyncio.run(_read_until_content(resp, OpenAIStreamDecoder(max_event_bytes=1 << 20), max_bytes=1 << 30))


def test_content_after_the_bound_in_the_same_read_is_refused() -> None:
    with pytest.raises(UpstreamProtocolError, match=f"{MAX_CHUNKS_BEFORE_CONTENT + 1} events without content"):
        _read(EMPTY * (MAX_CHUNKS_BEFORE_CONTENT + 1) + CONTENT)


def test_content_at_the_bound_is_relayed() -> None:
    chunks, ended = _read(EMPTY * MAX_CHUNKS_BEFORE_CONTENT + CONTENT)
    assert not ended and len(chunks) == MAX_CHUNKS_BEFORE_CONTENT + 1
