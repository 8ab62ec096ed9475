"""Pure: a Pod and the sidecar settings in, the JSONPatch that injects the sidecar out.

No I/O, so every rule of injection is unit-tested without a socket. The
webhook server (`server.py`) only decodes the AdmissionReview, calls
`build_patch`, and encodes the answer.

What an injected pod gets:
- the sidecar as a native sidecar (first init container, `restartPolicy:
  Always`) whose startup probe holds the app containers back until the first
  snapshot is loaded (`/readyz` on the admin port);
- a projected ServiceAccount token for audience `modelway` (the sidecar's
  proof of identity to the controller) and an emptyDir for the saved snapshot;
- on each app container, `OPENAI_BASE_URL` / `ANTHROPIC_BASE_URL` pointing at
  the sidecar, and placeholder API keys where the container names none (the
  SDKs refuse to start without a key; the sidecar adds the real credentials);
- the pod's cloud workload identity, when the cloud's own webhook gave it to the app containers
  (EKS IRSA or Pod Identity, AKS Workload Identity: their env and token mounts), so the sidecar
  signs Bedrock and Azure calls as the pod; whichever webhook runs first, since this one is
  re-invoked after the others;
- the annotation `modelway.io/injected`, so a pod is never injected twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

INJECT_KEY = "modelway.io/inject"  # namespace label "enabled" opts in; pod label/annotation "false" opts out
INJECTED_ANNOTATION = "modelway.io/injected"
SIDECAR_NAME = "modelway-proxy"
TOKEN_VOLUME = "modelway-token"
STATE_VOLUME = "modelway-state"
TOKEN_DIR = "/var/run/secrets/modelway"
STATE_DIR = "/var/run/modelway"
PLACEHOLDER_KEY = "modelway-sidecar-adds-the-real-key"

JsonPatch = list[dict[str, Any]]

# The env a cloud's workload identity webhook sets on a pod's containers; the *_FILE ones name a
# token file whose mount comes along.
IDENTITY_ENV = (
    "AWS_ROLE_ARN",  # EKS IRSA
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",  # EKS Pod Identity
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_STS_REGIONAL_ENDPOINTS",
    "AZURE_CLIENT_ID",  # AKS Workload Identity
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
)


@dataclass(frozen=True, kw_only=True)
class SidecarSettings:
    """What the chart's values say about the injected sidecar (the `--inject-config` file)."""

    image: str
    controller_url: str  # https://<service>.<namespace>.svc:15012
    image_pull_policy: str = "IfNotPresent"
    app_port: int = 15000
    admin_port: int = 15020
    log_level: str = "info"
    otlp_endpoint: str = ""
    otel_env: Mapping[str, str] = field(default_factory=dict)  # OTEL_* sampling, export interval, capture
    token_audience: str = "modelway"
    token_expiration_seconds: int = 3600
    startup_timeout_seconds: int = 300  # no snapshot (controller unreachable, none saved) for this long: restart
    set_app_env: bool = True
    resources: Mapping[str, Any] = field(default_factory=dict)
    access_log: bool = True  # the sidecar's one JSON line per request on stdout
    access_log_sample: float = 1.0  # the fraction of successful requests logged (failed ones always are)
    # The sidecar's in-flight bounds (proxy.request.backpressure): as its own defaults, 0 turns one off.
    max_in_flight_per_backend: int = 256
    max_in_flight_per_route: int = 512
    max_queued: int = 128
    queue_wait_seconds: float = 2.0
    # The corporate forward proxy of provider calls: the sidecar's HTTPS_PROXY / HTTP_PROXY / NO_PROXY.
    https_proxy: str = ""
    http_proxy: str = ""
    no_proxy: str = ""

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SidecarSettings:
        """From the camelCase config file; an unknown key is an error, not a silent default."""
        known = {
            "image": "image",
            "controllerURL": "controller_url",
            "imagePullPolicy": "image_pull_policy",
            "appPort": "app_port",
            "adminPort": "admin_port",
            "logLevel": "log_level",
            "otlpEndpoint": "otlp_endpoint",
            "otelEnv": "otel_env",
            "tokenAudience": "token_audience",
            "tokenExpirationSeconds": "token_expiration_seconds",
            "startupTimeoutSeconds": "startup_timeout_seconds",
            "setAppEnv": "set_app_env",
            "resources": "resources",
            "accessLog": "access_log",
            "accessLogSample": "access_log_sample",
            "maxInFlightPerBackend": "max_in_flight_per_backend",
            "maxInFlightPerRoute": "max_in_flight_per_route",
            "maxQueued": "max_queued",
            "queueWaitSeconds": "queue_wait_seconds",
            "httpsProxy": "https_proxy",
            "httpProxy": "http_proxy",
            "noProxy": "no_proxy",
        }
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown injection setting(s) {unknown}; known: {sorted(known)}")
        missing = [k for k in ("image", "controllerURL") if not data.get(k)]
        if missing:
            raise ValueError(f"injection settings need {missing}")
        return cls(**{known[k]: v for k, v in data.items() if v is not None})


