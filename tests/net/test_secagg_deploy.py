"""Secure aggregation over loopback gRPC (issue 15, the deployment slice): a real server and
real clients (threads in this process, and one test with client processes, one of them
killed with SIGKILL mid-protocol), the same protocol objects as in simulation.

The reference is computed here, not by the code under test: each client's update is trained
by the simulation engine with the seed the server hands out (a deployed client trains exactly
so: tests/net/test_deploy.py pins it), and FedAvg's step over the clients whose input should
be in the sum is ``sum_k n_k u_k / sum_k n_k``. One round of FedAvg (server lr 1) on digits,
20 clients, logistic regression (650 parameters), ``clip_range`` 20 (above every ``n_k u_k``
coordinate: asserted) and 16 value bits: the deployed step differs from the reference by at
most ``S * step_q / W`` per coordinate (``S`` clients in the sum, ``W`` their examples,
``step_q = 40 / (2^16 - 1) = 6.1e-4``), plus float32 rounding of the parameters.
"""

import itertools
import logging
import signal
import threading
import time

import grpc
import numpy as np
import pytest
import torch
import yaml
from _harness import client_process, free_port, patient, serve_in_thread, simulated

from fedloom.client import LocalContext
from fedloom.config import build_federated, build_model, load_config
from fedloom.config.spec import build_run
from fedloom.engine import plans_for_round
from fedloom.experiment import simulate_config
from fedloom.net.certs import write_quickstart
from fedloom.net.client import run_client
from fedloom.net.codec import encode_tensor
from fedloom.net.deploy import serve
from fedloom.net.proto import fedloom_pb2 as pb
from fedloom.net.proto import fedloom_pb2_grpc as rpc
from fedloom.net.proto import secagg_pb2 as spb
from fedloom.net.proto import secagg_pb2_grpc as srpc
from fedloom.net.secagg_wire import (
    client_message_to_pb,
    key_list_from_pb,
    share_list_from_pb,
    unmask_request_from_pb,
)
from fedloom.net.server import Access
from fedloom.params import flatten_buffers, flatten_params
from fedloom.privacy.secagg import MaskedInput, SecAggClient, SecAggConfig
from fedloom.sim.sequential import SequentialExecutor

N = 20
BASE = [
    "seed=3",
    "rounds=1",
    "data.dataset=digits",
    f"data.num_clients={N}",
    "data.partition=iid",
    "model.name=logistic_regression",
    "client.steps=2",
    "client.batch_size=10",
    "client.lr=0.05",
    "server.fraction=1.0",
    "eval.clients=false",
    "deploy.insecure=true",
]
SECURE = "server.secure_aggregation={clip_range: 20, value_bits: 16}"
STEP_Q = SecAggConfig(clip_range=20, value_bits=16).for_cohort(N).quantizer.step
FLOAT32_SLACK = 1e-6


def _config(*overrides):
    """The deadlines: training and key advertisement in 10 s, each later phase (well under a
    second of work for 20 clients) in 3 s, scaled to the machine's speed; only a phase with a
    dropout waits that long."""
    deadlines = [f"deploy.round_timeout_s={patient(10)}", f"deploy.phase_timeout_s={patient(3)}"]
    return load_config(None, [*BASE, *deadlines, *overrides])


RUNS = itertools.count()


def _deployed(config, stop_after=None, others=None):
    """One deployed run with N client threads; ``stop_after[k]`` makes client k leave each
    secure round after that phase, as if it crashed there; ``others[k](address, name)`` runs
    instead of client k's daemon. Returns the history. The client names are new for every
    run: a thread of an earlier test still retrying its server's port (should a new server
    get that port) is refused, not taken for one of ours."""
    run = next(RUNS)
    clients = tuple(f"run{run}-client-{k}" for k in range(N))
    port, outcome = free_port(), {}

    def server():
        try:
            outcome["history"] = serve(config, access=Access(clients, trust_claimed_ids=True),
                                       credentials=None, address=f"127.0.0.1:{port}")  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - the test reports it
            outcome["error"] = exc

    thread = threading.Thread(target=server, daemon=True)
    thread.start()
    data, threads = build_federated(config), []
    for k, name in enumerate(clients):
        if k in (others or {}):
            other = threading.Thread(target=others[k], args=(f"127.0.0.1:{port}", name))
            other.start()
            threads.append(other)
            continue
        options = {
            "client_id": name,
            "data": data.client_batch(k),
            "module": build_model(config, data.dataset)(),
            "give_up_after_s": patient(60),
            "secagg_stop_after": (stop_after or {}).get(k),
        }
        client = threading.Thread(target=run_client, args=(f"127.0.0.1:{port}",),
                                  kwargs=options, daemon=True)  # fmt: skip
        client.start()
        threads.append(client)
    thread.join(timeout=patient(120))
    assert "error" not in outcome, outcome.get("error")
    for client in threads:  # each hears that the run is over (stopped ones too) and ends
        client.join(timeout=patient(20))
    return outcome["history"]


