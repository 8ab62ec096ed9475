"""What every fake shares: request recording, scripted failures, the control API.

A test (or a test harness driving a fake in another process) scripts the next
requests with ``POST /_fake/script`` and reads back what arrived with
``GET /_fake/requests``. A standing profile (``POST /_fake/profile``) answers every
request the script does not cover: a seeded share of errors and a fixed latency, for tests
that measure a backend (experiments). State lives on the aiohttp app under ``STATE``; there
are no module globals, so several fakes can run in one process.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

# Builds the provider's own error response: (HTTP status, message or None for the
# provider's usual text) -> response. Each fake passes its own.
ErrorFn = Callable[[int, str | None], web.Response]


class Behaviour(BaseModel):
    """One scripted deviation, consumed by one LLM request.

    ``extra="forbid"`` so a typo in a test script is a 400, not a silent no-op.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: int | None = None  # answer this status in the provider's error shape
    retry_after: str | None = None  # sent as the Retry-After header
    message: str | None = None  # overrides the error message
    delay: float | None = None  # normal answer, later
    stall: float | None = None  # sleep before headers, or after N chunks (below)
    stall_after_chunks: int | None = None
    cut_after_chunks: int | None = None  # stream N events, then drop the connection
    error_after_chunks: int | None = None  # stream N events, then an in-stream error
    garbage: bool = False  # 200 with a body that is neither JSON nor SSE
    # a prompt with cache breakpoints not cached yet: its cached part is written (Anthropic's
    # cache_creation_input_tokens), not read
    cache_write: bool = False

    @property
    def touches_body(self) -> bool:
        return (
            self.stall_after_chunks is not None
            or self.cut_after_chunks is not None
            or self.error_after_chunks is not None
        )


NORMAL = Behaviour()


class Profile(BaseModel):
    """How every unscripted request is answered: `error_rate` of them (drawn from a generator seeded
    with `seed`, so a run is repeatable) with `error_status`, the rest after `delay` seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    error_status: int = 500
    delay: float = Field(default=0.0, ge=0.0)
    seed: int = 0


@dataclass
class FakeState:
    api_key: str
    script: deque[Behaviour] = field(default_factory=deque)
    requests: list[dict[str, Any]] = field(default_factory=list)
    profile: Profile | None = None
    rng: random.Random = field(default_factory=random.Random)

    def next_behaviour(self) -> Behaviour:
        if self.script:
            return self.script.popleft()
        if self.profile is None:
            return NORMAL
        if self.rng.random() < self.profile.error_rate:
            return Behaviour(status=self.profile.error_status, delay=self.profile.delay or None)
        return Behaviour(delay=self.profile.delay or None)

    def set_profile(self, profile: Profile | None) -> None:
        self.profile = profile
        self.rng = random.Random(profile.seed if profile is not None else 0)


STATE = web.AppKey("fake_state", FakeState)
# The recorded entry of the request being answered, so a stream can note how it ended.
RECORD = web.RequestKey("fake_record", dict)


async def record(request: web.Request) -> Any:
    """Record the request as received and return its JSON body (None if not JSON)."""
    raw = await request.read()
    body: Any = None
    text: str | None = None
    if raw:
        try:
            body = json.loads(raw)
        except ValueError:
            text = raw.decode("utf-8", "replace")
    entry: dict[str, Any] = {
        "method": request.method,
        "path": request.path,
        "query": dict(request.query),
        # Lower-cased names: HTTP names are case-insensitive, tests look them up.
        "headers": {k.lower(): v for k, v in request.headers.items()},
        "json": body,
        "text": text,
        "at": time.time(),  # lets tests check retry back-off
    }
    request.app[STATE].requests.append(entry)
    request[RECORD] = entry
    return body


async def before_reply(behaviour: Behaviour, error: ErrorFn, *, stream: bool) -> web.StreamResponse | None:
    """Apply the parts of a behaviour that happen before any byte is sent.

    Returns a response to send instead of the normal answer, or None.
    """
    if behaviour.delay:
        await asyncio.sleep(behaviour.delay)
    if behaviour.stall and behaviour.stall_after_chunks is None:
        await asyncio.sleep(behaviour.stall)
    if behaviour.status is not None:
        resp = error(behaviour.status, behaviour.message)
        if behaviour.retry_after is not None:
            resp.headers["Retry-After"] = behaviour.retry_after
        return resp
    if behaviour.garbage:
        if stream:
            # An unknown event whose data is not JSON: SDKs and relays must fail,
            # not silently end the stream.
            junk = "this is not an event stream\n\nevent: garbage\ndata: {not json\n\n"
            return web.Response(text=junk, content_type="text/event-stream")
        return web.Response(text="<html>502 oops</html> not json", content_type="application/json")
    return None


def sse(data: Any, event: str | None = None, *, sep: str = "\n\n") -> bytes:
    """One server-sent event; ``data`` is JSON-encoded unless already a string."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}{sep}".encode()


