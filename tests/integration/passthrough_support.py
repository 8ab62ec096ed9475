"""What the pass-through tests share: routes to one backend (one try, an optional fallback), a field
no API has yet, and the check that a provider got the app's body field by field."""

from __future__ import annotations

from typing import Any

from tests.fakes.process import FakeProviderProcess

#: A field no API has yet: a body passed through carries it as the app wrote it.
FUTURE: dict[str, Any] = {"future_field": {"nested": [1, 2.5, "x"]}}


def route(model: str, provider: str, upstream: str, *, fallback: tuple[str, str] | None = None) -> dict[str, Any]:
    """Route `model` to `provider`'s `upstream` model, one try, then the `fallback` (provider, model) if given."""
    rule: dict[str, Any] = {
        "name": "default",
        "backends": [{"provider": provider, "model": upstream}],
        "retry": {"attempts": 1},
    }
    if fallback:
        rule["fallbacks"] = [{"provider": fallback[0], "model": fallback[1]}]
    return {"name": model, "model": model, "rules": [rule]}


def assert_passed_through(
    fake: FakeProviderProcess, fields: dict[str, Any], *, path: str | None = None, **added: Any
) -> dict[str, Any]:
    """The provider's last request (returned): the app's `fields` and `FUTURE` field by field, as the
    app wrote them, with only what the sidecar sets (`added`: the backend's model and the like), at
    `path` if given."""
    received = fake.requests()[-1]
    if path is not None:
        assert received["path"] == path
    assert received["json"] == {**fields, **FUTURE, **added}
    return received
