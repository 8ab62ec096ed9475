"""A quality score sent on a later request, in the `x-modelway-feedback` header, through the real sidecar:
counted in the arm that served the scored request (as `POST /v1/feedback` counts it), never sent on to
a provider, and never a reason to fail the request that carries it."""

from __future__ import annotations

import asyncio

import openai

from controller.experiments.counts import ArmStats
from tests.integration.test_experiments import _name, _objects, _sidecar, _start_stack, _stop, _wait

ARMS = {"gpt-4o": "flaky", "claude-sonnet-4-5": "steady"}  # the arms' backends (test_experiments._objects)


async def test_a_score_header_on_a_later_request_counts_in_the_scored_request_s_arm(
    tmp_path, fake_openai, fake_anthropic
) -> None:
    stack = await _start_stack(_objects(fake_openai.base_url, fake_anthropic.base_url))
    sidecar = _sidecar(stack.url, tmp_path)
    try:
        await asyncio.to_thread(sidecar.start_process)
        await _wait(lambda: sidecar.admin("/readyz")[0] == 200)
        client = openai.AsyncOpenAI(base_url=sidecar.base_url + "/v1", api_key="unused", max_retries=0)

        async def ask(feedback: str | None = None) -> tuple[str, str | None, str | None]:
            headers = {"x-modelway-feedback": feedback} if feedback is not None else {}
            raw = await client.chat.completions.with_raw_response.create(
                model="chat", messages=[{"role": "user", "content": "hi"}], extra_headers=headers
            )
            arm = ARMS[raw.parse().model]
            return raw.headers["x-request-id"], raw.headers.get("x-modelway-feedback-result"), arm

        first, result, first_arm = await ask()
        assert result is None  # no header, no result
        second, result, second_arm = await ask(f"{first}=0.8")
        assert result == "recorded"
        _, result, _ = await ask(f"{first}=0.5, {second}=1, not-ours=1, {second}=great, =3, {second}=nan")
        assert result == "unknown_request_id, recorded, unknown_request_id, invalid, invalid, invalid"
        await client.close()

        received = fake_openai.requests() + fake_anthropic.requests()
        assert len(received) == 3
        assert all("x-modelway-feedback" not in r["headers"] for r in received)

        expected: dict[str, list[float]] = {"flaky": [], "steady": []}
        expected[first_arm].append(0.8)
        expected[second_arm].append(1.0)

        def scored() -> bool:  # the first (0.8) and the second (1): each once, in the arm that served it
            totals = stack.experiments.ledger.totals(_name(stack))
            return all(
                (quality := totals.get(arm, ArmStats()).quality).count == len(scores) and quality.total == sum(scores)
                for arm, scores in expected.items()
                if scores
            )

        await _wait(scored)
    finally:
        sidecar.stop()
        await _stop(stack)