@dataclass(frozen=True, kw_only=True)
class Decision:
    patch: JsonPatch  # empty: admit the pod unchanged
    reason: str  # why (for the log and the AdmissionReview's warnings)


def build_patch(
    pod: Mapping[str, Any], *, namespace: str, settings: SidecarSettings, ca_pem: str, own_namespace: str
) -> Decision:
    """The JSONPatch that injects `pod` (being created in `namespace`)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    annotations = meta.get("annotations") or {}
    labels = meta.get("labels") or {}
    if namespace == own_namespace:
        return Decision(patch=[], reason=f"namespace {namespace} runs the controller: never injected")
    if _is_false(annotations.get(INJECT_KEY)) or _is_false(labels.get(INJECT_KEY)):
        return Decision(patch=[], reason=f"opted out by {INJECT_KEY}=false")
    if spec.get("hostNetwork"):
        return Decision(patch=[], reason="hostNetwork pod: the sidecar's ports would be the node's")
    patch: JsonPatch = []
    already = INJECTED_ANNOTATION in annotations or any(
        c.get("name") == SIDECAR_NAME for c in (*(spec.get("initContainers") or ()), *(spec.get("containers") or ()))
    )
    identity = cloud_identity(spec)
    if not already:
        patch += _sidecar_ops(spec, settings=settings, ca_pem=ca_pem, identity=identity)
        patch += _add_to_map("/metadata/annotations", annotations, {INJECTED_ANNOTATION: "true"})
    else:
        patch += _identity_ops(spec, identity)  # a cloud webhook that ran after the injection
    if settings.set_app_env:
        # Also on an injected pod: a later webhook (reinvocation) may have added containers.
        for index, container in enumerate(spec.get("containers") or ()):
            patch += _app_env_ops(container, f"/spec/containers/{index}", settings=settings)
    if not patch:
        return Decision(patch=[], reason="already injected")
    return Decision(patch=patch, reason="re-invoked: app env completed" if already else "injected")


def sidecar_container(settings: SidecarSettings, *, ca_pem: str) -> dict[str, Any]:
    env: list[dict[str, Any]] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        # Public: the CA that signed the controller's certificate. An env var, not a mounted
        # Secret: a pod cannot mount a Secret from the controller's namespace.
        {"name": "MODELWAY_CA_PEM", "value": ca_pem},
    ]
    if settings.otlp_endpoint:
        env += [
            {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": settings.otlp_endpoint},
            {
                "name": "OTEL_RESOURCE_ATTRIBUTES",
                "value": "k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE)",
            },
        ]
    env += [{"name": name, "value": str(value)} for name, value in sorted(settings.otel_env.items())]
    for name, value in (
        ("HTTPS_PROXY", settings.https_proxy),
        ("HTTP_PROXY", settings.http_proxy),
        ("NO_PROXY", settings.no_proxy),
    ):
        if value:
            env.append({"name": name, "value": value})
    probe_port = settings.admin_port
    container: dict[str, Any] = {
        "name": SIDECAR_NAME,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "restartPolicy": "Always",  # a native sidecar: starts before, and outlives, the app containers
        "command": ["modelway-proxy"],
        "args": [
            "--controller",
            settings.controller_url,
            "--token-file",
            f"{TOKEN_DIR}/token",
            "--state-file",
            f"{STATE_DIR}/snapshot.json",
            "--port",
            str(settings.app_port),
            # The kubelet probes from outside the pod's loopback: admin listens on the pod IP.
            "--admin-host",
            "0.0.0.0",
            "--admin-port",
            str(probe_port),
            "--log-level",
            settings.log_level,
            f"--access-log={'on' if settings.access_log else 'off'}",
            f"--access-log-sample={settings.access_log_sample:g}",
            f"--max-in-flight-per-backend={settings.max_in_flight_per_backend}",
            f"--max-in-flight-per-route={settings.max_in_flight_per_route}",
            f"--max-queued={settings.max_queued}",
            f"--queue-wait={settings.queue_wait_seconds:g}",
        ],
        "env": env,
        "ports": [{"name": "mw-admin", "containerPort": probe_port, "protocol": "TCP"}],
        # Native sidecars hold the next containers back until started: the apps start with rules.
        "startupProbe": {
            "httpGet": {"path": "/readyz", "port": probe_port},
            "periodSeconds": 1,
            "failureThreshold": max(1, settings.startup_timeout_seconds),
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": probe_port},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "securityContext": {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True},
            {"name": STATE_VOLUME, "mountPath": STATE_DIR},
        ],
    }
    if settings.resources:
        container["resources"] = dict(settings.resources)
    return container


def volumes(settings: SidecarSettings) -> list[dict[str, Any]]:
    return [
        {
            "name": TOKEN_VOLUME,
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "audience": settings.token_audience,
                            "expirationSeconds": settings.token_expiration_seconds,
                            "path": "token",
                        }
                    }
                ]
            },
        },
        # The last good snapshot, credentials included: memory-backed, never on the node's disk.
        {"name": STATE_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
    ]


def cloud_identity(spec: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The workload identity env and token mounts of the first app container that has any."""
    for container in spec.get("containers") or ():
        env = [e for e in container.get("env") or () if e.get("name") in IDENTITY_ENV]
        if not env:
            continue
        files = [str(e.get("value") or "") for e in env if str(e.get("name")).endswith("_FILE")]
        mounts = [
            {k: v for k, v in m.items() if k in ("name", "mountPath", "readOnly", "subPath")}
            for m in container.get("volumeMounts") or ()
            if any(f.startswith(str(m.get("mountPath", "")).rstrip("/") + "/") for f in files)
        ]
        return env, mounts
    return [], []


