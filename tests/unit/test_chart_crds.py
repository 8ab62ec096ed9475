"""The chart ships the CRDs of crds/ byte for byte: `make chart-crds` copies them."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "crds"
CHART = REPO / "charts" / "modelway" / "crds"


def test_every_crd_is_in_the_chart_unchanged():
    source = {p.name: p.read_bytes() for p in SOURCE.glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in CHART.glob("*.yaml")}
    assert source, "crds/ holds no CRDs"
    missing = sorted(set(source) - set(chart))
    extra = sorted(set(chart) - set(source))
    differ = sorted(n for n in set(source) & set(chart) if source[n] != chart[n])
    assert not (missing or extra or differ), (
        f"charts/modelway/crds/ is out of step with crds/: missing {missing}, not in crds/ {extra}, "
        f"different {differ}; run `make chart-crds`"
    )
