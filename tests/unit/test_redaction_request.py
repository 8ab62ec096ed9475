"""One request's masking (`proxy.request.redact.Masking`): which request each backend gets."""

from __future__ import annotations

import copy

import pytest

from proxy.errors import ApiError
from proxy.redaction.table import RedactionTable
from proxy.request.redact import Masking
from proxy.snapshot import BackendRedaction, Policy, Redaction, RedactionPattern

EMAIL = "jane.doe@example.org"
REQUEST = {"model": "m", "messages": [{"role": "user", "content": f"mail {EMAIL} about EMP-123456"}]}


def _table(*, restore: bool = True, patterns: tuple[RedactionPattern, ...] = ()) -> RedactionTable:
    redacted = BackendRedaction(
        provider="us",
        model="m",
        data_classes=("internal", "personal"),
        policy="ModelPolicy a/mask",
        redaction=Redaction(kinds=("email",), patterns=patterns, restore=restore),
    )
    return RedactionTable.build(Policy(redacted_backends=(redacted,)))


def test_a_backend_that_needs_no_masking_gets_the_request_itself() -> None:
    masking = Masking(_table(), "personal")
    assert masking.request_for("eu/m", REQUEST) is REQUEST
    assert not masking.counts and not masking.restores


def test_a_masking_backend_gets_a_copy_and_the_original_stays_intact() -> None:
    original = copy.deepcopy(REQUEST)
    masking = Masking(_table(), "personal")
    sent = masking.request_for("us/m", REQUEST)
    assert sent["messages"][0]["content"] == "mail <EMAIL_1> about EMP-123456"
    assert original == REQUEST
    assert dict(masking.counts) == {"email": 1} and masking.policies == ("ModelPolicy a/mask",)
    assert masking.restores
    assert masking.request_for("us/m", REQUEST) is sent  # a retry sends the same bytes
    assert masking.request_for("eu/m", REQUEST) is REQUEST and not masking.counts  # a fallback: the original


def test_a_request_the_scan_found_clean_is_not_masked_again() -> None:
    masking = Masking(_table(), "internal", scanned_clean=True)
    assert masking.request_for("us/m", REQUEST) is REQUEST  # (the scan would have found the e-mail)


def test_custom_patterns_are_masked_even_after_a_clean_scan() -> None:
    table = _table(patterns=(RedactionPattern(name="employee_id", regex="EMP-[0-9]{6}"),))
    masking = Masking(table, "internal", scanned_clean=True)
    assert "<EMPLOYEE_ID_1>" in masking.request_for("us/m", REQUEST)["messages"][0]["content"]


def test_a_value_no_placeholder_can_go_on_refuses_the_backend_naming_the_field() -> None:
    request = {
        "model": "m",
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"https://x/?{EMAIL}"}}]}],
    }
    masking = Masking(_table(), "personal")
    with pytest.raises(ApiError) as refused:
        masking.request_for("us/m", request)
    assert refused.value.status == 400
    assert "messages[0].content[0].image_url.url" in refused.value.message
    assert EMAIL not in refused.value.message and "email (1)" in refused.value.message
    assert masking.used is None


def test_embeddings_are_masked_only_when_the_rule_leaves_placeholders() -> None:
    body = {"model": "m", "input": [f"about {EMAIL}"]}
    with pytest.raises(ApiError, match="cannot be given their values back"):
        Masking(_table(), "personal").embeddings_for("us/m", body)
    sent = Masking(_table(restore=False), "personal").embeddings_for("us/m", body)
    assert sent["input"] == ["about <EMAIL_1>"]
