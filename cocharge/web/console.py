"""The web console's pages: the fleet, a station (frames, commands, sessions), sessions, the
property and host dashboards, the revenue calculator, a member's own page.

Every page is rendered on the server from the same `Api` the HTTP API uses, so a key sees
in the console exactly what it may read through the API. The fleet and station pages keep
themselves current by polling the API (GET, with the login cookie) every few seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from cocharge import charts
from cocharge.api import logins, passkeys
from cocharge.api.http import COOKIE, revenue_estimate
from cocharge.api.keys import Principal, authenticate
from cocharge.api.service import OWNER_COMMANDS, Api, ApiError, not_found
from cocharge.settlement.money import MoneyError, parse_price
from cocharge.stations.registry import NewStation, RegistryError
from cocharge.stations.sharing import parse_when
from cocharge.web import i18n, qr
from cocharge.web.pages import env
from cocharge.web.statement import to_html as statement_html

HERE = os.path.dirname(__file__)
PAGE = 100  # stations on a page of the fleet (each polled every 3 s), members on one of theirs

# The command form: what each command asks for (the API takes any of the `remote` set).
FORM_COMMANDS: dict[str, tuple[str, ...]] = {
    "start": ("tag", "connector_id"), "stop": ("session_id",), "unlock": ("connector_id",),
    "availability": ("connector_id", "state"), "reset": ("hard",),
    "trigger": ("message", "connector_id"), "share-lock": ("connector_id", "state"),
    "config-get": ("keys",), "config-set": ("key", "value"), "clear-cache": (),
    "get-transaction-status": ("session_id",),
}
# The form's "state" field, per command: the argument it sets and the words for true/false.
STATES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "availability": ("operative", ("operative", "on", "yes", "true"),
                     ("inoperative", "off", "no", "false")),
    "share-lock": ("locked", ("locked", "lock", "on", "yes", "true"),
                   ("unlocked", "unlock", "off", "no", "false")),
}


def speak(request: Request) -> str:
    """This request's language (web/i18n.py), in use from here on."""
    return i18n.from_request(request.query_params.get("lang"),
                             request.cookies.get(i18n.COOKIE),
                             request.headers.get("accept-language"))


def page_context(request: Request) -> dict[str, Any]:
    """What every page's frame needs: its language (in use from here on), the link that
    switches it, the script's words, the time zone."""
    speak(request)
    here = request.url.path + "?" + urlencode(
        [(k, v) for k, v in request.query_params.multi_items() if k != "lang"] + [("lang", "")])
    return {"lang": i18n.language(), "switch": here, "js_messages": i18n.js_messages(),
            "zone": i18n.zone_label(), "zone_name": i18n.zone().key}


def render(name: str, request: Request, who: Principal | None, **values: Any) -> HTMLResponse:
    """A page in the reader's language (web/i18n.py): asked for with ?lang=, remembered in
    a cookie, else the browser's."""
    asked = request.query_params.get("lang")
    page = env.get_template(name).render(request=request, who=who, **page_context(request),
                                         **values)
    response = HTMLResponse(page, status_code=int(values.get("status", 200)), headers={"Cache-Control": "no-store",
                                       "X-Frame-Options": "DENY",
                                       "Content-Security-Policy":
                                       "default-src 'self'; img-src 'self' data:; "
                                       "style-src 'self'; script-src 'self'"})
    if asked in i18n.LANGUAGES:
        response.set_cookie(i18n.COOKIE, str(asked), max_age=365 * 86400, samesite="lax",
                            path="/")
    return response


def render_api_docs(request: Request, spec: dict[str, Any]) -> str:
    operations = []
    for path, methods in spec.get("paths", {}).items():
        for method, op in methods.items():
            params = [p["name"] for p in op.get("parameters", []) if p.get("in") == "query"]
            operations.append({"method": method.upper(), "path": path,
                               "summary": op.get("summary", ""), "tag": (op.get("tags") or [""])[0],
                               "query": params, "body": "requestBody" in op})
    return env.get_template("api_docs.html").render(request=request, who=None, spec=spec,
                                                    operations=operations,
                                                    **page_context(request))


