"""Controller -> sidecar stream: a real sidecar process connected to an in-process controller."""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any

import openai

from controller.api import parse_resource
from proxy.snapshot import STREAM_PATH, snapshot_schema
from tests.harness.certs import CertAuthority
from tests.integration.controller_stack import (
    TOKEN,
    RunningController,
    start_controller,
    stop_controller,
    team_objects,
    wait_until,
)
from tests.integration.sidecar import SidecarProcess


def _objects(openai_url: str, anthropic_url: str, model: str = "gpt-4o") -> list[Any]:
    route = {"model": "chat", "rules": [{"backends": [{"provider": "openai", "model": model}]}]}
    return team_objects(openai_url, anthropic_url, route)


async def _start_controller(
    objects: list[Any], port: int = 0, ssl_context: ssl.SSLContext | None = None
) -> RunningController:
    return await start_controller(objects, port=port, ssl_context=ssl_context)


def _sidecar(url: str, tmp_path, token: str = TOKEN, extra: tuple[str, ...] = ()) -> SidecarProcess:
    token_file = tmp_path / "token"
    token_file.write_text(token)
    return SidecarProcess(
        source_args=[
            "--controller",
            url,
            "--token-file",
            str(token_file),
            *extra,
            "--state-file",
            str(tmp_path / "saved-snapshot.json"),
            "--reconnect-max-seconds",
            "1",
        ]
    )


async def _start(process: SidecarProcess, *, expect_ready: bool = True) -> None:
    await asyncio.to_thread(process.start_process)
    if expect_ready:
        await wait_until(lambda: process.admin("/readyz")[0] == 200)


async def test_a_route_change_reaches_the_sidecar_and_moves_its_next_request(
    tmp_path, fake_openai_process, fake_anthropic_process
):
    running = await _start_controller(_objects(fake_openai_process.base_url, fake_anthropic_process.base_url))
    sidecar = _sidecar(running.url, tmp_path)
    try:
        await _start(sidecar)
        client = openai.AsyncOpenAI(base_url=sidecar.base_url + "/v1", api_key="x", max_retries=0)
        first = await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
        assert first.model == "gpt-4o"
        [connected] = running.controller.sidecars
        assert connected.acked_version == connected.sent_version != ""
        synced = running.controller.route_sync()[("ModelRoute", "team-a", "chat")]
        assert (synced.synced, synced.total) == (1, 1)

        changed = _objects(fake_openai_process.base_url, fake_anthropic_process.base_url)[-1].model_copy(
            update={
                "spec": parse_resource(
                    {
                        "kind": "ModelRoute",
                        "metadata": {"name": "chat", "namespace": "team-a"},
                        "spec": {
                            "model": "chat",
                            "rules": [{"backends": [{"provider": "claude", "model": "claude-sonnet-4-5"}]}],
                        },
                    }
                ).spec
            }
        )
        before = connected.acked_version
        running.store.apply(changed)
        await wait_until(lambda: connected.acked_version not in ("", before))
        second = await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
        assert second.model == "claude-sonnet-4-5"
        _, ready = sidecar.admin("/readyz")
        assert ready["source"] == "controller" and ready["controllerConnected"] is True
        assert ready["version"] == connected.acked_version
        await client.close()
    finally:
        sidecar.stop()
        await stop_controller(running)


async def test_no_valid_token_no_config(tmp_path, fake_openai_process, fake_anthropic_process):
    running = await _start_controller(_objects(fake_openai_process.base_url, fake_anthropic_process.base_url))
    sidecar = _sidecar(running.url, tmp_path, token="stolen-or-made-up")
    try:
        await _start(sidecar, expect_ready=False)
        await wait_until(lambda: "refused the stream: HTTP 401" in sidecar.logs())
        status, body = sidecar.admin("/readyz")
        assert status == 503 and body["controllerConnected"] is False
        assert running.controller.sidecars == set()
        assert "stolen-or-made-up" not in sidecar.logs()
    finally:
        sidecar.stop()
        await stop_controller(running)


async def test_the_sidecar_serves_its_saved_snapshot_across_a_restart_while_the_controller_is_away(
    tmp_path, fake_openai_process, fake_anthropic_process
):
    running = await _start_controller(_objects(fake_openai_process.base_url, fake_anthropic_process.base_url))
    port = running.port
    sidecar = _sidecar(running.url, tmp_path)
    try:
        await _start(sidecar)
        version = sidecar.admin("/readyz")[1]["version"]
        saved = json.loads((tmp_path / "saved-snapshot.json").read_text())
        assert saved["snapshot"]["version"] == version
        assert (tmp_path / "saved-snapshot.json").stat().st_mode & 0o077 == 0  # holds credentials: owner only
        await stop_controller(running)
        sidecar.stop()
        await _start(sidecar)  # the controller is down: it must come up on the saved copy
        status, ready = sidecar.admin("/readyz")
        assert status == 200 and ready["version"] == version and ready["controllerConnected"] is False
        assert ready["snapshotAgeSeconds"] > 0
        client = openai.AsyncOpenAI(base_url=sidecar.base_url + "/v1", api_key="x", max_retries=0)
        reply = await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
        assert reply.model == "gpt-4o"
        await client.close()
        # the controller returns (same port): the sidecar reconnects on its own
        running = await _start_controller(
            _objects(fake_openai_process.base_url, fake_anthropic_process.base_url), port=port
        )
        await wait_until(lambda: sidecar.admin("/readyz")[1].get("controllerConnected") is True, timeout=40)
        await wait_until(lambda: len(running.controller.sidecars) == 1)  # its hello may still be on the way
        [connected] = running.controller.sidecars
        assert connected.acked_version == version  # nothing new to send: it said what it had
        assert running.controller.pushes == 0
    finally:
        sidecar.stop()
        await stop_controller(running)


