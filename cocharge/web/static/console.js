// cocharge console: keeps the fleet and station pages current by polling the HTTP API
// (GET with the login cookie). No library, no build step.
"use strict";

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// The page's words and money format in its language (web/i18n.py gives them in the page).
const WORDS = JSON.parse((document.getElementById("i18n") || {}).textContent || "{}");
const ZH = document.documentElement.lang.startsWith("zh");
function t(word) { return WORDS[word] || word; }

function cny(fen) {
  if (fen === null || fen === undefined) return "-";
  const text = Math.abs(fen / 100).toLocaleString("en-US", {minimumFractionDigits: 2,
                                                             maximumFractionDigits: 2});
  return (fen < 0 ? "-" : "") + (ZH ? "¥" + text : "CNY " + text);
}

function onlineBadge(online) {
  return el("span", {class: online ? "ok" : "off"}, online ? t("online") : t("offline"));
}

function connectorChips(s) {
  const box = el("span", {class: "connectors"});
  const entries = Object.entries(s.connector_status || {});
  if (!entries.length) box.append(el("span", {class: "muted"}, t("no status yet")));
  for (const [id, c] of entries) {
    box.append(el("span", {class: "chip " + c.status.toLowerCase() + (s.online ? "" : " stale"),
                            title: t("connector") + " " + id}, id + ": " + t(c.status)), " ");
  }
  return box;
}

function liveSessions(s) {
  const box = document.createDocumentFragment();
  for (const r of s.sessions || []) {
    box.append(el("div", {class: "live"},
      "#" + r.id + " " + (r.tag || "") + " · " + (r.kwh || "0.000") + " kWh · " +
      cny(r.cost_so_far_fen)));
  }
  return box;
}

function fill(cell, ...children) { cell.replaceChildren(...children); }

// [what the API answered, its headers], or [null, null].
async function getAnswer(url) {
  const answer = await fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}});
  if (answer.status === 401) { window.location = "/console/login"; return [null, null]; }
  return answer.ok ? [await answer.json(), answer.headers] : [null, null];
}

async function getJson(url) { return (await getAnswer(url))[0]; }

// The fleet page's stations (its page of them, as the page's poll URL says), and the counts
// of the whole list from the answer's headers.
async function pollFleet(table) {
  const [rows, headers] = await getAnswer(table.dataset.poll);
  if (!rows) return;
  const member = table.dataset.role === "member";
  const body = table.tBodies[0];
  const existing = new Map([...body.rows].map(r => [r.dataset.station, r]));
  const fresh = [];
  for (const s of rows) {
    let row = existing.get(s.id);
    if (!row) {
      row = el("tr", {"data-station": s.id});
      const link = el("a", {href: "/console/stations/" + encodeURIComponent(s.id)}, s.id);
      row.append(el("td", {"data-label": t("Station")}), el("td", {"data-label": t("Online"), class: "online"}),
                 el("td", {"data-label": t("Connectors"), class: "status"}));
      row.cells[0].append(link);
      if (member) {
        row.append(el("td", {"data-label": t("Power")}, s.max_power_kw ? s.max_power_kw + " kW" : ""),
                   el("td", {"data-label": t("Area")}, s.area || ""));
      } else {
        row.append(el("td", {"data-label": t("Charging now"), class: "sessions"}),
                   el("td", {"data-label": t("Owner")}, s.owner || ""), el("td", {"data-label": t("Node")}));
      }
    }
    fill(row.querySelector(".online"), onlineBadge(s.online));
    fill(row.querySelector(".status"), connectorChips(s));
    if (!member) {
      fill(row.querySelector(".sessions"), liveSessions(s));
      row.cells[5].textContent = s.node || "";
    }
    fresh.push(row);
  }
  body.replaceChildren(...fresh);
  const up = document.getElementById("up"), total = document.getElementById("total");
  if (up) up.textContent = headers.get("X-Online-Count") ?? rows.filter(s => s.online).length;
  if (total) total.textContent = headers.get("X-Total-Count") ?? rows.length;
}

