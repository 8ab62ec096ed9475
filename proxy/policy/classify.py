"""A request's data class: what the app says, never below its workload's floor, raised by what it holds.

Pure: no I/O. The floor (`Policy.default_class`) comes from the controller,
which took it from the workload's annotations and its policies; the app can
only ask for more protection (the `x-modelway-data-class` header), never less.
When the workload's policy asks for it, the prompt is scanned for personal
data, and a hit raises the class to `personal`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from proxy.errors import bad_request
from proxy.policy.personal_data import PersonalDataDetector
from proxy.snapshot import DATA_CLASS_HEADER, DATA_CLASS_RANK, DATA_CLASSES, DataClass, Policy

_RANK = DATA_CLASS_RANK
PERSONAL: DataClass = "personal"


@dataclass(frozen=True, slots=True)
class Classification:
    data_class: DataClass
    # Why the class is above what the app asked for (empty when it is not), for the audit log.
    raised_because: str = ""
    # What the personal-data scan found: how many of each kind, for the metrics; never the values.
    found: Mapping[str, int] = field(default_factory=dict)


class Classifier:
    """Built once per snapshot; `classify` is what a request pays."""

    def __init__(self, *, policy: Policy) -> None:
        self._floor: DataClass = policy.default_class
        self._detector = PersonalDataDetector() if policy.detect_personal_data else None
        self._unchanged = Classification(self._floor)

    def classify(self, *, header: str | None, texts: Callable[[], Iterable[str]]) -> Classification:
        """`texts` is only called when a scan is due, so requests without one never walk the prompt."""
        asked: DataClass = self._floor
        raised = ""
        if header is not None:
            value = header.strip().lower()
            if value not in _RANK:
                raise bad_request(f"header {DATA_CLASS_HEADER} must be one of {', '.join(DATA_CLASSES)}; "
                                  f"got {header!r}", code="invalid_data_class")
            if _RANK[value] >= _RANK[self._floor]:
                asked = value  # type: ignore[assignment]  # checked against DATA_CLASSES above
            else:
                raised = (f"the workload's default is {self._floor} (the app asked for {value}; "
                          "a request may not go below its workload's default)")
        if self._detector is not None and _RANK[asked] < _RANK[PERSONAL]:
            findings = self._detector.scan(texts())
            if findings:
                kinds = ", ".join(sorted(findings.counts))  # kinds only: what was found is never logged
                return Classification(PERSONAL, f"personal data detected ({kinds})", findings.counts)
        if not raised and asked == self._floor:
            return self._unchanged
        return Classification(asked, raised)


def chat_texts(request: dict[str, Any]) -> Iterator[str]:
    """Every piece of text in an internal (OpenAI-shaped) chat request the app wrote."""
    for message in request.get("messages") or ():
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            yield content
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    yield part["text"]
        for call in message.get("tool_calls") or ():
            arguments = (call.get("function") or {}).get("arguments") if isinstance(call, dict) else None
            if isinstance(arguments, str):
                yield arguments


def embedding_texts(body: dict[str, Any]) -> Iterator[str]:
    """The strings of an embeddings request (token-id inputs carry no text to scan)."""
    value = body.get("input")
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        yield from (item for item in value if isinstance(item, str))
