"""The HTTP API (OpenAPI 3 at /api/openapi.json, readable at /api/docs) and the web console
(/console/), served by `cocharge serve` beside the OCPP listener: the API answers from the
node's live state (which stations this node holds, the sessions it is metering) and sends
commands through the node's own channel, with no second process to keep in step.

Authentication: `Authorization: Bearer cck_...` (or `X-API-Key`), a key made with
`cocharge apikey create`. The console keeps the key in an HttpOnly, SameSite=Strict cookie;
the API accepts that cookie for GET only, so another site cannot make a logged-in browser
send commands.
"""


import csv
import io
import json
import logging
import time
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from cocharge import __version__ as version
from cocharge.api.keys import Principal, authenticate, revoked
from cocharge.api.service import Api, ApiError, parse_time
from cocharge.hours import RuleError, parse_window
from cocharge.settlement import calculator, revenue
from cocharge.settlement.money import MoneyError, parse_price

log = logging.getLogger(__name__)

COOKIE = "cocharge_key"
# Wrong keys from one address before it is told to wait (a key is 256 random bits, so this
# only keeps a guesser from loading the database).
FAILURES_PER_MINUTE = 20


class Guard:
    """Counts failed logins per client address over a sliding minute."""

    def __init__(self) -> None:
        self._failures: dict[str, list[float]] = {}

    def blocked(self, address: str) -> bool:
        now = time.monotonic()
        recent = [t for t in self._failures.get(address, []) if now - t < 60]
        if recent:
            self._failures[address] = recent
        else:
            self._failures.pop(address, None)
        return len(recent) >= FAILURES_PER_MINUTE

    def failed(self, address: str) -> None:
        if len(self._failures) > 100_000:
            self._failures.clear()
        self._failures.setdefault(address, []).append(time.monotonic())


# `?format=csv` on the lists an operator takes into a spreadsheet (sessions, statements, the
# audit trail): UTF-8 with a byte-order mark (so Excel reads the Chinese right), one header.
Format = Annotated[Literal["json", "csv"], Query(description="json (default) or csv")]
SESSION_COLUMNS = ["id", "station", "connector", "tag", "started", "ended", "kwh", "cost_cny",
                   "status", "flag_reason"]


def _yuan(fen: Any) -> str:
    return "" if fen is None else f"{Decimal(int(fen)) / 100:.2f}"