async def stream_events(
    request: web.Request,
    events: Iterable[bytes],
    behaviour: Behaviour,
    *,
    error_event: bytes,
    headers: dict[str, str] | None = None,
) -> web.StreamResponse:
    """Send SSE events, applying stall / cut / in-stream error after N events."""
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache", **(headers or {})}
    )
    await resp.prepare(request)
    entry = request.get(RECORD, {})
    try:
        for sent, event in enumerate(events):
            if await _interrupt(request, resp, behaviour, sent, error_event):
                entry["stream_end"] = "interrupted"
                return resp
            await resp.write(event)
        await resp.write_eof()
        entry["stream_end"] = "complete"
    except (ConnectionResetError, asyncio.CancelledError):
        # The client gave up (e.g. timed out during a stall): nothing to tell it,
        # but tests check that a caller that went away really hung up on us.
        entry["stream_end"] = "client_disconnected"
        entry["ended_at"] = time.time()
        raise
    return resp


async def send_json(
    request: web.Request, body: Any, behaviour: Behaviour, *, headers: dict[str, str] | None = None
) -> web.StreamResponse:
    """Send a JSON body; a cut or stall "after chunks" happens half-way through it."""
    if not behaviour.touches_body:
        return web.json_response(body, headers=headers)
    raw = json.dumps(body).encode()
    resp = web.StreamResponse(headers={"Content-Type": "application/json", **(headers or {})})
    resp.content_length = len(raw)  # the client knows the body is incomplete
    await resp.prepare(request)
    half = len(raw) // 2
    try:
        await resp.write(raw[:half])
        if await _interrupt(request, resp, behaviour, None, None):
            return resp
        await resp.write(raw[half:])
        await resp.write_eof()
    except ConnectionResetError:
        pass  # the client gave up during a stall
    return resp


async def _interrupt(
    request: web.Request, resp: web.StreamResponse, behaviour: Behaviour, sent: int | None, error_event: bytes | None
) -> bool:
    """Act when ``sent`` events have gone out (None: the half-way point of a body).

    Returns True when the response is over.
    """

    def due(after: int | None) -> bool:
        return after is not None and (sent is None or sent == after)

    if due(behaviour.stall_after_chunks) and behaviour.stall:
        await asyncio.sleep(behaviour.stall)
    if due(behaviour.cut_after_chunks):
        # Close the socket without the terminating chunk: the client sees a
        # truncated body, exactly like a provider dying mid-answer.
        if request.transport is not None:
            request.transport.close()
        return True
    if due(behaviour.error_after_chunks) and error_event is not None:
        await resp.write(error_event)
        await resp.write_eof()
        return True
    return False


def add_control_routes(app: web.Application) -> None:
    app.router.add_post("/_fake/script", _post_script)
    app.router.add_get("/_fake/script", _get_script)
    app.router.add_get("/_fake/requests", _get_requests)
    app.router.add_delete("/_fake/requests", _delete_requests)
    app.router.add_post("/_fake/profile", _post_profile)


async def _post_script(request: web.Request) -> web.Response:
    try:
        items = await request.json()
        if not isinstance(items, list):
            raise ValueError("the script is a JSON list of behaviours")
        script = [Behaviour.model_validate(item) for item in items]
    except (ValueError, ValidationError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    request.app[STATE].script.extend(script)
    return web.json_response({"queued": len(request.app[STATE].script)})


async def _get_script(request: web.Request) -> web.Response:
    return web.json_response([b.model_dump(exclude_defaults=True) for b in request.app[STATE].script])


async def _get_requests(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].requests)


async def _delete_requests(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.requests.clear()
    state.script.clear()
    state.set_profile(None)
    return web.json_response({"cleared": True})


async def _post_profile(request: web.Request) -> web.Response:
    try:
        profile = Profile.model_validate(await request.json())
    except (ValueError, ValidationError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    request.app[STATE].set_profile(profile)
    return web.json_response(profile.model_dump())
