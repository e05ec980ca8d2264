"""The per-client score hook: callbacks receive every client's held-out score after each
evaluation, the vector whose spread the metrics report."""

import numpy as np

import fedloom as fl
from fedloom.algorithms import fedbn
from fedloom.data import IID, federate, load_digits
from fedloom.engine import Callback, ClientScores
from fedloom.models import digits_cnn_bn


def test_client_scores_are_the_vectors_behind_the_client_metrics():
    data = federate(load_digits(), IID(4), holdout_fraction=0.25, seed=0)
    scores = ClientScores()
    history = fl.simulate(
        fedbn(), data, digits_cnn_bn, rounds=2, fraction=1.0, buffers="local",
        engine="sequential", eval_every=1, callbacks=[scores],
    )  # fmt: skip
    assert sorted(scores.by_round) == [1, 2]
    for round_number, report in enumerate(history.reports, start=1):
        for prefix in ("client", "client_personal"):
            mine = scores.by_round[round_number][prefix]
            assert mine.shape == (4,)
            assert np.isclose(mine.mean(), report.metrics[f"{prefix}_accuracy_mean"])
            assert np.isclose(mine.min(), report.metrics[f"{prefix}_accuracy_worst10"])
    # each score is the share of a client's held-out rows classified right
    sizes = [len(ix) for ix in data.client_holdout]
    for score, n in zip(scores.last["client"], sizes, strict=True):
        assert np.isclose(score * n, round(score * n))
    assert scores.last is scores.by_round[2]


def test_without_client_evaluation_no_scores_arrive_and_plain_callbacks_are_fine():
    class Counting(Callback):  # a callback without the hook overridden
        rounds = 0

        def on_round(self, report, state):
            Counting.rounds += 1

    data = federate(load_digits(), IID(3), holdout_fraction=0.2, seed=1)
    scores = ClientScores()
    fl.simulate(
        fl.fedavg(), data, fl.models.digits_mlp, rounds=2, fraction=1.0, eval_clients=False,
        callbacks=[scores, Counting()],
    )  # fmt: skip
    assert scores.by_round == {} and scores.last == {} and Counting.rounds == 2
