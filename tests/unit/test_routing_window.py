"""Routing by the request's size, pure: rules matching estimated input tokens, backends whose
context window the request cannot fit skipped, and the refusal when none fits."""

import pytest
from multidict import CIMultiDict

from controller.api import parse_resource
from controller.compile_provider import judge_provider
from controller.compile_route import compile_route
from proxy.routing.table import NoMatchingRule, RoutingTable
from proxy.routing.window import ContextWindowExceeded, RequestSize, Window, estimated_input_tokens
from proxy.snapshot import parse_snapshot

SNAPSHOT = parse_snapshot(
    {
        "providers": [
            {
                "name": "small",
                "type": "openai",
                "baseUrl": "http://small/v1",
                "models": {"mini": {"contextWindow": 8000, "maxOutputTokens": 1000}},
            },
            {
                "name": "big",
                "type": "openai",
                "baseUrl": "http://big/v1",
                "models": {"long": {"contextWindow": 200000}},
            },
            {"name": "plain", "type": "openai", "baseUrl": "http://plain/v1"},
        ],
        "routes": [
            {
                "name": "sized",
                "model": "sized",
                "rules": [
                    {
                        "name": "long-prompts",
                        "matchInputTokens": {"min": 30000},
                        "backends": [{"provider": "big", "model": "long"}],
                    },
                    {"name": "default", "backends": [{"provider": "small", "model": "mini"}]},
                ],
            },
            {
                "name": "failover",
                "model": "failover",
                "rules": [
                    {
                        "backends": [{"provider": "small", "model": "mini"}],
                        "fallbacks": [{"provider": "big", "model": "long"}],
                    }
                ],
            },
            {
                "name": "spread",
                "model": "spread",
                "rules": [
                    {
                        "backends": [
                            {"provider": "small", "model": "mini", "weight": 99},
                            {"provider": "big", "model": "long", "weight": 1},
                        ]
                    }
                ],
            },
            {"name": "tiny", "model": "tiny", "rules": [{"backends": [{"provider": "small", "model": "mini"}]}]},
            {
                "name": "unknown-window",
                "model": "unknown-window",
                "rules": [
                    {
                        "backends": [{"provider": "small", "model": "mini"}],
                        "fallbacks": [{"provider": "plain", "model": "any"}],
                    }
                ],
            },
        ],
    }
)
TABLE = RoutingTable.build(SNAPSHOT)
NO_HEADERS: CIMultiDict[str] = CIMultiDict()


def keys(plan):
    return [c.backend.key for c in plan.candidates]


def test_the_estimate_is_the_body_bytes_over_four_rounded_up():
    assert [estimated_input_tokens(n) for n in (0, 1, 4, 5, 400_000)] == [0, 1, 1, 2, 100_000]


def test_a_window_counts_the_requested_output_capped_by_the_models_cap():
    window = Window(8000, max_output=1000)
    assert window.fits(7000, None)  # 7000 + its 1000 cap
    assert not window.fits(7001, None)
    assert window.fits(7500, 500)  # the request asks for less than the cap
    assert window.fits(7000, 50_000)  # it cannot write more than its cap anyway
    assert Window(8000).fits(8000, None)  # no cap, no output asked: the input alone


def test_a_long_prompt_goes_to_the_rule_matching_its_size_and_a_short_one_to_the_default():
    long_plan = TABLE.plan("sized", NO_HEADERS, draw=lambda: 0.5, size=RequestSize(input_tokens=50_000))
    short_plan = TABLE.plan("sized", NO_HEADERS, draw=lambda: 0.5, size=RequestSize(input_tokens=500))
    assert (long_plan.rule.name, keys(long_plan)) == ("long-prompts", ["big/long"])
    assert (short_plan.rule.name, keys(short_plan)) == ("default", ["small/mini"])
    assert short_plan.unfit == frozenset()


def test_a_rule_matching_size_does_not_match_a_request_that_was_not_measured():
    plan = TABLE.plan("sized", NO_HEADERS, draw=lambda: 0.5)
    assert plan.rule.name == "default"


def test_a_backend_too_small_for_the_prompt_is_marked_and_its_fallback_follows():
    plan = TABLE.plan("failover", NO_HEADERS, draw=lambda: 0.5, size=RequestSize(input_tokens=20_000))
    assert keys(plan) == ["small/mini", "big/long"]
    assert plan.unfit == frozenset({"small/mini"})  # the attempt stage skips it, reason context_window


def test_the_weighted_pick_leaves_out_backends_the_prompt_cannot_fit():
    for draw in (0.0, 0.5, 0.99):
        plan = TABLE.plan("spread", NO_HEADERS, draw=lambda d=draw: d, size=RequestSize(input_tokens=20_000))
        assert keys(plan) == ["big/long"]
    short = TABLE.plan("spread", NO_HEADERS, draw=lambda: 0.5, size=RequestSize(input_tokens=100))
    assert keys(short) == ["small/mini"]  # by weight, as without windows


def test_a_requested_output_that_would_overflow_the_window_skips_it():
    fits_alone = RequestSize(input_tokens=7500, requested_output=400)
    overflows = RequestSize(input_tokens=7500, requested_output=900)
    assert TABLE.plan("failover", NO_HEADERS, draw=lambda: 0.5, size=fits_alone).unfit == frozenset()
    assert TABLE.plan("failover", NO_HEADERS, draw=lambda: 0.5, size=overflows).unfit == {"small/mini"}


