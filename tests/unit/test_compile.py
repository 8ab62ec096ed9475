import base64

from controller.api import parse_resource
from controller.compile import Workload, compile_workload, judge
from controller.store import ResourceStore
from proxy.snapshot import to_wire


def provider(name, ns="team-a", type_="openai", secret="llm-keys", key="apiKey", **spec):
    body = {"type": type_, **spec}
    if secret:
        body["credentialsRef"] = {"name": secret, "key": key}
    return parse_resource({"kind": "ModelProvider", "metadata": {"name": name, "namespace": ns}, "spec": body})


def route(name, model, backends, ns="team-a", fallbacks=(), selector=None, generation=1):
    spec = {"model": model, "rules": [{"name": "default", "backends": list(backends), "fallbacks": list(fallbacks)}]}
    if selector:
        spec["workloadSelector"] = {"matchLabels": selector}
    return parse_resource(
        {"kind": "ModelRoute", "metadata": {"name": name, "namespace": ns, "generation": generation}, "spec": spec}
    )


def secret(name="llm-keys", ns="team-a", **values):
    data = {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}
    return parse_resource({"kind": "Secret", "metadata": {"name": name, "namespace": ns}, "data": data})


def resources(*items):
    store = ResourceStore()
    for item in items:
        store.apply(item)
    return store.view()


def test_a_workload_gets_its_namespace_routes_with_credentials_decoded():
    view = resources(
        provider("openai"),
        secret(apiKey="sk-team-a"),
        route("chat", "chat", [{"provider": "openai", "model": "gpt-4o"}]),
        provider("openai", ns="team-b", secret="other"),
        secret("other", ns="team-b", apiKey="sk-b"),
        route("chat", "chat", [{"provider": "openai", "model": "gpt-4o-mini"}], ns="team-b"),
    )
    snapshot = compile_workload(judge(view), Workload("team-a"))
    assert [r.model for r in snapshot.routes] == ["chat"]
    assert snapshot.routes[0].name == "team-a/chat"
    assert [(p.name, p.api_key.get_secret_value(), p.base_url) for p in snapshot.providers] == [
        ("team-a.openai", "sk-team-a", "https://api.openai.com/v1")
    ]
    assert "sk-b" not in str(to_wire(snapshot))  # the credentials of another namespace are not sent at all


def test_only_providers_the_routes_use_are_sent():
    view = resources(
        provider("openai"),
        provider("unused"),
        secret(apiKey="k"),
        route("chat", "chat", [{"provider": "openai", "model": "m"}]),
    )
    assert [p.name for p in compile_workload(judge(view), Workload("team-a")).providers] == ["team-a.openai"]


def test_missing_secret_and_key_are_resolvedrefs_false_with_reasons():
    view = resources(
        provider("nokey", secret="absent"),
        provider("wrongkey", key="token"),
        secret(apiKey="k"),
        route("r1", "m1", [{"provider": "nokey", "model": "m"}]),
        route("r2", "m2", [{"provider": "ghost", "model": "m"}]),
    )
    judgement = judge(view)
    nokey = judgement.providers[("ModelProvider", "team-a", "nokey")].resolved_refs
    wrongkey = judgement.providers[("ModelProvider", "team-a", "wrongkey")].resolved_refs
    assert (nokey.ok, nokey.reason) == (False, "SecretNotFound")
    assert (wrongkey.ok, wrongkey.reason) == (False, "SecretKeyNotFound") and "'token'" in wrongkey.message
    r1 = judgement.routes[("ModelRoute", "team-a", "r1")].resolved_refs
    r2 = judgement.routes[("ModelRoute", "team-a", "r2")].resolved_refs
    assert (r1.ok, r1.reason) == (False, "InvalidBackend") and "SecretNotFound" in r1.message
    assert (r2.ok, r2.reason) == (False, "BackendNotFound") and "team-a/ghost" in r2.message
    assert compile_workload(judgement, Workload("team-a")).routes == ()


def test_a_broken_edit_keeps_serving_the_last_good_route():
    good = resources(
        provider("openai"), secret(apiKey="k"), route("chat", "chat", [{"provider": "openai", "model": "gpt-4o"}])
    )
    first = judge(good)
    broken = resources(
        provider("openai"),
        secret(apiKey="k"),
        route("chat", "chat", [{"provider": "typo", "model": "gpt-4o"}], generation=2),
    )
    second = judge(broken, last_good=first.last_good)
    verdict = second.routes[("ModelRoute", "team-a", "chat")]
    assert not verdict.resolved_refs.ok and verdict.generation == 2
    snapshot = compile_workload(second, Workload("team-a"))
    assert snapshot.routes[0].rules[0].backends[0].model == "gpt-4o"
    assert snapshot.version == compile_workload(first, Workload("team-a")).version


def test_a_second_route_for_the_same_model_is_conflicted():
    view = resources(
        provider("openai"),
        secret(apiKey="k"),
        route("a-first", "chat", [{"provider": "openai", "model": "one"}]),
        route("b-second", "chat", [{"provider": "openai", "model": "two"}]),
    )
    judgement = judge(view)
    assert judgement.routes[("ModelRoute", "team-a", "b-second")].accepted.reason == "Conflicted"
    assert compile_workload(judgement, Workload("team-a")).routes[0].rules[0].backends[0].model == "one"


