"""Error feedback loses nothing; the round loop compresses on the clients' behalf and counts
the bytes of the codes; the config refuses what cannot work, naming the field."""

import numpy as np
import pytest
import torch

from fedloom.compress import (
    QSGD,
    RESIDUAL,
    BFloat16,
    Compression,
    Float16,
    IntQuantizer,
    TopK,
    compress_update,
)
from fedloom.config import RunConfig, build_run
from fedloom.errors import ConfigError
from fedloom.experiment import simulate_config
from fedloom.params import param_spec


@pytest.mark.parametrize(
    "compressor",
    [TopK(k=3), IntQuantizer(bits=4), IntQuantizer(bits=8, block_size=8), QSGD(levels=2),
     Float16(), BFloat16()],
    ids=["topk", "int4", "int8-blocks", "qsgd", "fp16", "bf16"],
)  # fmt: skip
def test_error_feedback_sends_the_sum_of_the_updates_in_the_end(compressor):
    """sum_t decoded_t + e_T == sum_t u_t, exactly: the updates are multiples of 2^-20 so
    that every float64 sum here is exact, and the residual is what the code missed."""
    rng = np.random.default_rng(0)
    compression = Compression(upload=compressor, error_feedback=True)
    residual, sent, true = None, torch.zeros(32, dtype=torch.float64), torch.zeros(32).double()
    for t in range(6):
        update = torch.tensor(rng.integers(-(2**19), 2**19, 32) / 2**20, dtype=torch.float32)
        code, decoded, residual = compress_update(update, residual, compression, seed=t)
        assert code.num_bytes == compressor.num_bytes(32)
        sent += decoded.double()
        true += update.double()
        assert residual.dtype == torch.float64
        assert torch.equal(sent + residual, true)
    assert residual.abs().max() > 0  # something was held back


def test_without_error_feedback_nothing_is_kept():
    update = torch.tensor([1.0, -2.0, 0.5, 0.25])
    _, decoded, residual = compress_update(update, None, Compression(upload=TopK(k=1)), seed=0)
    assert residual is None and decoded.tolist() == [0.0, -2.0, 0.0, 0.0]


BASE = {
    "seed": 3,
    "rounds": 2,
    "data": {"dataset": "digits", "num_clients": 6, "partition": "iid"},
    "model": {"name": "digits_mlp"},
    "client": {"epochs": 1, "batch_size": 20, "lr": 0.05},
    "server": {"fraction": 0.5},
    "eval": {"clients": False},
}


def _config(compression, **server):
    client = {**BASE["client"], "compression": compression}
    return RunConfig.model_validate(
        {**BASE, "client": client, "server": {**BASE["server"], **server}}
    )


def test_the_round_loop_counts_the_codes_sent_and_keeps_the_residuals():
    config = _config({"kind": "topk", "k": 100, "error_feedback": True, "download": "fp16"})
    spec = build_run(config)
    num_params = param_spec(spec.module).num_params
    history = simulate_config(config, spec=spec)
    for report in history.reports:
        m = report.metrics
        assert m["bytes_up"] == m["num_results"] * (4 * 100 + 4 * 100)  # indices + values
        assert m["bytes_down"] == m["num_clients"] * 2 * num_params  # fp16 broadcast
    clients = history.final_state.clients
    assert len(clients) >= 3  # every client that took part holds its residual
    for entries in clients.values():
        assert entries[RESIDUAL].shape == (num_params,)
        assert entries[RESIDUAL].dtype == torch.float64
    plain = simulate_config(_config(None))
    assert plain.reports[0].metrics["bytes_up"] == 3 * 4 * num_params  # float32, as before
    assert not torch.equal(plain.final_state.params, history.final_state.params)


def test_the_same_config_with_every_engine_agrees():
    config = _config({"kind": "qsgd", "levels": 4, "error_feedback": True})
    sequential = simulate_config(config.model_copy(update={"engine": "sequential"}))
    vectorized = simulate_config(config.model_copy(update={"engine": "vectorized"}))
    assert torch.allclose(
        sequential.final_state.params, vectorized.final_state.params, atol=1e-5, rtol=0
    )


@pytest.mark.parametrize(
    ("compression", "message"),
    [
        ({"kind": "int8", "bits": 3}, "client.compression.bits: 3 is not supported"),
        ({"kind": "qsgd", "levels": 0}, "client.compression.levels: 0"),
        ({"kind": "topk"}, "client.compression: topk needs exactly one of k and fraction"),
        ({"kind": "topk", "fraction": 1.5}, "client.compression.fraction: 1.5"),
        ({"kind": "fp16", "k": 3}, "client.compression.k: applies to kind topk, not fp16"),
        ({"kind": "none", "error_feedback": True}, "client.compression.error_feedback"),
        ({"kind": "topk", "k": 10**7}, "client.compression.k: 10000000 is more than the model"),
    ],
)
def test_bad_compression_is_a_config_error_naming_the_field(compression, message):
    with pytest.raises(ConfigError, match=message):
        build_run(_config(compression))


@pytest.mark.parametrize("kind", ["topk", "int8", "qsgd", "fp16"])
def test_upload_compression_under_secure_aggregation_says_why_not(kind):
    extra = {"k": 10} if kind == "topk" else {}
    config = _config({"kind": kind, **extra}, secure_aggregation={"clip_range": 50.0})
    with pytest.raises(ConfigError, match=f"client.compression.kind {kind}"):
        build_run(config)


def test_a_compressed_broadcast_composes_with_secure_aggregation():
    config = _config({"download": "bf16"}, secure_aggregation={"clip_range": 50.0})
    report = simulate_config(config).reports[-1].metrics
    assert report["num_results"] == 3 and np.isfinite(report["test_accuracy"])


def test_a_resumed_run_keeps_the_residuals(tmp_path):
    from fedloom.engine import Checkpoints

    config = _config({"kind": "topk", "fraction": 0.05, "error_feedback": True})
    straight = simulate_config(config.model_copy(update={"rounds": 3}))
    checkpoint = Checkpoints(tmp_path, fingerprint=config.fingerprint())
    simulate_config(config.model_copy(update={"rounds": 2}), checkpoint=checkpoint)
    resumed = simulate_config(config.model_copy(update={"rounds": 3}), checkpoint=checkpoint)
    assert torch.equal(straight.final_state.params, resumed.final_state.params)
    for client, entries in straight.final_state.clients.items():
        assert torch.equal(entries[RESIDUAL], resumed.final_state.clients[client][RESIDUAL])
