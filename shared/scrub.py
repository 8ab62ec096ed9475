"""Keeping credentials out of what the sidecar and the controller emit (pure, no I/O).

Providers repeat the key they were sent in their error answers, in full or partly
masked (`sk-proj-****...abcd`), and configuration parsers quote the text they
choke on. Text from such places passes through here before it reaches a log,
a span or a client:

- `Scrubber(secrets)`, built once per snapshot, redacts the snapshot's own keys:
  whole, any 8 characters in a row of one (what is left of a key a provider
  masked in the middle, or one cut by truncation), masked echoes whose visible
  head or tail is the key's (`sk-abc1...wxyz`), and a key's head cut off at the
  end of a truncated text; then whatever `scrub_shapes` catches.
- `scrub_shapes` redacts what looks like a credential, known or not: `sk-...`
  (OpenAI, Anthropic), `AIza...` (Google), AWS/GitHub/Slack/OAuth tokens, JWTs,
  bearer tokens, a URL's user:password@, and long values after words like key,
  token, secret, password.
  Every pattern starts only at a token boundary and uses possessive quantifiers,
  so a search is linear in the text (no backtracking blow-up on hostile input).
- `scrub_logs` makes a process's log handlers run every formatted line through
  `scrub_shapes`, and keeps the OpenTelemetry SDK's header parser from logging
  the header text it rejects.
- `parse_otlp_headers` reads OTEL_EXPORTER_OTLP_*HEADERS and reports malformed
  items by position and header name, never by value; `normalize_otlp_header_variables`
  leaves only the valid items in the environment, for exporters that read it themselves.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Iterable, MutableMapping

REDACTED = "[REDACTED]"

# A window this long of a known key is taken for the key: 8 random characters collide with
# ordinary text about once in 10^14 (base62), while a provider's mask rarely leaves more
# than the first 8 and last 4 characters visible.
WINDOW = 8
# Keys shorter than this are not matched by value: they would redact ordinary words, and
# no provider issues them.
MIN_SECRET = WINDOW
_MIN_FRAGMENT = 4  # the shortest head or tail of a key matched next to a mask or a cut

_K = r"A-Za-z0-9_\-"  # key characters: what a key token is made of
_KEY = re.compile(rf"[{_K}]")
_MASK = r"*.\u2026\u2022"  # what providers mask with: *, ..., the ellipsis and bullet characters
_TOKEN68 = r"A-Za-z0-9\-._~+/=*"  # a bearer token (RFC 6750), masked or not
_VALUE = r"A-Za-z0-9_\-.~+/=*"


def _shape(literal: str, rest: str) -> re.Pattern[str]:
    """A key shape that starts with `literal`, at a token boundary (checked after the literal, so
    the search can skip ahead to the literal's occurrences, ~10 times faster)."""
    return re.compile(rf"{re.escape(literal)}(?<![{_K}]{re.escape(literal)}){rest}")


def _word(word: str) -> re.Pattern[str]:
    """A long value after `word` (any case; also as in `api_key`, `x-api-key`, `"token": "..."`):
    the value is redacted, the word kept."""
    first = f"[{word[0]}{word[0].upper()}]"
    return re.compile(
        rf"({first}(?<![A-Za-z]{first})(?i:{word[1:]}s?)(?![A-Za-z0-9])"
        rf"[\"']?+\s*+[:=]?+\s*+[\"']?+)[{_VALUE}]{{16,}}+"
    )


# (text that every match contains, the pattern): a pattern runs only on text holding its hint.
_SHAPES = (
    ("sk-", _shape("sk-", rf"[{_K}{_MASK}]{{8,}}+")),  # OpenAI (sk-, sk-proj-...), Anthropic (sk-ant-)
    ("AIza", _shape("AIza", rf"[{_K}{_MASK}]{{8,}}+")),  # Google API keys
    ("AKIA", _shape("AKIA", r"[0-9A-Z]{16}")),  # AWS access key ids
    ("gh", _shape("gh", r"[pousr]_[A-Za-z0-9]{20,}+")),  # GitHub
    ("xox", _shape("xox", rf"[abprs]-[{_K}]{{10,}}+")),  # Slack
    ("ya29.", _shape("ya29.", rf"[{_K}.]{{20,}}+")),  # Google OAuth access tokens
    ("eyJ", _shape("eyJ", rf"[{_K}]{{8,}}+\.[{_K}]*+(?:\.[{_K}]*+)?")),  # JWTs (service account, Azure AD)
    ("://", re.compile(r"(?<=://)[^\s/?#@]++(?=@)")),  # user:password@ in a URL (a collector's endpoint)
)
_WORD_SHAPES = (  # hints in lower case
    ("bearer", re.compile(rf"[bB](?<![A-Za-z][bB])(?i:earer)\s++[{_TOKEN68}]{{8,}}+")),
    *(
        (word, _word(word))
        for word in (
            "key",
            "apikey",
            "token",
            "secret",
            "password",
            "passwd",
            "pwd",
            "credential",
            "auth",
            "authorization",
            "signature",
        )
    ),
    # A password assigned is one, however short (`password=hunter2`, `pwd: s3cret`), and so is a
    # token, secret or key written as an assignment (`token=abc123`): people paste them into prompts.
    (
        "pass",
        re.compile(
            r"([pP](?<![A-Za-z][pP])(?i:ass(?:word|wd)?)(?![A-Za-z0-9])[\"']?+\s*+[:=]\s*+[\"']?+)"
            r"[^\s\"',;]{4,}+"
        ),
    ),
    ("pwd", re.compile(r"([pP](?<![A-Za-z][pP])(?i:wd)(?![A-Za-z0-9])[\"']?+\s*+[:=]\s*+[\"']?+)[^\s\"',;]{4,}+")),
    (
        "=",
        re.compile(
            r"((?<![A-Za-z0-9])(?i:token|secret|api[_-]?key|access[_-]?key)[\"']?+\s*+=\s*+[\"']?+)"
            r"[^\s\"',;]{4,}+"
        ),
    ),
)
_RUN = re.compile(rf"[{_VALUE}]{{{WINDOW},}}+")  # where a window of a key can be
_MASKED = re.compile(rf"(?<![{_K}])([{_K}]*+)(?:[*\u2026\u2022]|\.\.)[{_MASK}]*+([{_K}]*+)")
_CLOSING = "'\"`)]}>.,;: "  # what may follow a key cut off at the end of a text


def scrub_shapes(text: str) -> str:
    """`text` with everything shaped like a credential replaced by [REDACTED]."""
    for hint, pattern in _SHAPES:
        if hint in text:
            text = pattern.sub(REDACTED, text)
    lower = text.lower()
    for hint, pattern in _WORD_SHAPES:
        if hint in lower:
            text = pattern.sub(_keep_word, text)
    return text


def _keep_word(match: re.Match[str]) -> str:
    return match.group(1) + REDACTED if match.lastindex else REDACTED


class Scrubber:
    """Redacts a snapshot's keys (and key shapes) from text; see the module docstring.

    A call costs ~30 us on a 300-character provider message: meant for error paths, not for
    every answer."""

    __slots__ = ("_heads", "_tails", "_windows", "secrets")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        usable = {s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET}
        # Longest first: a key that contains another is replaced whole.
        self.secrets: tuple[str, ...] = tuple(sorted(usable, key=len, reverse=True))
        self._windows = frozenset(s[i : i + WINDOW] for s in usable for i in range(len(s) - WINDOW + 1))
        self._heads = frozenset(s[:n] for s in usable for n in range(_MIN_FRAGMENT, WINDOW))
        self._tails = frozenset(s[-n:] for s in usable for n in range(_MIN_FRAGMENT - 1, WINDOW))

    def __call__(self, text: str) -> str:
        if not text:
            return text
        if self.secrets:
            for secret in self.secrets:
                if secret in text:
                    text = text.replace(secret, REDACTED)
            if "*" in text or ".." in text or "\u2026" in text or "\u2022" in text:
                text = _MASKED.sub(self._masked, text)  # before the windows: a masked echo goes whole
            text = _RUN.sub(self._windows_in, text)
            text = self._cut_head(text)
        text = scrub_shapes(text)
        while REDACTED + REDACTED in text:
            text = text.replace(REDACTED + REDACTED, REDACTED)
        return text

    def _windows_in(self, match: re.Match[str]) -> str:
        """A run of key characters with every stretch that is part of a key redacted."""
        run, windows = match.group(), self._windows
        covered_to = -1
        spans: list[list[int]] = []  # [start, end) of the run covered by windows of a key, merged
        for i in range(len(run) - WINDOW + 1):
            if run[i : i + WINDOW] in windows:
                if spans and i <= covered_to:
                    spans[-1][1] = i + WINDOW
                else:
                    spans.append([i, i + WINDOW])
                covered_to = i + WINDOW
        if not spans:
            return run
        out, last = [], 0
        for start, end in spans:
            out += [run[last:start], REDACTED]
            last = end
        out.append(run[last:])
        return "".join(out)

    def _masked(self, match: re.Match[str]) -> str:
        """`head***tail`: redacted whole when its head or tail is a key's."""
        head, tail = match.group(1), match.group(2)
        if (len(head) >= _MIN_FRAGMENT and any(s.startswith(head) for s in self.secrets)) or (
            len(tail) >= _MIN_FRAGMENT - 1 and tail[-(WINDOW - 1) :] in self._tails
        ):
            if not tail and match.group().endswith(("*.", "\u2026.", "\u2022.")):
                return REDACTED + "."  # `sk-abc***.`: the mask ended before a sentence's full stop
            return REDACTED
        return match.group()

    def _cut_head(self, text: str) -> str:
        """A key's first few characters at the very end: what truncation left of a key."""
        end = len(text.rstrip(_CLOSING))
        start = end
        while start > 0 and end - start < WINDOW and _KEY.match(text, start - 1):
            start -= 1
        if _MIN_FRAGMENT <= end - start < WINDOW and text[start:end] in self._heads:
            return text[:start] + REDACTED + text[end:]
        return text


# --- logs -------------------------------------------------------------------------------------------


class _ScrubbingFormatter(logging.Formatter):
    """Formats with the handler's own formatter, then scrubs the whole line (traceback included)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return scrub_shapes(self._inner.format(record))


class _QuietHeaderParser(logging.Filter):
    """The OpenTelemetry SDK's header parser logs a rejected item whole, value included."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = (
            "an OTEL_EXPORTER_OTLP_*HEADERS item is malformed and was ignored (not shown: it may "
            "hold a credential); header values must be URL-encoded, e.g. a comma as %2C"
        )
        record.args = ()
        return True


