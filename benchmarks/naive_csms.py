"""The reference: an OCPP 1.6 central system written the way the `ocpp` library's README
shows it, by a user who needs BootNotification, StatusNotification, Heartbeat and MeterValues
answered. It stores nothing (so it is the upper bound of what such code can do), and it is
what `benchmarks/fleet.py` compares cocharge with.

    python benchmarks/naive_csms.py [--port 9100]   # default: a free port, printed
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from datetime import UTC, datetime

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint as Cp
from ocpp.v16 import call_result
from ocpp.v16.enums import Action, RegistrationStatus


def now() -> str:
    return datetime.now(UTC).isoformat()


class ChargePoint(Cp):
    @on(Action.boot_notification)
    async def on_boot_notification(self, charge_point_vendor: str, charge_point_model: str,
                                   **kwargs: object) -> call_result.BootNotification:
        return call_result.BootNotification(current_time=now(), interval=300,
                                            status=RegistrationStatus.accepted)

    @on(Action.heartbeat)
    async def on_heartbeat(self) -> call_result.Heartbeat:
        return call_result.Heartbeat(current_time=now())

    @on(Action.status_notification)
    async def on_status_notification(self, **kwargs: object) -> call_result.StatusNotification:
        return call_result.StatusNotification()

    @on(Action.meter_values)
    async def on_meter_values(self, **kwargs: object) -> call_result.MeterValues:
        return call_result.MeterValues()


async def on_connect(websocket: websockets.ServerConnection) -> None:
    charge_point_id = websocket.request.path.strip("/").split("/")[-1]
    cp = ChargePoint(charge_point_id, websocket)
    try:
        await cp.start()
    except websockets.ConnectionClosed:
        pass


async def main(port: int) -> None:
    logging.getLogger("ocpp").setLevel(logging.WARNING)
    async with websockets.serve(on_connect, "127.0.0.1", port, subprotocols=["ocpp1.6"],
                                compression=None, backlog=4096) as server:
        port = next(iter(server.sockets)).getsockname()[1]  # --port 0: a free one
        print(f"naive CSMS on {port}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    asyncio.run(main(parser.parse_args().port))
