import email.utils

from proxy import upstream as up
from proxy.snapshot import Retry


def test_status_classification():
    assert up.kind_for_status(429) == up.RATE_LIMITED
    assert up.kind_for_status(503) == up.SERVER_ERROR
    assert up.kind_for_status(401) == up.BACKEND_REJECTED
    assert up.kind_for_status(400) == up.CLIENT_ERROR
    assert not up.worth_another_backend(up.CLIENT_ERROR)


def test_retry_only_on_configured_kinds():
    policy = Retry(retry_on=("429",))
    assert up.retryable(up.RATE_LIMITED, policy)
    assert not up.retryable(up.SERVER_ERROR, policy)
    assert not up.retryable(up.BAD_RESPONSE, Retry())


def test_retry_after_seconds_and_http_date():
    assert up.parse_retry_after("2") == 2.0
    assert up.parse_retry_after("soon") is None
    date = email.utils.formatdate(1000.0 + 30, usegmt=True)
    assert abs(up.parse_retry_after(date, now=1000.0) - 30) < 1


def test_backoff_is_jittered_capped_and_honours_retry_after():
    policy = Retry(backoff_base_seconds=0.1, backoff_max_seconds=0.3, max_retry_after_seconds=5)
    plain = up.Failure(up.SERVER_ERROR, "a/m", "boom")
    assert up.backoff_delay(policy, 1, plain, draw=1.0) == 0.1
    assert up.backoff_delay(policy, 5, plain, draw=1.0) == 0.3
    assert up.backoff_delay(policy, 5, plain, draw=0.0) == 0.0
    asks = up.Failure(up.RATE_LIMITED, "a/m", "slow down", 429, retry_after=2.0)
    assert up.backoff_delay(policy, 1, asks) == 2.0
    too_long = up.Failure(up.RATE_LIMITED, "a/m", "slow down", 429, retry_after=60.0)
    assert up.backoff_delay(policy, 1, too_long) is None


def test_model_timeouts_and_model_failures_are_the_providers_not_the_apps() -> None:
    # Bedrock answers ModelTimeoutException with 408 and ModelErrorException with 424
    assert up.kind_for_status(408) == up.TIMEOUT
    assert up.kind_for_status(424) == up.SERVER_ERROR