def scrub_logs(logger: logging.Logger | None = None) -> None:
    """Every handler of `logger` (default: the root logger) scrubs key shapes from what it writes.

    Call after `logging.basicConfig`, in a program's `main`."""
    for handler in (logger or logging.getLogger()).handlers:
        if not isinstance(handler.formatter, _ScrubbingFormatter):
            handler.setFormatter(_ScrubbingFormatter(handler.formatter or logging.Formatter()))
    sdk_parser = logging.getLogger("opentelemetry.util.re")
    if not any(isinstance(f, _QuietHeaderParser) for f in sdk_parser.filters):
        sdk_parser.addFilter(_QuietHeaderParser())


# --- OTLP exporter headers --------------------------------------------------------------------------

HEADER_VARIABLES = (
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
)
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}")  # an HTTP token (RFC 9110)
_TOKEN_SAFE = "!#$&'*+-.^_`|~"
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # what HTTP/1.1 header values cannot carry


def parse_otlp_headers(
    value: str | None, *, variable: str = "OTEL_EXPORTER_OTLP_HEADERS"
) -> tuple[dict[str, str], list[str]]:
    """`k1=v1,k2=v2` (names and values URL-encoded, as the OTLP exporter spec says): the headers
    (names lower-cased) and one message per ignored item.

    The messages name the variable, the item's position and, where there is a valid one, the
    header name; never a value nor an item's text (a stray item is often the tail of a token
    whose comma was not encoded)."""
    headers: dict[str, str] = {}
    problems: list[str] = []
    previous = ""
    for number, item in enumerate((value or "").split(","), start=1):
        if not item.strip():
            continue
        raw_name, sep, raw_value = item.partition("=")
        name = urllib.parse.unquote(raw_name).strip().lower()
        where = f"{variable}: item {number}"
        if not sep:
            hint = f" (if it belongs to the value of {previous!r}, write that value's comma as %2C)" if previous else ""
            problems.append(f"{where} is not name=value; ignored{hint}")
            continue
        if not _HEADER_NAME.fullmatch(name):
            problems.append(f"{where} has no valid header name before '='; ignored")
            continue
        text = urllib.parse.unquote(raw_value).strip()
        if _BAD_VALUE.search(text):
            problems.append(f"{where}: the value of header {name!r} holds control characters; ignored")
            continue
        headers[name] = text
        previous = name
    return headers, problems


def normalize_otlp_header_variables(environ: MutableMapping[str, str]) -> list[str]:
    """Rewrites each OTEL_EXPORTER_OTLP_*HEADERS that is set to its valid items only, URL-encoded,
    and returns what was wrong (see `parse_otlp_headers`).

    For a program's `main`, before telemetry starts: the stock OpenTelemetry exporters read these
    variables from the environment themselves and, given a bad item, log it whole (value included)
    or fail every export with an error that quotes the value."""
    problems: list[str] = []
    for variable in HEADER_VARIABLES:
        if not environ.get(variable):
            continue
        headers, found = parse_otlp_headers(environ[variable], variable=variable)
        if found:
            problems += found
            environ[variable] = ",".join(
                f"{urllib.parse.quote(name, safe=_TOKEN_SAFE)}={urllib.parse.quote(value)}"
                for name, value in headers.items()
            )
    return problems
