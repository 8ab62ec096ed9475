"""What the admin port's /limits shows: the limits and provider quotas that bind this sidecar, the
routes and backends each binds, where the counters live, and (in-process counters only: Redis's
are the controller's to read) where each stands. Never the store's URL."""

from __future__ import annotations

from typing import Any

from proxy.limits.model import Counter
from proxy.limits.slot import LimiterHandle
from proxy.runtime import Runtime


def limits_status(runtime: Runtime | None, handle: LimiterHandle | None) -> dict[str, Any]:
    if runtime is None:
        return {"limits": [], "store": None, "reason": "no snapshot loaded yet"}
    counters: dict[str, Counter] = {}
    binds: dict[str, list[dict[str, str]]] = {}
    for (route, provider, model), bound in sorted(runtime.limits.bindings.items()):
        for counter in bound:
            counters.setdefault(counter.key, counter)
            binds.setdefault(counter.key, []).append({"route": route, "provider": provider, "model": model})
    standing = getattr(handle.limiter, "standing", None) if handle is not None else None
    entries = []
    for key, counter in counters.items():
        entry: dict[str, Any] = {
            "owner": counter.owner,
            "name": counter.name,
            "measure": counter.measure,
            "limit": counter.limit,
            "key": key,
            "failureMode": counter.failure_mode,
            "capacity": counter.capacity,
            "binds": binds[key],
        }
        if counter.reroute_to:
            entry["rerouteTo"] = [{"provider": b.provider, "model": b.model} for b in counter.reroute_to]
        if standing is not None:
            entry["standing"] = standing(counter)
        entries.append(entry)
    store: dict[str, Any] | None = None
    if handle is not None:
        store = {"kind": handle.store, "source": handle.source}
    elif entries:
        store = {"kind": "not yet built", "source": "snapshot" if runtime.snapshot.limit_store else "flags"}
    return {"limits": entries, "store": store}
