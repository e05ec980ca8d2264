"""The dashboard's one web page: inline CSS, inline JavaScript, an inline SVG chart.

Nothing is fetched from elsewhere (no CDN, no fonts): the page works on an air-gapped
server, and its Content-Security-Policy allows exactly these two inline blocks (by hash) and
requests to its own origin. The script polls ``api/status`` every ``REFRESH_MS`` and
redraws; it builds every element with ``textContent``, never ``innerHTML``, so a refusal
reason a client chose cannot inject markup.
"""

from __future__ import annotations

import base64
import hashlib

__all__ = ["CSP", "LOGIN_PAGE", "PAGE", "REFRESH_MS"]

REFRESH_MS = 2000

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;max-width:60em}
h1{font-size:1.3em;margin:0 0 .6em}
.cards{display:flex;gap:1em;flex-wrap:wrap;margin-bottom:1em}
.card{border:1px solid #ccc;border-radius:6px;padding:.5em 1em;min-width:9em}
.card b{display:block;font-size:1.6em}
svg{border:1px solid #ccc;border-radius:6px;background:#fafafa}
.point{fill:#1f77b4}.line{fill:none;stroke:#1f77b4;stroke-width:2}
.axis{stroke:#999}.label{font-size:11px;fill:#555}
table{border-collapse:collapse;margin-top:.5em}td,th{border-bottom:1px solid #ddd;padding:.2em .8em;text-align:left}
.muted{color:#888}
"""

SCRIPT = """
"use strict";
const NS = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const e = document.createElementNS(NS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  return e;
}
function set(id, text) { document.getElementById(id).textContent = text; }
function drawCurve(points) {
  const chart = document.getElementById("curve");
  while (chart.firstChild) chart.removeChild(chart.firstChild);
  const W = 560, H = 220, L = 40, B = 24, T = 10, R = 10;
  chart.appendChild(svg("line", {x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis"}));
  chart.appendChild(svg("line", {x1: L, y1: T, x2: L, y2: H - B, class: "axis"}));
  for (const v of [0, 0.5, 1]) {
    const t = svg("text", {x: 4, y: H - B - v * (H - B - T) + 4, class: "label"});
    t.textContent = v.toFixed(1);
    chart.appendChild(t);
  }
  if (!points.length) return;
  const last = Math.max(...points.map(p => p.round), 1);
  const x = r => L + (r / last) * (W - L - R);
  const y = a => H - B - Math.min(Math.max(a, 0), 1) * (H - B - T);
  const path = points.map((p, i) => (i ? "L" : "M") + x(p.round) + " " + y(p.value)).join(" ");
  chart.appendChild(svg("path", {d: path, class: "line"}));
  for (const p of points) {
    const c = svg("circle", {cx: x(p.round), cy: y(p.value), r: 3.5, class: "point"});
    const tip = svg("title", {});
    tip.textContent = "round " + p.round + ": " + p.value.toFixed(4);
    c.appendChild(tip);
    chart.appendChild(c);
  }
  const t = svg("text", {x: W - R - 60, y: H - 6, class: "label"});
  t.textContent = "round " + last;
  chart.appendChild(t);
}
function drawRefusals(rows) {
  const body = document.getElementById("refused");
  while (body.firstChild) body.removeChild(body.firstChild);
  for (const r of rows.slice().reverse()) {
    const tr = document.createElement("tr");
    for (const v of [r.round, r.client, r.reason]) {
      const td = document.createElement("td");
      td.textContent = String(v);
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
  set("refused-count", rows.length ? rows.length + " shown" : "none");
}
function render(s) {
  set("round", s.round + " / " + s.rounds);
  set("phase", s.phase);
  set("clients", s.clients.connected + " / " + s.clients.total);
  set("joined", s.clients.joined + " joined");
  set("updates", s.updates.received + " / " + s.updates.selected);
  set("accuracy", s.accuracy === null ? "-" : s.accuracy.toFixed(4));
  set("privacy", s.privacy === null ? "off"
    : s.privacy.epsilon === null ? "unbounded" : "epsilon " + s.privacy.epsilon.toFixed(3));
  set("elapsed", Math.round(s.elapsed_s) + " s");
  document.getElementById("curve").setAttribute("data-points", String(s.curve.length));
  drawCurve(s.curve);
  drawRefusals(s.refused);
  document.body.setAttribute("data-loaded", String(s.round));
}
async function refresh() {
  try {
    const r = await fetch("api/status", {credentials: "same-origin", cache: "no-store"});
    if (r.status === 401 || r.status === 403) { set("phase", "signed out: reload"); return; }
    render(await r.json());
  } catch (e) { set("phase", "server unreachable"); }
}
refresh();
setInterval(refresh, REFRESH_MS);
""".replace("REFRESH_MS", str(REFRESH_MS))

BODY = """<h1>fedloom server</h1>
<div class="cards">
 <div class="card">round<b id="round">-</b><span id="phase" class="muted"></span></div>
 <div class="card">clients connected<b id="clients">-</b><span id="joined" class="muted"></span></div>
 <div class="card">updates this round<b id="updates">-</b></div>
 <div class="card">test accuracy<b id="accuracy">-</b></div>
 <div class="card">privacy spent<b id="privacy">-</b></div>
 <div class="card">elapsed<b id="elapsed">-</b></div>
</div>
<h2>Test accuracy by round</h2>
<svg id="curve" width="560" height="220" viewBox="0 0 560 220" data-points="0"></svg>
<h2>Refused updates <span id="refused-count" class="muted"></span></h2>
<table><thead><tr><th>round</th><th>client</th><th>reason</th></tr></thead>
<tbody id="refused"></tbody></table>
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


PAGE = (
    "<!doctype html><html lang=en><head><meta charset=utf-8><title>fedloom server</title>"
    f"<style>{STYLE}</style></head><body>{BODY}<script>{SCRIPT}</script></body></html>"
)

LOGIN_PAGE = (
    "<!doctype html><html lang=en><head><meta charset=utf-8><title>fedloom: sign in</title>"
    f"<style>{STYLE}</style></head><body><h1>fedloom server</h1>"
    "<p>This dashboard needs the token the server printed at start.</p>"
    '<form method="post" action="login"><input type="password" name="token" '
    'autocomplete="off" placeholder="token"> <button>Sign in</button></form></body></html>'
)

CSP = (
    f"default-src 'none'; script-src {_sha256(SCRIPT)}; style-src {_sha256(STYLE)}; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
