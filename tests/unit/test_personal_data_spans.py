"""The detector's spans (`find`, what redaction masks): exactly the value, and the same findings as `scan`."""

from __future__ import annotations

import itertools
import random

import pytest

from bench.personal_data import inputs
from proxy.policy.personal_data import PersonalDataDetector
from tests.unit.test_personal_data import NEGATIVES, POSITIVES

DETECTOR = PersonalDataDetector()

# (text, the one value in it, its kind): the span is the value, no more, no less.
VALUES: list[tuple[str, str, str]] = [
    ("Contact me at john.doe@acme-corp.co.uk.", "john.doe@acme-corp.co.uk", "email"),
    ("mailto:a.b@example.org", "a.b@example.org", "email"),
    ("<max_mustermann@firma.de>", "max_mustermann@firma.de", "email"),
    ("...jane+news@gmail.com", "jane+news@gmail.com", "email"),
    ('{"to": "ops-team@corp.example"}', "ops-team@corp.example", "email"),
    ("call +1 (415) 555-2671 today", "+1 (415) 555-2671", "phone"),
    ("+44 (0)20 7946 0958.", "+44 (0)20 7946 0958", "phone"),
    ("SSN: 536-22-1234", "536-22-1234", "us_ssn"),
    ("4111 1111 1111 1111 12/27 cvv 123", "4111 1111 1111 1111", "payment_card"),
    ("name,4111111111111111,12/27", "4111111111111111", "payment_card"),
    ("Amex 3782 822463 10005", "3782 822463 10005", "payment_card"),
    ("ES91 2100 0418 4502 0005 1332 THEN", "ES91 2100 0418 4502 0005 1332", "iban"),
    ("IBAN: DE89370400440532013000.", "DE89370400440532013000", "iban"),
    ("NI number AB 12 34 56 C", "AB 12 34 56 C", "uk_nino"),
    ("NIE X-1234567-L", "X-1234567-L", "es_dni"),
]


@pytest.mark.parametrize(("text", "value", "kind"), VALUES)
def test_span_is_the_value(text: str, value: str, kind: str) -> None:
    assert [(f.kind, text[f.start : f.end]) for f in DETECTOR.find(text)] == [(kind, value)]


@pytest.mark.parametrize(("kind", "text"), POSITIVES)
def test_find_agrees_with_scan_on_positives(kind: str, text: str) -> None:
    found = DETECTOR.find(text)
    assert [f.kind for f in found] == [kind]
    assert text[found[0].start : found[0].end].strip() == text[found[0].start : found[0].end]


@pytest.mark.parametrize("text", NEGATIVES)
def test_find_nothing_where_scan_counts_nothing(text: str) -> None:
    assert DETECTOR.find(text) == []


def test_find_counts_what_scan_counts_on_whole_inputs() -> None:
    for name, (_, make) in inputs(random.Random(7)).items():
        text = make(10 << 10)
        counts: dict[str, int] = {}
        for found in DETECTOR.find(text):
            counts[found.kind] = counts.get(found.kind, 0) + 1
        assert counts == dict(DETECTOR.scan([text]).counts), name


def test_spans_are_in_order_and_apart() -> None:
    text = "a@b.co, +14155552671 and 4111 1111 1111 1111; again a@b.co"
    found = DETECTOR.find(text)
    assert [f.kind for f in found] == ["email", "phone", "payment_card", "email"]
    assert all(prev.end <= nxt.start for prev, nxt in itertools.pairwise(found))
