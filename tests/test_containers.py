"""The Dockerfile and compose.yaml keep their promises: a non-root user, no secrets in the
image, CPU torch, and commands the fedloom CLI really accepts, for a server and three clients
over mutual TLS whose certificates name the hosts they are used for.

Building the image needs a Docker daemon and the registries; these checks need neither.
``docker compose config`` (or ``docker-compose config``) validates the file when installed.
"""

from __future__ import annotations

import fnmatch
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from fedloom.cli import _parser
from fedloom.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SECRET_PATTERNS = ["*.pem", "*.key", "*.p12", "tokens*.yaml", ".env", "certs"]


def _instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_the_image_runs_as_a_non_root_user():
    steps = _instructions()
    users = [(i, arg) for i, (op, arg) in enumerate(steps) if op == "USER"]
    assert users, "the Dockerfile never switches away from root"
    last, user = users[-1]
    assert user.split(":")[0] not in ("root", "0")
    entry = next(i for i, (op, _) in enumerate(steps) if op == "ENTRYPOINT")
    assert last < entry
    assert all(op != "RUN" for op, _ in steps[last:])  # nothing runs as root after it
    assert steps[entry][1] == '["fedloom"]'  # one image, both roles through the CLI


def test_no_secret_is_copied_into_the_image():
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for pattern in ["**/*.pem", "**/*.key", "certs/", "runs/", ".venv/", ".git/"]:
        assert pattern in ignored
    for op, arg in _instructions():
        if op in ("COPY", "ADD"):
            sources = arg.split()[:-1]
            assert all(not s.startswith("--") or s.startswith("--chown") for s in sources)
            for source in sources:
                name = Path(source).name
                assert not any(fnmatch.fnmatch(name, p) for p in SECRET_PATTERNS), source
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert op != "ENV" or not any(w in arg.upper() for w in ("TOKEN", "PASSWORD", "SECRET"))


def test_torch_is_the_cpu_build():
    args = [arg for op, arg in _instructions() if op == "ARG" and arg.startswith("TORCH_SPEC")]
    assert args and "download.pytorch.org/whl/cpu" in args[0]


def _service_argv(service: dict) -> list[str]:
    if service.get("entrypoint") == ["sh", "-c"]:  # the certs step: `test -f ... || fedloom ...`
        script = service["command"][0]
        return shlex.split(script.split("||", 1)[1])[1:]
    return [str(word) for word in service["command"]]


def test_compose_runs_a_server_and_three_tls_clients_with_real_cli_commands():
    services = _compose()["services"]
    parser = _parser()
    parsed = {}
    for name, service in services.items():
        assert service["image"].startswith("fedloom")
        parsed[name] = parser.parse_args(_service_argv(service))  # unknown flags exit here
    assert parsed["certs"].command == "certs" and parsed["server"].command == "server"
    clients = sorted(n for n in services if n.startswith("client-"))
    assert clients == ["client-0", "client-1", "client-2"]
    for name in clients:
        args = parsed[name]
        assert args.command == "client" and args.client_id == name and not args.insecure
        assert args.certs == "/certs" and args.server == "server:8443"
        assert "certs:/certs:ro" in services[name]["volumes"]
    server = parsed["server"]
    assert not server.insecure and server.certs == "/certs"
    certs = parsed["certs"]
    assert sorted(certs.clients.split(",")) == clients
    assert "server" in certs.hosts.split(",")  # the name the clients dial, so TLS verifies it
    # the run config the image carries: its clients, and the dashboard on loopback only
    config = load_config(ROOT / server.config.removeprefix("/opt/fedloom/"))
    assert config.data.num_clients == len(clients)
    assert config.deploy.clients == clients
    assert config.deploy.address.endswith(":8443")
    assert all(p.startswith("127.0.0.1:") for p in services["server"].get("ports", []))
    assert f"127.0.0.1:{config.deploy.dashboard}:{config.deploy.dashboard}" in services[
        "server"
    ].get("ports", [])
    for service in services.values():
        assert "environment" not in service  # no secrets passed in the clear


def test_the_commands_exist_in_fedloom_help():
    text = _parser().format_help()
    for command in ("server", "client", "certs"):
        assert command in text


def _compose_command() -> list[str] | None:
    """``docker compose`` when the plugin is there, else ``docker-compose``, else ``None``."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


def test_docker_compose_accepts_the_file():
    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    done = subprocess.run(
        [*command, "-f", str(ROOT / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
