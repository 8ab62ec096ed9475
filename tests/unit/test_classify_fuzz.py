"""The personal-data scan under fuzzing: any JSON shape is walked without raising, an e-mail
planted anywhere in it is found, and joining the texts for one scan changes no finding."""

from __future__ import annotations

import base64
from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.policy.classify import Classifier, chat_texts, embedding_texts
from proxy.policy.personal_data import PersonalDataDetector
from proxy.snapshot import Policy
from tests.unit.test_personal_data import POSITIVES

EMAIL = "jane.doe@example.org"
DETECTOR = PersonalDataDetector()
CLASSIFIER = Classifier(policy=Policy(detect_personal_data=True))
BOUNDED = settings(max_examples=200, deadline=None, derandomize=True)

BLOB = base64.b64encode(bytes(range(256)) * 6).decode()  # 2 KB of base64: skipped unless something is added
# Strings that take the scanner's other paths: data URLs, percent-encoding, base64, findings.
SPECIAL = st.sampled_from(
    [
        BLOB,
        f"data:image/png;base64,{BLOB}",
        "data:text/plain;base64,aGk=",
        "data:,hi%20there",
        "data:text/plain,",
        "data:image/png;name=a.png;base64,",
        "https://x.example/a?b=%41%42",
        "100%",
        "%zz",
        *(t for _, t in POSITIVES),
    ]
)
# Keys from the two APIs, so the fuzzer builds near-requests with mistyped fields, not only noise.
KEYS = st.sampled_from(
    [
        "messages",
        "role",
        "content",
        "tool_calls",
        "function",
        "arguments",
        "tools",
        "parameters",
        "properties",
        "input",
        "image_url",
        "url",
        "file",
        "file_data",
        "filename",
        "text",
        "type",
        "name",
        "system",
        "tool_use_id",
        "source",
        "data",
        "metadata",
        "stop",
    ]
) | st.text(max_size=8)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**15)
    | st.floats()
    | st.text(max_size=30)
    | SPECIAL
)
JSON = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(KEYS, inner, max_size=5), max_leaves=40
)


@BOUNDED
@given(JSON)
def test_any_json_shape_is_classified_without_raising(body: Any) -> None:
    for texts in (chat_texts, embedding_texts):
        (text,) = texts(body)
        assert isinstance(text, str)
        CLASSIFIER.classify(header=None, texts=lambda texts=texts: texts(body))


def plant(value: Any, data: st.DataObject) -> Any:
    """`value` with EMAIL in one place drawn by `data`: a new or renamed key, a new item, in a string, or instead of
    a scalar, at any depth."""
    if isinstance(value, dict):
        options = ["new key", "new value"] + (["rename", "into"] if value else [])
        how = data.draw(st.sampled_from(options))
        if how == "new key":
            return {**value, f" {EMAIL} ": data.draw(SCALARS)}
        if how == "new value":
            return {**value, data.draw(st.text(max_size=5)): EMAIL}
        key = data.draw(st.sampled_from(sorted(value)))
        if how == "rename":
            return {**{k: v for k, v in value.items() if k != key}, f"{key} {EMAIL}": value[key]}
        return {**value, key: plant(value[key], data)}
    if isinstance(value, list):
        if value and data.draw(st.booleans()):
            i = data.draw(st.integers(0, len(value) - 1))
            return [*value[:i], plant(value[i], data), *value[i + 1 :]]
        i = data.draw(st.integers(0, len(value)))
        return [*value[:i], EMAIL, *value[i:]]
    if isinstance(value, str) and data.draw(st.booleans()):
        return f"{value} {EMAIL} "  # among whatever the string holds: a data URL, base64, findings
    return EMAIL


@BOUNDED
@given(JSON, st.data())
def test_an_email_planted_anywhere_in_any_shape_is_found(body: Any, data: st.DataObject) -> None:
    planted = plant(body, data)
    for texts in (chat_texts, embedding_texts):
        result = CLASSIFIER.classify(header=None, texts=lambda texts=texts: texts(planted))
        assert result.data_class == "personal" and result.found.get("email", 0) >= 1


# Characters the detector's patterns turn on, so seams between texts are where findings could appear or go.
PATTERN_TEXT = st.text(alphabet=st.sampled_from(list("0123456789+-(). @/:%_\nABCDEGJMNPSTWXZabelmorx")), max_size=40)


@BOUNDED
@given(st.lists(PATTERN_TEXT | st.sampled_from([t for _, t in POSITIVES]), max_size=8))
def test_one_scan_of_the_joined_texts_finds_what_one_scan_per_text_finds(texts: list[str]) -> None:
    separately: Counter[str] = Counter()
    for text in texts:
        separately.update(DETECTOR.scan(chat_texts(text)).counts)
    assert Counter(DETECTOR.scan(chat_texts(texts)).counts) == separately
