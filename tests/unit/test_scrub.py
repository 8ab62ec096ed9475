"""shared.scrub: a snapshot's keys and anything shaped like a key leave no trace in text that goes
to a log, a span or a client; ordinary text goes through unchanged; hostile text cannot make it slow."""

from __future__ import annotations

import io
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.runtime import Runtime
from proxy.snapshot import Snapshot, parse_struct
from shared.scrub import (
    REDACTED,
    Scrubber,
    normalize_otlp_header_variables,
    parse_otlp_headers,
    scrub_logs,
    scrub_shapes,
)

OPENAI = "sk-proj-Q7f2LmX9vTq4ZbR1nWc8KpY3sHd6JgA0eUo5iVt2MxBz"
AZURE = "7c1e9a4f2b8d06e3a5f4c2b19d7e8a60"  # no shape: only the snapshot's own keys can catch it
OPAQUE = "tok_w8Rk2Hq9Zp4Lx7Vn3Jc6"
SCRUB = Scrubber([OPENAI, AZURE, OPAQUE, "short"])
FUZZ = settings(max_examples=200, deadline=None, derandomize=True)


def windows(key: str, size: int = 8) -> set[str]:
    return {key[i : i + size] for i in range(len(key) - size + 1)}


def assert_clean(text: str, *keys: str) -> None:
    for key in keys:
        assert not any(w in text for w in windows(key)), text


# --- a snapshot's keys ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [OPENAI, AZURE, OPAQUE])
@pytest.mark.parametrize(
    "template",
    [
        "Incorrect API key provided: {key}. You can find your API key at https://platform.openai.com.",
        '{{"error": {{"message": "denied", "key": "{key}"}}}}',
        "Bearer {key}",
        "api-key={key}&x=1",
        "b'<html>{key}</html>'",
        "{key}{key}",
    ],
)
def test_a_whole_key_is_redacted_wherever_it_is(key: str, template: str) -> None:
    out = SCRUB(template.format(key=key))
    assert REDACTED in out
    assert_clean(out, key)


@pytest.mark.parametrize("key", [OPENAI, AZURE, OPAQUE])
@pytest.mark.parametrize(
    "masked",
    [
        "{h8}{stars}{t4}",  # OpenAI's own form
        "{h10}...{t6}",
        "{h6}\u2026{t4}",
        "{h8}\u2022\u2022\u2022\u2022{t4}",
        "****{t4}",
        "{h8}***",
    ],
)
def test_a_key_masked_in_the_middle_goes_whole(key: str, masked: str) -> None:
    echo = masked.format(h8=key[:8], h10=key[:10], h6=key[:6], t4=key[-4:], t6=key[-6:], stars="*" * 20)
    out = SCRUB(f"Incorrect API key provided: {echo}. Try again")
    assert out == f"Incorrect API key provided: {REDACTED}. Try again"


@pytest.mark.parametrize("key", [OPENAI, AZURE, OPAQUE])
def test_what_truncation_leaves_of_a_key_is_redacted(key: str) -> None:
    # 8 characters or more: anywhere; fewer (a key cut at the end of a text): at the end only.
    for cut in range(4, len(key)):
        out = SCRUB(f"response is not JSON: b'{'x' * 30} {key[:cut]}'")
        assert out == f"response is not JSON: b'{'x' * 30} {REDACTED}'", cut
    assert_clean(SCRUB(f"middle {key[3:15]} of a key"), key)


def test_keys_too_short_to_tell_from_words_are_left_alone() -> None:
    assert SCRUB("a short answer") == "a short answer"
    assert Scrubber([""])("text") == "text" and Scrubber()("") == ""


@FUZZ
@given(
    before=st.text(max_size=60),
    after=st.text(max_size=60),
    key=st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=8, max_size=80),
    cut=st.integers(min_value=0, max_value=3),
)
def test_no_eight_characters_of_a_key_survive(before: str, after: str, key: str, cut: int) -> None:
    text = before + key[cut:] + after  # whole, or with its first characters cut off
    assert_clean(Scrubber([key])(text), key[cut:])


@FUZZ
@given(
    key=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=16, max_size=60),
    head=st.integers(min_value=4, max_value=12),
    tail=st.integers(min_value=3, max_value=8),
    mask=st.sampled_from(["***", "...", "\u2026", "\u2022\u2022\u2022", "*" * 30]),
)
def test_any_masked_echo_goes_whole(key: str, head: int, tail: int, mask: str) -> None:
    assert Scrubber([key])(f"bad key {key[:head]}{mask}{key[-tail:]} given") == f"bad key {REDACTED} given"


