"""Diagnostics and logs: the station uploads to the gateway's endpoint with a one-time token;
the file is stored with its request, its status follows the station's notifications."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select

from cocharge.gateway.operator_client import send_request
from cocharge.stations import registry
from cocharge.store.schema import log_uploads
from tests.conftest import register, simulated


async def ask(node: Any, station: str, command: str, **args: Any) -> dict[str, Any]:
    return await send_request(node.engine, {"command": command, "station": station,
                                            "args": args})


async def until_uploaded(node: Any, request_id: int) -> dict[str, Any]:
    for _ in range(200):
        [row] = [r for r in await registry.list_uploads(node.engine) if r["id"] == request_id]
        if row["received_at"] and row["status"] == "Uploaded":
            return row
        await asyncio.sleep(0.05)
    raise AssertionError(f"request {request_id} not uploaded: {row}")


@pytest.mark.parametrize("protocol,command,kind", [("1.6", "get-diagnostics", "diagnostics"),
                                                   ("2.0.1", "get-log", "log")])
async def test_a_requested_file_is_uploaded_stored_and_retrievable(node, protocol, command,
                                                                   kind):
    await register(node, "WB1")
    async with simulated(node, "WB1", protocol):
        answer = await ask(node, "WB1", command)
        assert answer["ok"] and answer["accepted"], answer
        request_id = answer["response"]["requestId"]
        row = await until_uploaded(node, request_id)
        assert row["kind"] == kind and row["filename"].startswith("WB1-")
        name, content = await registry.upload_content(node.engine, request_id)
        assert name == row["filename"] and row["size"] == len(content)
        assert b"WB1 connector 1" in content


async def test_the_token_takes_one_file_and_the_endpoint_refuses_junk(node):
    await register(node, "WB1")
    async with simulated(node, "WB1", "2.0.1") as box:
        answer = await ask(node, "WB1", "get-log", log_type="SecurityLog")
        row = await until_uploaded(node, answer["response"]["requestId"])
        assert row["log_type"] == "SecurityLog"
        async with node.engine.connect() as conn:
            token = await conn.scalar(select(log_uploads.c.token).where(
                log_uploads.c.id == row["id"]))
        base = f"http://127.0.0.1:{node.gateway.uploads.port}"
        assert not await box.upload(f"{base}/upload/{token}", "again.log", b"overwrite")  # used
        assert not await box.upload(f"{base}/upload/{'x' * 32}", "a.log", b"?")  # unknown
        _, content = await registry.upload_content(node.engine, row["id"])
        assert content != b"overwrite"


async def test_an_oversized_upload_is_refused_and_nothing_stored(sqlite_url):
    from cocharge.node import running_node
    from tests.conftest import settings

    async with running_node(sqlite_url, settings(upload_max_bytes=1000)) as node:
        await register(node, "WB1")
        _, token = await node.gateway.service.new_upload("WB1", "log", "DiagnosticsLog")
        async with simulated(node, "WB1", "2.0.1") as box:
            base = f"http://127.0.0.1:{node.gateway.uploads.port}"
            assert not await box.upload(f"{base}/upload/{token}", "big.log", b"x" * 5000)
            assert await box.upload(f"{base}/upload/{token}", "small.log", b"x" * 500)
        [row] = await registry.list_uploads(node.engine, "WB1")
        assert (row["size"], row["filename"]) == (500, "small.log")


async def test_get_diagnostics_is_refused_for_201(node):
    await register(node, "WB2")
    async with simulated(node, "WB2", "2.0.1"):
        answer = await ask(node, "WB2", "get-diagnostics")
        assert answer["ok"] is False and "get-log" in answer["message"]
        assert await registry.list_uploads(node.engine, "WB2") == []
