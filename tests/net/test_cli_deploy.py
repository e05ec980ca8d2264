"""The deploy example, as a user runs it: `fedloom server` and `fedloom client` processes,
one client bringing its own data through a data hook."""

from pathlib import Path

import pytest
import torch
from _harness import fedloom, free_port

from fedloom.cli import main
from fedloom.net.certs import write_quickstart

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "deploy" / "run.yaml"


def test_the_deploy_example_runs_with_demo_clients_and_a_data_hook_client(tmp_path):
    clients = [f"client-{k}" for k in range(4)]
    write_quickstart(tmp_path / "certs", clients)
    port = free_port()
    common = ("--config", str(EXAMPLE), "--set", "rounds=2")
    server, server_log = fedloom(
        "server", *common, "--certs", str(tmp_path / "certs"), "--address",
        f"127.0.0.1:{port}", "--runs-dir", str(tmp_path / "runs"), cwd=ROOT,
    )  # fmt: skip
    hook = f"{ROOT / 'examples' / 'deploy' / 'own_data.py'}:load"
    sources = [("--index", "0"), ("--index", "1"), ("--index", "2"), ("--data-hook", hook)]
    workers = [
        fedloom("client", *common, "--certs", str(tmp_path / "certs"), "--server",
                f"127.0.0.1:{port}", "--client-id", client, *source, cwd=ROOT)
        for client, source in zip(clients, sources, strict=True)
    ]  # fmt: skip
    code = server.wait(timeout=300)
    server_output = server_log.rest()
    codes = [w.wait(timeout=60) for w, _ in workers]
    outputs = [output.rest() for _, output in workers]
    assert code == 0, server_output
    assert codes == [0] * 4, outputs
    assert "client client-3 joined (300 examples)" in server_output  # the hook's data
    assert "round 2/2: 4 of 4 updates used" in server_output
    run_dir = tmp_path / "runs" / "digits-fedavgm-server"
    for name in ("config.yaml", "metrics.jsonl", "checkpoint.safetensors", "model.safetensors"):
        assert (run_dir / name).exists(), name
    assert "client-3: trained 2 rounds" in outputs[3]


def test_server_settings_errors_name_the_field(tmp_path, capsys):
    assert main(["server", "--config", str(EXAMPLE)]) == 2
    assert "deploy.certs: TLS is on by default" in capsys.readouterr().err
    assert main(["server", "--config", str(EXAMPLE), "--set", "deploy.min_fit_clients=0"]) == 2
    assert "deploy.min_fit_clients" in capsys.readouterr().err
    assert main(["client", "--config", str(EXAMPLE), "--insecure", "--server", "127.0.0.1:1",
                 "--client-id", "x", "--data-hook", "nowhere.py:load"]) == 2  # fmt: skip
    assert "--data-hook: cannot load nowhere.py" in capsys.readouterr().err
    assert main(["client", "--config", str(EXAMPLE), "--insecure", "--server", "127.0.0.1:1",
                 "--client-id", "x"]) == 2  # fmt: skip
    assert "exactly one of --index" in capsys.readouterr().err


def test_a_data_hook_may_return_named_tensors_with_extras(tmp_path):
    from fedloom.errors import FedloomError
    from fedloom.net.deploy import load_data_hook

    hook = tmp_path / "own.py"
    hook.write_text(
        "import numpy as np\n"
        "def pair():\n    return np.ones((4, 3)), [0, 1, 2, 1]\n"
        "def named():\n"
        "    return {'x': np.ones((4, 3)), 'y': [0, 1, 2, 1], 'mask': np.eye(4)[:, :2]}\n"
        "def uneven():\n"
        "    return {'x': np.ones((4, 3)), 'y': [0, 1, 2, 1], 'mask': np.ones((3, 2))}\n"
    )
    pair = load_data_hook(f"{hook}:pair")
    assert sorted(pair) == ["x", "y"] and pair["y"].tolist() == [0, 1, 2, 1]
    named = load_data_hook(f"{hook}:named")
    assert sorted(named) == ["mask", "x", "y"]
    assert named["x"].dtype == torch.float32 and named["y"].dtype == torch.int64
    assert named["mask"].tolist() == [[1, 0], [0, 1], [0, 0], [0, 0]]
    with pytest.raises(FedloomError, match=r"entries \['mask'\] do not have one row per example"):
        load_data_hook(f"{hook}:uneven")
