"""The chart as `helm lint` and `helm template` see it: what matters for safety, with default and other values."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.cli import CommandFailed, Helm

pytestmark = pytest.mark.e2e

CHART = Path(__file__).resolve().parents[2] / "charts" / "modelway"
NS = "modelway-system"


def render(helm: Helm, *sets: str) -> dict[tuple[str, str], dict[str, Any]]:
    args = [a for s in sets for a in ("--set", s)]
    out = helm("template", "modelway", str(CHART), "--namespace", NS, *args).stdout
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out) if d}


def rules(doc: dict[str, Any]) -> set[tuple[str, str, tuple[str, ...], tuple[str, ...]]]:
    return {
        (group, resource, tuple(sorted(r["verbs"])), tuple(r.get("resourceNames", ())))
        for r in doc["rules"]
        for group in r["apiGroups"]
        for resource in r["resources"]
    }


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["certificates.certManager.enabled=true", "controller.replicas=1"],
        ["injection.enabled=false", "otlp.endpoint=http://otel:4318"],
        ["redis.enabled=true"],
        ["redis.existingSecret=limits-redis", "redis.cluster=true"],
    ],
)
def test_lint_strict(helm_offline: Helm, values: list[str]) -> None:
    helm_offline("lint", str(CHART), "--strict", "--namespace", NS, *[a for v in values for a in ("--set", v)])


def test_a_typo_in_values_fails(helm_offline: Helm) -> None:
    with pytest.raises(CommandFailed) as failed:
        render(helm_offline, "controller.replica=3")
    assert "replica" in failed.value.stderr and "not allowed" in failed.value.stderr


def test_controller_deployment_defaults(helm_offline: Helm) -> None:
    docs = render(helm_offline)
    deploy = docs["Deployment", "modelway-controller"]
    spec = deploy["spec"]["template"]["spec"]
    assert deploy["spec"]["replicas"] == 2
    assert docs["PodDisruptionBudget", "modelway-controller"]["spec"]["minAvailable"] == 1
    anti = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = spec["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsNonRoot"] is True
    assert set(container["resources"]) == {"requests", "limits"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"stream": 15012, "webhook": 9443, "admin": 15014}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in container["env"]}
    assert env["POD_NAME"] == "metadata.name" and env["POD_NAMESPACE"] == "metadata.namespace"
    assert "--cert-secret-name=modelway-certs" in container["args"]
    assert "--admin-listen=0.0.0.0:15014" in container["args"]
    assert "--webhook-config-name=modelway-sidecar-injector" in container["args"]
    service = docs["Service", "modelway-controller"]["spec"]["ports"]
    assert {(p["name"], p["port"], p["targetPort"]) for p in service} == {
        ("stream", 15012, "stream"),
        ("webhook", 443, "webhook"),
    }


def test_rbac_is_exactly_what_the_controller_calls(helm_offline: Helm) -> None:
    docs = render(helm_offline)
    crds = ("modelproviders", "modelroutes", "modelpolicies", "clustermodelpolicies")
    expected_cluster = {
        *(("modelway.io", r, ("get", "list", "watch"), ()) for r in crds),
        *(("modelway.io", f"{r}/status", ("patch", "update"), ()) for r in crds),
        ("", "secrets", ("list", "watch"), ()),
        ("authentication.k8s.io", "tokenreviews", ("create",), ()),
        ("", "pods", ("get",), ()),
        ("", "namespaces", ("get", "list", "watch"), ()),
        ("events.k8s.io", "events", ("create",), ()),
        (
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            ("get", "patch"),
            ("modelway-sidecar-injector",),
        ),
    }
    assert rules(docs["ClusterRole", "modelway-controller"]) == expected_cluster
    assert rules(docs["Role", "modelway-controller"]) == {
        ("coordination.k8s.io", "leases", ("create", "delete", "get", "list", "update", "watch"), ()),
        ("", "secrets", ("create",), ()),
        ("", "secrets", ("get", "update"), ("modelway-certs",)),
    }
    assert docs["Role", "modelway-controller"]["metadata"]["namespace"] == NS
    for binding in (docs["ClusterRoleBinding", "modelway-controller"], docs["RoleBinding", "modelway-controller"]):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "modelway-controller", "namespace": NS}]


def test_webhook_selectors_keep_other_pods_away(helm_offline: Helm) -> None:
    (hook,) = render(helm_offline)["MutatingWebhookConfiguration", "modelway-sidecar-injector"]["webhooks"]
    assert hook["failurePolicy"] == "Fail" and hook["sideEffects"] == "None"
    assert hook["rules"] == [
        {
            "operations": ["CREATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    assert hook["namespaceSelector"]["matchExpressions"] == [
        {"key": "modelway.io/inject", "operator": "In", "values": ["enabled"]},
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [NS]},
    ]
    assert hook["objectSelector"]["matchExpressions"] == [
        {"key": "modelway.io/inject", "operator": "NotIn", "values": ["false"]}
    ]
    assert hook["clientConfig"]["service"] == {
        "name": "modelway-controller",
        "namespace": NS,
        "path": "/inject",
        "port": 443,
    }
    assert "caBundle" not in hook["clientConfig"]  # the controller keeps it


def test_sidecar_values_reach_the_inject_config(helm_offline: Helm) -> None:
    docs = render(
        helm_offline,
        "sidecar.image.tag=9.9.9",
        "sidecar.resources.limits.memory=300Mi",
        "otlp.endpoint=http://otel.observability:4318",
        "sidecar.ports.admin=16020",
    )
    config = yaml.safe_load(docs["ConfigMap", "modelway-inject"]["data"]["sidecar.yaml"])
    assert config["image"] == "ghcr.io/modelway/modelway:9.9.9"
    assert config["resources"]["limits"]["memory"] == "300Mi"
    assert config["otlpEndpoint"] == "http://otel.observability:4318"
    assert config["adminPort"] == 16020
    assert config["controllerURL"] == f"https://modelway-controller.{NS}.svc:15012"
    default = yaml.safe_load(render(helm_offline)["ConfigMap", "modelway-inject"]["data"]["sidecar.yaml"])
    checksum = "checksum/inject-config"
    assert (
        docs["Deployment", "modelway-controller"]["spec"]["template"]["metadata"]["annotations"][checksum]
        != render(helm_offline)["Deployment", "modelway-controller"]["spec"]["template"]["metadata"]["annotations"][
            checksum
        ]
    )
    assert default["image"] == "ghcr.io/modelway/modelway:0.1.0"


def test_the_access_log_values_reach_the_inject_config(helm_offline: Helm) -> None:
    default = yaml.safe_load(render(helm_offline)["ConfigMap", "modelway-inject"]["data"]["sidecar.yaml"])
    assert (default["accessLog"], default["accessLogSample"]) == (True, 1)
    docs = render(helm_offline, "sidecar.accessLog.enabled=false", "sidecar.accessLog.sample=0.1")
    config = yaml.safe_load(docs["ConfigMap", "modelway-inject"]["data"]["sidecar.yaml"])
    assert (config["accessLog"], config["accessLogSample"]) == (False, 0.1)
    with pytest.raises(Exception, match="sample"):
        render(helm_offline, "sidecar.accessLog.sample=2")  # the chart's schema says 0 to 1


def test_the_backpressure_values_reach_the_inject_config(helm_offline: Helm) -> None:
    default = yaml.safe_load(render(helm_offline)["ConfigMap", "modelway-inject"]["data"]["sidecar.yaml"])
    bounds = ("maxInFlightPerBackend", "maxInFlightPerRoute", "maxQueued", "queueWaitSeconds")
    assert [default[k] for k in bounds] == [256, 512, 128, 2]
    sets = [f"sidecar.backpressure.{k}={v}" for k, v in zip(bounds, (8, 0, 3, "0.5"), strict=True)]
    config = yaml.safe_load(render(helm_offline, *sets)["ConfigMap", "modelway-inject"]["data"]["sidecar.yaml"])
    assert [config[k] for k in bounds] == [8, 0, 3, 0.5]
    with pytest.raises(Exception, match="maxQueued"):
        render(helm_offline, "sidecar.backpressure.maxQueued=-1")  # the chart's schema says 0 or more


def test_sampling_and_content_capture_reach_controller_and_sidecars(helm_offline: Helm) -> None:
    docs = render(
        helm_offline,
        "otlp.sampler=parentbased_traceidratio",
        "otlp.samplerArg=0.25",
        "otlp.captureMessageContent=true",
        "otlp.metricExportIntervalSeconds=15",
    )
    wanted = {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true",
        "OTEL_METRIC_EXPORT_INTERVAL": "15000",
    }
    config = yaml.safe_load(docs["ConfigMap", "modelway-inject"]["data"]["sidecar.yaml"])
    assert config["otelEnv"] == wanted
    (container,) = docs["Deployment", "modelway-controller"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert {k: env.get(k) for k in wanted} == wanted
    default = yaml.safe_load(render(helm_offline)["ConfigMap", "modelway-inject"]["data"]["sidecar.yaml"])
    assert default["otelEnv"]["OTEL_TRACES_SAMPLER"] == "parentbased_always_on"
    assert "OTEL_TRACES_SAMPLER_ARG" not in default["otelEnv"]


def test_cert_manager_instead_of_own_certs(helm_offline: Helm) -> None:
    docs = render(helm_offline, "certificates.certManager.enabled=true")
    serving = docs["Certificate", "modelway-serving"]["spec"]
    assert serving["secretName"] == "modelway-tls"
    assert f"modelway-controller.{NS}.svc" in serving["dnsNames"]
    assert ("Issuer", "modelway-ca") in docs and ("Secret", "modelway-certs") not in docs
    hook = docs["MutatingWebhookConfiguration", "modelway-sidecar-injector"]
    assert hook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{NS}/modelway-serving"
    args = docs["Deployment", "modelway-controller"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--tls-cert=/etc/modelway/tls/tls.crt" in args and not any(a.startswith("--cert-secret") for a in args)
    # No Secret writes and no webhook patching: cert-manager does both.
    assert not any(r[1] == "secrets" for r in rules(docs["Role", "modelway-controller"]))
    assert not any(r[1] == "mutatingwebhookconfigurations" for r in rules(docs["ClusterRole", "modelway-controller"]))
    own = render(
        helm_offline,
        "certificates.certManager.enabled=true",
        "certificates.certManager.issuerRef.name=corp-ca",
        "certificates.certManager.issuerRef.kind=ClusterIssuer",
    )
    assert own["Certificate", "modelway-serving"]["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer"}
    assert ("Issuer", "modelway-ca") not in own


def test_injection_off_and_one_replica(helm_offline: Helm) -> None:
    docs = render(helm_offline, "injection.enabled=false", "controller.replicas=1")
    kinds = {kind for kind, _ in docs}
    assert "MutatingWebhookConfiguration" not in kinds and "PodDisruptionBudget" not in kinds
    assert ("ConfigMap", "modelway-inject") not in docs
    args = docs["Deployment", "modelway-controller"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any(a.startswith(("--inject-config", "--webhook-config-name")) for a in args)


# --- where limits are counted: the chart-run Redis, or an existing one ---------------


def controller_container(docs: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = docs["Deployment", "modelway-controller"]["spec"]["template"]["spec"][
        "containers"
    ]
    (container,) = containers
    return container


def limits_env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"] if "LIMITS" in e["name"]}


def test_without_redis_values_each_sidecar_counts_alone(helm_offline: Helm) -> None:
    docs = render(helm_offline)
    container = controller_container(docs)
    assert limits_env(container) == {}
    assert not any(a.startswith("--limits") for a in container["args"])
    assert not [key for key in docs if key[1] == "modelway-redis"]


def test_the_chart_runs_one_redis_locked_down_and_the_controller_gets_its_url(helm_offline: Helm) -> None:
    docs = render(helm_offline, "redis.enabled=true")
    deploy = docs["Deployment", "modelway-redis"]
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["strategy"] == {"type": "Recreate"}  # never two Redis splitting the counters
    pod = deploy["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "limits-redis"  # what a NetworkPolicy selects
    assert deploy["spec"]["selector"]["matchLabels"].items() <= labels.items()
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    assert spec["automountServiceAccountToken"] is False
    (redis,) = spec["containers"]
    assert redis["image"] == "docker.io/library/redis:7.2.10-alpine"  # a pinned tag, never latest
    sc = redis["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsNonRoot"] is True
    assert set(redis["resources"]) == {"requests", "limits"}
    args = redis["args"]
    flags = dict(zip(args[::2], args[1::2], strict=True))
    assert flags["--save"] == "" and flags["--appendonly"] == "no"  # nothing on disk
    assert flags["--maxmemory-policy"] == "noeviction"  # a full Redis refuses; it never drops a budget
    assert flags["--requirepass"] == "$(REDIS_PASSWORD)"
    (password_env,) = redis["env"]
    assert password_env["valueFrom"]["secretKeyRef"] == {"name": "modelway-redis", "key": "password"}
    assert not [v for v in spec["volumes"] if "persistentVolumeClaim" in v]

    service = docs["Service", "modelway-redis"]["spec"]
    assert service["selector"].items() <= labels.items()
    assert [(p["port"], p["targetPort"]) for p in service["ports"]] == [(6379, "redis")]

    secret = docs["Secret", "modelway-redis"]["data"]
    password = base64.b64decode(secret["password"]).decode()
    assert len(password) >= 32
    url = base64.b64decode(secret["url"]).decode()
    assert url == f"redis://:{password}@modelway-redis.{NS}.svc:6379/0"

    container = controller_container(docs)
    assert limits_env(container) == {
        "MODELWAY_LIMITS_REDIS_URL": {"secretKeyRef": {"name": "modelway-redis", "key": "url"}}
    }
    assert "--limits-timeout=0.1" in container["args"]
    assert not any(password in a for a in container["args"] + args)
    # One password per render: Redis and the controller roll together when it changes.
    checksum = "checksum/limits-redis"
    controller_pod = docs["Deployment", "modelway-controller"]["spec"]["template"]["metadata"]
    assert controller_pod["annotations"][checksum] == pod["metadata"]["annotations"][checksum]


def test_the_chart_run_redis_image_can_be_pinned_by_digest(helm_offline: Helm) -> None:
    digest = "sha256:" + "ab" * 32
    docs = render(helm_offline, "redis.enabled=true", f"redis.image.digest={digest}")
    (redis,) = docs["Deployment", "modelway-redis"]["spec"]["template"]["spec"]["containers"]
    assert redis["image"] == f"docker.io/library/redis:7.2.10-alpine@{digest}"


def test_an_existing_redis_named_by_a_secret(helm_offline: Helm) -> None:
    docs = render(helm_offline, "redis.existingSecret=limits-redis", "redis.timeoutSeconds=0.05")
    container = controller_container(docs)
    assert limits_env(container) == {
        "MODELWAY_LIMITS_REDIS_URL": {"secretKeyRef": {"name": "limits-redis", "key": "url"}}
    }
    assert "--limits-timeout=0.05" in container["args"]
    assert not [key for key in docs if key[1] == "modelway-redis"]  # the chart runs none
    cluster = render(
        helm_offline, "redis.existingSecret=limits-redis", "redis.existingSecretKey=redis-url", "redis.cluster=true"
    )
    assert limits_env(controller_container(cluster)) == {
        "MODELWAY_LIMITS_REDIS_URL": {"secretKeyRef": {"name": "limits-redis", "key": "redis-url"}},
        "MODELWAY_LIMITS_REDIS_CLUSTER": "true",
    }


def test_an_existing_redis_by_url_sentinel_included(helm_offline: Helm) -> None:
    sentinel = "redis+sentinel://sentinel-0.redis:26379,sentinel-1.redis:26379/mymaster/0"
    docs = render(helm_offline, "redis.url=" + sentinel.replace(",", "\\,"))  # --set splits on a bare comma
    assert limits_env(controller_container(docs)) == {"MODELWAY_LIMITS_REDIS_URL": sentinel}
    assert ("Deployment", "modelway-redis") not in docs


@pytest.mark.parametrize(
    ("values", "says"),
    [
        (["redis.url=redis://:s3cret@redis.example:6379/0"], "redis.existingSecret"),
        (["redis.enabled=true", "redis.url=redis://redis.example:6379/0"], "set only one of"),
        (["redis.enabled=true", "redis.existingSecret=limits-redis"], "set only one of"),
        (["redis.enabled=true", "redis.cluster=true"], "one node"),
        (["redis.url=http://redis.example:6379"], "/redis/url"),
        (["redis.timeoutSeconds=0"], "timeoutSeconds"),
        (["redis.enabled=true", "redis.image.tag="], "tag"),
    ],
)
def test_redis_values_that_cannot_work_fail_the_install(helm_offline: Helm, values: list[str], says: str) -> None:
    with pytest.raises(CommandFailed) as failed:
        render(helm_offline, *values)
    assert says in failed.value.stderr
    assert "s3cret" not in failed.value.stderr  # the refusal does not echo the password


def test_the_notes_say_where_limits_are_counted(helm: Helm) -> None:
    """(helm prints the notes only on install, and a client dry run still asks an API server.)"""

    def notes(*sets: str) -> str:
        args = [a for s in sets for a in ("--set", s)]
        out = helm("install", "modelway", str(CHART), "--namespace", NS, "--dry-run=client", *args).stdout
        return out.split("NOTES:", 1)[1]

    assert "by each sidecar alone" in notes()
    assert "modelway-redis" in notes("redis.enabled=true")
    assert "limits-redis" in notes("redis.existingSecret=limits-redis")