@pytest.fixture(scope="module")
def reference():
    """The initial params and each client's round-1 update (n_k u_k and n_k)."""
    spec = build_run(_config())
    params, buffers = flatten_params(spec.module), flatten_buffers(spec.module)
    plans = plans_for_round(N, 1.0, seed=3, round=0)
    executor = SequentialExecutor(spec.module, spec.data, spec.local,
                                  program=spec.algorithm.client_program(), task=spec.task)  # fmt: skip
    results = executor.fit(
        plans, params, {p.client_id: buffers for p in plans}, LocalContext(params)
    )
    weighted = {r.client_id: r.update.double() * r.num_examples for r in results}
    counts = {r.client_id: r.num_examples for r in results}
    assert max(float(u.abs().max()) for u in weighted.values()) < 20  # clip_range covers them
    return params, weighted, counts


def _fedavg_step(reference, in_sum):
    _, weighted, counts = reference
    total = sum(counts[k] for k in in_sum)
    return sum(weighted[k] for k in in_sum) / total, total


SECAGG_PLUS = "server.secure_aggregation={clip_range: 20, value_bits: 16, neighbors: 6}"
SCENARIOS = {
    "0%": ({}, SECURE),
    "10%": ({3: "share", 11: "share"}, SECURE),
    "30%": ({1: "advertise", 8: "advertise", 4: "share", 15: "share", 6: "masked_input",
             17: "masked_input"}, SECURE),
    "SecAgg+ 10%": ({3: "share", 11: "share"}, SECAGG_PLUS),  # 6 neighbors: t = 4 of 7
}  # fmt: skip


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_the_decoded_sum_is_fedavgs_over_the_clients_in_the_sum(reference, scenario, caplog):
    """0, 2 and 6 of 20 clients stop after some phase (t = 11 tolerates 9; with SecAgg+'s 6
    neighbors, t = 4 of each client's 7 holders): clients that stopped before their masked
    input are left out (their pairwise masks reconstructed), those that stopped after it
    are in the sum (their self-masks reconstructed)."""
    stops, secure = SCENARIOS[scenario]
    with caplog.at_level(logging.INFO, logger="fedloom"):
        history = _deployed(_config(secure), stops)
    in_sum = [k for k in range(N) if stops.get(k) in (None, "masked_input")]
    metrics = history.reports[0].metrics
    assert metrics["secagg_in_sum"] == len(in_sum)
    assert metrics["secagg_dropped"] == len(stops)
    assert metrics["secagg_aborted"] == 0.0 and metrics["secagg_refused"] == 0.0
    assert metrics["num_failures"] == N - len(in_sum)
    params, _, _ = reference
    step, total = _fedavg_step(reference, in_sum)
    bound = len(in_sum) * STEP_Q / total
    diff = float((history.final_state.params.double() - (params.double() + step)).abs().max())
    assert 0 < diff <= bound + FLOAT32_SLACK
    everyone, _ = _fedavg_step(reference, range(N))
    if len(in_sum) < N:  # the test can tell the survivors' mean from everybody's
        assert float((step - everyone).abs().max()) > 10 * bound
    # 650 coordinates + the count, 32 bits each, plus keys and sealed shares: measured bytes
    assert 4 * 651 < metrics["secagg_bytes_up_per_client"] < 4 * 651 + 1000 + N * 300
    summed = [
        r.getMessage() for r in caplog.records if "secure aggregation summed" in r.getMessage()
    ]
    assert summed == [f"round 1: secure aggregation summed {len(in_sum)} of {N} clients' "
                      f"inputs (total weight {total})"]  # fmt: skip


