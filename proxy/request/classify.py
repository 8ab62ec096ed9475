"""Stage 2, classify: the request's data class, from its workload's floor, the app's header and
(when the workload's policy asks for it) the personal-data scan (`proxy.policy.classify`).

What the scan found is counted by the account stage, from the outcome; never logged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from proxy.policy.classify import Classification
from proxy.runtime import Runtime
from proxy.snapshot import DATA_CLASS_HEADER


def classify(runtime: Runtime, headers: Mapping[str, str], texts: Callable[[], Iterable[str]]) -> Classification:
    """`texts` yields what the provider would read; it is walked only when a scan is due.
    Raises ApiError (400) for a data-class header that names no class."""
    return runtime.classifier.classify(header=headers.get(DATA_CLASS_HEADER), texts=texts)