def _identity_ops(spec: Mapping[str, Any], identity: tuple[list[dict[str, Any]], list[dict[str, Any]]]) -> JsonPatch:
    env, mounts = identity
    inits = list(spec.get("initContainers") or ())
    index = next((i for i, c in enumerate(inits) if c.get("name") == SIDECAR_NAME), None)
    if not env or index is None:
        return []
    sidecar, path = inits[index], f"/spec/initContainers/{index}"
    have = {e.get("name") for e in sidecar.get("env") or ()}
    mounted = {m.get("mountPath") for m in sidecar.get("volumeMounts") or ()}
    ops: JsonPatch = [{"op": "add", "path": f"{path}/env/-", "value": e} for e in env if e["name"] not in have]
    ops += [
        {"op": "add", "path": f"{path}/volumeMounts/-", "value": m} for m in mounts if m["mountPath"] not in mounted
    ]
    return ops


def _sidecar_ops(
    spec: Mapping[str, Any],
    *,
    settings: SidecarSettings,
    ca_pem: str,
    identity: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], []),
) -> JsonPatch:
    ops: JsonPatch = []
    sidecar = sidecar_container(settings, ca_pem=ca_pem)
    sidecar["env"] += identity[0]
    sidecar["volumeMounts"] += identity[1]
    if spec.get("initContainers"):
        # First: other init containers (which may call an LLM) run with the sidecar up.
        ops.append({"op": "add", "path": "/spec/initContainers/0", "value": sidecar})
    else:
        ops.append({"op": "add", "path": "/spec/initContainers", "value": [sidecar]})
    existing = {v.get("name") for v in spec.get("volumes") or ()}
    new = [v for v in volumes(settings) if v["name"] not in existing]
    if spec.get("volumes"):
        ops += [{"op": "add", "path": "/spec/volumes/-", "value": v} for v in new]
    else:
        ops.append({"op": "add", "path": "/spec/volumes", "value": new})
    return ops


def _app_env_ops(container: Mapping[str, Any], path: str, *, settings: SidecarSettings) -> JsonPatch:
    base = f"http://127.0.0.1:{settings.app_port}"
    forced = {"OPENAI_BASE_URL": f"{base}/v1", "ANTHROPIC_BASE_URL": base}
    defaults = {"OPENAI_API_KEY": PLACEHOLDER_KEY, "ANTHROPIC_API_KEY": PLACEHOLDER_KEY}
    env = list(container.get("env") or ())
    index = {e.get("name"): i for i, e in enumerate(env)}
    ops: JsonPatch = []
    added: list[dict[str, Any]] = []
    for name, value in forced.items():
        wanted = {"name": name, "value": value}
        if name not in index:
            added.append(wanted)
        elif env[index[name]] != wanted:  # the pod opted in: its SDK traffic goes through the sidecar
            ops.append({"op": "replace", "path": f"{path}/env/{index[name]}", "value": wanted})
    added += [{"name": n, "value": v} for n, v in defaults.items() if n not in index]
    if not added:
        return ops
    if env:
        ops += [{"op": "add", "path": f"{path}/env/-", "value": e} for e in added]
    else:
        ops.append({"op": "add", "path": f"{path}/env", "value": added})
    return ops


def _add_to_map(path: str, current: Mapping[str, Any], items: Mapping[str, str]) -> JsonPatch:
    if not current:
        return [{"op": "add", "path": path, "value": dict(items)}]
    return [{"op": "add", "path": f"{path}/{_escape(k)}", "value": v} for k, v in items.items()]


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _is_false(value: Any) -> bool:
    return str(value).strip().lower() in {"false", "disabled", "no", "0"} if value is not None else False
