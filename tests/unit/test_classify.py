"""A request's data class, pure: header, workload floor, personal-data detection."""

import base64
from collections import Counter

import pytest

from proxy.errors import ApiError
from proxy.policy.classify import Classifier, chat_texts, embedding_texts
from proxy.policy.personal_data import PersonalDataDetector
from proxy.snapshot import Policy
from tests.unit.test_personal_data import NEGATIVES, POSITIVES

DETECTOR = PersonalDataDetector()


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
    request = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "IBAN GB82 WEST 1234 5698 7654 32"}]},
        ]
    }
    result = classifier.classify(header=None, texts=lambda: chat_texts(request))
    assert result.data_class == "personal"
    assert result.raised_because == "personal data detected (iban)"
    clean = classifier.classify(
        header=None, texts=lambda: chat_texts({"messages": [{"role": "user", "content": "hi"}]})
    )
    assert clean.data_class == "internal"


def test_no_scan_when_the_class_is_already_personal_or_above():
    classifier = Classifier(policy=Policy(detect_personal_data=True))
    assert classifier.classify(header="restricted", texts=never_called).data_class == "restricted"


def test_texts_are_every_string_and_key_of_the_request_one_per_line():
    request = {
        "messages": [
            {"role": "user", "content": "a"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "b"}, {"type": "image_url", "image_url": {"url": "x"}}],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": '{"c": 1}'}}],
            },
            {"role": "tool", "tool_call_id": "1", "content": "d"},
        ],
        "temperature": 0.5,
        "n": 1,
        "stream": False,
    }
    (text,) = chat_texts(request)
    assert set(text.split("\n")) == {
        "messages",
        "role",
        "user",
        "content",
        "a",
        "type",
        "text",
        "b",
        "image_url",
        "url",
        "x",
        "assistant",
        "tool_calls",
        "id",
        "1",
        "function",
        "name",
        "f",
        "arguments",
        '{"c": 1}',
        "tool",
        "tool_call_id",
        "d",
        "temperature",
        "n",
        "stream",
    }  # numbers and booleans are not text
    assert set("".join(embedding_texts({"input": ["e", "f"]})).split("\n")) == {"input", "e", "f"}
    assert "".join(embedding_texts({"input": [[1, 2, 3], [4]]})) == "input"  # token ids are numbers


def test_one_scan_of_the_joined_text_finds_what_a_scan_of_each_string_finds():
    # The texts are joined by newlines so the detector runs once: no finding may be made or lost at a seam.
    pieces = (
        [text for _, text in POSITIVES]
        + NEGATIVES
        + ["+1", "4155552671", "4111", "1111 1111 1111", "GB82", "WEST 1234 5698 7654 32", "jane@", "example.org"]
    )
    separately: Counter[str] = Counter()
    for piece in pieces:
        separately.update(DETECTOR.scan([piece]).counts)
    assert Counter(DETECTOR.scan(chat_texts({"messages": pieces})).counts) == separately


EMAIL = "jane.doe@example.org"


@pytest.mark.parametrize(
    "request_body",
    [
        pytest.param({"messages": [{"role": "assistant", "tool_calls": 5}]}, id="tool_calls a number"),
        pytest.param({"messages": [{"role": "assistant", "tool_calls": "call"}]}, id="tool_calls a string"),
        pytest.param(
            {"messages": [{"role": "assistant", "tool_calls": ["call", 3, None]}]}, id="tool_calls of scalars"
        ),
        pytest.param({"messages": [{"role": "assistant", "tool_calls": [{"function": "f"}]}]}, id="function a string"),
        pytest.param({"messages": [{"role": "assistant", "tool_calls": [{"function": [1]}]}]}, id="function a list"),
        pytest.param({"messages": [{"role": "user", "content": [1, 2.5, None, True, [], {}]}]}, id="parts of any type"),
        pytest.param({"messages": [{"role": "user", "content": {"text": 5}}]}, id="content an object"),
        pytest.param({"messages": {"0": "x"}}, id="messages an object"),
        pytest.param({"messages": 7, "tools": "t", "input": {"a": [None]}}, id="scalars where arrays go"),
        pytest.param({"messages": [{"a": [1e308, -1e308, 10**400, float("nan")]}]}, id="extreme numbers"),
        pytest.param([1, "x", None], id="a list at the top"),
        pytest.param("just a string", id="a string at the top"),
        pytest.param(None, id="null"),
        pytest.param({1: "a non-string key", None: [b"bytes", ("a", "tuple")]}, id="Python-only shapes"),
    ],
)
def test_any_shape_is_walked_without_raising(request_body):
    classifier = Classifier(policy=Policy(detect_personal_data=True))
    for texts in (chat_texts, embedding_texts):
        result = classifier.classify(header=None, texts=lambda texts=texts: texts(request_body))
        assert result.data_class == "internal"


