"""Routes: the model names apps call, their rules, backends, retries, timeouts and experiments."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator, model_validator

from proxy.snapshot.base import RetryOn, _Frozen
from proxy.snapshot.checks import check_regex


class Backend(_Frozen):
    provider: str
    model: Annotated[str, Field(min_length=1)]
    weight: Annotated[int, Field(ge=0)] = 1

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.model}"


class HeaderMatch(_Frozen):
    """Matches when the header is present and, if given, equals `value` or matches `regex`."""

    name: Annotated[str, Field(min_length=1)]
    value: str | None = None
    regex: str | None = None

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, regex: str | None) -> str | None:
        return regex if regex is None else check_regex(regex)


class Retry(_Frozen):
    # Attempts per backend, the first one included.
    attempts: Annotated[int, Field(ge=1, le=10)] = 2
    retry_on: tuple[RetryOn, ...] = ("connect-error", "timeout", "429", "5xx")
    backoff_base_seconds: Annotated[float, Field(ge=0)] = 0.1
    backoff_max_seconds: Annotated[float, Field(ge=0)] = 2.0
    # A Retry-After longer than this is not waited for: the next backend is tried instead.
    max_retry_after_seconds: Annotated[float, Field(ge=0)] = 5.0


class Timeouts(_Frozen):
    # The whole request, all attempts included.
    total_seconds: Annotated[float, Field(gt=0)] = 120.0
    # Streams only: from sending the request to the first content event.
    first_token_seconds: Annotated[float, Field(gt=0)] | None = None
    connect_seconds: Annotated[float, Field(gt=0)] = 5.0


class Arm(_Frozen):
    """One arm of an experiment: its share of the rule's requests and the backends that serve it."""

    name: Annotated[str, Field(min_length=1, max_length=63)]
    weight: Annotated[int, Field(ge=0)] = 1
    backends: Annotated[tuple[Backend, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _weights(self) -> Arm:
        if not any(b.weight > 0 for b in self.backends):
            raise ValueError(f"arm {self.name!r}: at least one backend needs a weight above 0")
        return self


class Experiment(_Frozen):
    """A rule's traffic split into arms (the first is the control), each counted apart.

    `name` identifies the experiment to the controller ("<namespace>/<route>/<rule>"); with
    `sticky_header`, a request carrying that header goes to the arm its value hashes to (the
    same on every sidecar), others by weight."""

    name: Annotated[str, Field(min_length=1, max_length=400)]
    arms: Annotated[tuple[Arm, ...], Field(min_length=2, max_length=16)]
    sticky_header: Annotated[str, Field(min_length=1, max_length=256)] | None = None

    @model_validator(mode="after")
    def _arms(self) -> Experiment:
        names = [a.name for a in self.arms]
        if len(names) != len(set(names)):
            raise ValueError(f"experiment {self.name!r}: arm names must be unique, got {names}")
        if not any(a.weight > 0 for a in self.arms):
            raise ValueError(f"experiment {self.name!r}: at least one arm needs a weight above 0")
        return self


class Rule(_Frozen):
    name: Annotated[str, Field(min_length=1)] = "default"
    match_headers: tuple[HeaderMatch, ...] = ()
    # With an experiment: every arm's backends (what policy and provider references see); each
    # request uses only its arm's.
    backends: Annotated[tuple[Backend, ...], Field(min_length=1)]
    fallbacks: tuple[Backend, ...] = ()
    retry: Retry = Retry()
    timeouts: Timeouts = Timeouts()
    experiment: Experiment | None = None

    @model_validator(mode="after")
    def _weights(self) -> Rule:
        if not any(b.weight > 0 for b in self.backends):
            raise ValueError(f"rule {self.name!r}: at least one backend needs a weight above 0")
        if self.experiment is not None:
            keys = {b.key for b in self.backends}
            for arm in self.experiment.arms:
                missing = [b.key for b in arm.backends if b.key not in keys]
                if missing:
                    raise ValueError(f"rule {self.name!r}: arm {arm.name!r} backends {missing} are not rule backends")
        return self


class Route(_Frozen):
    """What apps call: the `model` name they send, and how it is served."""

    name: Annotated[str, Field(min_length=1)]
    model: Annotated[str, Field(min_length=1)]
    rules: Annotated[tuple[Rule, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_rule_names(self) -> Route:
        names = [r.name for r in self.rules]
        if len(names) != len(set(names)):
            raise ValueError(f"route {self.name!r}: rule names must be unique, got {names}")
        return self
