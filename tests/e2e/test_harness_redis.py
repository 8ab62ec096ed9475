"""The redis fixture is a real redis-server."""

from __future__ import annotations

import pytest

from tests.harness.redis import RedisServer

pytestmark = pytest.mark.e2e


def test_redis_cli_ping(redis: RedisServer) -> None:
    assert redis.cli("ping") == "PONG"
    assert redis.cli("set", "smoke", "1") == "OK"
    assert redis.cli("incr", "smoke") == "2"
    assert "redis_version:" in redis.cli("info", "server")
