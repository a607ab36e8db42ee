// cocharge console: keeps the fleet and station pages current by polling the HTTP API
// (GET with the login cookie). No library, no build step.
"use strict";

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function cny(fen) { return fen === null || fen === undefined ? "-" : (fen / 100).toFixed(2); }

function onlineBadge(online) {
  return el("span", {class: online ? "ok" : "off"}, online ? "online" : "offline");
}

function connectorChips(s) {
  const box = el("span", {class: "connectors"});
  const entries = Object.entries(s.connector_status || {});
  if (!entries.length) box.append(el("span", {class: "muted"}, "no status yet"));
  for (const [id, c] of entries) {
    box.append(el("span", {class: "chip " + c.status.toLowerCase() + (s.online ? "" : " stale"),
                            title: "connector " + id}, id + ": " + c.status), " ");
  }
  return box;
}

function liveSessions(s) {
  const box = document.createDocumentFragment();
  for (const r of s.sessions || []) {
    box.append(el("div", {class: "live"},
      "#" + r.id + " " + (r.tag || "") + " · " + (r.kwh || "0.000") + " kWh · " +
      cny(r.cost_so_far_fen) + " CNY"));
  }
  return box;
}

function fill(cell, ...children) { cell.replaceChildren(...children); }

async function getJson(url) {
  const answer = await fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}});
  if (answer.status === 401) { window.location = "/console/login"; return null; }
  return answer.ok ? answer.json() : null;
}

async function pollFleet(table) {
  const rows = await getJson(table.dataset.poll);
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
      row.append(el("td", {"data-label": "Station"}), el("td", {"data-label": "Online", class: "online"}),
                 el("td", {"data-label": "Connectors", class: "status"}));
      row.cells[0].append(link);
      if (member) {
        row.append(el("td", {"data-label": "Power"}, s.max_power_kw ? s.max_power_kw + " kW" : ""),
                   el("td", {"data-label": "Area"}, s.area || ""));
      } else {
        row.append(el("td", {"data-label": "Charging now", class: "sessions"}),
                   el("td", {"data-label": "Owner"}, s.owner || ""), el("td", {"data-label": "Node"}));
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
  if (up) up.textContent = rows.filter(s => s.online).length;
  if (total) total.textContent = rows.length;
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
    item.append(el("time", {}, f.at.slice(11, 23)), " ", el("b", {}, arrows[f.direction] || "?"),
                " ", el("code", {}, f.frame));
    list.prepend(item);
  }
  list.dataset.after = frames[frames.length - 1].id;
}

function every(ms, work) {
  const run = async () => {
    try { await work(); } catch (e) { /* the next round tries again */ }
    setTimeout(run, ms);
  };
  setTimeout(run, ms);
}

document.addEventListener("DOMContentLoaded", () => {
  const fleet = document.getElementById("fleet");
  if (fleet) every(3000, () => pollFleet(fleet));
  const badge = document.getElementById("station-online");
  if (badge) every(3000, () => pollStation(badge));
  const frames = document.getElementById("frames");
  if (frames) every(3000, () => pollFrames(frames));
});