async function pollStation(badge) {
  const s = await getJson(badge.dataset.poll);
  if (!s) return;
  fill(badge, onlineBadge(s.online));
  fill(document.getElementById("station-status"), connectorChips(s));
  fill(document.getElementById("station-sessions"), liveSessions(s));
}

async function pollFrames(list) {
  const frames = await getJson(list.dataset.poll + "?limit=200&after=" + list.dataset.after);
  if (!frames || !frames.length) return;
  const arrows = {in: "⇠", out: "⇢", note: "•"};
  const empty = list.querySelector(".muted");
  if (empty) empty.remove();
  for (const f of frames) {
    const item = el("li", {class: f.direction});
    item.append(el("time", {}, clock(f.at, list.dataset.zone)), " ", el("b", {}, arrows[f.direction] || "?"),
                " ", el("code", {}, f.frame));
    list.prepend(item);
  }
  list.dataset.after = frames[frames.length - 1].id;
}

// A frame's time of day in the platform's zone (the page says which), with milliseconds.
function clock(iso, zone) {
  const at = new Date(iso.endsWith("Z") ? iso : iso + "Z");
  if (isNaN(at)) return iso.slice(11, 23);
  const text = at.toLocaleTimeString("en-GB", {timeZone: zone || "Asia/Shanghai", hour12: false});
  return text + "." + String(at.getUTCMilliseconds()).padStart(3, "0");
}

function every(ms, work) {
  const run = async () => {
    try { await work(); } catch (e) { /* the next round tries again */ }
    setTimeout(run, ms);
  };
  setTimeout(run, ms);
}

// The driver's page of a connector: its own running session's energy and cost, live; the
// page reloads itself when the session ends (its bill) or starts.
async function pollDriver(box) {
  const rows = await getJson("/api/v1/sessions?active=true&station=" +
                             encodeURIComponent(box.dataset.station));
  if (!rows) return;
  const mine = rows.filter(r => String(r.connector) === box.dataset.connector);
  const kwh = document.getElementById("live-kwh");
  if (!mine.length) { if (kwh) window.location.reload(); return; }
  if (!kwh) { window.location.reload(); return; }
  const r = mine[mine.length - 1];
  kwh.textContent = (r.kwh || "0.000") + " kWh";
  document.getElementById("live-cost").textContent = cny(r.cost_so_far_fen);
}

document.addEventListener("DOMContentLoaded", () => {
  const driver = document.getElementById("driver");
  if (driver && document.getElementById("stop")) every(2000, () => pollDriver(driver));
  if (driver && document.getElementById("start") && document.getElementById("driver-result")
      && !document.getElementById("driver-result").classList.contains("bad"))
    every(2000, () => pollDriver(driver));
  const fleet = document.getElementById("fleet");
  if (fleet) every(3000, () => pollFleet(fleet));
  const badge = document.getElementById("station-online");
  if (badge) every(3000, () => pollStation(badge));
  const frames = document.getElementById("frames");
  if (frames) every(3000, () => pollFrames(frames));
});

// Passkeys (api/passkeys.py): the server's options in, the browser's answer out, as JSON
// with binary fields in base64url; the server then sets the login cookie.
function b64url(buffer) {
  let text = "";
  for (const byte of new Uint8Array(buffer)) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function unb64url(text) {
  const plain = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4));
  return Uint8Array.from(plain, c => c.charCodeAt(0)).buffer;
}

async function postJSON(path, body) {
  const answer = await fetch(path, {method: "POST", credentials: "same-origin",
                                    headers: {"Content-Type": "application/json"},
                                    body: JSON.stringify(body)});
  const data = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new Error(data.error || answer.statusText);
  return data;
}

function credentialJSON(made) {
  const r = made.response, out = {};
  for (const name of ["clientDataJSON", "attestationObject", "authenticatorData", "signature"]) {
    if (r[name]) out[name] = b64url(r[name]);
  }
  if (r.userHandle) out.userHandle = b64url(r.userHandle);
  if (r.getTransports) out.transports = r.getTransports();
  return {id: made.id, rawId: b64url(made.rawId), type: made.type, response: out,
          clientExtensionResults: made.getClientExtensionResults(),
          authenticatorAttachment: made.authenticatorAttachment || undefined};
}

