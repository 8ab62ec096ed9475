"""A request's data class, pure: header, workload floor, personal-data detection."""

import pytest

from proxy.errors import ApiError
from proxy.policy.classify import Classifier, chat_texts, embedding_texts
from proxy.snapshot import Policy


def never_called():
    raise AssertionError("the prompt was walked although no scan was due")


def test_without_a_header_the_workload_default_applies_and_the_prompt_is_not_walked():
    result = Classifier(policy=Policy(default_class="personal")).classify(header=None, texts=never_called)
    assert (result.data_class, result.raised_because) == ("personal", "")


def test_a_header_may_raise_the_class_but_not_lower_it():
    classifier = Classifier(policy=Policy(default_class="internal"))
    assert classifier.classify(header="Restricted ", texts=never_called).data_class == "restricted"
    lowered = classifier.classify(header="public", texts=never_called)
    assert lowered.data_class == "internal"
    assert "the app asked for public" in lowered.raised_because


def test_an_unknown_header_value_is_a_400_naming_the_classes():
    with pytest.raises(ApiError) as error:
        Classifier(policy=Policy()).classify(header="top-secret", texts=never_called)
    assert error.value.status == 400 and error.value.code == "invalid_data_class"
    assert "public, internal, personal, restricted" in error.value.message


def test_detection_raises_to_personal_naming_kinds_never_values():
    classifier = Classifier(policy=Policy(detect_personal_data=True))
    request = {"messages": [{"role": "system", "content": "be brief"},
                            {"role": "user", "content": [{"type": "text", "text": "IBAN GB82 WEST 1234 5698 7654 32"}]}]}
    result = classifier.classify(header=None, texts=lambda: chat_texts(request))
    assert result.data_class == "personal"
    assert result.raised_because == "personal data detected (iban)"
    clean = classifier.classify(header=None, texts=lambda: chat_texts({"messages": [{"role": "user", "content": "hi"}]}))
    assert clean.data_class == "internal"


def test_no_scan_when_the_class_is_already_personal_or_above():
    classifier = Classifier(policy=Policy(detect_personal_data=True))
    assert classifier.classify(header="restricted", texts=never_called).data_class == "restricted"


def test_texts_cover_every_place_an_app_writes_text():
    request = {"messages": [
        {"role": "user", "content": "a"},
        {"role": "user", "content": [{"type": "text", "text": "b"}, {"type": "image_url", "image_url": {"url": "x"}}]},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{\"c\": 1}"}}]},
        {"role": "tool", "tool_call_id": "1", "content": "d"},
    ]}
    assert list(chat_texts(request)) == ["a", "b", "{\"c\": 1}", "d"]
    assert list(embedding_texts({"input": ["e", "f"]})) == ["e", "f"]
    assert list(embedding_texts({"input": [[1, 2, 3]]})) == []