@pytest.mark.parametrize(
    "request_body",
    [
        pytest.param(
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "c", "function": {"name": "mail", "arguments": {"to": EMAIL}}}],
                    }
                ]
            },
            id="arguments an object",
        ),
        pytest.param({"messages": [{"role": "assistant", "tool_calls": [[{"arguments": EMAIL}]]}]}, id="calls nested"),
        pytest.param({"messages": [{"role": "tool", "tool_call_id": "c", "content": [[EMAIL]]}]}, id="content nested"),
        pytest.param({"messages": [{"role": "user", "content": {"text": EMAIL}}]}, id="content an object"),
        pytest.param(
            {"messages": [{"role": "user", "content": [1, {"type": "text", "text": EMAIL}]}]}, id="after an int"
        ),
    ],
)
def test_text_in_mistyped_places_is_still_found(request_body):
    result = Classifier(policy=Policy(detect_personal_data=True)).classify(
        header=None, texts=lambda: chat_texts(request_body)
    )
    assert result.data_class == "personal"


def test_nesting_of_any_depth_is_walked_without_recursion():
    deep: list = []
    inner = deep
    for _ in range(200_000):
        inner.append([])
        inner = inner[0]
    inner.append(EMAIL)
    assert DETECTOR.scan(chat_texts({"messages": deep})).counts == {"email": 1}


BLOB = base64.b64encode(bytes(range(256)) * 4096).decode()  # 1.4 MB, every byte value


def test_base64_payloads_are_skipped_and_what_is_text_around_them_is_read():
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{BLOB}"}}
    audio = {"type": "input_audio", "input_audio": {"data": BLOB, "format": "wav"}}
    pdf = {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{BLOB}", "filename": f"{EMAIL}.pdf"}}
    (text,) = chat_texts({"messages": [{"role": "user", "content": [image, audio, pdf]}]})
    assert len(text) < 300  # the 4 MB of base64 are not handed to the detector
    assert DETECTOR.scan([text]).counts == {"email": 1}  # the file's name is


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(f"data:image/png;name={EMAIL};base64,{BLOB}", id="a name in the parameters"),
        pytest.param(
            "data:text/plain;base64," + base64.b64encode(f"From: {EMAIL}".encode()).decode(), id="a text file"
        ),
        pytest.param("data:;base64," + base64.b64encode(f"From: {EMAIL}".encode()).decode(), id="no type: text/plain"),
        pytest.param(
            "DATA:Application/JSON;Charset=utf-8;BASE64," + base64.b64encode(f'{{"to": "{EMAIL}"}}'.encode()).decode(),
            id="any case",
        ),
        pytest.param(f"data:text/plain,From%3A%20{EMAIL.replace('@', '%40')}", id="percent-encoded text"),
        pytest.param(f"data:image/png;base64,{BLOB[:4096]} {EMAIL}", id="base64 that is not all base64"),
        pytest.param(
            f"https://cdn.example.com/img.png?owner={EMAIL.replace('@', '%40')}", id="a percent-encoded query"
        ),
    ],
)
def test_data_urls_and_encoded_urls_are_read_as_the_provider_reads_them(url):
    request = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]}
    assert DETECTOR.scan(chat_texts(request)).counts == {"email": 1}


def test_long_text_without_spaces_is_not_mistaken_for_base64():
    phones = "+14155552671/" * 100  # no lower case: not what an encoder writes
    ibans = "/".join(["GB82WEST12345698765432"] * 60)
    assert DETECTOR.scan(chat_texts({"input": [phones, ibans]})).counts == {"phone": 100, "iban": 60}