async function passkey(button) {
  const kind = button.dataset.passkey;
  const options = await postJSON("/console/passkeys/options",
                                 {purpose: kind, token: button.dataset.token || null});
  options.challenge = unb64url(options.challenge);
  const ids = list => (list || []).map(c => Object.assign({}, c, {id: unb64url(c.id)}));
  let made;
  if (kind === "register") {
    options.user.id = unb64url(options.user.id);
    options.excludeCredentials = ids(options.excludeCredentials);
    made = await navigator.credentials.create({publicKey: options});
  } else {
    options.allowCredentials = ids(options.allowCredentials);
    made = await navigator.credentials.get({publicKey: options});
  }
  const done = await postJSON(kind === "register" ? "/console/passkeys/register"
                                                  : "/console/passkeys/login",
                              {credential: credentialJSON(made), next: button.dataset.next || null});
  location.href = done.to;
}

for (const button of document.querySelectorAll("[data-passkey]")) {
  const error = document.getElementById("passkey-error");
  if (!window.PublicKeyCredential) {
    button.disabled = true;
    if (error) {
      error.textContent = t("This browser has no passkeys.");
      error.className = "error";
      error.hidden = false;
    }
    continue;
  }
  button.addEventListener("click", () => {
    if (error) error.hidden = true;
    passkey(button).catch(failure => {
      if (error) {
        error.textContent = failure.message;
        error.className = "error";
        error.hidden = false;
      }
    });
  });
}

// Stations near me (near.html): the page asks the server for the stations nearest to the
// phone's position rounded to about 1 km (2 decimals: the server neither logs nor keeps it),
// then sorts them by their exact distance from the phone itself.
const nearList = document.getElementById("near");
if (nearList && navigator.geolocation) {
  navigator.geolocation.getCurrentPosition(position => {
    const here = position.coords, radians = Math.PI / 180;
    if (!nearList.dataset.near) {
      const url = new URL(window.location.href);
      url.searchParams.set("lat", here.latitude.toFixed(2));
      url.searchParams.set("lon", here.longitude.toFixed(2));
      window.location.replace(url.toString());
      return;
    }
    const items = Array.from(nearList.querySelectorAll("li[data-lat]"));
    for (const item of items) {  // haversine, on a sphere of the Earth's mean radius
      const dLat = (item.dataset.lat - here.latitude) * radians;
      const dLon = (item.dataset.lon - here.longitude) * radians;
      const a = Math.sin(dLat / 2) ** 2 + Math.cos(here.latitude * radians) *
        Math.cos(item.dataset.lat * radians) * Math.sin(dLon / 2) ** 2;
      item.dataset.km = 6371.0088 * 2 * Math.asin(Math.sqrt(a));
      item.querySelector(".distance").textContent =
        Number(item.dataset.km).toFixed(item.dataset.km < 10 ? 1 : 0) + " km";
    }
    items.sort((x, y) => x.dataset.km - y.dataset.km).forEach(item => nearList.appendChild(item));
    const note = document.getElementById("near-note");
    if (note) note.hidden = true;
  }, () => {});
}

// The station page's command form shows only the fields of the command chosen (the server
// takes only those: console.py FORM_COMMANDS); the others are disabled, so not sent.
const commandForm = document.getElementById("command-form");
if (commandForm) {
  const fields = JSON.parse(commandForm.dataset.fields || "{}");
  const chosen = document.getElementById("command");
  const show = () => {
    const wanted = fields[chosen.value] || [];
    for (const label of commandForm.querySelectorAll("label[data-field]")) {
      const used = wanted.includes(label.dataset.field);
      label.style.display = used ? "" : "none";  // (the stylesheet's display beats hidden)
      for (const input of label.querySelectorAll("input")) input.disabled = !used;
    }
  };
  chosen.addEventListener("change", show);
  show();
}
