"""Label selectors, pure: what a metav1.LabelSelector selects, as Kubernetes decides it.

Used for a ModelRoute's workloadSelector, a policy's podSelector and a
ClusterModelPolicy's namespaceSelector, so the three read alike. No selector
at all selects everything (the fields say so: "unset: every pod"), and so does
an empty one, `{}`, as in Kubernetes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from controller.api import LabelSelector, LabelSelectorRequirement

# A canonical, hashable form of a selector: one (key, requirement) pair per requirement, sorted.
SelectorKey = tuple[tuple[str, str], ...]


def _holds(requirement: LabelSelectorRequirement, labels: Mapping[str, str]) -> bool:
    key, operator = requirement.key, requirement.operator
    if operator == "In":
        return key in labels and labels[key] in requirement.values
    if operator == "NotIn":  # as in Kubernetes: a missing label is "not in" any set
        return key not in labels or labels[key] not in requirement.values
    if operator == "Exists":
        return key in labels
    return key not in labels  # DoesNotExist


def matches(selector: LabelSelector | None, labels: Mapping[str, str]) -> bool:
    """Whether `labels` satisfy every matchLabels pair and every matchExpressions requirement."""
    if selector is None:
        return True
    if any(labels.get(key) != value for key, value in selector.match_labels.items()):
        return False
    return all(_holds(requirement, labels) for requirement in selector.match_expressions)


def selector_key(selector: LabelSelector | None) -> SelectorKey:
    """One key for selectors written alike, for the one-route-per-model-and-selector claim.

    `matchLabels {app: web}` is `app In (web)`; the order of requirements and of values does not
    count, nor does a requirement given twice; no selector and `{}` both select everything.
    (Selectors that select the same pods by other means, say `app In (web)` and `app In (web, api)`
    together, keep different keys: the pick among them is by name, as for any two selectors.)
    """
    if selector is None:
        return ()
    requirements = {(key, "In " + json.dumps([value])) for key, value in selector.match_labels.items()}
    for r in selector.match_expressions:
        values = json.dumps(sorted(set(r.values))) if r.operator in ("In", "NotIn") else ""
        requirements.add((r.key, f"{r.operator} {values}".rstrip()))
    return tuple(sorted(requirements))
