"""Checkpoints and model files verify themselves: damage, hand edits, NaN weights, another
model's file, a broken structure are each one line naming the file, never a silent resume or
a traceback; a failed write keeps the last good checkpoint."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import fedloom as fl
from fedloom.config import load_config
from fedloom.engine import Checkpoints
from fedloom.errors import FedloomError
from fedloom.experiment import simulate_config
from fedloom.model_file import load_model, save_model
from fedloom.storage import METADATA_DIGEST, TENSORS_DIGEST, metadata_sha256, tensors_sha256

SHORT = ["rounds=2", "data.num_clients=6", "model.name=digits_mlp", "client.epochs=1",
         "engine=sequential", "eval.clients=false"]  # fmt: skip


@pytest.fixture
def saved(tmp_path):
    """A real checkpoint after 2 rounds, and the config that wrote it."""
    config = load_config(None, SHORT)
    checkpoint = Checkpoints(tmp_path, fingerprint=config.fingerprint())
    simulate_config(config, checkpoint=checkpoint)
    return checkpoint, config


def _contents(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())  # noqa: SIM118


def _rewrite(path, tensors, metadata, *, restamp=True):
    """Write ``path`` as a tool that knows the format would (digests recomputed), or as a
    careless edit would (``restamp=False``: the old digests kept as they are)."""
    metadata = dict(metadata)
    if restamp:
        metadata[TENSORS_DIGEST] = tensors_sha256(tensors)
        metadata[METADATA_DIGEST] = metadata_sha256(metadata)
    save_file(tensors, str(path), metadata=metadata)


def test_the_undamaged_checkpoint_loads(saved):
    checkpoint, _ = saved
    assert len(checkpoint.load().reports) == 2


def test_a_flipped_byte_in_the_tensor_data_is_refused(saved):
    checkpoint, _ = saved
    data = bytearray(checkpoint.path.read_bytes())
    data[-100] ^= 0x01  # inside the last tensor's bytes
    checkpoint.path.write_bytes(bytes(data))
    with pytest.raises(FedloomError, match="checkpoint .* is damaged: its tensor data does not"):
        checkpoint.load()


def test_an_edited_header_is_refused(saved):
    checkpoint, _ = saved
    tensors, metadata = _contents(checkpoint.path)
    header = json.loads(metadata["header"])
    header["rounds_done"] = 1
    metadata["header"] = json.dumps(header)
    _rewrite(checkpoint.path, tensors, metadata, restamp=False)
    with pytest.raises(FedloomError, match="is damaged: its header does not match its checksum"):
        checkpoint.load()


def test_nan_weights_are_refused_even_with_valid_checksums(saved):
    checkpoint, _ = saved
    tensors, metadata = _contents(checkpoint.path)
    header = json.loads(metadata["header"])
    params = header["state"]["params"]["t"]
    tensors[params][3] = float("nan")
    _rewrite(checkpoint.path, tensors, metadata)
    with pytest.raises(FedloomError, match="holds non-finite parameters"):
        checkpoint.load()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("bad_json", "malformed header"),
        ("renamed_key", "is malformed \\(KeyError"),
        ("no_state", "is malformed \\(KeyError"),
        ("rounds_mismatch", "is malformed \\(ValueError: rounds_done 5 but 2 reports"),
        ("no_digests", "has no checksums"),
        ("truncated", "cannot read the checkpoint"),
    ],
)
def test_every_malformed_checkpoint_is_one_line_naming_the_file(saved, damage, message):
    checkpoint, _ = saved
    tensors, metadata = _contents(checkpoint.path)
    header = json.loads(metadata["header"])
    if damage == "bad_json":
        metadata["header"] = "{not json"
    elif damage == "renamed_key":
        tensors["renamed"] = tensors.pop(header["state"]["params"]["t"])
    elif damage == "no_state":
        del header["state"]["aggregation"]
    elif damage == "rounds_mismatch":
        header["rounds_done"] = 5
    if damage in ("no_state", "rounds_mismatch"):
        metadata["header"] = json.dumps(header)
    if damage == "truncated":
        checkpoint.path.write_bytes(checkpoint.path.read_bytes()[:200])
    elif damage == "no_digests":
        del metadata[TENSORS_DIGEST], metadata[METADATA_DIGEST]
        _rewrite(checkpoint.path, tensors, metadata, restamp=False)
    else:
        _rewrite(checkpoint.path, tensors, metadata)
    with pytest.raises(FedloomError, match=message) as info:
        checkpoint.load()
    assert str(checkpoint.path) in str(info.value) and "\n" not in str(info.value)


def test_the_cli_resumes_a_damaged_checkpoint_with_exit_1_and_no_traceback(tmp_path):
    args = [sys.executable, "-m", "fedloom.cli", "run", "--runs-dir", str(tmp_path),
            "--name", "r", *sum((["--set", s] for s in SHORT), [])]  # fmt: skip
    subprocess.run(args, check=True, capture_output=True, timeout=300)
    path = tmp_path / "r" / "checkpoint.safetensors"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    resumed = subprocess.run(
        [sys.executable, "-m", "fedloom.cli", "run", "--resume", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 1, resumed.stderr
    output = resumed.stdout + resumed.stderr
    assert "Traceback" not in output
    assert "checkpoint.safetensors is damaged: its tensor data does not match" in output


def test_a_failed_write_keeps_the_last_good_checkpoint(saved):
    checkpoint, config = saved
    good = checkpoint.load()
    checkpoint.path.with_name(checkpoint.path.name + ".tmp").mkdir()  # the write cannot happen
    with pytest.raises(FedloomError, match="cannot write .*Is a directory.*previous version is"):
        checkpoint.save(good.state, good.client_buffers, good.reports[:1])
    assert len(checkpoint.load().reports) == 2  # the old one, intact


def test_a_run_starts_from_a_verified_model_file(tmp_path):
    module = fl.models.digits_mlp()
    params = torch.linspace(-0.1, 0.1, sum(p.numel() for p in module.parameters()))
    path = save_model(tmp_path / "model.safetensors", module, params, torch.zeros(0))
    loaded, buffers = load_model(path, module)
    assert torch.equal(loaded, params) and buffers.numel() == 0
    config = load_config(None, [*SHORT, "rounds=1", f"model.init={path}"])
    from fedloom.config import build_run
    from fedloom.params import flatten_params

    assert torch.equal(flatten_params(build_run(config).module), params)

    tensors, metadata = _contents(path)
    _rewrite(path, {k: v[:1] if k == "1.bias" else v for k, v in tensors.items()}, metadata)
    with pytest.raises(FedloomError, match="1.bias is torch.float32 \\(1,\\), this model needs"):
        load_model(path, module)
    _rewrite(path, {k: v * float("inf") for k, v in tensors.items()}, metadata)
    with pytest.raises(FedloomError, match="holds non-finite values"):
        load_model(path, module)
    _rewrite(path, {"other": torch.zeros(2)}, metadata)
    with pytest.raises(FedloomError, match="is for another model: missing"):
        load_model(path, module)
    data = bytearray(save_model(path, module, params, torch.zeros(0)).read_bytes())
    data[-4] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(FedloomError, match="model file .* is damaged"):
        load_model(path, module)
    with pytest.raises(FedloomError, match="does not exist"):
        load_model(tmp_path / "nowhere.safetensors", module)
    from fedloom.errors import ConfigError

    with pytest.raises(ConfigError, match="model.init: .*nowhere.safetensors is not a file"):
        build_run(load_config(None, [*SHORT, f"model.init={tmp_path / 'nowhere.safetensors'}"]))
