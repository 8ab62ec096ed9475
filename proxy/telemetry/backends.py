"""What the sidecar's spans and metrics say about a backend: its attributes and prices.

A backend's attributes (provider, upstream model, server address and port, backend key) are
computed once per snapshot (`BackendCatalog`) and travel as one tuple (`BackendInfo.labels`), so a
request builds no attribute dicts; its CLIENT spans' names and attributes are made once per
operation and attempt number too. `BackendInfo.cost` prices a request's tokens.
"""

from __future__ import annotations

from proxy.runtime import Runtime
from proxy.telemetry.lean_span import SharedAttributes
from proxy.telemetry.metrics import Labels

BACKEND = ("gen_ai.provider.name", "gen_ai.request.model", "server.address", "server.port", "modelway.backend")


class BackendInfo:
    """A backend's metric attributes, and its prices in USD per token (None: no pricing given).
    Prompt-cache reads and writes cost their own prices, or the input price when none is given."""

    __slots__ = ("_client_spans", "cache_write_price", "cached_price", "input_price", "labels", "output_price")

    def __init__(
        self,
        labels: Labels,
        input_price: float | None,
        output_price: float | None,
        cached_price: float | None = None,
        cache_write_price: float | None = None,
    ) -> None:
        self.labels, self.input_price, self.output_price = labels, input_price, output_price
        self.cached_price = input_price if cached_price is None else cached_price
        self.cache_write_price = input_price if cache_write_price is None else cache_write_price
        self._client_spans: dict[tuple[str, int, bool], tuple[str, SharedAttributes]] = {}

    def client_span(self, operation: str, number: int, fallback: bool) -> tuple[str, SharedAttributes]:
        """The name and attributes of a CLIENT span for one attempt on this backend."""
        key = (operation, number, fallback)
        found = self._client_spans.get(key)
        if found is None:
            values = {
                "gen_ai.operation.name": operation,
                **dict(zip(BACKEND, self.labels, strict=True)),
                "modelway.attempt": number,
                "modelway.fallback": fallback,
            }
            attributes = SharedAttributes({k: v for k, v in values.items() if v is not None})
            found = self._client_spans[key] = (f"{operation} {self.labels[1]}", attributes)
        return found

    def cost(
        self,
        input_tokens: int | None,
        output_tokens: int | None,
        cached_tokens: int | None = None,
        cache_write_tokens: int | None = None,
    ) -> float | None:
        """USD for these tokens; None without pricing or usage (an unknown cost is not zero).
        Of the input, `cached_tokens` were read from the prompt cache (at the cached price) and
        `cache_write_tokens` written to it (at the cache-write price)."""
        if self.input_price is None or (input_tokens is None and output_tokens is None):
            return None
        whole = input_tokens or 0
        cached = min(cached_tokens or 0, whole)
        written = min(cache_write_tokens or 0, whole - cached)
        return (
            (whole - cached - written) * self.input_price
            + cached * (self.cached_price or 0.0)
            + written * (self.cache_write_price or 0.0)
            + (output_tokens or 0) * (self.output_price or 0.0)
        )


class BackendCatalog:
    """Backend key -> BackendInfo for the runtime last asked about (rebuilt when it changes)."""

    def __init__(self) -> None:
        self._runtime: Runtime | None = None
        self._infos: dict[str, BackendInfo] = {}

    def get(self, runtime: Runtime, key: str) -> BackendInfo:
        if runtime is not self._runtime:
            self._infos = _catalog(runtime)
            self._runtime = runtime
        info = self._infos.get(key)
        if info is None:  # not in any route (cannot happen for a planned backend): label it by key only
            info = self._infos[key] = BackendInfo((None, None, None, None, key), None, None)
        return info


def _catalog(runtime: Runtime) -> dict[str, BackendInfo]:
    infos: dict[str, BackendInfo] = {}
    for route in runtime.snapshot.routes:
        for rule in route.rules:
            for backend in (*rule.backends, *rule.fallbacks):
                if backend.key in infos:
                    continue
                translator = runtime.translators[backend.provider]
                labels = (
                    translator.system,
                    backend.model,
                    translator.server_address,
                    translator.server_port,
                    backend.key,
                )
                price = runtime.providers[backend.provider].pricing.get(backend.model)
                infos[backend.key] = BackendInfo(
                    labels,
                    price.input_per_million / 1e6 if price else None,
                    price.output_per_million / 1e6 if price else None,
                    price.cached_input_per_million / 1e6
                    if price and price.cached_input_per_million is not None
                    else None,
                    price.cache_write_per_million / 1e6
                    if price and price.cache_write_per_million is not None
                    else None,
                )
    return infos
