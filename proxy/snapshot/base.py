"""The snapshot's building blocks: the frozen struct base, the credential type, the field checks
the structs run on themselves, and the small vocabularies fields take.

Structs are msgspec's: decoded from the wire's camelCase (unknown fields refused) and built by
the controller with snake_case keywords. msgspec checks types while decoding; the value checks
(lengths, ranges, patterns) are each struct's `__post_init__`, which runs both when a struct is
decoded and when it is built, so the controller refuses exactly what a sidecar would.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sized
from typing import Any, Literal

import msgspec

from proxy.snapshot.checks import ConfigProblem


class Frozen(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, rename="camel", kw_only=True, gc=False
):
    """Immutable, hashable, compared by value; camelCase on the wire. Untracked by the cycle
    collector (gc=False): frozen structs of strings, numbers and tuples cannot form a cycle.

    A field at its default is left off the wire (omit_defaults), so a sidecar older than the
    controller refuses only a snapshot that uses a field it does not know. msgspec tells a default
    by identity, not by value (a `0.1` or a `Retry()` decoded or built anew is another object), so
    before each struct's own `__post_init__` a field equal to its default is set to the default
    object itself (`share_defaults`): what is written, and the content version hashed from it,
    depends on the values alone, not on how the struct was built."""

    def __post_init__(self) -> None:
        share_defaults(self)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__post_init__")
        if own is not None:  # the struct's own checks, after its defaults are shared
            setattr(cls, "__post_init__", _sharing_defaults_first(own))  # noqa: B010  (mypy: no method assignment)


def _sharing_defaults_first(check: Callable[[Any], None]) -> Callable[[Any], None]:
    def share_then_check(struct: msgspec.Struct) -> None:
        for name, default in _defaults_to_share(type(struct)):
            value = getattr(struct, name)
            if value is not default and value == default:
                msgspec.structs.force_setattr(struct, name, default)
        check(struct)

    return share_then_check


def _told_by_identity(default: object) -> bool:
    """A default every decoder and builder yields as the very same object: None, a bool, (), a small int."""
    if default is None or isinstance(default, bool) or default == ():
        return True
    return type(default) is int and -5 <= default <= 256  # CPython's cached ints


@functools.cache
def _defaults_to_share(struct_type: type[msgspec.Struct]) -> tuple[tuple[str, object], ...]:
    return tuple(
        (field.name, field.default)
        for field in msgspec.structs.fields(struct_type)
        if field.default is not msgspec.NODEFAULT and not _told_by_identity(field.default)
    )


def share_defaults(struct: msgspec.Struct) -> None:
    """Every field equal to its default becomes the default object, which omit_defaults leaves off the wire.
    (Empty collections from a default_factory msgspec recognises by value already.)"""
    for name, default in _defaults_to_share(type(struct)):
        value = getattr(struct, name)
        if value is not default and value == default:
            msgspec.structs.force_setattr(struct, name, default)


class Secret:
    """A credential: shown as asterisks by repr and str, so a snapshot printed or logged never
    carries it; `get_secret_value()` is the one way to the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def hold_secrets(struct: msgspec.Struct, *fields: str) -> None:
    """Wrap a plain string given for a Secret field (as a caller building a struct may pass one)."""
    for field in fields:
        value = getattr(struct, field)
        if isinstance(value, str):
            msgspec.structs.force_setattr(struct, field, Secret(value))


def decode_secret(type_: type, value: Any) -> Any:
    """msgspec's dec_hook: a string where the struct holds a Secret."""
    if type_ is Secret:
        if isinstance(value, str):
            return Secret(value)
        if isinstance(value, Secret):
            return value
        raise TypeError("Expected `str`")  # msgspec adds where; the value is never quoted
    raise NotImplementedError(f"cannot decode {type_!r}")


def reveal_secret(value: Any) -> Any:
    """msgspec's enc_hook for the wire: a Secret's value."""
    if isinstance(value, Secret):
        return value.get_secret_value()
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


def mask_secret(value: Any) -> Any:
    """msgspec's enc_hook for logs and dumps: a marker instead of any Secret."""
    if isinstance(value, Secret):
        return "<redacted>"
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


# --- field checks: each raises ValueError naming the field (camelCase, as written) ------------


def check_length(field: str, value: Sized | None, *, low: int = 1, high: int | None = None) -> None:
    """A string or tuple of `low` to `high` items (None passes: the field is optional)."""
    if value is None:
        return
    size = len(value)
    if size < low:
        raise ValueError(f"{field}: should have at least {low} {'character' if isinstance(value, str) else 'item'}(s)")
    if high is not None and size > high:
        raise ValueError(f"{field}: should have at most {high} {'characters' if isinstance(value, str) else 'items'}")


def check_range(
    field: str, value: float | None, *, ge: float | None = None, gt: float | None = None, le: float | None = None
) -> None:
    """A number within bounds (None passes)."""
    if value is None:
        return
    if ge is not None and not value >= ge:
        raise ValueError(f"{field}: should be greater than or equal to {ge}")
    if gt is not None and not value > gt:
        raise ValueError(f"{field}: should be greater than {gt}")
    if le is not None and not value <= le:
        raise ValueError(f"{field}: should be less than or equal to {le}")


def check_pattern(field: str, value: str | None, pattern: re.Pattern[str]) -> None:
    """A string matching `pattern` (None passes); the message names the pattern, never the value."""
    if value is not None and not pattern.fullmatch(value):
        raise ValueError(f"{field}: should match pattern '{pattern.pattern}'")


def check_field(field: str, check: Callable[[str], object], value: str | None) -> None:
    """Run a shared check (`checks.py`) on one field, its problem naming the field."""
    if value is None:
        return
    try:
        check(value)
    except ConfigProblem as problem:
        raise ConfigProblem(problem.reason, f"{field}: {problem}") from None


COUNT_MAX = 1_000_000_000_000  # requests or tokens a minute: more is a typo, not a quota


def check_count(field: str, value: int | None) -> None:
    check_range(field, value, ge=1, le=COUNT_MAX)


def check_each_length(field: str, values: tuple[str, ...] | None, *, low: int = 1, high: int | None = None) -> None:
    for value in values or ():
        check_length(field, value, low=low, high=high)


Hosting = Literal["saas", "vpc", "in-cluster"]
BedrockApi = Literal["converse", "anthropic-messages"]
VertexPublisher = Literal["google", "anthropic"]
RetryOn = Literal["connect-error", "timeout", "429", "5xx"]
DataClass = Literal["public", "internal", "personal", "restricted"]

# Least to most sensitive: a request's class may be raised along this order, never lowered
# below its workload's default, and a residency rule for one class binds every class above it.
DATA_CLASSES: tuple[DataClass, ...] = ("public", "internal", "personal", "restricted")
DATA_CLASS_RANK: dict[str, int] = {name: rank for rank, name in enumerate(DATA_CLASSES)}
DATA_CLASS_HEADER = "x-modelway-data-class"

NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
