"""Password guessing, throttled: growing delays, then a lockout, per station and per address.

Every wrong Basic-auth password costs the guesser time. For each station and for each remote
address the guard counts the *distinct* wrong passwords: a few are free (a charger being set
up, a typo), then every further one blocks that key for a delay that doubles with each
failure, and at the lockout count the key is blocked for the lockout time. While a key is
blocked its attempts are answered 429 with Retry-After, without checking the password, so a
guesser gets no answer and costs no scrypt.

What is not guessing is not counted: a charger that retries the same wrong password (it was
changed and the charger still has the old one) is answered 401 at once, without another
scrypt and without counting again; a station's previous good password is recognised as such.
A password already verified since start (held as a keyed fingerprint, never in clear) passes
even a locked key, so a guesser cannot lock a real charger out.

A bounded number of checks run at once for one address (`password_checks_at_once`), one
for one station. The throttle is on failures, not on honest checks: further checks from an
address wait in line for a slot (up to `password_queue_per_address`), so that the 50
chargers of a garage behind one NAT address all get in after a power cut; a check that gets
its slot once its address or station has become blocked is answered 429 without scrypt, so a
guesser's queued attempts cost nothing. A second check for a station already being checked
is answered 429 at once. (`password_checks_at_once` also bounds all checks together, in
StationService.)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import math
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from cocharge.config import GatewaySettings

log = logging.getLogger(__name__)

# Fingerprints of recent wrong passwords kept per key (to answer repeats without scrypt).
_RECENT = 16
# Keys tracked at most; the least recently failed are forgotten first beyond it.
_MAX_KEYS = 200_000


@dataclass
class _Tally:
    failures: int = 0                     # distinct wrong passwords
    blocked_until: float = 0.0
    last_failure: float = 0.0
    locked: bool = False                  # the current block is a lockout
    recent: OrderedDict[bytes, str] = field(default_factory=OrderedDict)  # fingerprint -> hash


@dataclass(frozen=True)
class Lockout:
    """A key (a station or an address) that has just been locked out."""

    scope: str          # station | address
    key: str
    failures: int
    seconds: float


@dataclass(frozen=True)
class Throttle:
    free: int           # distinct wrong passwords without delay
    lockout: int        # ... at which the key is locked out


class AuthGuard:
    def __init__(self, settings: GatewaySettings,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.limits = {"station": Throttle(settings.auth_station_free, settings.auth_station_lockout),
                       "address": Throttle(settings.auth_address_free, settings.auth_address_lockout)}
        self._tallies: dict[str, OrderedDict[str, _Tally]] = {
            "station": OrderedDict(), "address": OrderedDict()}
        self._good: dict[str, bytes] = {}   # station -> fingerprint of its last good password
        self._checking_station: set[str] = set()
        self._checking_address: dict[str, int] = {}
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}  # address -> in line
        self._secret = secrets.token_bytes(32)
        self.lockouts = 0  # lockouts since start

    def fingerprint(self, station: str, password: str) -> bytes:
        return hmac.new(self._secret, f"{station}\0{password}".encode(errors="surrogatepass"),
                        hashlib.sha256).digest()[:16]

    # --- before a check -------------------------------------------------------------------

    def wait_s(self, station: str, address: str) -> float:
        """Seconds before a password for `station` from `address` is checked again (0: now)."""
        now = self.clock()
        wait = 0.0
        for scope, key in (("station", station), ("address", address)):
            tally = self._tallies[scope].get(key)
            if tally is not None:
                if tally.blocked_until > now:
                    wait = max(wait, tally.blocked_until - now)
                elif now - tally.last_failure > self.settings.auth_forget_s:
                    del self._tallies[scope][key]  # quiet for long enough: forgiven
        return wait

    def repeated(self, station: str, fingerprint: bytes, stored_hash: str) -> bool:
        """This password failed against this very hash before: no need to check it again."""
        tally = self._tallies["station"].get(station)
        return tally is not None and tally.recent.get(fingerprint) == stored_hash

    def previous(self, station: str, fingerprint: bytes) -> bool:
        """The station's last good password (it has been changed since): not a guess."""
        return self._good.get(station) == fingerprint

    async def begin(self, station: str, address: str) -> bool:
        """Reserve a check, waiting in line behind this address's checks under way; False
        when this station has one under way or the address's line is full."""
        if station in self._checking_station:
            return False
        if self._checking_address.get(address, 0) < self.settings.password_checks_at_once:
            self._checking_address[address] = self._checking_address.get(address, 0) + 1
            self._checking_station.add(station)
            return True
        line = self._waiting.setdefault(address, deque())
        if len(line) >= self.settings.password_queue_per_address:
            return False
        self._checking_station.add(station)
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        line.append(turn)
        try:
            await turn  # end() hands over its slot
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.end(station, address)  # handed a slot, then cancelled: pass it on
            else:
                self._checking_station.discard(station)
                with contextlib.suppress(ValueError):
                    line.remove(turn)
            raise
        return True

    def end(self, station: str, address: str) -> None:
        self._checking_station.discard(station)
        line = self._waiting.get(address)
        while line:
            turn = line.popleft()
            if not turn.done():
                turn.set_result(None)  # the slot passes to the next in line
                return
        self._waiting.pop(address, None)
        left = self._checking_address.get(address, 0) - 1
        if left > 0:
            self._checking_address[address] = left
        else:
            self._checking_address.pop(address, None)

    # --- after a check --------------------------------------------------------------------

    def succeeded(self, station: str, fingerprint: bytes) -> None:
        self._good[station] = fingerprint
        self._tallies["station"].pop(station, None)

    def failed(self, station: str, address: str, fingerprint: bytes,
               stored_hash: str) -> list[Lockout]:
        """Count a distinct wrong password; the lockouts it caused. The station's previous
        password is remembered as wrong (repeats need no check) but not counted."""
        now = self.clock()
        locked: list[Lockout] = []
        if self.previous(station, fingerprint):
            tally = self._tallies["station"].setdefault(station, _Tally(last_failure=now))
            tally.recent[fingerprint] = stored_hash
            return locked
        for scope, key in (("station", station), ("address", address)):
            tallies = self._tallies[scope]
            tally = tallies.pop(key) if key in tallies else _Tally()
            tallies[key] = tally  # most recently failed last
            if len(tallies) > _MAX_KEYS:
                tallies.popitem(last=False)
            tally.failures += 1
            tally.last_failure = now
            tally.recent[fingerprint] = stored_hash
            if len(tally.recent) > _RECENT:
                tally.recent.popitem(last=False)
            delay, lockout = self._block(scope, tally.failures)
            tally.blocked_until = max(tally.blocked_until, now + delay)
            if lockout:
                tally.locked = True
                self.lockouts += 1
                locked.append(Lockout(scope, key, tally.failures, delay))
        return locked

    def _block(self, scope: str, failures: int) -> tuple[float, bool]:
        limit = self.limits[scope]
        if failures >= limit.lockout:
            return self.settings.auth_lockout_s, True
        if failures <= limit.free:
            return 0.0, False
        delay = self.settings.auth_delay_s * 2 ** (failures - limit.free - 1)
        return min(delay, self.settings.auth_delay_max_s), False

    def locked_out(self) -> list[tuple[str, str, int, float]]:
        """(scope, key, failures, seconds left) of every key locked out now."""
        now = self.clock()
        return [(scope, key, t.failures, t.blocked_until - now)
                for scope, tallies in self._tallies.items() for key, t in tallies.items()
                if t.locked and t.blocked_until > now]


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