def test_a_two_faced_client_over_grpc_is_refused_and_cannot_change_the_sum(reference, caplog):
    """Client 5 speaks the protocol itself over the real stubs: a malformed key, then its
    keys; its shares; a masked input of zeros (any input within the clip range is a
    client's right) and then a second, different one; a plain update on the side. The
    malformed key, the second masked input and the plain update are refused with logged
    reasons; the sum is the other 19 clients' plus its zeros (with its example count)."""
    evil, receipts = 5, []
    _, _, counts = reference

    def two_faced(address, name):
        with grpc.insecure_channel(address) as channel:
            federation = rpc.FederationStub(channel)
            secure = srpc.SecureAggregationStub(channel)
            join = pb.JoinRequest(client_id=name, num_examples=counts[evil])
            federation.Join(join, wait_for_ready=True, timeout=patient(60))  # server starting
            task = federation.GetTask(pb.TaskRequest(client_id=name))
            while task.kind != "secure_train":
                time.sleep(0.05)
                task = federation.GetTask(pb.TaskRequest(client_id=name))

            def poll(want):
                reply = secure.Receive(spb.Poll(client_id=name, round=task.round, want=want))
                while reply.kind == "wait":
                    time.sleep(0.05)
                    reply = secure.Receive(spb.Poll(client_id=name, round=task.round, want=want))
                return getattr(reply, want)

            def send(message):
                receipts.append(secure.Send(message))

            params = poll("params")
            config = SecAggConfig(bits=params.bits, clip_range=params.clip_range,
                                  value_bits=params.value_bits)  # fmt: skip
            client = SecAggClient.start(config, seed=params.seed, round=task.round,
                                        client_id=params.client_index, cohort_ids=params.cohort)  # fmt: skip
            cohort = list(params.cohort)
            advert, client = client.advertise()
            bad = client_message_to_pb(advert, client_name=name)
            bad.advertise_keys.mask_public = b"short"
            send(bad)
            send(client_message_to_pb(advert, client_name=name))
            shares, client = client.share_keys(key_list_from_pb(poll("key_list"), cohort))
            send(client_message_to_pb(shares, client_name=name))
            share_list = share_list_from_pb(poll("share_list"), cohort)
            masked, client = client.masked_input(share_list, np.zeros(params.num_params),
                                                 counts[evil])  # fmt: skip
            send(client_message_to_pb(masked, client_name=name))
            flipped = bytes([masked.masked[0] ^ 1]) + masked.masked[1:]
            second = MaskedInput(masked.round, masked.client_id, flipped, ())
            send(client_message_to_pb(second, client_name=name))
            plain = pb.Update(client_id=name, round=task.round, num_examples=counts[evil],
                              update=encode_tensor(torch.ones(params.num_params)))  # fmt: skip
            receipts.append(federation.SubmitUpdate(plain))
            request = unmask_request_from_pb(poll("unmask_request"), cohort)
            answer, client = client.unmask(request)
            send(client_message_to_pb(answer, client_name=name))
            while federation.GetTask(pb.TaskRequest(client_id=name)).kind != "done":
                time.sleep(0.05)

    with caplog.at_level(logging.INFO, logger="fedloom"):
        history = _deployed(_config(SECURE), others={evil: two_faced})
    accepted = [r.accepted for r in receipts]
    assert accepted == [False, True, True, True, False, False, True]
    assert "a mask public key is 32 bytes, got 5" in receipts[0].reason
    assert "two different masked inputs; the first is kept" in receipts[4].reason
    assert "secure aggregation" in receipts[5].reason
    name = f"run{next(RUNS) - 1}-client-{evil}"
    refusals = [m for m in caplog.messages if f"refused a message of {name}" in m]
    assert len(refusals) == 2 and "two different masked inputs" in refusals[1]
    metrics = history.reports[0].metrics
    assert metrics["secagg_in_sum"] == N and metrics["secagg_refused"] == 2
    params, weighted, _ = reference
    honest = sum(weighted[k] for k in range(N) if k != evil)
    total = sum(counts.values())
    diff = history.final_state.params.double() - (params.double() + honest / total)
    assert 0 < float(diff.abs().max()) <= N * STEP_Q / total + FLOAT32_SLACK


