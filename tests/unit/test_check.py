"""`modelway check`'s analysis, pure: what only a look across objects shows."""

from __future__ import annotations

from controller.check import RouteStatus, stale_sidecars


def test_sidecars_behind_the_current_generation_are_a_warning() -> None:
    key = ("ModelRoute", "team-a", "chat")
    [behind] = stale_sidecars({key: RouteStatus(generation=3, observed_generation=3, synced=1, total=4)})
    assert behind.severity == "warning" and behind.object == "ModelRoute team-a/chat"
    assert "3/4 sidecars do not run generation 3" in behind.problem and "modelway status" in behind.fix
    [unreported] = stale_sidecars({key: RouteStatus(generation=4, observed_generation=3, synced=4, total=4)})
    assert "has not reported on generation 4" in unreported.problem
    assert stale_sidecars({key: RouteStatus(generation=3, observed_generation=3, synced=4, total=4)}) == []
    assert stale_sidecars({key: RouteStatus(generation=3, observed_generation=3, synced=0, total=0)}) == []
