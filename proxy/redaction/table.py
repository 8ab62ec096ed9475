"""Which backends a request may reach only masked, and with which rule: compiled once per snapshot.

The controller lists, per policy, the backends some data classes may reach only redacted
(`proxy.snapshot.Policy.redacted_backends`). Several policies may redact the same backend for the
same class: the strictest wins (`proxy.snapshot.merge_redactions`). One `RedactionRule` is built per
distinct rule here, when the sidecar swaps its snapshot, so a request does one dict lookup.
A backend the policy denies for a class is not in that class's plan at all, whatever is listed here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from proxy.snapshot import Policy, Redaction, merge_redactions

if TYPE_CHECKING:
    from proxy.redaction.rule import RedactionRule


class BackendRule(msgspec.Struct, frozen=True):
    """The masking a backend needs for one data class, and the policies that ask for it."""

    rule: RedactionRule
    policies: tuple[str, ...]


class RedactionTable:
    __slots__ = ("_rules",)

    def __init__(self, rules: dict[tuple[str, str], BackendRule]) -> None:
        self._rules = rules

    @classmethod
    def build(cls, policy: Policy) -> RedactionTable:
        wanted: dict[tuple[str, str], list[tuple[str, Redaction]]] = {}
        for redacted in policy.redacted_backends:
            for data_class in redacted.data_classes:
                wanted.setdefault((redacted.key, data_class), []).append((redacted.policy, redacted.redaction))
        if not wanted:  # the usual case: the rule compiler (and the masking code) stay unimported
            return cls({})
        from proxy.redaction.rule import RedactionRule

        built: dict[Redaction, RedactionRule] = {}  # one rule object per distinct rule
        rules: dict[tuple[str, str], BackendRule] = {}
        for key, entries in wanted.items():
            merged = merge_redactions(redaction for _, redaction in entries)
            rule = built.get(merged)
            if rule is None:
                rule = built[merged] = RedactionRule(
                    kinds=merged.kinds, custom={p.name: p.regex for p in merged.patterns}, restore=merged.restore
                )
            rules[key] = BackendRule(rule, tuple(dict.fromkeys(policy for policy, _ in entries)))
        return cls(rules)

    def __bool__(self) -> bool:
        return bool(self._rules)

    def rule_for(self, backend: str, data_class: str) -> BackendRule | None:
        """The masking `backend` ("<provider>/<model>") needs for requests of `data_class`, or None."""
        return self._rules.get((backend, data_class))
