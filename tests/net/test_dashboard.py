"""The live dashboard of a real deployed run: who may see it, and what a real browser shows.

A server with three real TLS clients runs on loopback; the run is held open after its last
round (a callback waits) while the tests look. The browser test drives Debian's Chromium
through Playwright (``make browser`` installs both; without them it skips, unless
``FEDLOOM_REQUIRE_BROWSER=1``, as in ``make test``, turns the skip into a failure).
"""

from __future__ import annotations

import json
import os
import ssl
import threading
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
import torch
from _harness import client_thread, patient, serve_in_thread

from fedloom.config import RunConfig, build_federated
from fedloom.engine import Callback
from fedloom.net.certs import write_quickstart
from fedloom.net.codec import encode_tensor
from fedloom.net.dashboard import DashboardFeed, start_dashboard
from fedloom.net.proto import fedloom_pb2 as pb
from fedloom.net.proto import fedloom_pb2_grpc as rpc
from fedloom.net.server import Access, RoundBoard
from fedloom.net.tls import channel_credentials

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
CLIENTS = ["a", "b", "c"]
ROUNDS = 3


class _HoldAtEnd(Callback):
    """Keeps the server (and its dashboard) up after the last round until released."""

    def __init__(self):
        self.reached, self.release = threading.Event(), threading.Event()
        self.accuracies: list[float] = []

    def on_round(self, report, state):
        self.accuracies.append(report.metrics["test_accuracy"])

    def on_end(self, history):
        self.reached.set()
        self.release.wait(patient(120))


@pytest.fixture(scope="module")
def live_run(tmp_path_factory):
    """A finished 3-round run of three clients, held open; one refused submission in it."""
    certs = tmp_path_factory.mktemp("certs")
    write_quickstart(certs, CLIENTS)
    config = RunConfig.from_dict(
        {
            "seed": 1,
            "rounds": ROUNDS,
            "data": {"dataset": "digits", "num_clients": 3, "partition": "iid"},
            "model": {"name": "digits_mlp"},
            "client": {"epochs": 1, "batch_size": 20, "lr": 0.05},
            "server": {"fraction": 1.0},
            "eval": {"clients": False},
            "deploy": {"dashboard": 0},
        }
    )
    data = build_federated(config)
    hold, boards = _HoldAtEnd(), []
    server, outcome = serve_in_thread(
        config, CLIENTS, certs, callbacks=[hold], on_dashboard=boards.append
    )
    assert "error" not in outcome, outcome.get("error")
    # client c submits for a round that is not open: refused, and the reason is on the page
    channel = grpc.secure_channel(
        f"127.0.0.1:{outcome['port']}",
        channel_credentials(certs / "ca.pem", certs / "client-c.pem", certs / "client-c.key"),
    )
    stale = pb.Update(round=41, update=encode_tensor(torch.zeros(2)), num_examples=1)
    assert not rpc.FederationStub(channel).SubmitUpdate(stale, timeout=10).accepted
    channel.close()
    workers = [client_thread(config, data, certs, c, k, outcome["port"])
               for k, c in enumerate(CLIENTS)]  # fmt: skip
    assert hold.reached.wait(patient(120)), outcome.get("error")
    yield boards[0], hold.accuracies
    hold.release.set()
    server.join(timeout=patient(60))
    for worker in workers:
        worker.join(timeout=patient(30))


