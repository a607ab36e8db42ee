"""A simulated site meter: a building's own load and a PV curve, published over MQTT as a
real site meter's bridge would (docs/load-management.md, "wiring a site meter").

    meter = SiteMeter("mqtt://127.0.0.1:1883", "HOME", pv=[(0, 0), (10, 3000), (20, 0)],
                      house=[(0, 400)], circuit="HOUSE")
    await meter.run(seconds=30)

Curves are (seconds from the start, W) points, linear in between. Each reading goes to
`<prefix>/sites/<site>/pv/set` ({"pv_w", "house_w"}) and, with a circuit, the building's
load to `<prefix>/circuits/<circuit>/load/set` ({"power_w"}).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Sequence

import aiomqtt

from cocharge.mqtt_url import parse_mqtt_url

Curve = Sequence[tuple[float, float]]


def value_at(curve: Curve, t: float) -> float:
    if not curve:
        return 0.0
    if t <= curve[0][0]:
        return curve[0][1]
    for (t0, v0), (t1, v1) in itertools.pairwise(curve):
        if t0 <= t <= t1:
            return v0 + (v1 - v0) * (t - t0) / (t1 - t0) if t1 > t0 else v1
    return curve[-1][1]


class SiteMeter:
    def __init__(self, url: str, site: str, pv: Curve, house: Curve,
                 circuit: str | None = None, interval_s: float = 0.5) -> None:
        self.target = parse_mqtt_url(url)
        self.site, self.pv, self.house, self.circuit = site, pv, house, circuit
        self.interval_s = interval_s
        self.t0 = time.monotonic()
        self.sent = 0

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def surplus_w(self, t: float | None = None) -> float:
        t = self.elapsed() if t is None else t
        return value_at(self.pv, t) - value_at(self.house, t)

    async def run(self, seconds: float) -> None:
        target = self.target
        async with aiomqtt.Client(target.host, target.port, username=target.username,
                                  password=target.password) as client:
            self.t0 = time.monotonic()
            while self.elapsed() < seconds:
                t = self.elapsed()
                pv, house = value_at(self.pv, t), value_at(self.house, t)
                await client.publish(f"{target.prefix}/sites/{self.site}/pv/set", json.dumps(
                    {"v": 1, "pv_w": round(pv), "house_w": round(house)}))
                if self.circuit is not None:
                    await client.publish(f"{target.prefix}/circuits/{self.circuit}/load/set",
                                         json.dumps({"v": 1, "power_w": round(house)}))
                self.sent += 1
                await asyncio.sleep(self.interval_s)
