"""The apiserver and controller.api read Go durations alike: the apiserver takes every duration
api.py takes, with the same length to the nanosecond, and refuses what api.py refuses, naming it."""

from __future__ import annotations

from typing import Any

import pytest

from controller import api
from tests.e2e.crd_support import rule0_with
from tests.harness.cli import Kubectl
from tests.unit.test_crds_durations import DURATIONS, NOT_DURATIONS

pytestmark = pytest.mark.e2e


def _ns_form(nanos: int) -> str:
    """The same length written another way, to the nanosecond: 1h2m3.500000000s."""
    seconds, ns = divmod(nanos, 10**9)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m{seconds}.{ns:09d}s"


def _with_durations(name: str, retry: dict[str, str], timeouts: dict[str, str] | None = None) -> dict[str, Any]:
    obj = rule0_with(lambda r: r.update(retry=retry, **({"timeouts": timeouts} if timeouts else {})))
    obj["metadata"]["name"] = name
    return obj


def test_the_apiserver_takes_every_go_duration_api_py_takes(kubectl: Kubectl, ns: str) -> None:
    """And its CEL duration() gives each the length controller.api gives it, to the nanosecond."""
    refused = []
    for text, seconds in DURATIONS.items():
        assert api.duration_seconds(text) == pytest.approx(seconds, abs=1e-12)
        nanos = round(seconds * 1e9)
        retry = {"backoffBase": text, "backoffMax": text, "maxRetryAfter": text}
        ok = _with_durations("go-durations", retry)
        checks = [(ok, True)]
        if nanos > 0:  # firstToken <= total: equal lengths pass, one nanosecond less fails
            checks += [
                (
                    _with_durations(
                        "go-durations", retry, {"total": _ns_form(nanos), "firstToken": text, "connect": text}
                    ),
                    True,
                ),
                (_with_durations("go-durations", retry, {"total": _ns_form(nanos - 1), "firstToken": text}), False),
            ]
        for obj, accept in checks:
            res = kubectl.apply(obj, "-n", ns, "--dry-run=server", check=False)
            if (res.returncode == 0) != accept:
                refused.append(f"{text!r} ({obj['spec']['rules'][0].get('timeouts')}): {res.stderr.strip()}")
    assert not refused, "\n".join(refused)


def test_the_apiserver_refuses_what_api_py_refuses_naming_the_value(kubectl: Kubectl, ns: str) -> None:
    wrong = []
    for text in NOT_DURATIONS:
        with pytest.raises(ValueError):
            api.duration_seconds(text)
        res = kubectl.apply(_with_durations("not-durations", {"maxRetryAfter": text}), "-n", ns, check=False)
        if len(text) > api.DURATION_MAX_LENGTH:
            expected = ["Too long: may not be more than 32 bytes"]
        elif text.isprintable():
            expected = [f'"{text}" is not a duration: write numbers with units']
        else:  # a message may not hold a line break: the rule's plain message stands in
            expected = ["is not a duration: write numbers with units"]
        expected.append("spec.rules[0].retry.maxRetryAfter")
        if res.returncode == 0 or not all(e in res.stderr for e in expected):
            wrong.append(f"{text!r}: rc={res.returncode} {res.stderr.strip()}")
    assert not wrong, "\n".join(wrong)