def _get(url, headers=None, context=None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


def test_without_the_token_the_page_and_its_data_are_refused(live_run):
    dashboard, accuracies = live_run
    assert dashboard.url.startswith("http://127.0.0.1:")  # loopback by default
    status, body = _get(dashboard.url)
    assert status == 401 and "token" in body and "fedloom server</h1><div" not in body
    status, body = _get(dashboard.url + "api/status")
    assert status == 401 and "round" not in body
    wrong = {"Authorization": "Bearer " + "x" * len(dashboard.token)}
    assert _get(dashboard.url + "api/status", wrong)[0] == 401
    assert _get(dashboard.url + "login?token=wrong")[0] == 403
    status, body = _get(
        dashboard.url + "api/status", {"Authorization": f"Bearer {dashboard.token}"}
    )
    snapshot = json.loads(body)
    assert status == 200
    assert snapshot["round"] == ROUNDS and snapshot["rounds"] == ROUNDS
    assert snapshot["clients"] == {"connected": 3, "joined": 3, "total": 3}
    assert snapshot["curve"] == [{"round": r + 1, "value": a} for r, a in enumerate(accuracies)]
    assert snapshot["refused"] == [{"round": 42, "client": "c", "reason": "round 42 is not open"}]
    assert snapshot["privacy"] is None  # no DP in this run


def test_a_real_browser_shows_round_clients_curve_and_refusals(live_run):
    if not CHROMIUM.exists() or _missing("playwright"):
        if os.environ.get("FEDLOOM_REQUIRE_BROWSER") == "1":
            pytest.fail("Chromium or Playwright is missing: run `make browser`")
        pytest.skip("needs /usr/bin/chromium and playwright (`make browser`)")
    from playwright.sync_api import sync_playwright

    dashboard, accuracies = live_run
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            refused = page.goto(dashboard.url)
            assert refused.status == 401
            assert page.locator("#curve").count() == 0  # the sign-in form, not the page
            assert page.request.get(dashboard.url + "api/status").status == 401
            signed_in = page.goto(dashboard.login_url)  # sets the cookie, redirects to /
            assert signed_in.status == 200 and page.url == dashboard.url
            page.wait_for_selector("body[data-loaded]", timeout=15_000)
            assert page.text_content("#round") == f"{ROUNDS} / {ROUNDS}"
            assert page.text_content("#clients") == "3 / 3"
            assert page.locator("#curve circle.point").count() == ROUNDS
            assert page.get_attribute("#curve", "data-points") == str(ROUNDS)
            assert page.text_content("#accuracy") == f"{accuracies[-1]:.4f}"
            assert "round 42 is not open" in page.text_content("#refused")
            assert page.text_content("#privacy") == "off"
            # a fresh browser context has no cookie: refused again
            other = browser.new_context()
            assert other.new_page().goto(dashboard.url + "api/status").status == 401
            other.close()
        finally:
            browser.close()


def test_the_snapshot_reports_the_privacy_spent_and_the_latest_round():
    from fedloom.types import RoundReport

    feed = DashboardFeed(RoundBoard(Access(("a", "b")), local=None, max_tensor_bytes=1 << 10))  # type: ignore[arg-type]
    feed.on_start(5, None)  # type: ignore[arg-type]
    feed.on_round(RoundReport(1, {"test_accuracy": 0.5, "dp_epsilon": 0.25}), None)  # type: ignore[arg-type]
    feed.on_round(RoundReport(2, {"dp_epsilon": 0.5}), None)  # type: ignore[arg-type]  # no eval
    snapshot = feed.snapshot()
    assert snapshot["privacy"] == {"epsilon": 0.5}
    assert (snapshot["round"], snapshot["rounds"], snapshot["phase"]) == (2, 5, "aggregating")
    assert snapshot["curve"] == [{"round": 1, "value": 0.5}] and snapshot["accuracy"] == 0.5
    feed.on_round(RoundReport(3, {"test_accuracy": float("nan"), "dp_epsilon": float("inf")}), None)  # type: ignore[arg-type]
    snapshot = feed.snapshot()
    assert snapshot["privacy"] == {"epsilon": None} and len(snapshot["curve"]) == 1
    json.dumps(snapshot, allow_nan=False)  # strict JSON: what the page's JSON.parse accepts


def test_https_with_the_deployment_certificate(tmp_path):
    write_quickstart(tmp_path, [])
    board = RoundBoard(Access(("a",)), local=None, max_tensor_bytes=1 << 10)  # type: ignore[arg-type]
    dashboard = start_dashboard(DashboardFeed(board), token="t" * 20, certs=tmp_path)
    try:
        assert dashboard.url.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        assert _get(dashboard.url + "api/status", context=context)[0] == 401
        status, body = _get(dashboard.url + "api/status", {"Authorization": "Bearer " + "t" * 20},
                            context=context)  # fmt: skip
        assert status == 200 and json.loads(body)["clients"]["total"] == 1
    finally:
        dashboard.stop()


def _missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None
