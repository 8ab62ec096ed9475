"""The personal-data detector: what it counts, what it must not, and that it never holds the values.

No timing here (that is bench/personal_data.py); linearity is checked as a
property of the patterns: each starts with a literal or a class, then asserts
with a lookbehind that the candidate opens a token.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from proxy.policy import personal_data
from proxy.policy.personal_data import ALL_KINDS, Findings, PersonalDataDetector

DETECTOR = PersonalDataDetector()

POSITIVES: list[tuple[str, str]] = [
    ("email", "Contact me at john.doe@acme-corp.co.uk."),
    ("email", "cc: jane+newsletter@gmail.com, thanks"),
    ("email", "<max_mustermann@firma.de>"),
    ("email", "mailto:a.b@example.org"),
    ("email", "owner: user@xn--bcher-kva.example"),
    ("phone", "call +1 (415) 555-2671 today"),
    ("phone", "+44 20 7946 0958"),
    ("phone", "+44 (0)20 7946 0958"),
    ("phone", "Tel. +49 30 123456"),
    ("phone", "+33 1 42 68 53 00"),
    ("phone", '{"phone": "+14155552671"}'),
    ("phone", "+91-98765-43210"),
    ("phone", "+86 138 0013 8000."),
    ("phone", "tel:+31.20.555.1234"),
    ("payment_card", "card 4111 1111 1111 1111 please"),
    ("payment_card", "4111-1111-1111-1111"),
    ("payment_card", "pan=4111111111111111"),
    ("payment_card", "5555 5555 5555 4444"),
    ("payment_card", "Amex 3782 822463 10005"),
    ("payment_card", "6011 1111 1111 1117"),
    ("payment_card", "JCB 3530 1113 3330 0000"),
    ("payment_card", "2223 0031 2200 3222"),
    ("payment_card", "4111 1111 1111 1111 12/27 cvv 123"),
    ("payment_card", "name,4111111111111111,12/27"),
    ("iban", "GB82 WEST 1234 5698 7654 32"),
    ("iban", "DE89 3704 0044 0532 0130 00"),
    ("iban", "IBAN: DE89370400440532013000."),
    ("iban", "FR14 2004 1010 0505 0001 3M02 606"),
    ("iban", "NL91 ABNA 0417 1643 00"),
    ("iban", "NO93 8601 1117 947"),
    ("iban", "ES91 2100 0418 4502 0005 1332 THEN"),
    ("iban", "IT60 X054 2811 1010 0000 0123 456"),
    ("iban", "MT84 MALT 0110 0001 2345 MTLC AST0 01S"),
    ("us_ssn", "SSN: 536-22-1234"),
    ("us_ssn", "ssn=123-45-6789;"),
    ("uk_nino", "NI number AB 12 34 56 C"),
    ("uk_nino", "AB123456C"),
    ("uk_nino", "JG103759A"),
    ("es_dni", "DNI 12345678Z"),
    ("es_dni", "DNI 12345678-Z"),
    ("es_dni", "NIE X1234567L"),
    ("es_dni", "NIE Y1234567X"),
    ("es_dni", "NIE X-1234567-L"),
]

NEGATIVES: list[str] = [
    "4111 1111 1111 1112",  # Luhn fails
    "4111111111111112",
    "1234 5678 9012 3456",  # no such IIN
    "GB82 WEST 1234 5698 7654 33",  # wrong IBAN check
    "DE89 3704 0044 0532 0130 0",  # wrong length for DE
    "XX82 WEST 1234 5698 7654 32",  # no such country
    "Order #100234556 shipped",
    "order 2024-000123",
    "invoice INV-2024-00042",
    "1700000000123",
    "ts 1700000000",
    "20240115103000",
    "2024-01-15T10:30:00+01:00",
    "v3.11.7",
    "lodash@4.17.21",
    "Chrome/120.0.6099.109",
    "1.2.3.4",
    "123e4567-e89b-12d3-a456-426614174000",
    "550E8400-E29B-41D4-A716-446655440000",
    "2024-03-31",
    "31/03/2024",
    "(415) 555-2671",
    "415-555-2671",
    "call 4155552671",  # no '+': not an international number
    "+1 555",
    "+12 34",
    "+100%",
    "a+14155552671",
    "x = y +12345678b",
    "lat +48.856614, lon +2.352222",  # signed decimals
    "$1,234,567.89",
    "1 234 567,00 EUR",
    "price: 4111.11",
    "@app.route('/x')",
    "icon@2x.png",
    "git@github.com:org/repo.git",
    "user@localhost",
    "@types/node",
    "000-12-3456",
    "666-12-3456",
    "900-12-3456",
    "123-00-4567",
    "123-45-0000",
    "1123-45-6789",
    "QQ 12 34 56 C",
    "GB123456A",
    "AB123456E",
    "DO123456A",
    "12345678A",  # wrong DNI letter
    "da39a3ee5e6b4b0d3255bfef95601890afd80709",
    "sha256:E3B0C44298FC1C149AFBF4C8996FB924",
    "12345678901234567890",
    "1790000000000000000",
    "account 123456789012",
    "192.168.1.100",
    "#FF5733",
]


@pytest.mark.parametrize(("kind", "text"), POSITIVES, ids=[f"{k}:{t}" for k, t in POSITIVES])
def test_finds_each_kind(kind, text):
    assert dict(DETECTOR.scan([text]).counts) == {kind: 1}


def test_every_kind_has_positives():
    assert {kind for kind, _ in POSITIVES} == set(ALL_KINDS)


@pytest.mark.parametrize("text", NEGATIVES)
def test_ignores_lookalikes(text):
    findings = DETECTOR.scan([text])
    assert not findings, dict(findings.counts)


def test_counts_per_kind_across_texts():
    prompt = (
        "Hi, I'm Ana (ana@example.es, +34 612 345 678). Pay with 4111 1111 1111 1111 or "
        "5555-5555-5555-4444; refunds to ES91 2100 0418 4502 0005 1332. Bob: bob@corp.io"
    )
    findings = DETECTOR.scan([prompt, "system: be terse", "again: ana@example.es"])
    assert dict(findings.counts) == {"email": 3, "phone": 1, "payment_card": 2, "iban": 1}
    assert list(findings.counts) == [k for k in ALL_KINDS if k in findings.counts]  # stable order


def test_adjacent_values_are_counted_apart():
    findings = DETECTOR.scan(["4111 1111 1111 1111 4111 1111 1111 1111", "a@b.co c@d.io"])
    assert dict(findings.counts) == {"email": 2, "payment_card": 2}


def test_kinds_filter():
    text = "ana@example.es 4111 1111 1111 1111 AB 12 34 56 C"
    only = PersonalDataDetector(kinds=["uk_nino", "email"])
    assert only.kinds == ("email", "uk_nino")  # in ALL_KINDS order
    assert dict(only.scan([text]).counts) == {"email": 1, "uk_nino": 1}
    assert dict(PersonalDataDetector(kinds=["payment_card"]).scan([text]).counts) == {"payment_card": 1}
    nothing = PersonalDataDetector(kinds=[])
    assert nothing.kinds == () and not nothing.scan([text])
    assert PersonalDataDetector().kinds == ALL_KINDS


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="passport"):
        PersonalDataDetector(kinds=["email", "passport"])


def test_a_bare_string_is_refused():
    with pytest.raises(TypeError):
        DETECTOR.scan("ana@example.es")  # type: ignore[arg-type]


def test_findings_hold_counts_never_values():
    secrets = [
        "ana@example.es",
        "4111 1111 1111 1111",
        "GB82 WEST 1234 5698 7654 32",
        "+14155552671",
        "536-22-1234",
        "AB123456C",
        "12345678Z",
    ]
    findings = DETECTOR.scan([" and ".join(secrets)])
    assert sum(findings.counts.values()) == len(secrets)
    shown = repr(findings) + str(findings) + repr(findings.counts)
    for secret in secrets:
        assert secret not in shown and secret.replace(" ", "") not in shown
    assert [f.name for f in Findings.__dataclass_fields__.values()] == ["counts"]
    assert all(isinstance(k, str) and isinstance(v, int) for k, v in findings.counts.items())


def test_findings_are_immutable_and_falsy_when_empty():
    findings = DETECTOR.scan(["ana@example.es"])
    with pytest.raises(AttributeError):
        findings.counts = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        findings.counts["email"] = 0  # type: ignore[index]
    assert findings and not DETECTOR.scan([]) and not DETECTOR.scan(["", "nothing here"]) and not Findings()


ADVERSARIAL = {
    "digits": "0123456789" * 10_000,
    "a": "a" * 100_000,
    "at": "@" * 100_000,
    "A": "A" * 100_000,
    "x@a.a.a": "x@" + "a." * 50_000,
    "+1 ": "+1 " * 30_000,
    "+1 1 1": "+" + "1 " * 50_000,
    "1-": "1-" * 50_000,
    "AB12 ": "AB12 " * 20_000,
    "1 ": "1 " * 50_000,
    "4111 ": "4111 " * 20_000,
}


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_adversarial_inputs_find_nothing(name):
    # Not timed: a pattern that backtracks quadratically would hang here (pytest-timeout), not pass.
    assert not DETECTOR.scan([ADVERSARIAL[name]])


def _first_char_then_lookbehind(pattern: str) -> tuple[str, object, bool]:
    ops = re._parser.parse(pattern)  # type: ignore[attr-defined]
    (first, what), (second, argument) = ops[0], ops[1]
    return str(first), what, str(second) in ("ASSERT", "ASSERT_NOT") and argument[0] == -1  # -1: looks behind


@pytest.mark.parametrize(("kind", "literal", "pattern"), personal_data._LITERAL_LED, ids=lambda v: str(v)[:12])
def test_literal_led_patterns_start_at_their_literal_then_check_the_token_boundary(kind, literal, pattern):
    # The literal lets `re` jump to candidates in C; the lookbehind bounds what one candidate reads.
    assert kind in ALL_KINDS
    assert _first_char_then_lookbehind(pattern) == ("LITERAL", ord(literal), True)


def test_token_led_patterns_share_one_class_led_start():
    first, _, lookbehind = _first_char_then_lookbehind(personal_data._TOKEN_START)
    assert (first, lookbehind) == ("IN", True)
    compiled = PersonalDataDetector()._token_led
    assert compiled is not None and compiled.pattern.startswith(personal_data._TOKEN_START)


def test_module_is_pure():
    imported: set[str] = set()
    for node in ast.walk(ast.parse(Path(personal_data.__file__).read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "re", "collections", "dataclasses", "types", "typing"}  # no I/O, no logging