async def test_the_stream_runs_over_tls_and_a_sidecar_checks_who_it_talks_to(
    tmp_path, fake_openai_process, fake_anthropic_process
):
    ca = CertAuthority(tmp_path / "ca")
    serving = ca.issue("controller", common_name="modelway-controller", hosts=("127.0.0.1",), server=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(serving.cert, serving.key)
    running = await _start_controller(
        _objects(fake_openai_process.base_url, fake_anthropic_process.base_url), ssl_context=context
    )
    (tmp_path / "trusting").mkdir()
    (tmp_path / "wary").mkdir()
    trusting = _sidecar(running.url, tmp_path / "trusting", extra=("--ca-file", str(ca.cert)))
    wary = _sidecar(running.url, tmp_path / "wary")  # system CAs only: must not trust our test CA
    try:
        await _start(trusting)
        assert trusting.admin("/readyz")[1]["controllerConnected"] is True
        await _start(wary, expect_ready=False)
        await wait_until(
            lambda: "CERTIFICATE_VERIFY_FAILED" in wary.logs() or "certificate verify failed" in wary.logs()
        )
        assert wary.admin("/readyz")[0] == 503
    finally:
        trusting.stop()
        wary.stop()
        await stop_controller(running)


async def test_a_sidecar_refusal_reaches_the_route_status_and_is_not_resent(
    tmp_path, monkeypatch, fake_openai_process, fake_anthropic_process
):
    """A controller newer than its sidecars (a field they do not know): they refuse, and say so."""
    import controller.core as core
    from controller.status import desired_statuses

    running = await _start_controller(_objects(fake_openai_process.base_url, fake_anthropic_process.base_url))
    sidecar = _sidecar(running.url, tmp_path)
    try:
        await _start(sidecar)
        good = sidecar.admin("/readyz")[1]["version"]
        real_to_wire = core.to_wire
        monkeypatch.setattr(core, "to_wire", lambda snapshot: {**real_to_wire(snapshot), "futureField": 1})
        changed = _objects(fake_openai_process.base_url, fake_anthropic_process.base_url, model="gpt-4o-mini")[-1]
        running.store.apply(
            changed.model_copy(update={"metadata": changed.metadata.model_copy(update={"generation": 2})})
        )
        [connected] = running.controller.sidecars
        await wait_until(lambda: connected.nack_error != "")
        key = ("ModelRoute", "team-a", "chat")
        sync = running.controller.route_sync()[key]
        assert (sync.synced, sync.total, sync.rejected) == (0, 1, 1)
        assert "futureField" in sync.rejection
        status = desired_statuses(running.controller.judgement, running.controller.route_sync(), running.store.view())[
            key
        ]
        programmed = {c.type: c for c in status.conditions}["Programmed"]
        assert (programmed.status, programmed.reason) == ("False", "SidecarRejected")
        assert "unknown field `futureField`" in programmed.message
        # in words for an operator in the middle of an upgrade: which sidecar image, and what to do
        assert f"this sidecar (snapshot schema {snapshot_schema()}) is older than the controller" in programmed.message
        assert "roll the pods onto the controller's image" in programmed.message
        assert sidecar.admin("/readyz")[1]["version"] == good  # it keeps its last good snapshot
        await running.controller.recompute()  # nothing new: the refused version is not sent again
        await asyncio.sleep(0.3)
        assert sidecar.logs().count("refused snapshot") == 1
    finally:
        sidecar.stop()
        await stop_controller(running)


async def test_an_older_sidecars_refusal_reaches_the_route_status_worded_for_the_operator(
    fake_openai_process, fake_anthropic_process
):
    """A sidecar from before hellos carried a schema, whose refusal says only what msgspec said."""
    import aiohttp

    from controller.status import desired_statuses

    running = await _start_controller(_objects(fake_openai_process.base_url, fake_anthropic_process.base_url))
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(running.url + STREAM_PATH, headers={"authorization": f"Bearer {TOKEN}"}) as ws,
        ):
            await ws.send_json({"type": "hello", "version": "", "someday": {"a key": "this controller lacks"}})
            message = await ws.receive_json(timeout=10)
            assert message["type"] == "snapshot"  # a key it does not know in a message is no reason to refuse
            said = "providers.0: Object contains unknown field `caBundle`"
            await ws.send_json({"type": "nack", "version": message["version"], "error": said, "later": 1})
            [connected] = running.controller.sidecars
            await wait_until(lambda: connected.nack_error != "")
            key = ("ModelRoute", "team-a", "chat")
            statuses = desired_statuses(
                running.controller.judgement, running.controller.route_sync(), running.store.view()
            )
            programmed = {c.type: c for c in statuses[key].conditions}["Programmed"]
            assert (programmed.status, programmed.reason) == ("False", "SidecarRejected")
            assert programmed.message.endswith(
                "refused unknown field `providers.0.caBundle`: this sidecar (an image that reports no snapshot "
                f"schema) is older than the controller (snapshot schema {snapshot_schema()}) that sent it; roll the "
                f"pods onto the controller's image (until then it keeps its last good snapshot); it said: {said}"
            )
    finally:
        await stop_controller(running)