async def form_of(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body (the console's forms), up to 64 KiB."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > 65536:
            raise ApiError(413, "form too large")
    return {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace"),
                                          keep_blank_values=True).items()}


def _same_origin(request: Request) -> bool:
    """A form POST from a page of this console (not another site riding the cookie)."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return True  # a non-browser client: it holds the key itself
    return urlsplit(origin).netloc == request.headers.get("host")


def outcome(request: Request) -> dict[str, Any]:
    """What became of the page's last form (`told`), for its template."""
    return {"message": request.query_params.get("message"),
            "failed": request.query_params.get("failed") == "1"}


def told(path: str, message: str, failed: bool, key: str = "message") -> RedirectResponse:
    """Back to the page (with its own query, if any), which shows what became of the form
    (a failure as one)."""
    return RedirectResponse(path + ("&" if "?" in path else "?") + urlencode(
        {key: message, **({"failed": "1"} if failed else {})}), status_code=303)


def place_of(lat: str | None, lon: str | None) -> tuple[float, float] | None:
    """A position given as `lat` and `lon` (WGS-84 degrees), or None when neither is given
    (ApiError 400 when one is missing or not a position)."""
    if not lat and not lon:
        return None
    try:
        found = float(lat or ""), float(lon or "")
    except ValueError:
        found = (math.nan, math.nan)
    if not (-90 <= found[0] <= 90 and -180 <= found[1] <= 180):
        raise ApiError(400, "lat and lon: a position in degrees, e.g. lat=31.2304&lon=121.4737")
    return found


def page_number(page: str | None) -> int:
    """A list's `page` parameter: 1 when not given (ApiError 400 when not a page number)."""
    number = 1 if not page else int(page) if page.isascii() and page.isdigit() else 0
    if not 1 <= number <= 10**6:
        raise ApiError(400, "page: a whole number from 1")
    return number


@dataclasses.dataclass(frozen=True)
class Pages:
    """Where a page of a long list is (PAGE a page), and the links to its neighbours with the
    same filters (templates/_pages.html shows them)."""

    path: str
    filters: dict[str, str]
    number: int  # from 1
    total: int  # of the whole list
    shown: int  # on this page

    def link(self, number: int) -> str:
        return self.path + "?" + urlencode({**self.filters, "page": number})

    @property
    def last(self) -> int:
        return max(1, math.ceil(self.total / PAGE))

    @property
    def past_the_end(self) -> bool:
        """A page after the last (the list shrank, or a typed number): show the last."""
        return self.number > self.last

    @property
    def last_link(self) -> str:
        return self.link(self.last)

    @property
    def first_shown(self) -> int:
        return (self.number - 1) * PAGE + 1

    @property
    def last_shown(self) -> int:
        return (self.number - 1) * PAGE + self.shown

    @property
    def previous(self) -> str | None:
        return self.link(self.number - 1) if self.number > 1 else None

    @property
    def next(self) -> str | None:
        return self.link(self.number + 1) if self.number < self.last else None

    @property
    def here(self) -> str:
        """This page, for a form on it to come back to."""
        return self.link(self.number)


def _back_to(path: Any) -> str | None:
    """Where to go after logging in: a page of this console only (never another site)."""
    text = str(path or "")
    return text if text.startswith("/console/") and "//" not in text else None


def local_month() -> str:
    """This month in the platform's time zone: YYYY-MM."""
    return datetime.now(i18n.zone()).strftime("%Y-%m")


def week_days() -> list[str]:
    """Monday to Sunday, short, in the reader's language."""
    return [i18n.gettext(day) for day in charts.DAYS]


def form_number(form: Any, name: str) -> float | None:
    """A number typed into a form's field (None: left empty); anything else is refused."""
    text = str(form.get(name, "")).strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ApiError(400, f"{name}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ApiError(400, f"{name}: {text!r} is not a number")
    return value


def station_change(was: dict[str, Any], form: Any) -> dict[str, Any]:
    """What the station form changed, as registry.update_station's keywords."""
    change: dict[str, Any] = {}
    for key in ("owner", "area", "address"):
        text = str(form.get(key, "")).strip()
        if text != (was.get(key) or ""):
            change[key] = text
    numbers = {key: form_number(form, key) for key in ("connectors", "max_power_kw", "lat",
                                                       "lon")}
    connectors = numbers["connectors"]
    if connectors is not None and connectors != was.get("connectors"):
        if not connectors.is_integer():
            raise ApiError(400, "connectors: a whole number 1-64")
        change["connectors"] = int(connectors)
    power = numbers["max_power_kw"]
    if power is not None and power != was.get("max_power_kw"):
        change["max_power_kw"] = power
    if (numbers["lat"], numbers["lon"]) != (was.get("lat"), was.get("lon")):
        if numbers["lat"] is None and numbers["lon"] is None:
            raise ApiError(400, "a place is changed, not removed: give lat and lon")
        change["lat"], change["lon"] = numbers["lat"], numbers["lon"]
    return change


def member_change(was: dict[str, Any], form: Any) -> dict[str, Any]:
    """What the member form changed, as sharing.update_member's keywords (times typed in
    the platform's zone; a field left as it was is not sent)."""
    text = {k: str(form.get(k, "")).strip() for k in (
        "name", "phone", "expires", "groups", "vehicle", "quota_kwh", "household", "language")}
    change: dict[str, Any] = {}
    for field, key in (("name", "name"), ("phone", "phone"), ("household", "household"),
                       ("language", "language"), ("vehicle", "vehicle_model")):
        if text[field] != (was[key] or ""):
            change[key] = text[field]
    groups = ",".join(g.strip() for g in text["groups"].split(",") if g.strip())
    if groups != was["groups"]:
        change["groups"] = groups
    if text["expires"] != i18n.local_input(was["expires_at"]):
        change["expires"] = (parse_when(text["expires"], i18n.zone().key)
                             if text["expires"] else "")
    if text["quota_kwh"]:
        try:
            quota = Decimal(text["quota_kwh"])
        except InvalidOperation:
            raise ApiError(400, f"quota {text['quota_kwh']!r}: kWh a month, e.g. 50") from None
        if not quota.is_finite():
            raise ApiError(400, f"quota {text['quota_kwh']!r}: kWh a month, e.g. 50")
        if not was["quota_kwh"] or quota != Decimal(was["quota_kwh"]):
            change["quota_wh"] = int(quota * 1000)
    green = form.get("green") == "1"
    if green != was["prefers_green"]:
        change["prefers_green"] = green
    pay_with = ",".join(p for p in ("coins", "points") if form.get(f"pay_{p}") == "1")
    if pay_with != was["pay_with"]:
        change["pay_with"] = pay_with
    return change


def mount_console(app: FastAPI, api: Api, guard: Any) -> None:
    i18n.set_zone(api.gateway.settings.time_zone)
    app.mount("/console/static", StaticFiles(directory=os.path.join(HERE, "static")),
              name="static")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        """Browsers ask for it at the root whatever the page says: the console's icon."""
        with open(os.path.join(HERE, "static", "favicon.svg"), "rb") as handle:
            return Response(handle.read(), media_type="image/svg+xml",
                            headers={"Cache-Control": "public, max-age=86400"})

    async def user(request: Request) -> Principal | None:
        key = request.cookies.get(COOKIE)
        if not key:
            return None
        found = await authenticate(api.engine, key)
        return None if found is None else dataclasses.replace(found, via="console")

    async def api_refused(request: Request, exc: ApiError) -> Response:
        """What the API refused, as the console's error page in the reader's language (every
        page: app.state.console_error, the API's handler of ApiError)."""
        speak(request)
        return render("error.html", request, await user(request), error=i18n.explain(exc),
                      status=exc.status)

    app.state.console_error = api_refused

    def login_page() -> RedirectResponse:
        return RedirectResponse("/console/login", status_code=303)

    def login_first(request: Request) -> RedirectResponse:
        """To the login page, and back to this page once logged in."""
        return RedirectResponse("/console/login?" + urlencode({"next": request.url.path}),
                                status_code=303)

    async def poster(request: Request) -> Principal | Response:
        """Who sends this form, or the answer when nobody may: not logged in, or the form
        comes from another site's page."""
        who = await user(request)
        if who is None:
            return login_page()
        if not _same_origin(request):
            return render("error.html", request, who, error="a form from another site",
                          status=403)
        return who

    async def posted(request: Request) -> tuple[Principal, dict[str, str]] | Response:
        """Who sends this form and what it says (answered in the request's language from
        here on), or the answer when nobody may (`poster`)."""
        who = await poster(request)
        if not isinstance(who, Principal):
            return who
        speak(request)
        return who, await form_of(request)

    async def edited(request: Request, here: str, key: str,
                     read: Callable[[Principal], Awaitable[dict[str, Any]]],
                     diff: Callable[[dict[str, Any], Any], dict[str, Any]],
                     apply: Callable[[Principal, dict[str, Any], str | None], Awaitable[Any]],
                     saved: Callable[[], str]) -> Response:
        """A details form (a member's, a station's): only what the form changed (`diff` of
        what `read` gives and the form) is sent to `apply` (the API's checks, the audit
        trail); back to the page, which says what became of it."""
        sent = await posted(request)
        if not isinstance(sent, tuple):
            return sent
        who, form = sent
        try:
            change = diff(await read(who), form)
            if not change:
                return told(here, i18n.gettext("Nothing changed."), False, key)
            await apply(who, change, request.client.host if request.client else None)
            message, failed = saved(), False
        except (ApiError, RegistryError) as exc:
            message, failed = i18n.gettext("Not saved: %(reason)s",
                                           reason=i18n.explain(exc)), True
        return told(here, message, failed, key)

    @app.get("/console/login", include_in_schema=False)
    async def login_form(request: Request, error: str | None = None,
                         next: str | None = None) -> HTMLResponse:
        return render("login.html", request, None, error=error, next=_back_to(next))

    @app.post("/console/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = await form_of(request)
        key = str(form.get("key", "")).strip()
        address = request.client.host if request.client else "?"
        if guard.blocked(address):
            return render("login.html", request, None,
                          error="Too many wrong keys from this address: wait a minute.")
        found = await authenticate(api.engine, key) if key else None
        if found is None:
            guard.failed(address)
            return render("login.html", request, None, error="That key is not valid (or was "
                          "revoked). Ask the operator for one: cocharge apikey create.")
        return signed_in(request, key, _back_to(form.get("next")))

    def signed_in(request: Request, key: str, to: str | None,
                  response: Response | None = None) -> Response:
        """Logged in: the key in an HttpOnly cookie, and on to the page asked for."""
        response = response or RedirectResponse(to or "/console/", status_code=303)
        response.set_cookie(COOKIE, key, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", max_age=30 * 86400,
                            path="/")
        return response

    # --- passkeys (api/passkeys.py): the page's script asks for options, the browser makes
    # or uses the passkey, the script sends its answer back; JSON both ways.

    def site_of(request: Request) -> passkeys.Site:
        return passkeys.Site.of(api.gateway.settings.console_url,
                                request.url.scheme, request.headers.get("host", ""))

    async def json_of(request: Request) -> dict[str, Any]:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > 65536:
                raise logins.LoginError("the request is too large")
        try:
            data = json.loads(body or b"{}")
        except ValueError as exc:
            raise logins.LoginError("the request is not JSON") from exc
        if not isinstance(data, dict):
            raise logins.LoginError("the request is not a JSON object")
        return data

    def credential_of(data: dict[str, Any]) -> dict[str, Any]:
        credential = data.get("credential")
        if not isinstance(credential, dict):
            raise logins.LoginError("the browser's passkey answer is not readable: try again")
        return credential

    def refused(message: str, status: int = 400) -> JSONResponse:
        return JSONResponse({"error": i18n.explain(message)}, status_code=status)

    @app.post("/console/passkeys/options", include_in_schema=False)
    async def passkey_options(request: Request) -> Response:
        """Options for making a passkey (signed in, or with an invitation's token) or for
        signing in with one."""
        speak(request)
        if not _same_origin(request):
            return refused("a form from another site", 403)
        try:
            data = await json_of(request)
            if data.get("purpose") == "login":
                return JSONResponse(await passkeys.login_options(api.engine, site_of(request)))
            who = await user(request)
            token = data.get("token")
            tag = str(who.owner) if who is not None and who.role == "member" else None
            return JSONResponse(await passkeys.registration_options(
                api.engine, site_of(request), tag, str(token) if token else None))
        except logins.LoginError as exc:
            return refused(str(exc))

    @app.post("/console/passkeys/register", include_in_schema=False)
    async def passkey_register(request: Request) -> Response:
        speak(request)
        if not _same_origin(request):
            return refused("a form from another site", 403)
        try:
            data = await json_of(request)
            key = await passkeys.register(api.engine, site_of(request), credential_of(data))
        except logins.LoginError as exc:
            return refused(str(exc))
        return signed_in(request, key, None, JSONResponse({"to": "/console/me"}))

    @app.post("/console/passkeys/login", include_in_schema=False)
    async def passkey_login(request: Request) -> Response:
        speak(request)
        address = request.client.host if request.client else "?"
        if not _same_origin(request):
            return refused("a form from another site", 403)
        if guard.blocked(address):
            return refused("Too many wrong keys from this address: wait a minute.", 429)
        try:
            data = await json_of(request)
            key = await passkeys.sign_in(api.engine, site_of(request), credential_of(data))
        except logins.LoginError as exc:
            guard.failed(address)
            return refused(str(exc))
        return signed_in(request, key, None,
                         JSONResponse({"to": _back_to(data.get("next")) or "/console/me"}))

    @app.post("/console/login-phone", include_in_schema=False)
    async def login_phone(request: Request) -> Response:
        """A member signs in with the phone number and password of its login."""
        form = await form_of(request)
        speak(request)
        address = request.client.host if request.client else "?"
        back = _back_to(form.get("next"))
        if guard.blocked(address):
            return render("login.html", request, None, next=back,
                          error="Too many wrong keys from this address: wait a minute.")
        key = await logins.sign_in(api.engine, str(form.get("phone", "")),
                                   str(form.get("password", "")))
        if key is None:
            guard.failed(address)
            return render("login.html", request, None, next=back,
                          error="Wrong phone number or password.")
        return signed_in(request, key, back or "/console/me")

    @app.get("/console/join/{token}", include_in_schema=False)
    async def join_form(request: Request, token: str) -> Response:
        try:
            tag = await logins.invitation_for(api.engine, token)
        except logins.LoginError as exc:
            return render("error.html", request, None, error=str(exc), status=404)
        return render("join.html", request, None, token=token, tag=tag, error=None)

    @app.post("/console/join/{token}", include_in_schema=False)
    async def join(request: Request, token: str) -> Response:
        """An invitation accepted: the member's login made, and the member signed in."""
        form = await form_of(request)
        speak(request)
        if not _same_origin(request):
            return render("error.html", request, None, error="a form from another site",
                          status=403)
        password = str(form.get("password", ""))
        try:
            if password != str(form.get("again", "")):
                raise logins.LoginError("the two passwords differ")
            key = await logins.join(api.engine, token, str(form.get("phone", "")), password)
        except logins.LoginError as exc:
            tag = None
            with contextlib.suppress(logins.LoginError):
                tag = await logins.invitation_for(api.engine, token)
            if tag is None:
                return render("error.html", request, None, error=str(exc), status=400)
            return render("join.html", request, None, token=token, tag=tag, error=str(exc),
                          status=400)
        return signed_in(request, key, "/console/me")

    @app.post("/console/logout", include_in_schema=False)
    async def logout() -> Response:
        response = RedirectResponse("/console/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.get("/console/", include_in_schema=False)
    async def fleet(request: Request, q: str | None = None,
                    online: str | None = None, page: str | None = None) -> Response:
        """The fleet, PAGE stations a page (`page`, from 1), kept current by the page's
        script polling the same page of the API."""
        who = await user(request)
        if who is None:
            return login_page()
        if who.role == "member" and "q" not in request.query_params:
            return RedirectResponse("/console/me", status_code=303)
        number = page_number(page)
        wanted = {"yes": True, "no": False}.get(online or "")
        offset = (number - 1) * PAGE
        shown = await api.station_page(who, wanted, q or None, PAGE, offset)
        filters = {k: v for k, v in (("q", q), ("online", online)) if v}
        poll = "/api/v1/stations?" + urlencode({**filters, "limit": PAGE, "offset": offset})
        pages = Pages("/console/", filters, number, shown.total, len(shown.stations))
        if pages.past_the_end:
            return RedirectResponse(pages.last_link, status_code=303)
        return render("fleet.html", request, who, stations=shown.stations, q=q or "",
                      poll=poll, online=online or "", total=shown.total, up=shown.online,
                      pages=pages, **outcome(request))

    @app.post("/console/stations", include_in_schema=False)
    async def station_add(request: Request) -> Response:
        """The operator registers a station from the fleet page (the CLI's checks)."""
        sent = await posted(request)
        if not isinstance(sent, tuple):
            return sent
        who, form = sent
        sid = str(form.get("id", "")).strip()
        try:
            given = form_number(form, "connectors")
            connectors = 1.0 if given is None else given
            if not connectors.is_integer():
                raise ApiError(400, "connectors: a whole number 1-64")
            await api.add_station(who, NewStation(
                sid, str(form.get("password", "")) or None,
                str(form.get("owner", "")).strip() or None, int(connectors),
                form_number(form, "max_power_kw"), None, form_number(form, "lat"),
                form_number(form, "lon"), str(form.get("address", "")).strip() or None),
                request.client.host if request.client else None)
            message, failed = i18n.gettext("Station %(id)s registered.", id=sid), False
        except ApiError as exc:
            message, failed = i18n.gettext("Not registered: %(reason)s", reason=i18n.explain(exc)), True
        return told("/console/", message, failed)

    @app.get("/console/stations/{station_id}", include_in_schema=False)
    async def station(request: Request, station_id: str) -> Response:
        who = await user(request)
        if who is None:
            return login_page()
        return await _station_page(request, who, station_id, None)

    async def _station_page(request: Request, who: Principal, station_id: str,
                            result: dict[str, Any] | None) -> Response:
        shown = await api.station(who, station_id)
        frames = [] if who.role == "member" else await api.frames(who, station_id, 50)
        commands = {} if who.role == "member" else {
            k: v for k, v in FORM_COMMANDS.items() if who.operator or k in OWNER_COMMANDS}
        audit = [] if who.role == "member" else await api.audit(who, station_id, None, 20)
        rules: dict[str, Any] = {}
        if who.role != "member":
            from cocharge.stations.sharing import show_rules

            rules = (await show_rules(api.engine, station_id)).get("station") or {}
        return render("station.html", request, who, s=shown, frames=frames, commands=commands,
                      form_fields=FORM_COMMANDS,
                      result=result, audit=audit, rules=rules,
                      settings_message=request.query_params.get("settings"),
                      details_message=request.query_params.get("details"),
                      settings_failed=request.query_params.get("failed") == "1")

    @app.get("/console/stations/{station_id}/qr", include_in_schema=False)
    async def station_qr(request: Request, station_id: str) -> Response:
        """A connector's QR code each, to print and stick on the charger (its host, its
        property, the operator): the code `cocharge station qr` writes."""
        who = await user(request)
        if who is None:
            return login_first(request)
        if who.role == "member":
            raise not_found(f"station {station_id!r}")  # as the API says it
        shown = await api.station(who, station_id)
        base = api.gateway.settings.console_url or str(request.base_url)
        codes = [{"connector": n, "url": (url := qr.connector_url(base, station_id, n)),
                  "svg": qr.inline_svg(url)} for n in range(1, int(shown["connectors"]) + 1)]
        return render("qr.html", request, who, s=shown, codes=codes)

    @app.post("/console/stations/{station_id}/details", include_in_schema=False)
    async def station_details(request: Request, station_id: str) -> Response:
        """The operator changes a station's owner, connectors, power, area or place."""
        return await edited(
            request, f"/console/stations/{quote(station_id)}", "details",
            lambda who: api.station(who, station_id), station_change,
            lambda who, change, origin: api.update_station(who, station_id, change, origin),
            lambda: i18n.gettext("%(id)s saved.", id=station_id))

    @app.post("/console/stations/{station_id}/settings", include_in_schema=False)
    async def station_settings(request: Request, station_id: str) -> Response:
        """A host's (or the operator's) opening hours, bookings and price, from the form."""
        sent = await posted(request)
        if not isinstance(sent, tuple):
            return sent
        who, form = sent
        origin = request.client.host if request.client else None
        def listed(name: str) -> list[str]:  # one a line, or comma-separated
            return [item.strip() for line in str(form.get(name, "")).splitlines()
                    for item in line.split(",") if item.strip()]

        windows = [line.strip() for line in str(form.get("windows", "")).splitlines()
                   if line.strip()]
        price = str(form.get("per_kwh", "")).strip()
        least = str(form.get("min_credit", "")).strip() or "0"
        try:
            if price:  # checked before anything is written: a bad price changes nothing
                try:
                    parse_price(price, "per_kwh")
                except MoneyError as exc:
                    raise ApiError(400, str(exc)) from None
            if not least.isdigit():
                raise ApiError(400, f"min_credit {least!r}: a whole number from 0 to 1,000,000")
            await api.set_rules(who, station_id, {
                "windows": windows, "bookings": form.get("bookings") == "1",
                "closed_dates": listed("closed_dates"), "allowed_tags": listed("allowed_tags"),
                "allowed_groups": listed("allowed_groups"),
                "allowed_models": listed("allowed_models"), "min_credit": int(least)}, origin)
            if price:
                await api.set_price(who, station_id, price, None, origin)
            message, failed = i18n.gettext("Saved: the charger follows within seconds."), False
        except ApiError as exc:
            message, failed = i18n.gettext("Not saved: %(reason)s", reason=i18n.explain(exc)), True
        return told(f"/console/stations/{station_id}", message, failed, "settings")

    @app.post("/console/stations/{station_id}/command", include_in_schema=False)
    async def command(request: Request, station_id: str) -> Response:
        who = await poster(request)
        if not isinstance(who, Principal):
            return who
        form = await form_of(request)
        name = str(form.get("command", ""))
        args: dict[str, Any] = {}
        for field in FORM_COMMANDS.get(name, ()):
            text = str(form.get(field, "")).strip()
            if not text:
                continue
            if field in ("connector_id", "session_id"):
                args[field] = int(text) if text.isdigit() else text
            elif field == "hard":
                args[field] = text in ("1", "true", "on", "yes")
            elif field == "state" and name in STATES:
                arg, yes, no = STATES[name]
                if text.lower() not in yes + no:
                    answer = {"ok": False, "error": "bad_request", "command": name,
                              "message": f"state {text!r}: {yes[0]} or {no[0]}"}
                    return await _station_page(request, who, station_id, answer)
                args[arg] = text.lower() in yes
            elif field == "keys":
                args[field] = [k.strip() for k in text.split(",") if k.strip()]
            else:
                args[field] = text
        try:
            answer = await api.command(who, station_id, name, args, None,
                                       request.client.host if request.client else None)
        except ApiError as exc:
            answer = {"ok": False, "error": "refused", "message": str(exc)}
        answer["command"], answer["args"] = name, args
        return await _station_page(request, who, station_id, answer)

    @app.get("/console/sessions", include_in_schema=False)
    async def sessions(request: Request, station: str | None = None, tag: str | None = None,
                       active: str | None = None) -> Response:
        who = await user(request)
        if who is None:
            return login_page()
        rows = await api.sessions(who, station or None, active == "yes", None, tag or None,
                                  200)
        return render("sessions.html", request, who, rows=list(reversed(rows)),
                      station=station or "", tag=tag or "", active=active or "")

    @app.get("/console/dashboard", include_in_schema=False)
    async def dashboard(request: Request, days: str = "30") -> Response:
        who = await user(request)
        if who is None:
            return login_page()
        speak(request)  # the charts' and the error's words in the page's language
        if not days.isdigit():  # a hand-edited address: the page, with the reason
            return render("error.html", request, who, status=422, error=i18n.gettext(
                "days=%(days)s: give a number of days from 1 to 366", days=repr(days)))
        span = max(1, min(366, int(days)))
        data = await api.dashboard(who, span)
        by_day = data["revenue_by_day"]
        revenue = charts.bars([d["fen"] / 100 for d in by_day], [d["day"][5:] for d in by_day],
                              i18n.gettext("Earnings by day (CNY)") if data["account"]
                              else i18n.gettext("Revenue by day (CNY)"),
                              " CNY", every=max(1, len(by_day) // 8))
        heat = charts.week_heatmap(data["utilisation_by_hour_of_week"],
                                   i18n.gettext("Utilisation by hour of week (local time)"),
                                   days=week_days())
        return render("dashboard.html", request, who, d=data, revenue=revenue, heat=heat)

    @app.get("/console/statement", include_in_schema=False)
    async def statement_page(request: Request, month: str | None = None,
                             account: str | None = None) -> Response:
        """A host's (or property's) monthly statement as the page `cocharge statement
        --html` writes, in the reader's language: to read, print or keep."""
        who = await user(request)
        if who is None:
            return login_first(request)
        language = speak(request)
        chosen = month or local_month()
        st = await api.monthly_statement(who, account, chosen)
        page = statement_html(st, language)
        return HTMLResponse(page, headers={
            "Cache-Control": "no-store", "X-Frame-Options": "DENY",
            # one page with its styles inline (it opens from a file or a mail as well)
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"})

    @app.post("/console/pairing", include_in_schema=False)
    async def pair(request: Request) -> Response:
        """A host's (or property's) new charger: its pairing code and how to set it up."""
        sent = await posted(request)
        if not isinstance(sent, tuple):
            return sent
        who, form = sent
        connectors = str(form.get("connectors", "1"))
        made = await api.pair(who, str(form.get("station", "")).strip(),
                              int(connectors) if connectors.isdigit() else 1, None,
                              str(form.get("owner", "")).strip() or None,
                              request.client.host if request.client else None)
        made["ocpp_url"] = f"ws://{request.url.hostname}:{api.gateway.port}/ocpp/"
        return render("pairing.html", request, who, p=made)

    @app.post("/console/invitations", include_in_schema=False)
    async def invitation(request: Request) -> Response:
        """An invitation for a member to sign in (the operator, a host, a property): its
        link and the same as a QR code to scan."""
        sent = await posted(request)
        if not isinstance(sent, tuple):
            return sent
        who, form = sent
        base = api.gateway.settings.console_url or str(request.base_url)
        made = await api.invite(who, str(form.get("tag", "")).strip(), base,
                                request.client.host if request.client else None)
        return render("invitation.html", request, who, i=made, svg=qr.inline_svg(made["url"]))

    @app.get("/console/calculator", include_in_schema=False)
    async def calculator(request: Request, power_kw: str = "7", price: str = "1.20",
                         windows: str = "", area: str = "") -> Response:
        who = await user(request)
        if who is None:
            return login_page()
        speak(request)  # the chart's words in the page's language
        result = chart = error = None
        if "price" in request.query_params:
            try:
                power = Decimal(power_kw)
                if not power.is_finite() or not 1 <= power <= 400:
                    raise ApiError(400, "power: 1 to 400 kW")
                result = await revenue_estimate(
                    api, power, price, [w.strip() for w in windows.splitlines() if w.strip()],
                    Decimal(10), area or None)
                chart = charts.bars(
                    [v * 100 for v in result["hourly_utilisation"]],
                    [f"{week_days()[h // 24]} {h % 24:02d}" for h in range(168)],
                    i18n.gettext("Expected utilisation by hour of week (%)"), " %", every=24)
            except ApiError as exc:
                error = str(exc)
            except ArithmeticError:
                error = f"power {power_kw!r}: a number of kW"
        return render("calculator.html", request, who, result=result, chart=chart, error=error,
                      form={"power_kw": power_kw, "price": price, "windows": windows,
                            "area": area})

    # --- the driver's page of a connector, opened from its QR code (issue 33, item 2) ---------

    @app.get("/console/c/{station_id}/{connector_id}", include_in_schema=False)
    async def connector_page(request: Request, station_id: str, connector_id: int) -> Response:
        who = await user(request)
        if who is None:
            return login_first(request)
        shown = await api.connector(who, station_id, connector_id)
        # The driver's money, membership and free energy left, beside the start button.
        mine = await api.member(who, str(who.owner)) if who.role == "member" else None
        slots = await api.free_slots(who, station_id, connector_id)
        return render("connector.html", request, who, c=shown, m=mine, slots=slots,
                      **outcome(request))

    @app.post("/console/c/{station_id}/{connector_id}/{action}", include_in_schema=False)
    async def connector_action(request: Request, station_id: str, connector_id: int,
                               action: str) -> Response:
        who = await poster(request)
        if not isinstance(who, Principal):
            return who
        speak(request)
        origin = request.client.host if request.client else None
        try:
            if action not in ("start", "stop"):
                raise ApiError(404, f"no action {action!r}")
            answer = await (api.driver_start if action == "start" else api.driver_stop)(
                who, station_id, connector_id, origin)
            failed = not answer.get("ok") or not answer.get("accepted")
            reason = answer.get("message") or answer.get("status") or ""
            reason = i18n.explain(reason)
            message = (i18n.gettext("Not started: %(reason)s", reason=reason) if failed
                       and action == "start" else i18n.gettext(
                           "Not stopped: %(reason)s", reason=reason) if failed
                       else i18n.gettext("Starting: plug in if you have not.") if action == "start"
                       else i18n.gettext("The charger is offline: it stops as soon as it is "
                                         "back, and your bill follows.") if answer.get("queued")
                       else i18n.gettext("Stopping: your bill follows."))
        except ApiError as exc:
            failed = True
            message = (i18n.gettext("Not started: %(reason)s", reason=i18n.explain(exc)) if action == "start"
                       else i18n.gettext("Not stopped: %(reason)s", reason=i18n.explain(exc)))
        return told(f"/console/c/{station_id}/{connector_id}", message, failed)

    @app.get("/console/sessions/{session_id}", include_in_schema=False)
    async def session_page(request: Request, session_id: int) -> Response:
        """One session: its numbers, its bill once settled, and its power and state of
        charge over time (drawn on the server from its meter values)."""
        from datetime import UTC

        from cocharge import views

        who = await user(request)
        if who is None:
            return login_first(request)
        shown = await api.session(who, session_id)
        speak(request)  # the chart's words in the page's language
        power, soc = await views.session_curve(api.engine, session_id)
        chart = None
        moments = [at for at, _ in power] + [at for at, _ in soc]
        if moments:
            start = min(moments)

            def minutes(at: Any) -> float:
                return float((at - start).total_seconds() / 60)

            ticks = sorted({at for at in moments})
            step = max(1, len(ticks) // 5)
            labels = [(minutes(at), i18n.local_time(at.replace(tzinfo=UTC))[11:16])
                      for at in ticks[::step]]
            chart = charts.lines(
                [(i18n.gettext("Power (kW)"), "power", [(minutes(a), v) for a, v in power]),
                 (i18n.gettext("State of charge (%)"), "soc", [(minutes(a), v) for a, v in soc])],
                i18n.gettext("Power (kW, left) and state of charge (%, right)"), labels)
        return render("session.html", request, who, r=shown, chart=chart)

    @app.get("/console/members", include_in_schema=False)
    async def members_page(request: Request) -> Response:
        """The operator's members: add one, block or unblock one (the API's checks)."""
        who = await user(request)
        if who is None:
            return login_first(request)
        q = request.query_params.get("q") or None
        number = page_number(request.query_params.get("page"))
        listed, total = await api.members(who, q, PAGE, (number - 1) * PAGE)
        pages = Pages("/console/members", {"q": q} if q else {}, number, total, len(listed))
        if pages.past_the_end:
            return RedirectResponse(pages.last_link, status_code=303)
        return render("members.html", request, who, members=listed, q=q or "", pages=pages,
                      **outcome(request))

    @app.post("/console/members", include_in_schema=False)
    async def members_add(request: Request) -> Response:
        sent = await posted(request)
        if not isinstance(sent, tuple):
            return sent
        who, form = sent
        name, tag = str(form.get("name", "")).strip(), str(form.get("tag", "")).strip()
        phone = str(form.get("phone", "")).strip() or None
        try:
            if not name:
                raise ApiError(400, "name: the member's name")
            await api.add_member(who, name, tag, phone, None)
            message, failed = i18n.gettext("Member %(tag)s added.", tag=tag), False
        except ApiError as exc:
            message, failed = i18n.gettext("Not added: %(reason)s", reason=i18n.explain(exc)), True
        return told("/console/members", message, failed)

    @app.get("/console/members/{tag}", include_in_schema=False)
    async def member_page(request: Request, tag: str) -> Response:
        """One member's details to edit (operator): name, phone, expiry, groups, vehicle,
        quota, green, household, paying with coins, the language at the charger."""
        who = await user(request)
        if who is None:
            return login_first(request)
        shown = await api.member_details(who, tag)
        trail = await api.audit(who, None, f"member:{tag}", 50)
        return render("member.html", request, who, m=shown, audit=trail, **outcome(request))

    @app.post("/console/members/{tag}", include_in_schema=False)
    async def member_edit(request: Request, tag: str) -> Response:
        return await edited(
            request, f"/console/members/{quote(tag)}", "message",
            lambda who: api.member_details(who, tag), member_change,
            lambda who, change, origin: api.update_member(who, tag, change, origin),
            lambda: i18n.gettext("%(tag)s saved.", tag=tag))

    @app.post("/console/members/{tag}/{action}", include_in_schema=False)
    async def members_block(request: Request, tag: str, action: str) -> Response:
        sent = await posted(request)
        if not isinstance(sent, tuple):
            return sent
        who, form = sent
        if action not in ("block", "unblock"):
            return render("error.html", request, who, error=f"no action {action!r}", status=404)
        try:
            await api.block(who, tag, action == "block",
                            request.client.host if request.client else None)
            message, failed = (i18n.gettext("%(tag)s blocked: its cards are refused.", tag=tag)
                               if action == "block" else
                               i18n.gettext("%(tag)s accepted again.", tag=tag)), False
        except ApiError as exc:
            message, failed = i18n.explain(exc), True
        # back to the page of the list it was sent from (its search, its page)
        return told(_back_to(form.get("back")) or "/console/members", message, failed)

    @app.get("/console/near", include_in_schema=False)
    async def near(request: Request) -> Response:
        """Stations near me: the stations with a place nearest to `lat`, `lon` (service.NEAR;
        the page's script asks the phone where it is and comes back with them rounded to 2
        decimals, about 1 km; neither logged nor kept), each with its price now, hours and
        state; the script sorts them by their exact distance."""
        who = await user(request)
        if who is None:
            return login_first(request)
        near = place_of(request.query_params.get("lat"), request.query_params.get("lon"))
        places = await api.places(who, near)
        return render("near.html", request, who, places=places, near=near, most=len(places))

    @app.get("/console/g/{group_id}", include_in_schema=False)
    async def group_page(request: Request, group_id: int) -> Response:
        """A group's invitation link (拼团): what it is, and Join for a signed-in member."""
        who = await user(request)
        if who is None:
            return login_first(request)
        group = await api.group(who, group_id)
        return render("group.html", request, who, g=group,
                      **outcome(request))

    @app.post("/console/g/{group_id}/join", include_in_schema=False)
    async def group_join(request: Request, group_id: int) -> Response:
        who = await poster(request)
        if not isinstance(who, Principal):
            return who
        speak(request)
        try:
            status = await api.join_group(who, group_id)
            message, failed = i18n.gettext("You joined the group: %(status)s.",
                                           status=i18n.gettext(status)), False
        except ApiError as exc:
            message, failed = i18n.gettext("Not joined: %(reason)s", reason=i18n.explain(exc)), True
        return told(f"/console/g/{group_id}", message, failed)

    @app.get("/console/me", include_in_schema=False)
    async def me(request: Request) -> Response:
        who = await user(request)
        if who is None:
            return login_page()
        if who.role != "member":
            return RedirectResponse("/console/", status_code=303)
        data = await api.member(who, str(who.owner))
        rows = await api.sessions(who, limit=50)
        bookings = await api.bookings(who)
        keys = await passkeys.count(api.engine, str(who.owner))
        return render("me.html", request, who, m=data, rows=list(reversed(rows)),
                      bookings=bookings, passkey_count=keys, **outcome(request))

    @app.post("/console/me/bookings", include_in_schema=False)
    async def book(request: Request) -> Response:

        sent = await posted(request)
        if not isinstance(sent, tuple):
            return sent
        who, form = sent
        zone = i18n.zone().key  # a time typed into the form is the platform's local time
        try:
            connector = str(form.get("connector", "1"))
            booking = await api.book(who, str(form.get("station", "")),
                                     int(connector) if connector.isdigit() else 1, None,
                                     parse_when(str(form.get("start", "")), zone),
                                     parse_when(str(form.get("end", "")), zone))
            message = i18n.gettext("Booked: booking %(id)s at %(station)s.",
                                   id=booking["id"], station=booking["station"])
            failed = False
        except (ApiError, RegistryError) as exc:
            message, failed = i18n.gettext("Not booked: %(reason)s", reason=i18n.explain(exc)), True
        # A slot tapped on a connector's page comes back there.
        return told(_back_to(form.get("back")) or "/console/me", message, failed)

    @app.post("/console/me/bookings/{booking_id}/cancel", include_in_schema=False)
    async def cancel(request: Request, booking_id: int) -> Response:
        who = await poster(request)
        if not isinstance(who, Principal):
            return who
        speak(request)
        try:
            await api.cancel_booking(who, booking_id)
            message, failed = i18n.gettext("Booking %(id)s cancelled.", id=booking_id), False
        except ApiError as exc:
            message, failed = str(exc), True
        return told("/console/me", message, failed)