def test_when_no_backend_fits_the_refusal_names_the_estimate_and_the_largest_window():
    with pytest.raises(ContextWindowExceeded) as caught:
        TABLE.plan("failover", NO_HEADERS, draw=lambda: 0.5, size=RequestSize(input_tokens=250_000))
    assert "250000 input tokens" in str(caught.value) and "200000 tokens" in str(caught.value)
    assert caught.value.largest == 200_000


def test_a_backend_whose_window_is_unknown_always_fits():
    plan = TABLE.plan("unknown-window", NO_HEADERS, draw=lambda: 0.5, size=RequestSize(input_tokens=10_000_000))
    assert keys(plan) == ["small/mini", "plain/any"] and plan.unfit == {"small/mini"}


def test_no_size_is_needed_when_no_rule_or_window_reads_it():
    plain = parse_snapshot(
        {
            "providers": [{"name": "p", "type": "openai", "baseUrl": "http://p/v1"}],
            "routes": [{"name": "r", "model": "m", "rules": [{"backends": [{"provider": "p", "model": "x"}]}]}],
        }
    )
    assert not RoutingTable.build(plain).needs_size
    assert TABLE.needs_size


def test_no_matching_rule_names_the_estimate():
    table = RoutingTable.build(
        parse_snapshot(
            {
                "providers": [{"name": "p", "type": "openai", "baseUrl": "http://p/v1"}],
                "routes": [
                    {
                        "name": "r",
                        "model": "m",
                        "rules": [{"matchInputTokens": {"max": 10}, "backends": [{"provider": "p", "model": "x"}]}],
                    }
                ],
            }
        )
    )
    with pytest.raises(NoMatchingRule, match="estimated 11 input tokens"):
        table.plan("m", NO_HEADERS, draw=lambda: 0.5, size=RequestSize(input_tokens=11))


def test_a_token_range_with_min_above_max_is_refused():
    with pytest.raises(Exception, match="above max"):
        parse_snapshot(
            {
                "providers": [{"name": "p", "type": "openai", "baseUrl": "http://p/v1"}],
                "routes": [
                    {
                        "name": "r",
                        "model": "m",
                        "rules": [
                            {"matchInputTokens": {"min": 10, "max": 5}, "backends": [{"provider": "p", "model": "x"}]}
                        ],
                    }
                ],
            }
        )


def test_the_controller_compiles_windows_and_size_matches():
    provider = parse_resource(
        {
            "kind": "ModelProvider",
            "metadata": {"name": "big", "namespace": "team"},
            "spec": {
                "type": "openai",
                "models": [
                    {"name": "long", "contextWindow": 200000, "maxOutputTokens": 16384},
                    {"name": "priced", "inputPricePerMillion": 1, "outputPricePerMillion": 2},
                ],
            },
        }
    )
    route = parse_resource(
        {
            "kind": "ModelRoute",
            "metadata": {"name": "chat", "namespace": "team"},
            "spec": {
                "model": "chat",
                "rules": [
                    {
                        "name": "long",
                        "matches": {"inputTokens": {"min": 30000}},
                        "backends": [{"provider": "big", "model": "long"}],
                    },
                    {"name": "default", "backends": [{"provider": "big", "model": "priced"}]},
                ],
            },
        }
    )
    compiled = judge_provider(provider, {}).provider
    assert compiled is not None
    assert set(compiled.models) == {"long"}  # a model that declares no window is not listed
    assert compiled.models["long"].context_window == 200000
    assert compiled.models["long"].max_output_tokens == 16384
    rules = compile_route(route).rules
    assert rules[0].match_input_tokens is not None and rules[0].match_input_tokens.min == 30000
    assert rules[1].match_input_tokens is None


def test_a_rule_matching_only_on_size_is_not_a_catch_all():
    spec = {
        "model": "chat",
        "rules": [
            {"name": "long", "matches": {"inputTokens": {"min": 1}}, "backends": [{"provider": "p", "model": "a"}]},
            {"name": "default", "backends": [{"provider": "p", "model": "b"}]},
        ],
    }
    parse_resource({"kind": "ModelRoute", "metadata": {"name": "r", "namespace": "n"}, "spec": spec})
    with pytest.raises(Exception, match="min or max"):
        parse_resource(
            {
                "kind": "ModelRoute",
                "metadata": {"name": "r", "namespace": "n"},
                "spec": {**spec, "rules": [{**spec["rules"][0], "matches": {"inputTokens": {}}}, spec["rules"][1]]},
            }
        )


def test_counting_tokens_matches_rules_by_size_but_is_never_refused_for_a_window():
    huge = RequestSize(input_tokens=250_000)
    plan = TABLE.plan("failover", NO_HEADERS, draw=lambda: 0.5, size=huge, fit=False)
    assert keys(plan) == ["small/mini", "big/long"] and plan.unfit == frozenset()
    assert TABLE.plan("sized", NO_HEADERS, draw=lambda: 0.5, size=huge, fit=False).rule.name == "long-prompts"
