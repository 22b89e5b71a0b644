"""``mirror serve`` as a user runs it: the bind rule, start, probes, stop on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys

import aiohttp


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIRROR_")}
    env["MIRROR_GRPC_PORT"] = "0"  # never the shared default 50051
    env.update(extra)
    return env


async def run_serve(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mirror",
        "serve",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )


async def test_open_api_refuses_a_public_address_in_one_line(database_url: str) -> None:
    process = await run_serve("--host", "0.0.0.0", "--database-url", database_url, env=child_env())
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 2
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert "MIRROR_API_TOKENS" in lines[0] and "--insecure" in lines[0]


async def test_tokens_allow_a_public_address_and_a_bad_database_is_one_line() -> None:
    env = child_env(MIRROR_API_TOKENS="t0ken:admin")
    process = await run_serve(
        "--host",
        "0.0.0.0",
        "--port",
        "0",
        "--database-url",
        "postgresql://nobody@127.0.0.1:1/none",
        env=env,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 3  # the database is unavailable
    text = stderr.decode()
    assert text.startswith(
        "mirror: database unavailable: cannot connect to PostgreSQL at "
        "host 127.0.0.1, port 1, database none, user nobody: "
    )
    assert len(text.strip().splitlines()) == 1 and "t0ken" not in text


async def announced(process: asyncio.subprocess.Process, pattern: str) -> str:
    """What ``serve`` printed on stderr for ``pattern``'s group (its address), read as it starts."""
    assert process.stderr is not None
    for _ in range(200):
        line = (await asyncio.wait_for(process.stderr.readline(), timeout=60)).decode()
        match = re.search(pattern, line)
        if match:
            return match.group(1)
        assert line, "serve exited before listening"
    raise AssertionError(f"serve never printed {pattern!r}")


async def test_serve_answers_and_stops_on_sigterm(database_url: str) -> None:
    process = await run_serve("--port", "0", "--database-url", database_url, env=child_env())
    try:
        url = await announced(process, r"listening on (http://\S+)")
        assert url.startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/readyz") as response:
                assert response.status == 200
            async with session.get(f"{url}/container-registry/v1/images") as response:
                assert response.status == 400
                assert (await response.json())["code"] == 3
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_serve_stops_cleanly_on_a_sigterm_as_soon_as_it_announces_http(
    database_url: str,
) -> None:
    """The signal lands the moment the HTTP address is printed, while the gRPC listener
    may still be starting: the handlers are in place by then, so the server still stops
    cleanly (exit 0) and says where it listened, instead of dying of the signal."""
    process = await run_serve(
        "--port", "0", "--grpc-port", "0", "--database-url", database_url, env=child_env()
    )  # fmt: skip
    try:
        await announced(process, r"listening on (http://\S+)")
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_serve_answers_grpc_on_its_grpc_port(database_url: str) -> None:
    """``--grpc-port`` beside the HTTP port: health SERVING, a List's validation error, SIGTERM."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from yandex.cloud.containerregistry.v1 import image_service_pb2, image_service_pb2_grpc

    process = await run_serve(
        "--port", "0", "--grpc-port", "0", "--database-url", database_url, env=child_env()
    )
    try:
        address = await announced(process, r"gRPC API on (\S+)")
        assert address.startswith("127.0.0.1:")
        async with grpc.aio.insecure_channel(address) as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest()
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            images = image_service_pb2_grpc.ImageServiceStub(channel)
            try:
                await images.List(image_service_pb2.ListImagesRequest())
                raise AssertionError("a scopeless List must fail")
            except grpc.aio.AioRpcError as exc:
                assert exc.code() is grpc.StatusCode.INVALID_ARGUMENT
                assert "one of repositoryName, registryId or folderId" in (exc.details() or "")
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