def csv_response(rows: list[dict[str, Any]], columns: list[str], filename: str) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else
                         json.dumps(row[c], sort_keys=True, default=str)
                         if isinstance(row.get(c), dict | list) else row[c] for c in columns])
    return Response("\ufeff" + out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _key_of(request: Request) -> str | None:
    given = request.headers.get("authorization", "")
    if given.lower().startswith("bearer "):
        return given[7:].strip()
    if request.headers.get("x-api-key"):
        return request.headers["x-api-key"].strip()
    if request.method in ("GET", "HEAD"):
        return request.cookies.get(COOKIE)
    return None


async def principal_of(request: Request, api: Api, guard: Guard) -> Principal | None:
    address = request.client.host if request.client else "?"
    key = _key_of(request)
    if not key:
        return None
    if guard.blocked(address):
        raise ApiError(429, "too many wrong keys from this address: wait a minute")
    found = await authenticate(api.engine, key)
    if found is None:
        guard.failed(address)
    return found


class CommandIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    command: str = Field(description="start, stop, unlock, availability, reset, trigger, "
                         "share-lock, config-get, config-set, update-firmware, ... (the CLI's "
                         "`remote` set, with dashes)", examples=["start"])
    args: dict[str, Any] = Field(default_factory=dict, examples=[{"tag": "T1",
                                                                   "connector_id": 1}])
    expires_s: float | None = Field(default=None, gt=0, le=30 * 86400,
                                    description="An offline station gets "
                                    "the command at its next boot unless this many seconds pass")


class PaymentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount_fen: int = Field(ge=0, le=10_000_000, description="What the payment captured, fen")
    psp_ref: str = Field(min_length=1, max_length=255,
                         description="The payment's reference (booked once per reference)")
    receipt: str | None = Field(default=None, max_length=255)


class RulesIn(BaseModel):
    """A station's sharing rules to change (what is not given stays as it is)."""

    model_config = ConfigDict(extra="forbid")
    windows: list[str] | None = Field(default=None, max_length=50, description=(
        "Opening windows, e.g. 'mon-fri 19:00-23:00' (station time); [] opens around the clock"))
    closed_dates: list[str] | None = Field(default=None, max_length=366)
    allowed_tags: list[str] | None = Field(default=None, max_length=10_000)
    allowed_groups: list[str] | None = Field(default=None, max_length=1_000)
    allowed_models: list[str] | None = Field(default=None, max_length=1_000)
    bookings: bool | None = None
    min_credit: int | None = Field(default=None, ge=0, le=1_000_000)
    connector: int = Field(default=0, ge=0, le=64)


class PriceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    per_kwh: str = Field(max_length=20, description="CNY per kWh, e.g. '1.20'")
    per_hour: str | None = Field(default=None, max_length=20,
                                 description="CNY per hour of charging, if any")


class PairingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    station: str = Field(min_length=1, max_length=48, description="The new charger's id")
    connectors: int = Field(default=1, ge=1, le=64)
    max_power_kw: float | None = Field(default=None, gt=0, le=1000)
    owner: str | None = Field(default=None, max_length=100,
                              description="The operator names the owner; a host is the owner")


class MemberIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    tag: str = Field(min_length=1, max_length=20)
    phone: str | None = Field(default=None, max_length=32)
    household: str | None = Field(default=None, max_length=20)


class StationChangeIn(BaseModel):
    """What to change of a station (what is not given stays; '' clears a text)."""

    model_config = ConfigDict(extra="forbid")
    owner: str | None = Field(default=None, max_length=100)
    connectors: int | None = Field(default=None, ge=1, le=64)
    max_power_kw: float | None = Field(default=None, ge=0.1, le=1000)
    area: str | None = Field(default=None, max_length=100)
    lat: float | None = Field(default=None, ge=-90, le=90, description="with lon")
    lon: float | None = Field(default=None, ge=-180, le=180, description="with lat")
    address: str | None = Field(default=None, max_length=200)


class MemberChangeIn(BaseModel):
    """What to change of a member (what is not given stays as it is; '' clears a text)."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=100)
    phone: str | None = Field(default=None, max_length=32, description="'' clears it")
    expires_at: str | None = Field(default=None, max_length=40, description=(
        "ISO 8601 (without an offset: UTC) after which the tag answers Expired; '' never"))
    groups: list[str] | None = Field(default=None, max_length=100)
    vehicle: str | None = Field(default=None, max_length=100)
    quota_kwh: Decimal | None = Field(default=None, ge=0, le=100_000,
                                      description="Free energy per month, kWh")
    green: bool | None = None
    household: str | None = Field(default=None, max_length=20)
    pay_with: list[Literal["coins", "points"]] | None = Field(default=None, max_length=2)
    language: Literal["zh", "en", ""] | None = Field(
        default=None, description="Messages at the charger; '' the platform's")

    def change(self) -> dict[str, Any]:
        """sharing.update_member's keywords."""
        given = self.model_dump(exclude_unset=True)
        change: dict[str, Any] = {k: given[k] for k in ("name", "phone", "household", "language")
                                  if k in given and given[k] is not None}
        if given.get("expires_at") is not None:
            change["expires"] = parse_time(given["expires_at"], "expires_at") or ""
        if given.get("groups") is not None:
            change["groups"] = ",".join(given["groups"])
        if given.get("vehicle") is not None:
            change["vehicle_model"] = given["vehicle"]
        if given.get("quota_kwh") is not None:
            change["quota_wh"] = int(given["quota_kwh"] * 1000)
        if given.get("green") is not None:
            change["prefers_green"] = given["green"]
        if given.get("pay_with") is not None:
            change["pay_with"] = ",".join(given["pay_with"])
        return change


class DisputeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    session_id: int = Field(ge=1, le=2**63 - 1, description="The disputed session")
    text: str = Field(min_length=1, max_length=2000, description="What is wrong")


class BookingIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    station: str
    connector: int = Field(default=1, ge=1, le=64)
    tag: str | None = Field(default=None, description="The member (a member key: itself)")
    start: str = Field(alias="from", description="ISO 8601; without an offset: Asia/Shanghai")
    end: str = Field(alias="to")


class RevenueIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    power_kw: Decimal = Field(ge=1, le=400)
    price: str = Field(description="CNY per kWh, e.g. \"1.20\"")
    open: list[str] = Field(default_factory=list, examples=[["mon-fri 19:00-23:00"]])
    platform_pct: Decimal = Field(default=Decimal(10), ge=0, le=100)
    area: str | None = None


def build_app(api: Api) -> FastAPI:
    """The API of one gateway node (the console is mounted on it by web/site.py)."""

    app = FastAPI(title="cocharge", version=version, openapi_url="/api/openapi.json",
                  docs_url=None, redoc_url=None,
                  description="The HTTP API of a cocharge gateway node: stations with their "
                  "live state, sessions, members, bookings, money, commands to stations. "
                  "Authenticate with `Authorization: Bearer <key>` (`cocharge apikey create`).")
    guard = Guard()
    app.state.api, app.state.guard = api, guard

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        # A console page's refusal is a page (web/console.py sets it), the API's is JSON.
        page = getattr(app.state, "console_error", None)
        if page is not None and request.url.path.startswith("/console"):
            answer: Response = await page(request, exc)
            return answer
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}",
                             "details": [{"loc": list(e.get("loc", ())), "msg": e.get("msg")}
                                         for e in exc.errors()]}, status_code=422)

    async def who(request: Request) -> Principal:
        found = await principal_of(request, api, guard)
        if found is None:
            key = _key_of(request)
            if key and await revoked(api.engine, key):
                raise ApiError(401, "this API key was revoked: ask for a new one "
                               "(`cocharge apikey create`)")
            if key:
                raise ApiError(401, "this API key is not valid (mistyped, or not of this "
                               "system): Authorization: Bearer <key>")
            raise ApiError(401, "an API key is required: Authorization: Bearer <key> "
                           "(`cocharge apikey create`)")
        return found

    Who = Annotated[Principal, Depends(who)]
    Limit = Annotated[int, Query(ge=1, le=10_000)]
    # Ids are 64-bit in the database: a larger number is the client's mistake (422), not ours.
    Id = Annotated[int, Path(ge=1, le=2**63 - 1)]

    @app.get("/api/v1/me", tags=["keys"], summary="The key's role and owner")
    async def me(p: Who) -> dict[str, Any]:
        return p.as_json()

    @app.get("/api/v1/stations", tags=["stations"],
             summary="Stations in the key's scope, live: online, connectors, running sessions",
             description="In the order of their ids. `limit` and `offset` give a page of them "
             "(without `limit`: all from `offset`); the headers X-Total-Count and "
             "X-Online-Count say how many match `online` and `q` in all, and how many of "
             "those are online.")
    async def stations(p: Who, response: Response, online: bool | None = None,
                       q: Annotated[str | None, Query(max_length=100)] = None,
                       limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
                       offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0
                       ) -> list[dict[str, Any]]:
        page = await api.station_page(p, online, q, limit, offset)
        response.headers["X-Total-Count"] = str(page.total)
        response.headers["X-Online-Count"] = str(page.online)
        return page.stations

    @app.get("/api/v1/stations/{station_id}", tags=["stations"],
             summary="One station: details, sharing rules, sessions")
    async def station(p: Who, station_id: str) -> dict[str, Any]:
        return await api.station(p, station_id)

    @app.get("/api/v1/stations/{station_id}/frames", tags=["stations"],
             summary="The station's last OCPP frames, oldest first")
    async def frames(p: Who, station_id: str, limit: Limit = 100,
                     after: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None
                     ) -> list[dict[str, Any]]:
        return await api.frames(p, station_id, limit, after)

    @app.post("/api/v1/stations/{station_id}/commands", tags=["stations"],
              summary="Send a command; the answer is the station's (or queued when offline)",
              responses={400: {"description": "a malformed command"},
                         403: {"description": "not this key's to send"},
                         504: {"description": "the station did not answer in time"}})
    async def command(p: Who, station_id: str, body: CommandIn, request: Request) -> JSONResponse:
        answer = await api.command(p, station_id, body.command, body.args, body.expires_s,
                                   request.client.host if request.client else None)
        status = 200
        if not answer.get("ok"):
            status = {"bad_request": 400, "timeout": 504, "offline": 409}.get(
                str(answer.get("error")), 502)
        return JSONResponse(answer, status_code=status)

    @app.patch("/api/v1/stations/{station_id}", tags=["stations"],
               summary="Change a station's owner, connectors, power, area or place (operator); "
               "kept in the audit trail")
    async def update_station(p: Who, station_id: str, body: StationChangeIn,
                             request: Request) -> dict[str, Any]:
        return await api.update_station(p, station_id, body.model_dump(exclude_none=True),
                                        request.client.host if request.client else None)

    @app.put("/api/v1/stations/{station_id}/rules", tags=["stations"],
             summary="Change the station's sharing rules (its host or property, the operator)")
    async def set_rules(p: Who, station_id: str, body: RulesIn,
                        request: Request) -> dict[str, Any]:
        return await api.set_rules(p, station_id, body.model_dump(exclude_unset=True),
                                   request.client.host if request.client else None)

    @app.put("/api/v1/stations/{station_id}/price", tags=["money"],
             summary="Set the station's price from now on (its host or property, the operator)")
    async def set_price(p: Who, station_id: str, body: PriceIn,
                        request: Request) -> dict[str, Any]:
        return await api.set_price(p, station_id, body.per_kwh, body.per_hour,
                                   request.client.host if request.client else None)

    @app.get("/api/v1/stations/{station_id}/tariff", tags=["money"],
             summary="The station's tariffs, newest last")
    async def tariff(p: Who, station_id: str) -> dict[str, Any]:
        return await api.tariff(p, station_id)

    @app.get("/api/v1/stations/{station_id}/split", tags=["money"],
             summary="The station's revenue-share terms")
    async def split(p: Who, station_id: str) -> dict[str, Any]:
        return await api.split(p, station_id)

    @app.get("/api/v1/sessions", tags=["sessions"],
             summary="Sessions, newest `limit`, with energy and cost (so far, while charging)")
    async def sessions(p: Who, station: str | None = None, active: bool = False,
                       since: str | None = None, tag: str | None = None,
                       limit: Limit = 100, format: Format = "json") -> Any:
        rows = await api.sessions(p, station, active, parse_time(since, "since"), tag, limit)
        if format == "csv":
            return csv_response([{**r, "cost_cny": _yuan(r.get("payable_fen")
                                                        if r.get("status") != "active"
                                                        else r.get("cost_so_far_fen"))}
                                 for r in rows], SESSION_COLUMNS, "sessions.csv")
        return rows

    @app.get("/api/v1/sessions/{session_id}", tags=["sessions"],
             summary="One session with its bill and split")
    async def session(p: Who, session_id: Id) -> dict[str, Any]:
        return await api.session(p, session_id)

    @app.post("/api/v1/sessions/{session_id}/payment", tags=["money"],
              summary="Book a payment made at the charger's payment page (operator; 2.1)")
    async def session_paid(p: Who, session_id: Id, body: PaymentIn,
                           request: Request) -> dict[str, Any]:
        return await api.session_paid(p, session_id, body.amount_fen, body.psp_ref,
                                      body.receipt, request.client.host if request.client else None)

    @app.get("/api/v1/audit", tags=["money"],
             summary="Who did what: commands and money operations, newest first")
    async def audit_log(p: Who, station: str | None = None, account: str | None = None,
                        limit: Limit = 100, format: Format = "json") -> Any:
        rows = await api.audit(p, station, account, limit)
        if format == "csv":
            return csv_response(rows, ["id", "at", "actor", "origin", "action", "station",
                                       "account", "details"], "audit.csv")
        return rows

    @app.get("/api/v1/members", tags=["members"], summary="Every member (operator)",
             description="In the order of their names; `q`: those whose tag, name or phone "
             "number holds it (any case). `limit` and `offset` give a page of them; the "
             "header X-Total-Count says how many match in all.")
    async def members(p: Who, response: Response,
                      q: Annotated[str | None, Query(max_length=100)] = None,
                      limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
                      offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0
                      ) -> list[dict[str, Any]]:
        shown, total = await api.members(p, q, limit, offset)
        response.headers["X-Total-Count"] = str(total)
        return shown

    @app.post("/api/v1/members", tags=["members"], status_code=201,
              summary="Add a member (operator)")
    async def add_member(p: Who, body: MemberIn) -> dict[str, Any]:
        return await api.add_member(p, body.name, body.tag, body.phone, body.household)

    @app.post("/api/v1/pairings", tags=["stations"], status_code=201,
              summary="A pairing code for a new charger (a host, a property, the operator)")
    async def pairings(p: Who, body: PairingIn, request: Request) -> dict[str, Any]:
        made = await api.pair(p, body.station, body.connectors, body.max_power_kw, body.owner,
                              request.client.host if request.client else None)
        made["ocpp_url"] = f"ws://{request.url.hostname}:{api.gateway.port}/ocpp/"
        return made

    @app.post("/api/v1/members/{tag}/invitations", tags=["members"], status_code=201,
              summary="A one-time link that makes the member's login (operator, host, property)")
    async def invite(p: Who, tag: str, request: Request) -> dict[str, Any]:
        base = api.gateway.settings.console_url or str(request.base_url)
        return await api.invite(p, tag, base, request.client.host if request.client else None)

    @app.get("/api/v1/members/{tag}", tags=["members"],
             summary="A member: wallet, credit, coins, badges, rewards (operator, or itself)")
    async def member(p: Who, tag: str) -> dict[str, Any]:
        return await api.member(p, tag)

    @app.patch("/api/v1/members/{tag}", tags=["members"],
               summary="Change a member's details (operator); kept in the audit trail")
    async def update_member(p: Who, tag: str, body: MemberChangeIn,
                            request: Request) -> dict[str, Any]:
        return await api.update_member(p, tag, body.change(),
                                       request.client.host if request.client else None)

    @app.post("/api/v1/members/{tag}/block", tags=["members"], status_code=204,
              summary="Block a member's tag (operator)")
    async def block(p: Who, tag: str, request: Request) -> Response:
        await api.block(p, tag, True, request.client.host if request.client else None)
        return Response(status_code=204)

    @app.post("/api/v1/members/{tag}/unblock", tags=["members"], status_code=204,
              summary="Accept a blocked tag again (operator)")
    async def unblock(p: Who, tag: str, request: Request) -> Response:
        await api.block(p, tag, False, request.client.host if request.client else None)
        return Response(status_code=204)

    @app.get("/api/v1/bookings", tags=["bookings"], summary="Bookings in the key's scope")
    async def bookings(p: Who, station: str | None = None) -> list[dict[str, Any]]:
        return await api.bookings(p, station)

    @app.post("/api/v1/bookings", tags=["bookings"], status_code=201, summary="Book a slot")
    async def book(p: Who, body: BookingIn) -> dict[str, Any]:
        from cocharge.stations.registry import RegistryError
        from cocharge.stations.sharing import parse_when

        try:
            start, end = parse_when(body.start), parse_when(body.end)
        except (RegistryError, ValueError) as exc:
            raise ApiError(400, str(exc)) from None
        return await api.book(p, body.station, body.connector, body.tag, start, end)

    @app.delete("/api/v1/bookings/{booking_id}", tags=["bookings"], status_code=204,
                summary="Cancel a booking")
    async def cancel(p: Who, booking_id: Id) -> Response:
        await api.cancel_booking(p, booking_id)
        return Response(status_code=204)

    @app.post("/api/v1/disputes", tags=["money"], status_code=201,
              summary="Dispute a session's bill (a member: its own; a host or property: its "
                      "stations'); an operator resolves it (`cocharge dispute resolve`)")
    async def open_dispute(p: Who, body: DisputeIn) -> dict[str, Any]:
        return await api.open_dispute(p, body.session_id, body.text)

    @app.get("/api/v1/disputes", tags=["money"],
             summary="Disputes (operator: all; others: those they opened)")
    async def list_disputes(p: Who) -> list[dict[str, Any]]:
        return await api.disputes(p)

    @app.get("/api/v1/groups", tags=["bookings"], summary="Group-charging slots in scope")
    async def groups(p: Who) -> list[dict[str, Any]]:
        return await api.groups(p)

    @app.get("/api/v1/balances", tags=["money"],
             summary="Ledger balances (operator: all; others: their own accounts)")
    async def balances(p: Who) -> list[dict[str, Any]]:
        return await api.balances(p)

    @app.get("/api/v1/accounts/{account}/statement", tags=["money"],
             summary="An account's transfers with the running balance")
    async def statement(p: Who, account: str, since: str | None = None,
                        until: str | None = None, format: Format = "json") -> Any:
        rows = await api.statement(p, account, parse_time(since, "since"),
                                   parse_time(until, "until"))
        if format == "csv":
            columns = list(rows[0]) if rows else ["transfer", "at", "change", "balance"]
            return csv_response(rows, columns, f"statement-{account.replace(':', '_')}.csv")
        return rows

    @app.get("/api/v1/accounts/{account}/months/{month}", tags=["money"],
             summary="A host's or property's monthly statement: sessions, gross, commission, "
             "net, payouts, balances, tax estimate (its own; the operator any)")
    async def monthly_statement(p: Who, account: str, month: str) -> dict[str, Any]:
        return await api.monthly_statement(p, account, month)

    @app.get("/api/v1/dashboard", tags=["money"],
             summary="Revenue, kWh, sessions, utilisation by hour of week, payouts owed")
    async def dashboard(p: Who, days: Annotated[int, Query(ge=1, le=366)] = 30) -> dict[str, Any]:
        return await api.dashboard(p, days)

    @app.get("/api/v1/sites", tags=["stations"], summary="Sites and their live allocation")
    async def sites(p: Who) -> list[dict[str, Any]]:
        return await api.sites(p)

    @app.post("/api/v1/calculator/revenue", tags=["money"],
              summary="Estimate a charger's monthly revenue (the seeds' calculator)")
    async def calculator(p: Who, body: RevenueIn) -> dict[str, Any]:
        return await revenue_estimate(api, body.power_kw, body.price, body.open,
                                      body.platform_pct, body.area)

    return app


async def revenue_estimate(api: Api, power_kw: Decimal, price: str, windows: list[str],
                           platform_pct: Decimal, area: str | None) -> dict[str, Any]:
    """The revenue calculator (`cocharge calc revenue`), with its hourly utilisation."""
    try:
        parsed = tuple(parse_window(w) for w in windows)
        unit = parse_price(price, "price")
    except (RuleError, MoneyError, InvalidOperation) as exc:
        raise ApiError(400, str(exc)) from None
    demand = await calculator.area_demand(api.engine, area)
    prices = await calculator.area_prices(api.engine, area)
    result = revenue.estimate(power_kw, parsed, unit, demand, platform_pct, prices)
    shown = dict(result.as_json())
    shown["hourly_utilisation"] = [round(v, 4) for v in revenue.hourly_utilisation(result)]
    return shown