def test_the_runtime_scrubs_its_snapshots_keys() -> None:
    snapshot = parse_struct(
        Snapshot,
        {
            "providers": [
                {
                    "name": "a",
                    "type": "azure-openai",
                    "baseUrl": "https://a.example",
                    "apiKey": AZURE,
                    "apiVersion": "2024-10-21",
                },
                {"name": "o", "type": "openai-compatible", "baseUrl": "http://o.example/v1"},
            ],
            "routes": [],
        },
    )
    assert Runtime.build(snapshot).scrubber(f"key {AZURE} refused") == f"key {REDACTED} refused"


# --- key shapes --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret",
    [
        "sk-abcdefghijklmnopqrstuvwxyz012345",
        "sk-proj-Ab3dE5gH7jK9mN1pQ3sT5vX7zB9dF1hJ3lN5pR7tV9xZ",
        "sk-ant-api03-Zr4Wq8Xn2Lp6Tv1Ks9Jd3Hf7Gb5Nm0Ye4Uc8Ro2Ia6Qw-Ab1CdEfGhAA",
        "sk-proj-****************************abcd",
        "sk-abc12...wxyz",
        "AIzaSyD4rT8pQ2mX7vK1nL9wZ3bH6jF0cY5eG8u",
        "AKIAIOSFODNN7EXAMPLE",
        "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
        "xoxb-123456789012-abcdefghijkl",
        "ya29.a0AfH6SMBx1234567890abcdefghij",
        "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2lnbmF0dXJl",
    ],
)
def test_key_shapes_are_redacted(secret: str) -> None:
    assert scrub_shapes(f"provider said: {secret}, again") == f"provider said: {REDACTED}, again"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Authorization: Bearer abcdefgh.ijklmnop", f"Authorization: {REDACTED}"),
        ('{"api_key": "0123456789abcdef0123456789abcdef"}', f'{{"api_key": "{REDACTED}"}}'),
        ("x-goog-api-key: Zm9vYmFyYmF6cXV4cXV1eA==", f"x-goog-api-key: {REDACTED}"),
        ("PASSWORD=correcthorsebatterystaple", f"PASSWORD={REDACTED}"),
        ("client_secret='c2VjcmV0LXZhbHVlLTEyMzQ1'", f"client_secret='{REDACTED}'"),
        ("GET /v1/models?key=0123456789abcdef0123 HTTP/1.1", f"GET /v1/models?key={REDACTED} HTTP/1.1"),
        (
            "export to https://user:pa55w0rd@collector:4318/v1/traces failed",
            f"export to https://{REDACTED}@collector:4318/v1/traces failed",
        ),
    ],
)
def test_secrets_after_their_names_are_redacted(text: str, expected: str) -> None:
    assert scrub_shapes(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "chatcmpl-9abcDEF123ghiJKL456mnoPQR789 finished with finish_reason=stop",
        "msg_01XFDUDYJgAACzvnptvVoYEL toolu_01A09q90qw90lq917835lq9 req_0123456789abcdef0123",
        "trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=00f067aa0ba902b7",
        "model gpt-4o-mini-2024-07-18, claude-3-5-sonnet-20241022, gemini-1.5-pro-002",
        "max_tokens=4096 exceeds the token limit of 2048 tokens; the key point: tokens are counted",
        "The bearer of this message is a keyboard monkey. Loading... done, e.g. a task-skill.",
        "POST https://api.openai.com/v1/chat/completions failed: 503 Service Unavailable",
        "route 'chat', rule 'default': all backends failed; retry-after 2.5s",
        "550e8400-e29b-41d4-a716-446655440000 sk-short token: none",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert scrub_shapes(text) == text
    assert SCRUB(text) == text


HOSTILE = [  # each makes a backtracking pattern of the usual shape take minutes at this size
    "eyJ-" * 100_000,
    "eyJeyJ." * 60_000,
    "sk-." * 100_000,
    "key:" + " " * 400_000 + "x",
    "token " * 70_000,
    "Bearer " + " " * 400_000,
    "a" * 400_000,
    ("a" * 7 + " ") * 50_000,
    "x..." * 100_000,
    "://a@" * 80_000,
    "ab*" * 130_000,
    OPENAI[:7] + " " + OPENAI[:7] * 50_000,
]


@pytest.mark.parametrize("text", HOSTILE, ids=lambda t: repr(t[:8]))
def test_hostile_text_is_scrubbed_in_linear_time(text: str) -> None:
    # No timing assert: a pattern that backtracks would not finish this test in any CI's patience.
    scrub_shapes(text)
    SCRUB(text)


# --- logs ---------------------------------------------------------------------------------------------


def test_log_lines_and_tracebacks_are_scrubbed() -> None:
    logger = logging.getLogger("test_scrub.logs")
    logger.propagate = False
    stream = io.StringIO()
    logger.addHandler(logging.StreamHandler(stream))
    scrub_logs(logger)
    scrub_logs(logger)  # idempotent: one layer of scrubbing
    key, token = "sk-" + "k3yv4lu3" * 3, "t0k3n" * 3
    logger.warning("provider answered: %s", f"Incorrect API key provided: {key}")
    try:
        raise ValueError(f"bad header Authorization: Bearer {token}")
    except ValueError:
        logger.exception("failed")
    out = stream.getvalue()
    assert key not in out and token not in out
    assert f"Incorrect API key provided: {REDACTED}\n" in out
    assert "Traceback" in out and f"ValueError: bad header Authorization: {REDACTED}\n" in out


def test_the_sdk_header_parser_no_longer_logs_the_header(caplog) -> None:
    from opentelemetry.util.re import parse_env_headers

    scrub_logs(logging.getLogger("test_scrub.none"))
    with caplog.at_level(logging.WARNING):
        parse_env_headers("authorization: Bearer s3cr3tT0k", liberal=True)
    assert "malformed" in caplog.text and "s3cr3tT0k" not in caplog.text


# --- OTLP exporter headers ----------------------------------------------------------------------------


def test_headers_parse_as_the_spec_says() -> None:
    headers, problems = parse_otlp_headers("Api-Key=secret%20value, x-tenant = a%3Db,,x-list=a%2Cb")
    assert headers == {"api-key": "secret value", "x-tenant": "a=b", "x-list": "a,b"} and problems == []


@pytest.mark.parametrize(
    "value, problem",
    [
        (
            "authorization=Bearer abc,defsecret",
            "item 2 is not name=value; ignored (if it belongs to the value of "
            "'authorization', write that value's comma as %2C)",
        ),
        ("authorization: Bearer defsecret", "item 1 is not name=value; ignored"),
        ("=defsecret", "item 1 has no valid header name before '='; ignored"),
        ("auth defsecret=x", "item 1 has no valid header name before '='; ignored"),
        ("authorization=Bearer%0Adefsecret", "item 1: the value of header 'authorization' holds control characters"),
    ],
)
def test_a_bad_item_is_named_by_position_and_header_never_by_value(value: str, problem: str) -> None:
    headers, problems = parse_otlp_headers(value, variable="OTEL_EXPORTER_OTLP_HEADERS")
    assert len(problems) == 1 and problems[0].startswith(f"OTEL_EXPORTER_OTLP_HEADERS: {problem}")
    assert "defsecret" not in problems[0] and "defsecret" not in str(headers)


@FUZZ
@given(
    st.lists(
        st.tuples(st.text(max_size=12), st.sampled_from(["=", ":", " ", "", "=%0A", "= "]), st.text(max_size=12)),
        max_size=5,
    )
)
def test_no_problem_message_quotes_a_value(items: list[tuple[str, str, str]]) -> None:
    value = ",".join(f"{name}{sep}zzSECRETzz{rest}" for name, sep, rest in items)
    assert "zzSECRETzz" not in " ".join(parse_otlp_headers(value)[1])


def test_the_environment_keeps_only_valid_items_encoded() -> None:
    from opentelemetry.util.re import parse_env_headers

    environ = {
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer abc,defsecret,x-a=b%2Cc",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "ok=1",
        "PATH": "/bin",
    }
    problems = normalize_otlp_header_variables(environ)
    assert len(problems) == 1 and "defsecret" not in problems[0]
    assert environ["OTEL_EXPORTER_OTLP_TRACES_HEADERS"] == "ok=1"  # untouched: nothing wrong with it
    # The stock parser (strict) reads the rewritten value without a complaint, to the same headers.
    assert parse_env_headers(environ["OTEL_EXPORTER_OTLP_HEADERS"]) == {"authorization": "Bearer abc", "x-a": "b,c"}


def test_modelway_dev_relays_what_its_processes_print_scrubbed(capsys) -> None:
    import threading

    from controller.dev import _relay

    ready = threading.Event()
    key = "sk-" + "d3vk3y" * 4
    _relay("[sidecar]", io.StringIO(f"Traceback ...\nValueError: bad key {key}\nlistening on\n"), ready, "listening on")
    out = capsys.readouterr().out
    assert ready.is_set() and key not in out and f"[sidecar] ValueError: bad key {REDACTED}\n" in out
