"""The lean Redis client against a real Redis: pipelining, AUTH and SELECT, scripts, and every way a
connection goes wrong (killed, slow past the timeout, a wrong password) failing one call, then working."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from proxy.limits.resp import Address, NoScript, ReplyError, RespClient
from tests.harness.redis import RedisServer


def client_for(redis: RedisServer, *, timeout: float = 1.0, **address: object) -> RespClient:
    return RespClient(Address(host=redis.host, port=redis.port, **address), timeout=timeout)  # type: ignore[arg-type]


async def test_concurrent_commands_on_one_connection_each_get_their_own_reply(redis: RedisServer) -> None:
    client = client_for(redis)
    try:
        replies = await asyncio.gather(*(client.execute("ECHO", f"reply-{i}") for i in range(300)))
        assert replies == [f"reply-{i}".encode() for i in range(300)]
        assert int(redis.cli("CLIENT", "LIST").count("cmd=")) >= 1
    finally:
        await client.aclose()


async def test_scripts_by_sha_and_the_noscript_answer(redis: RedisServer) -> None:
    client = client_for(redis)
    script = f"return {{tonumber(ARGV[1]) + 1, '{uuid.uuid4().hex}'}}"
    try:
        with pytest.raises(NoScript):
            await client.evalsha("0" * 40, 0, 1)
        first = await client.eval(script, 0, 41)
        assert first[0] == 42
        sha = (await client.execute("SCRIPT", "LOAD", script)).decode()
        assert await client.evalsha(sha, 0, 41) == first
        with pytest.raises(ReplyError):
            await client.eval("return redis.call('NOSUCHCOMMAND')", 0)
        assert await client.execute("PING") == "PONG"  # an error reply fails that call only
    finally:
        await client.aclose()


async def test_auth_and_db_are_set_up_on_every_connection(redis: RedisServer) -> None:
    user, password = f"resp-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    redis.cli("ACL", "SETUSER", user, "on", f">{password}", "~*", "+@all")
    key = f"resp-db-{uuid.uuid4().hex}"
    client = client_for(redis, username=user, password=password, db=3)
    try:
        await client.execute("SET", key, "in-db-3")
        assert redis.cli("-n", "3", "GET", key) == "in-db-3"
        assert redis.cli("GET", key) == ""
        assert await client.execute("ACL", "WHOAMI") == user.encode()
        # Killed from the server's side: that call fails, the next connects again (and authenticates again).
        redis.cli("CLIENT", "KILL", "USER", user)
        with pytest.raises(ConnectionError):
            for _ in range(50):  # the kill reaches the client's side after a moment
                await client.execute("PING")
                await asyncio.sleep(0.01)
        assert await client.execute("GET", key) == b"in-db-3"
    finally:
        await client.aclose()
        redis.cli("ACL", "DELUSER", user)


async def test_a_wrong_password_is_a_clear_error_and_never_echoed(redis: RedisServer) -> None:
    user = f"resp-{uuid.uuid4().hex[:8]}"
    redis.cli("ACL", "SETUSER", user, "on", ">right-password", "~*", "+@all")
    client = client_for(redis, username=user, password="wrong-password-value")
    try:
        with pytest.raises(ReplyError) as caught:
            await client.execute("PING")
        assert "wrong-password-value" not in str(caught.value)
    finally:
        await client.aclose()
        redis.cli("ACL", "DELUSER", user)


async def test_a_call_past_its_timeout_leaves_the_client_usable(redis: RedisServer) -> None:
    client = client_for(redis)
    key = f"resp-empty-{uuid.uuid4().hex}"
    try:
        assert await client.execute("PING") == "PONG"  # connected
        waiting = asyncio.ensure_future(client.execute("PING"))  # shares the connection with the slow call
        await asyncio.sleep(0)  # (sent first)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await client.execute("BLPOP", key, 2)  # Redis holds this connection's replies for 2 s
        # The abandoned reply would arrive out of turn: the connection was closed, the next call gets a new one.
        assert await asyncio.wait_for(client.execute("PING"), 1.0) == "PONG"
        assert (await asyncio.gather(waiting, return_exceptions=True))[0] == "PONG"  # answered before the slow one
    finally:
        await client.aclose()


async def test_nothing_listening_fails_within_the_timeout() -> None:
    client = RespClient(Address(host="127.0.0.1", port=1), timeout=0.2)
    started = asyncio.get_running_loop().time()
    with pytest.raises(OSError):
        await client.execute("PING")
    assert asyncio.get_running_loop().time() - started < 1.0
