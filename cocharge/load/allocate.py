"""The allocation core: currents for the sessions of one site, under its circuits' limits. Pure.

A site is a tree of circuits; each circuit has a limit in amperes per phase and other load
on it (a building's, measured or a fixed reserve). A session draws the same current on each
circuit phase its charger is wired to (a 3-phase charger on all three, a 1-phase charger on
the one its rotation names), on its circuit and every circuit above. `allocate` returns a
current per session such that

- no circuit phase carries more than its limit (other load and fixed draws included);
- each running session gets at least its minimum (6 A for AC charging) or is paused, and
  paused sessions wait in a queue: higher priority class first, then by arrival;
- what is left is shared max-min fair within a priority class, classes in order (booked
  member, then the charger's owner, then guests): a session gets less than its maximum only
  when a circuit phase it uses is full and no session of its class there has more.

Max-min fairness by progressive filling: every unfrozen session of a class rises to a common
level L (clamped to its own minimum and maximum); the circuit phase that fills first at the
lowest level binds, its sessions freeze there, and the others rise on. Each circuit phase
keeps its unfrozen sessions as counts per (min, max) pair, so the level where it fills is
computed over a few distinct pairs, not over its sessions: a site of 500 chargers on a
three-level tree allocates in a few milliseconds (benchmarks/allocation.py).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field

PHASES = 3
MIN_CURRENT_A = 6.0  # IEC 61851: the lowest current an AC charger may offer
_EPS = 1e-9


class SiteError(ValueError):
    """A circuit tree that cannot be allocated (unknown parent, a cycle)."""


@dataclass(frozen=True)
class Circuit:
    id: str
    parent: str | None
    limit_a: float  # per phase
    # Load on the circuit's phases that is not the sessions' (measured, or a fixed reserve).
    other_a: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Demand:
    """What a session can draw, and how it ranks."""

    key: Hashable
    circuit: str
    phases: tuple[int, ...] = (0, 1, 2)  # the circuit phases (0 = L1) the charger draws from
    min_a: float = MIN_CURRENT_A
    max_a: float = 32.0
    priority: int = 2  # 0 booked member, 1 the charger's owner, 2 guest
    arrived: float = 0.0  # ordering within a class (seconds, any epoch)
    # Drawn whatever we decide (an offline station's last allocation): counted, not allocated.
    fixed_a: float | None = None


@dataclass
class Allocation:
    current_a: dict[Hashable, float] = field(default_factory=dict)  # 0 = paused / fixed
    paused: list[Hashable] = field(default_factory=list)  # the queue, first served first
    # Per (circuit, phase): the current the allocation and the fixed draws put on it.
    drawn_a: dict[tuple[str, int], float] = field(default_factory=dict)


def floor_tenth(value: float) -> float:
    """Down to 0.1 A (a profile's resolution): rounding never adds current."""
    return math.floor(value * 10 + 1e-6) / 10


def paths(circuits: Iterable[Circuit]) -> dict[str, list[str]]:
    """Each circuit with the circuits above it (itself first); SiteError for a broken tree."""
    by_id = {c.id: c for c in circuits}
    found: dict[str, list[str]] = {}
    for start in by_id:
        path: list[str] = []
        node: str | None = start
        while node is not None:
            if node in path:
                raise SiteError(f"circuit {start!r}: its parents form a cycle")
            if node not in by_id:
                raise SiteError(f"circuit {path[-1]!r}: parent {node!r} is not a circuit of the site")
            path.append(node)
            node = by_id[node].parent
        found[start] = path
    return found


def _level(pairs: dict[tuple[float, float], int], free: float) -> float:
    """The highest level L such that the rise of these sessions above their minimum,
    sum of count x (clamp(L, min, max) - min), stays within `free` (inf if all fit)."""
    if not pairs:
        return math.inf
    if sum(n * (hi - lo) for (lo, hi), n in pairs.items()) <= free + _EPS:
        return math.inf
    points = sorted({p for pair in pairs for p in pair})
    rise = 0.0  # sum at the previous breakpoint
    prev = points[0]
    for point in points[1:]:
        slope = sum(n for (lo, hi), n in pairs.items() if lo <= prev and hi >= point)
        step = slope * (point - prev)
        if rise + step >= free - _EPS:
            return prev + (free - rise) / slope if slope else prev
        rise += step
        prev = point
    return prev


def allocate(circuits: Sequence[Circuit], demands: Sequence[Demand]) -> Allocation:
    by_id = {c.id: c for c in circuits}
    path_of = paths(circuits)
    cap: dict[tuple[str, int], float] = {
        (c.id, p): c.limit_a - c.other_a[p] for c in circuits for p in range(PHASES)}
    used: dict[tuple[str, int], float] = dict.fromkeys(cap, 0.0)
    result = Allocation()

    known: dict[tuple[str, tuple[int, ...]], list[tuple[str, int]]] = {}

    def constraints(d: Demand) -> list[tuple[str, int]]:
        ks = known.get((d.circuit, d.phases))
        if ks is None:
            if d.circuit not in by_id:
                raise SiteError(f"session {d.key!r}: circuit {d.circuit!r} is not a circuit "
                                "of the site")
            ks = known[(d.circuit, d.phases)] = [(c, p) for c in path_of[d.circuit]
                                                 for p in d.phases]
        return ks

    flexible: list[Demand] = []
    for d in demands:
        if d.fixed_a is not None:
            for k in constraints(d):
                used[k] += d.fixed_a
            result.current_a[d.key] = 0.0
        else:
            flexible.append(d)

    # Admission at the minimum, in queue order: the classes, then arrival.
    admitted: list[tuple[Demand, list[tuple[str, int]], float, float]] = []
    for d in sorted(flexible, key=lambda d: (d.priority, d.arrived, str(d.key))):
        ks = constraints(d)
        high = max(0.0, d.max_a)
        low = min(max(0.0, d.min_a), high)
        if high <= 0:
            result.current_a[d.key] = 0.0  # wants nothing (full, or no power at all)
            continue
        need = low - _EPS
        for k in ks:
            if cap[k] - used[k] < need:
                break
        else:
            for k in ks:
                used[k] += low
            admitted.append((d, ks, low, high))
            continue
        result.current_a[d.key] = 0.0
        result.paused.append(d.key)

    # Progressive filling, class by class.
    for cls in sorted({d.priority for d, *_ in admitted}):
        members = [(d, ks, lo, hi) for d, ks, lo, hi in admitted if d.priority == cls]
        pairs: dict[tuple[str, int], dict[tuple[float, float], int]] = {}
        inside: dict[tuple[str, int], list[int]] = {}
        for i, (_, ks, lo, hi) in enumerate(members):
            for k in ks:
                bucket = pairs.setdefault(k, {})
                bucket[(lo, hi)] = bucket.get((lo, hi), 0) + 1
                inside.setdefault(k, []).append(i)
        frozen: dict[int, float] = {}
        version = dict.fromkeys(pairs, 0)
        heap = [(_level(pairs[k], cap[k] - used[k]), 0, k) for k in pairs]
        heapq.heapify(heap)
        while heap:
            level, seen, k = heapq.heappop(heap)
            if seen != version[k]:
                heapq.heappush(heap, (_level(pairs[k], cap[k] - used[k]), version[k], k))
                continue
            if level == math.inf:
                break
            for i in inside[k]:
                if i in frozen:
                    continue
                _, ks, lo, hi = members[i]
                value = min(hi, max(lo, level))
                frozen[i] = value
                for k2 in ks:
                    bucket = pairs[k2]
                    bucket[(lo, hi)] -= 1
                    if not bucket[(lo, hi)]:
                        del bucket[(lo, hi)]
                    used[k2] += value - lo
                    version[k2] += 1
        for i, (d, ks, lo, hi) in enumerate(members):
            if i in frozen:
                value = frozen[i]
            else:
                value = hi
                for k in ks:
                    used[k] += hi - lo
            result.current_a[d.key] = max(lo, floor_tenth(value))

    for d, ks, _, _ in admitted:
        for k in ks:
            result.drawn_a[k] = result.drawn_a.get(k, 0.0) + result.current_a[d.key]
    for d in demands:
        if d.fixed_a is not None:
            for k in constraints(d):
                result.drawn_a[k] = result.drawn_a.get(k, 0.0) + d.fixed_a
    return result


def safe_shares(circuits: Sequence[Circuit], chargers: dict[Hashable, tuple[str, tuple[int, ...], float]]
                ) -> dict[Hashable, float]:
    """The failsafe: a current per charger (its circuit, phases, own maximum) such that all of
    them drawing it at once keep every circuit phase within its limit, with no other
    information (the connection to us is down). Each circuit phase's limit, less its fixed
    reserve, is split equally between the chargers under it; a charger gets the smallest of
    its circuits' splits, floored to 0.1 A (0 when that is under the minimum: it waits)."""
    path_of = paths(circuits)
    by_id = {c.id: c for c in circuits}
    count: dict[tuple[str, int], int] = {}
    for circuit, phases, _ in chargers.values():
        for c in path_of[circuit]:
            for p in phases:
                count[(c, p)] = count.get((c, p), 0) + 1
    shares: dict[Hashable, float] = {}
    for key, (circuit, phases, own_max) in chargers.items():
        share = own_max
        for c in path_of[circuit]:
            for p in phases:
                room = by_id[c].limit_a - by_id[c].other_a[p]
                share = min(share, room / count[(c, p)])
        share = floor_tenth(max(0.0, share))
        shares[key] = share if share >= MIN_CURRENT_A else 0.0
    return shares