def test_workload_selectors_pick_the_more_specific_route():
    view = resources(
        provider("openai"),
        secret(apiKey="k"),
        route("general", "chat", [{"provider": "openai", "model": "general"}]),
        route("billing", "chat", [{"provider": "openai", "model": "billing"}], selector={"app": "billing"}),
    )
    judgement = judge(view)
    assert judgement.routes[("ModelRoute", "team-a", "billing")].accepted.ok

    def pick(labels):
        return compile_workload(judgement, Workload("team-a", labels=labels)).routes[0].rules[0].backends[0]

    assert pick({"app": "billing"}).model == "billing"
    assert pick({"app": "web"}).model == "general"


def test_durations_become_seconds_and_versions_are_stable():
    view = resources(
        provider("openai"),
        secret(apiKey="k"),
        parse_resource(
            {
                "kind": "ModelRoute",
                "metadata": {"name": "r", "namespace": "team-a"},
                "spec": {
                    "model": "m",
                    "rules": [
                        {
                            "backends": [{"provider": "openai", "model": "x"}],
                            "retry": {"backoffBase": "250ms", "backoffMax": "1m"},
                            "timeouts": {"total": "1m30s", "firstToken": "5s"},
                        }
                    ],
                },
            }
        ),
    )
    snapshot = compile_workload(judge(view), Workload("team-a"))
    rule = snapshot.routes[0].rules[0]
    assert (rule.retry.backoff_base_seconds, rule.retry.backoff_max_seconds) == (0.25, 60.0)
    assert (rule.timeouts.total_seconds, rule.timeouts.first_token_seconds) == (90.0, 5.0)
    assert snapshot.version == compile_workload(judge(view), Workload("team-a")).version


def test_rotating_a_secret_changes_the_version():
    base = [provider("openai"), route("r", "m", [{"provider": "openai", "model": "x"}])]
    one = compile_workload(judge(resources(*base, secret(apiKey="k1"))), Workload("team-a"))
    two = compile_workload(judge(resources(*base, secret(apiKey="k2"))), Workload("team-a"))
    assert one.version != two.version


def test_a_status_only_update_does_not_wake_the_controller():
    calls = []
    store = ResourceStore(on_change=lambda: calls.append(1))
    first = route("r", "m", [{"provider": "p", "model": "x"}])
    store.apply(first)
    bumped = first.model_copy(update={"metadata": first.metadata.model_copy(update={"resource_version": "99"})})
    assert store.apply(bumped) is first  # the source keeps this one too: one copy of the object, not two
    assert len(calls) == 1
    changed = route("r", "m", [{"provider": "p", "model": "y"}])
    assert store.apply(changed) is changed
    assert len(calls) == 2


def test_a_relabelled_namespace_is_a_change():
    """In a cluster every edit has a new resourceVersion: a label or annotation edit alone still counts."""
    store = ResourceStore()
    before = parse_resource(
        {"kind": "Namespace", "metadata": {"name": "team-c", "resourceVersion": "1", "labels": {"env": "dev"}}}
    )
    store.apply(before)
    after = parse_resource(
        {"kind": "Namespace", "metadata": {"name": "team-c", "resourceVersion": "2", "labels": {"env": "prod"}}}
    )
    assert store.apply(after) is after
    assert store.view().namespaces[0].metadata.labels == {"env": "prod"}


def test_a_relist_keeps_the_objects_that_did_not_change():
    """Same objects, same judgement: a re-list (after a 410 Gone) re-judges only what changed."""
    calls = []
    store = ResourceStore(on_change=lambda: calls.append(1))
    kept, edited = (
        route("a", "m", [{"provider": "p", "model": "x"}]),
        route("b", "n", [{"provider": "p", "model": "x"}]),
    )
    store.replace_kind("ModelRoute", [kept, edited])
    relisted = kept.model_copy(update={"metadata": kept.metadata.model_copy(update={"resource_version": "7"})})
    now = store.replace_kind("ModelRoute", [relisted, route("b", "n", [{"provider": "p", "model": "y"}])])
    assert now[("ModelRoute", "team-a", "a")] is kept
    assert store.view().routes[0] is kept and store.view().routes[1] is not edited
    assert len(calls) == 2


def test_a_backend_that_cannot_serve_the_operation_is_resolvedrefs_false():
    embed = parse_resource(
        {
            "kind": "ModelRoute",
            "metadata": {"name": "embed", "namespace": "team-a"},
            "spec": {
                "model": "embed",
                "operation": "embeddings",
                "rules": [{"backends": [{"provider": "claude", "model": "claude-x"}]}],
            },
        }
    )
    view = resources(provider("claude", type_="anthropic"), secret(apiKey="k"), embed)
    verdict = judge(view).routes[("ModelRoute", "team-a", "embed")].resolved_refs
    assert (verdict.ok, verdict.reason) == (False, "UnsupportedOperation")
    assert "type anthropic, which cannot serve embeddings" in verdict.message