def test_below_the_threshold_the_round_fails_and_the_model_is_unchanged(reference, caplog):
    """10 of 20 stop after sharing keys: 10 masked inputs, threshold 11. The round aborts with
    a logged reason, the clients still in it are told, and the model is the initial one."""
    stops = dict.fromkeys(range(0, N, 2), "share")
    with caplog.at_level(logging.INFO, logger="fedloom"):
        history = _deployed(_config(SECURE), stops)
    params, _, _ = reference
    assert torch.equal(history.final_state.params, params)
    metrics = history.reports[0].metrics
    assert metrics["round_skipped"] == 1.0 and metrics["secagg_aborted"] == 1.0
    assert metrics["num_failures"] == N
    messages = [r.getMessage() for r in caplog.records]
    aborted = [m for m in messages if "secure aggregation aborted in phase" in m]
    assert len(aborted) == 1
    assert "10 clients sent masked inputs, fewer than the threshold 11" in aborted[0]
    told = [m for m in messages if "left secure aggregation round 1" in m and "aborted" in m]
    assert len(told) == N - len(stops)  # every client still waiting heard why


def test_central_dp_composes_as_in_simulation():
    """DP-FedAvg (clip 1, noise multiplier 1, reproducible noise): the clients clip and mask,
    the server adds the noise to the decoded sum; the step differs from simulated DP-FedAvg
    without secure aggregation only by the quantization: ``20 step_q / M`` with M = 20."""
    dp = ["algorithm=dp_fedavg", "deploy.dp_noise=reproducible"]
    secure = _deployed(_config(*dp, "server.secure_aggregation={clip_range: 1.0, value_bits: 16}"))
    alone = simulate_config(_config(*dp))
    assert secure.reports[0].metrics["secagg_in_sum"] == N, secure.reports[0].metrics
    step_q = SecAggConfig(clip_range=1.0, value_bits=16).for_cohort(N).quantizer.step
    diff = (secure.final_state.params.double() - alone.final_state.params.double()).abs().max()
    assert 0 < float(diff) <= N * step_q / N + FLOAT32_SLACK
    epsilon = alone.reports[0].metrics["dp_epsilon"]
    assert secure.reports[0].metrics["dp_epsilon"] == epsilon > 0


def test_a_client_process_killed_after_its_masked_input_stays_in_the_sum(tmp_path):
    """Five client processes over mutual TLS (t = 3). One is killed with SIGKILL right after
    it sent its masked input, while a slow client holds that phase open; the server
    reconstructs its self-mask from the others' shares, so its input is in the sum and the
    step is plain FedAvg's over all five (the simulation without secure aggregation)."""
    raw = {
        "seed": 2, "rounds": 1,
        "data": {"dataset": "digits", "num_clients": 5, "partition": "iid"},
        "model": {"name": "logistic_regression"},
        "client": {"steps": 2, "batch_size": 10, "lr": 0.05},
        "server": {"fraction": 1.0,
                   "secure_aggregation": {"clip_range": 50, "value_bits": 16}},
        "eval": {"clients": False},
        "deploy": {"round_timeout_s": patient(10), "phase_timeout_s": patient(5)},
    }  # fmt: skip
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    config = load_config(config_path)
    clients = [f"client-{k}" for k in range(5)]
    write_quickstart(tmp_path / "certs", clients)
    certs = tmp_path / "certs"
    thread, outcome = serve_in_thread(config, clients, certs)
    port = outcome["port"]
    steady = [client_process(config_path, certs, c, k, port) for k, c in enumerate(clients[:3])]
    slow = client_process(config_path, certs, "client-3", 3, port, "--delay", str(patient(2)))
    doomed, doomed_output = client_process(config_path, certs, "client-4", 4, port)
    doomed_output.wait_for("client-4: secure aggregation round 1: sent masked_input",
                           timeout=patient(120))  # fmt: skip
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=30)
    thread.join(timeout=patient(120))
    for process, output in [*steady, slow]:
        assert process.wait(timeout=60) == 0, output.rest()
    assert "error" not in outcome, outcome.get("error")
    history = outcome["history"]
    metrics = history.reports[0].metrics
    assert metrics["secagg_in_sum"] == 5 and metrics["secagg_dropped"] == 1
    plain = config.model_copy(
        update={"server": config.server.model_copy(update={"secure_aggregation": None})}
    )
    expected = simulated(plain).params
    total = int(build_federated(config).client_sizes.sum())  # W = sum of n_k
    bound = 5 * SecAggConfig(clip_range=50, value_bits=16).for_cohort(5).quantizer.step / total
    diff = float((history.final_state.params.double() - expected.double()).abs().max())
    assert 0 < diff <= bound + FLOAT32_SLACK
