"""The live dashboard: a small web page on the deployed server (``fedloom server --dashboard``).

It shows what the status line shows, and what a line cannot: the accuracy curve so far, the
latest refused updates with their reasons, and the privacy budget spent when DP is on. The
page (:mod:`fedloom.net._dashboard_page`) is self-contained and polls ``api/status``, a JSON
snapshot of the :class:`~fedloom.net.board.RoundBoard` and of the round reports.

Who may look: only whoever holds the dashboard token. A request carries it as
``Authorization: Bearer TOKEN`` or signs in once (``login?token=TOKEN``, or the form the page
shows) and then carries a session cookie (an HMAC of the token, ``HttpOnly``,
``SameSite=Strict``); anything else gets 401 with no data. The server listens on loopback by
default (reach it with an SSH tunnel); with ``deploy.certs`` it speaks HTTPS with the
deployment's server certificate. It is the standard library's ``http.server`` in one daemon
thread: off by default, and when off nothing of it is imported or started.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import math
import secrets
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fedloom.algorithms import ServerState
from fedloom.engine import Callback
from fedloom.errors import ConfigError
from fedloom.net._dashboard_page import CSP, LOGIN_PAGE, PAGE, REFRESH_MS
from fedloom.net.board import RoundBoard
from fedloom.types import RoundReport

__all__ = ["REFRESH_MS", "Dashboard", "DashboardFeed", "read_token", "start_dashboard"]

log = logging.getLogger("fedloom.server")

COOKIE = "fedloom_dashboard"
MAX_FORM_BYTES = 4096  # a sign-in form holds one token; anything longer is refused
CURVE_METRIC = "test_accuracy"


class DashboardFeed(Callback):
    """Collects what the page shows from the round loop (a callback) and the board.

    ``snapshot()`` is called from HTTP threads while the loop calls ``on_round``; one lock
    keeps the two apart. Per round it stores two floats, so it costs nothing measurable.
    """

    def __init__(self, board: RoundBoard):
        self.board = board
        self.rounds = 0
        self.done = 0
        self.finished = False
        self.curve: list[tuple[int, float]] = []
        self.last: dict[str, float] = {}
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def on_start(self, num_rounds: int, state: ServerState) -> None:
        with self._lock:
            self.rounds = num_rounds

    def on_resume(self, reports: tuple[RoundReport, ...], state: ServerState) -> None:
        for report in reports:
            self.on_round(report, state)

    def on_round(self, report: RoundReport, state: ServerState) -> None:
        with self._lock:
            self.done = report.round
            self.last = dict(report.metrics)
            value = float(report.metrics.get(CURVE_METRIC, math.nan))
            if math.isfinite(value):  # JSON has no NaN: a diverged round is left out
                self.curve.append((report.round, value))

    def on_end(self, history: Any) -> None:
        with self._lock:
            self.finished = True

    def snapshot(self) -> dict[str, Any]:
        """The page's data: plain JSON values (see the README's deployment section)."""
        status = self.board.status()
        refused = self.board.recent_refusals()
        with self._lock:
            done, curve, last, finished = self.done, list(self.curve), self.last, self.finished
            rounds = self.rounds
        if finished:
            phase = "done"
        elif status.round is not None:
            phase = "training"
        else:
            phase = "starting" if done == 0 else "aggregating"
        epsilon = last.get("dp_epsilon")
        if epsilon is None:
            privacy = None
        else:  # JSON has no infinity: an unbounded epsilon (no noise) is null
            privacy = {"epsilon": epsilon if math.isfinite(epsilon) else None}
        return {
            "round": status.round if status.round is not None else done,
            "rounds": rounds,
            "rounds_done": done,
            "phase": phase,
            "clients": {
                "connected": status.connected,
                "joined": status.joined,
                "total": len(self.board.access.clients),
            },
            "updates": {
                "selected": status.selected,
                "received": status.received,
                "refused": status.rejected,
            },
            "accuracy": curve[-1][1] if curve else None,
            "curve": [{"round": r, "value": v} for r, v in curve],
            "refused": [
                {"round": r.round, "client": r.client_id, "reason": r.reason} for r in refused
            ],  # fmt: skip
            "privacy": privacy,
            "elapsed_s": time.monotonic() - self.started,
        }


@dataclass
class Dashboard:
    """A running dashboard: its address, the URL that signs in, and how to stop it."""

    server: ThreadingHTTPServer
    thread: threading.Thread
    url: str
    token: str

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def login_url(self) -> str:
        return f"{self.url}login?token={self.token}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def read_token(path: str | None) -> str:
    """The dashboard token from ``path`` (its first line), or a fresh random one."""
    if path is None:
        return secrets.token_urlsafe(24)
    try:
        token = Path(path).read_text().strip().splitlines()[0].strip()
    except (OSError, IndexError) as exc:
        raise ConfigError(
            f"deploy.dashboard_token: cannot read a token from {path} ({exc}); give a file "
            "whose first line is the token, or leave it unset for a random one"
        ) from None
    if len(token) < 16:
        raise ConfigError(
            f"deploy.dashboard_token: the token in {path} has {len(token)} characters; use at "
            "least 16 (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(24))'`)"
        )
    return token


def _session(token: str) -> str:
    return hmac.new(token.encode(), b"fedloom-dashboard-session", hashlib.sha256).hexdigest()


def _handler(feed: DashboardFeed, token: str, *, https: bool) -> type[BaseHTTPRequestHandler]:
    session = _session(token)
    cookie = f"{COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/" + (
        "; Secure" if https else ""
    )

    class Handler(BaseHTTPRequestHandler):
        server_version = "fedloom-dashboard"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug("dashboard: " + format, *args)

        def _send(self, code: int, body: str, kind: str, headers: Mapping[str, str] = {}) -> None:  # noqa: B006
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", f"{kind}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Security-Policy", CSP)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            header = self.headers.get("Authorization", "")
            if header.startswith("Bearer "):
                return hmac.compare_digest(header[7:].strip().encode(), token.encode())
            for part in self.headers.get("Cookie", "").split(";"):
                name, _, value = part.strip().partition("=")
                if name == COOKIE:
                    return hmac.compare_digest(value.encode(), session.encode())
            return False

        def _refuse(self, path: str) -> None:
            if path == "/":
                self._send(401, LOGIN_PAGE, "text/html", {"WWW-Authenticate": "Bearer"})
            else:
                body = json.dumps({"error": "the dashboard token is missing or wrong"})
                self._send(401, body, "application/json", {"WWW-Authenticate": "Bearer"})

        def _login(self, given: str) -> None:
            if not hmac.compare_digest(given.encode(), token.encode()):
                log.warning("dashboard: refused a sign-in with a wrong token (%s)",
                            self.client_address[0])  # fmt: skip
                self._send(403, LOGIN_PAGE, "text/html")
                return
            self.send_response(303)
            self.send_header("Location", "./")  # relative: works behind a path prefix
            self.send_header("Set-Cookie", cookie)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:  # noqa: N802
            url = urlsplit(self.path)
            if url.path == "/login":
                self._login(parse_qs(url.query).get("token", [""])[0])
            elif url.path not in ("/", "/api/status"):
                self._send(404, "not found", "text/plain")
            elif not self._authorized():
                self._refuse(url.path)
            elif url.path == "/":
                self._send(200, PAGE, "text/html")
            else:
                self._send(200, json.dumps(feed.snapshot()), "application/json")

        def do_POST(self) -> None:  # noqa: N802
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = 0
            if urlsplit(self.path).path != "/login" or not 0 < length <= MAX_FORM_BYTES:
                self._send(400, "bad request", "text/plain")
                return
            form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
            self._login(form.get("token", [""])[0])

    return Handler


def start_dashboard(
    feed: DashboardFeed,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str,
    certs: str | Path | None = None,
) -> Dashboard:
    """Serve the dashboard on ``host:port`` (port 0 picks one) in a daemon thread; HTTPS with
    ``certs``' ``server.pem``/``server.key`` when ``certs`` is given."""
    try:
        server = ThreadingHTTPServer((host, port), _handler(feed, token, https=certs is not None))
    except OSError as exc:
        raise ConfigError(f"deploy.dashboard: cannot listen on {host}:{port}: {exc}") from None
    server.daemon_threads = True
    scheme = "http"
    if certs is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(Path(certs) / "server.pem", Path(certs) / "server.key")
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    elif not _loopback(host):
        log.warning(
            "UNSAFE: the dashboard listens on %s in plain HTTP: its token crosses the network "
            "in the clear; give deploy.certs for HTTPS, or keep it on loopback and tunnel", host
        )  # fmt: skip
    thread = threading.Thread(target=server.serve_forever, name="fedloom-dashboard", daemon=True)
    thread.start()
    wildcard = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # all interfaces: show one
    shown = wildcard.get(host, host)
    shown = shown if ":" not in shown else f"[{shown}]"
    return Dashboard(server, thread, f"{scheme}://{shown}:{server.server_address[1]}/", token)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
