"""The pure injection rules: a Pod in, a JSONPatch out, applied here to see the Pod the API server stores."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from controller.webhook.inject import INJECTED_ANNOTATION, PLACEHOLDER_KEY, SIDECAR_NAME, SidecarSettings, build_patch

SETTINGS = SidecarSettings(
    image="registry.example/modelway:1.2.3",
    controller_url="https://modelway-controller.modelway-system.svc:15012",
    resources={"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
)
CA = "-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n"


def apply_patch(doc: dict[str, Any], patch: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 add/replace/test, enough to check what the API server would store."""
    doc = copy.deepcopy(doc)
    for op in patch:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        target: Any = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if op["op"] == "test":
            assert (target[int(last)] if isinstance(target, list) else target[last]) == op["value"]
        elif isinstance(target, list):
            if op["op"] == "replace":
                target[int(last)] = op["value"]
            else:
                target.insert(len(target) if last == "-" else int(last), op["value"])
        else:
            if op["op"] == "replace":
                assert last in target, f"replace of a missing member {op['path']}"
            target[last] = op["value"]
    return doc


def pod(**spec: Any) -> dict[str, Any]:
    meta = spec.pop("metadata", {"name": "web"})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "app", "image": "app:1"}], **spec},
    }


def inject(p: dict[str, Any], *, namespace: str = "team-a", settings: SidecarSettings = SETTINGS) -> dict[str, Any]:
    decision = build_patch(p, namespace=namespace, settings=settings, ca_pem=CA, own_namespace="modelway-system")
    return apply_patch(p, decision.patch)


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_adds_a_native_sidecar_with_probe_token_state_and_identity():
    out = inject(pod())
    (sidecar,) = out["spec"]["initContainers"]
    assert sidecar["name"] == SIDECAR_NAME and sidecar["restartPolicy"] == "Always"
    assert sidecar["image"] == "registry.example/modelway:1.2.3"
    assert sidecar["startupProbe"]["httpGet"] == {"path": "/readyz", "port": 15020}
    args = sidecar["args"]
    assert args[args.index("--controller") + 1] == SETTINGS.controller_url
    assert args[args.index("--state-file") + 1] == "/var/run/modelway/snapshot.json"
    assert args[args.index("--token-file") + 1] == "/var/run/secrets/modelway/token"
    env = env_of(sidecar)
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["MODELWAY_CA_PEM"] == CA
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env
    sc = sidecar["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["allowPrivilegeEscalation"] is False
    assert sidecar["resources"] == SETTINGS.resources
    volumes = {v["name"]: v for v in out["spec"]["volumes"]}
    (source,) = volumes["modelway-token"]["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == "modelway"
    assert "emptyDir" in volumes["modelway-state"]
    mounts = {m["name"]: m["mountPath"] for m in sidecar["volumeMounts"]}
    assert mounts == {"modelway-token": "/var/run/secrets/modelway", "modelway-state": "/var/run/modelway"}
    assert out["metadata"]["annotations"] == {INJECTED_ANNOTATION: "true"}


def test_points_every_app_container_at_the_sidecar_and_keeps_their_own_keys():
    p = pod()
    p["spec"]["containers"] = [
        {"name": "app", "image": "app:1"},
        {
            "name": "worker",
            "image": "w:1",
            "env": [
                {"name": "OPENAI_API_KEY", "value": "mine"},
                {"name": "OPENAI_BASE_URL", "value": "https://api.openai.com/v1"},
                {"name": "OTHER", "value": "x"},
            ],
        },
    ]
    app, worker = inject(p)["spec"]["containers"]
    assert env_of(app) == {
        "OPENAI_BASE_URL": "http://127.0.0.1:15000/v1",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:15000",
        "OPENAI_API_KEY": PLACEHOLDER_KEY,
        "ANTHROPIC_API_KEY": PLACEHOLDER_KEY,
    }
    assert env_of(worker) == {
        "OPENAI_API_KEY": "mine",
        "OPENAI_BASE_URL": "http://127.0.0.1:15000/v1",
        "OTHER": "x",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:15000",
        "ANTHROPIC_API_KEY": PLACEHOLDER_KEY,
    }
    assert [e["name"] for e in worker["env"]].count("OPENAI_BASE_URL") == 1


def test_goes_first_among_existing_init_containers_and_keeps_existing_volumes_and_annotations():
    p = pod(
        initContainers=[{"name": "migrate", "image": "m:1"}],
        volumes=[{"name": "data", "emptyDir": {}}],
        metadata={"name": "web", "annotations": {"team": "a/b"}},
    )
    out = inject(p)
    assert [c["name"] for c in out["spec"]["initContainers"]] == [SIDECAR_NAME, "migrate"]
    assert [v["name"] for v in out["spec"]["volumes"]] == ["data", "modelway-token", "modelway-state"]
    assert out["metadata"]["annotations"] == {"team": "a/b", INJECTED_ANNOTATION: "true"}


def test_never_injects_twice():
    once = inject(pod())
    decision = build_patch(once, namespace="team-a", settings=SETTINGS, ca_pem=CA, own_namespace="modelway-system")
    assert decision.patch == [] and decision.reason == "already injected"
    # A container added after injection (a later webhook) gets the env, not a second sidecar.
    once["spec"]["containers"].append({"name": "late", "image": "l:1"})
    twice = inject(once)
    assert [c["name"] for c in twice["spec"]["initContainers"]] == [SIDECAR_NAME]
    assert env_of(twice["spec"]["containers"][1])["OPENAI_BASE_URL"] == "http://127.0.0.1:15000/v1"


@pytest.mark.parametrize("case", ["annotation", "label", "own-namespace", "host-network"])
def test_leaves_pods_alone(case):
    p = pod()
    namespace = "team-a"
    if case == "annotation":
        p["metadata"]["annotations"] = {"modelway.io/inject": "false"}
    elif case == "label":
        p["metadata"]["labels"] = {"modelway.io/inject": "false"}
    elif case == "own-namespace":
        namespace = "modelway-system"
    else:
        p["spec"]["hostNetwork"] = True
    decision = build_patch(p, namespace=namespace, settings=SETTINGS, ca_pem=CA, own_namespace="modelway-system")
    assert decision.patch == []


def test_settings_from_the_chart_file_and_their_effect():
    settings = SidecarSettings.from_mapping(
        {
            "image": "img:2",
            "controllerURL": "https://c:15012",
            "appPort": 16000,
            "adminPort": 16020,
            "otlpEndpoint": "http://otel:4318",
            "setAppEnv": False,
            "logLevel": "debug",
            "otelEnv": {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"},
        }
    )
    out = inject(pod(), settings=settings)
    (sidecar,) = out["spec"]["initContainers"]
    assert sidecar["startupProbe"]["httpGet"]["port"] == 16020
    assert "--port" in sidecar["args"] and "16000" in sidecar["args"]
    assert env_of(sidecar)["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel:4318"
    assert env_of(sidecar)["OTEL_TRACES_SAMPLER_ARG"] == "0.1"
    assert "env" not in out["spec"]["containers"][0]  # setAppEnv: false
    with pytest.raises(ValueError, match="imagePullPolcy"):
        SidecarSettings.from_mapping({"image": "i", "controllerURL": "u", "imagePullPolcy": "Always"})
    with pytest.raises(ValueError, match="controllerURL"):
        SidecarSettings.from_mapping({"image": "i"})


def test_the_access_log_setting_reaches_the_sidecar_flags_it_understands():
    from proxy.options import access_log_settings, parse_args

    def sidecar_args(**settings: Any) -> list[str]:
        mapping = {"image": "img:2", "controllerURL": "https://c:15012", **settings}
        (sidecar,) = inject(pod(), settings=SidecarSettings.from_mapping(mapping))["spec"]["initContainers"]
        return sidecar["args"]

    default = access_log_settings(parse_args(sidecar_args()))
    assert (default.enabled, default.sample) == (True, 1.0)
    sampled = access_log_settings(parse_args(sidecar_args(accessLogSample=0.25)))
    assert (sampled.enabled, sampled.sample) == (True, 0.25)
    assert not access_log_settings(parse_args(sidecar_args(accessLog=False))).enabled


def test_the_backpressure_settings_reach_the_sidecar_flags_it_understands():
    from proxy.options import backpressure_settings, parse_args
    from proxy.request.backpressure import BackpressureSettings

    def sidecar_settings(**settings: Any) -> BackpressureSettings:
        mapping = {"image": "img:2", "controllerURL": "https://c:15012", **settings}
        (sidecar,) = inject(pod(), settings=SidecarSettings.from_mapping(mapping))["spec"]["initContainers"]
        return backpressure_settings(parse_args(sidecar["args"]))

    assert sidecar_settings() == BackpressureSettings()  # the chart's defaults are the sidecar's own
    tuned = sidecar_settings(maxInFlightPerBackend=8, maxInFlightPerRoute=0, maxQueued=3, queueWaitSeconds=0.5)
    assert tuned == BackpressureSettings(
        max_in_flight_per_backend=8, max_in_flight_per_route=0, max_queued=3, queue_wait_seconds=0.5
    )


IRSA_ENV = [
    {"name": "AWS_ROLE_ARN", "value": "arn:aws:iam::111122223333:role/llm-caller"},
    {"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"},
    {"name": "AWS_REGION", "value": "eu-central-1"},
]
IRSA_MOUNT = {
    "name": "aws-iam-token",
    "mountPath": "/var/run/secrets/eks.amazonaws.com/serviceaccount",
    "readOnly": True,
}


def _irsa_app() -> dict[str, Any]:
    """An app container as EKS's pod identity webhook leaves it (plus the app's own env and mounts)."""
    return {
        "name": "app",
        "image": "app:1",
        "env": [{"name": "LOG_LEVEL", "value": "debug"}, *IRSA_ENV],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}, IRSA_MOUNT],
    }


def _sidecar(p: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in p["spec"]["initContainers"] if c["name"] == SIDECAR_NAME)


def test_the_pods_cloud_identity_reaches_the_sidecar_whichever_webhook_ran_first() -> None:
    volumes = [{"name": "aws-iam-token", "projected": {"sources": []}}, {"name": "data", "emptyDir": {}}]
    # The cloud's webhook ran first: the sidecar is made with the identity.
    injected = inject(pod(containers=[_irsa_app()], volumes=volumes))
    sidecar = _sidecar(injected)
    assert {k: env_of(sidecar)[k] for k in ("AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_REGION")} == {
        e["name"]: e["value"] for e in IRSA_ENV
    }
    assert IRSA_MOUNT in sidecar["volumeMounts"]
    assert "LOG_LEVEL" not in env_of(sidecar) and all(m["name"] != "data" for m in sidecar["volumeMounts"])

    # The cloud's webhook ran after ours: on re-invocation the sidecar gets it, once.
    plain = inject(pod(volumes=volumes))
    assert "AWS_ROLE_ARN" not in env_of(_sidecar(plain))
    plain["spec"]["containers"][0] = _irsa_app()
    again = inject(plain)
    assert env_of(_sidecar(again))["AWS_ROLE_ARN"] == IRSA_ENV[0]["value"]
    assert _sidecar(again)["volumeMounts"].count(IRSA_MOUNT) == 1
    assert inject(again) == again  # nothing more to add


def test_a_pod_without_a_cloud_identity_gives_the_sidecar_none() -> None:
    sidecar = _sidecar(inject(pod()))
    assert not [name for name in env_of(sidecar) if name.startswith(("AWS_", "AZURE_"))]
