"""The deploy example, as a user runs it: `fedloom server` and `fedloom client` processes,
one client bringing its own data through a data hook."""

import socket
import subprocess
import sys
from pathlib import Path

from fedloom.cli import main
from fedloom.net.certs import write_quickstart

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "deploy" / "run.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fedloom(*args):
    return subprocess.Popen(
        [sys.executable, "-m", "fedloom.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )


def test_the_deploy_example_runs_with_demo_clients_and_a_data_hook_client(tmp_path):
    clients = [f"client-{k}" for k in range(4)]
    write_quickstart(tmp_path / "certs", clients)
    port = _free_port()
    common = ("--config", str(EXAMPLE), "--set", "rounds=2")
    server = _fedloom(
        "server", *common, "--certs", str(tmp_path / "certs"), "--address",
        f"127.0.0.1:{port}", "--runs-dir", str(tmp_path / "runs"),
    )  # fmt: skip
    hook = f"{ROOT / 'examples' / 'deploy' / 'own_data.py'}:load"
    sources = [("--index", "0"), ("--index", "1"), ("--index", "2"), ("--data-hook", hook)]
    workers = [
        _fedloom("client", *common, "--certs", str(tmp_path / "certs"), "--server",
                 f"127.0.0.1:{port}", "--client-id", client, *source)
        for client, source in zip(clients, sources, strict=True)
    ]  # fmt: skip
    server_output = server.communicate(timeout=300)[0]
    outputs = [w.communicate(timeout=60)[0] for w in workers]
    assert server.returncode == 0, server_output
    assert all(w.returncode == 0 for w in workers), outputs
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
