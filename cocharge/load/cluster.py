"""Load management across gateway nodes (issue 32, item 2; docs/load-management.md).

Behind a load balancer a site's chargers connect to any node. Each site has **one owner
node at a time**: a lease in `site_leases`, claimed by a node that holds at least one of the
site's stations when nobody holds it (or its lease ran out, or its holder's node lease did:
that node died) and renewed every second (at most every third of `node_lease_s`). The owner
allocates the whole site:

- the other nodes tell it what their stations of the site report (sessions starting and
  ending, meter readings, a station connecting) over the broker (`P/_nodes/<owner>/load`);
  they write nothing to those stations themselves;
- it reads from the database which node holds each station, and writes profiles to a
  station held elsewhere through that node (`RemoteLink`: the command path between nodes,
  `P/_nodes/<node>/call`).

When the owner dies, the chargers keep what it wrote (allocations valid for
`load_profile_valid_s`, under their failsafe), so the site's limit holds; within the lease
another node takes the site, reads the running sessions from the database, and writes every
station again from its failsafe up.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cocharge.stations import commands as cmd
from cocharge.store.db import utcnow
from cocharge.store.schema import nodes, site_leases, stations
from cocharge.store.sql import among, insert_ignore

log = logging.getLogger(__name__)

# Asks another node to run something and answers (the MQTT bridge's `forward`).
Forward = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
# Tells another node something, no answer (the MQTT bridge's `tell`).
Tell = Callable[[str, dict[str, Any]], None]
NAMES = {kind: name for name, kind in cmd.COMMANDS.items()}


class RemoteLink:
    """A station held by another node, as load management writes to it: its commands go
    through that node (which checks and sends them as it would its own)."""

    def __init__(self, station_id: str, node: str, protocol: str, forward: Forward) -> None:
        self.station_id, self.node, self.protocol = station_id, node, protocol
        self._forward = forward

    async def command(self, command: Any, tx_ref: str | None = None) -> cmd.CommandResult:
        args = {k: v for k, v in dataclasses.asdict(command).items() if v is not None}
        answer = await self._forward(self.node, {
            "kind": "load", "station": self.station_id, "name": NAMES[type(command)],
            "args": args, "tx_ref": tx_ref})
        return cmd.CommandResult(bool(answer["accepted"]), str(answer["status"]),
                                 dict(answer.get("response") or {}))


class SiteOwnership:
    """Which node allocates each site, and the ways to the other nodes."""

    def __init__(self, engine: AsyncEngine, node_id: str, lease_s: float, forward: Forward,
                 tell: Tell) -> None:
        self.engine = engine
        self.node_id = node_id
        self.lease = timedelta(seconds=lease_s)
        self.forward = forward
        self.tell = tell
        self.owners: dict[str, str] = {}  # site -> the node allocating it (as last read)
        self.holders: dict[str, tuple[str, str]] = {}  # station -> (other node, protocol)

    def mine(self, site: str) -> bool:
        """Do we allocate this site? (Nobody known to: not yet, until we claim it.)"""
        return self.owners.get(site) == self.node_id

    def unowned(self, site: str) -> bool:
        return site not in self.owners

    def owner(self, site: str) -> str | None:
        """The other node allocating this site; None when it is ours."""
        found = self.owners.get(site)
        return None if found in (None, self.node_id) else found

    def remote_link(self, station_id: str) -> RemoteLink | None:
        held = self.holders.get(station_id)
        return None if held is None else RemoteLink(station_id, held[0], held[1], self.forward)

    def held_elsewhere(self, station_id: str, node: str, protocol: str | None) -> None:
        """Another node told us it holds this station now (it connected there)."""
        if node != self.node_id:
            self.holders[station_id] = (node, protocol or self.holders.get(
                station_id, (node, "1.6"))[1])

    async def round(self, sites: dict[str, Iterable[str]], local: set[str]) -> set[str]:
        """Claim or renew the sites with a station connected here, read who owns the others
        and which live node holds each station elsewhere; the sites we gained."""
        now = utcnow()
        until = now + self.lease
        wanted = [name for name, ids in sites.items() if local & set(ids)]
        async with self.engine.begin() as conn:
            for name in wanted:
                await conn.execute(insert_ignore(conn, site_leases).values(
                    site=name, node=self.node_id, until=until))
                # Ours to renew; free when its lease ran out or its holder is dead (the
                # node's own lease ran out: its stations are shown offline from then on).
                await conn.execute(update(site_leases).where(and_(
                    site_leases.c.site == name, or_(
                        site_leases.c.node == self.node_id, site_leases.c.until < now,
                        site_leases.c.node.in_(select(nodes.c.id).where(
                            nodes.c.lease_until < now)))))
                    .values(node=self.node_id, until=until))
            rows = (await conn.execute(select(site_leases.c.site, site_leases.c.node,
                                              site_leases.c.until))).all()
            every = {sid for ids in sites.values() for sid in ids}
            held = (await conn.execute(
                select(stations.c.id, stations.c.node, stations.c.protocol)
                .select_from(stations.join(nodes, nodes.c.id == stations.c.node))
                .where(among(conn, stations.c.id, every), stations.c.node != self.node_id,
                       or_(nodes.c.lease_until.is_(None), nodes.c.lease_until > now)))).all()
        before = {name for name in sites if self.mine(name)}
        self.owners = {r.site: r.node for r in rows if r.until > now and r.site in sites}
        self.holders = {r.id: (str(r.node), str(r.protocol or "1.6")) for r in held
                        if r.id not in local}
        gained = {name for name in sites if self.mine(name)} - before
        for name in gained:
            log.info("site %s: allocated by this node now", name)
        return {name for name in gained if name in self.owners}

    async def release(self) -> None:
        """A node that stops hands its sites on at once."""
        async with self.engine.begin() as conn:
            await conn.execute(delete(site_leases).where(site_leases.c.node == self.node_id))
