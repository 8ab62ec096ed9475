"""A real Jaeger v2 (all-in-one, memory storage) as a local process.

Jaeger v2 is an OpenTelemetry Collector distribution: OTLP gRPC/HTTP
receivers feed an in-memory store that the query extension serves as the
HTTP API the Jaeger UI uses (``/api/services``, ``/api/traces``). Every
listener is given a free loopback port and the ones we do not need (internal
metrics on 8888, sampling, zipkin, ...) are left out of the config, so
parallel sessions never clash on Jaeger's default ports.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .ports import PortAllocator
from .process import ManagedProcess

READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class JaegerServer:
    otlp_grpc_endpoint: str  # host:port, for OTLPSpanExporter(endpoint=..., insecure=True)
    otlp_http_endpoint: str  # http://host:port; traces go to <this>/v1/traces
    query_url: str  # http://host:port, the HTTP query API

    @property
    def otlp_http_traces_url(self) -> str:
        return self.otlp_http_endpoint + "/v1/traces"

    def api(self, path: str, **params: str) -> Any:
        """GET a query API path (e.g. "/api/traces", service="x"); the JSON body."""
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        with urllib.request.urlopen(self.query_url + path + query, timeout=10) as r:
            return json.loads(r.read())

    def services(self) -> list[str]:
        return list(self.api("/api/services").get("data") or [])

    def traces(self, service: str, **params: str) -> list[dict[str, Any]]:
        """Traces of ``service`` in the Jaeger UI's JSON shape (traceID, spans, processes)."""
        return list(self.api("/api/traces", service=service, **params).get("data") or [])

    def wait_for_traces(
        self, service: str, predicate: Callable[[list[dict[str, Any]]], bool] = bool, *, timeout: float = 20.0
    ) -> list[dict[str, Any]]:
        """Poll until ``predicate(traces)`` holds: ingestion is asynchronous (batching)."""
        deadline = time.monotonic() + timeout
        traces: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            try:
                traces = self.traces(service)
            except OSError:
                traces = []  # query API answers 404-ish errors until the service exists
            if predicate(traces):
                return traces
            time.sleep(0.3)
        raise AssertionError(
            f"no matching traces for service {service!r} in Jaeger after {timeout}s; got {json.dumps(traces)[:2000]}"
        )


def _config(
    *, grpc: int, http: int, query_http: int, query_grpc: int, health: int, otlp_host: str = "127.0.0.1"
) -> dict[str, Any]:
    loop = "127.0.0.1"
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
            "pipelines": {
                "traces": {"receivers": ["otlp"], "processors": ["batch"], "exporters": ["jaeger_storage_exporter"]}
            },
            # level none: no internal metrics server (it would bind :8888).
            "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "info"}},
        },
        "extensions": {
            "healthcheckv2": {"use_v2": True, "http": {"endpoint": f"{loop}:{health}"}},
            "jaeger_query": {
                "storage": {"traces": "memstore"},
                # On by default in v2: Jaeger would trace itself to the OTLP
                # default localhost:4317, i.e. into whatever listens there.
                "enable_tracing": False,
                "http": {"endpoint": f"{loop}:{query_http}"},
                "grpc": {"endpoint": f"{loop}:{query_grpc}"},
            },
            "jaeger_storage": {"backends": {"memstore": {"memory": {"max_traces": 100000}}}},
        },
        "receivers": {
            "otlp": {
                "protocols": {"grpc": {"endpoint": f"{otlp_host}:{grpc}"}, "http": {"endpoint": f"{otlp_host}:{http}"}}
            }
        },
        # Short batch timeout: tests wait for spans, not throughput.
        "processors": {"batch": {"timeout": "100ms"}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memstore"}},
    }


class JaegerProcess:
    def __init__(self, *, binary: Path, workdir: Path, ports: PortAllocator, otlp_host: str = "127.0.0.1") -> None:
        """``otlp_host``: where the OTLP receivers listen (the test node's bridge
        address for pods to send to); the query API stays on loopback."""
        self._otlp_host = otlp_host
        self._binary = binary
        self.workdir = workdir
        self._ports = ports
        self.processes: list[ManagedProcess] = []

    def start(self) -> JaegerServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        p = {k: self._ports.take() for k in ("grpc", "http", "query_http", "query_grpc", "health")}
        config = self.workdir / "jaeger.yaml"
        config.write_text(yaml.safe_dump(_config(**p, otlp_host=self._otlp_host), sort_keys=False))
        proc = ManagedProcess("jaeger", [self._binary, "--config", config], self.workdir / "jaeger.log")
        self.processes.append(proc)
        server = JaegerServer(
            otlp_grpc_endpoint=f"{self._otlp_host}:{p['grpc']}",
            otlp_http_endpoint=f"http://{self._otlp_host}:{p['http']}",
            query_url=f"http://127.0.0.1:{p['query_http']}",
        )

        def ready() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{p['health']}/status", timeout=2) as r:
                if r.status != 200:
                    return False
            server.services()  # the query API is up too
            return True

        proc.wait_ready(ready, timeout=READY_TIMEOUT)
        return server

    def stop(self) -> None:
        for proc in self.processes:
            proc.stop()
