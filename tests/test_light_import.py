"""``import fedloom`` and ``fedloom --help`` stay light: checked in fresh interpreters.

Each check runs a child Python (this test's interpreter, importing this checkout) and asks
it which heavy modules it loaded. No timings here: they drift on shared machines and belong
in benchmarks/run_startup.py.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fedloom

OPTIONAL_HEAVY = ("matplotlib", "grpc", "ray", "cryptography", "dp_accounting", "scipy")
SOURCE_ROOT = str(Path(fedloom.__file__).resolve().parents[1])


def _child(code: str, *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run ``code`` in a fresh interpreter; its last stdout line is a JSON list it printed."""
    path = os.pathsep.join(filter(None, [SOURCE_ROOT, os.environ.get("PYTHONPATH")]))
    completed = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed, json.loads(completed.stdout.strip().splitlines()[-1])


def test_import_fedloom_loads_no_heavy_module():
    _, loaded = _child(
        "import json, sys\nimport fedloom\n"
        f"print(json.dumps([m for m in {(*OPTIONAL_HEAVY, 'torch')!r} if m in sys.modules]))"
    )
    assert loaded == []


def test_public_api_works_and_still_loads_no_optional_part():
    """Touching every public name loads torch, but never plots, gRPC, Ray or certificates."""
    _, loaded = _child(
        "import json, sys\nimport fedloom\n"
        "import fedloom.simulation\n"
        "assert fedloom.simulate is fedloom.simulation.simulate\n"
        "assert callable(fedloom.fedavg) and fedloom.data.load_digits is fedloom.load_digits\n"
        "for name in fedloom.__all__: getattr(fedloom, name)\n"
        f"print(json.dumps([m for m in {OPTIONAL_HEAVY!r} if m in sys.modules]))"
    )
    assert loaded == []


@pytest.mark.parametrize(
    "command",
    [[], ["run"], ["study"], ["data"], ["data", "describe"], ["server"], ["client"], ["certs"]],
    ids=lambda command: " ".join(command) or "fedloom",
)
def test_help_does_not_import_torch(command):
    completed, loaded = _child(
        "import json, sys\nfrom fedloom.cli import main\n"
        "try:\n    main([*sys.argv[1:], '--help'])\nexcept SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        f"print(json.dumps([m for m in {(*OPTIONAL_HEAVY, 'torch')!r} if m in sys.modules]))",
        *command,
    )
    assert loaded == []
    assert "usage: fedloom" in completed.stdout


def test_python_dash_m_fedloom_cli_is_the_command():
    completed = subprocess.run(
        [sys.executable, "-m", "fedloom.cli", "--version"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": SOURCE_ROOT},
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == f"fedloom {fedloom.__version__}"
