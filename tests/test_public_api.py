import fedloom


def test_public_api_is_pinned():
    assert sorted(fedloom.__all__) == sorted(
        [
            "Algorithm",
            "Callback",
            "ConfigError",
            "DataError",
            "Dataset",
            "FederatedDataset",
            "FedloomError",
            "History",
            "LocalTraining",
            "LocalWork",
            "RunConfig",
            "__version__",
            "data",
            "federate",
            "fedadagrad",
            "fedadam",
            "fedavg",
            "fedavgm",
            "fednova",
            "fedprox",
            "fedsgd",
            "fedyogi",
            "load_config",
            "load_digits",
            "load_mnist",
            "load_synthetic",
            "models",
            "partition",
            "qffl",
            "run_experiment",
            "scaffold",
            "simulate",
            "Task",
            "tasks",
        ]
    )
    for name in fedloom.__all__:
        assert hasattr(fedloom, name), name


def test_core_does_not_import_runtimes():
    """Dependency direction: core modules never import sim/ or net/."""
    import pathlib

    root = pathlib.Path(fedloom.__file__).parent
    for folder in ("data", "client", "aggregate", "algorithms", "engine", "tasks"):
        for path in (root / folder).glob("*.py"):
            text = path.read_text()
            assert "fedloom.sim" not in text and "fedloom.net" not in text, path


def test_dir_lists_the_public_api_before_it_is_imported():
    assert set(fedloom.__all__) <= set(dir(fedloom))


def test_unknown_name_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="has no attribute 'fedavgg'"):
        _ = fedloom.fedavgg  # type: ignore[attr-defined]
    assert not hasattr(fedloom, "fedavgg")


def test_lazy_table_matches_all_and_the_type_checking_imports():
    """``_SOURCES`` (what loads on access), ``__all__`` and the imports type checkers see agree."""
    import ast
    import importlib
    import pathlib

    assert set(fedloom._SOURCES) | {"__version__"} == set(fedloom.__all__)
    tree = ast.parse(pathlib.Path(fedloom.__file__).read_text())
    (block,) = [
        node
        for node in tree.body
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
    ]
    seen = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom), ast.dump(node)
        for alias in node.names:
            is_submodule = node.module == "fedloom"
            seen[alias.name] = f"fedloom.{alias.name}" if is_submodule else node.module
    assert seen == fedloom._SOURCES
    for name, source in fedloom._SOURCES.items():
        module = importlib.import_module(source)
        expected = module if source == f"fedloom.{name}" else getattr(module, name)
        assert getattr(fedloom, name) is expected, name


def test_deployment_does_not_import_the_simulation():
    """A deployed server or client loads net/, the config and the core, never sim/."""
    import subprocess
    import sys

    code = (
        "import sys, fedloom.net.deploy, fedloom.net.server, fedloom.net.client; "
        "print(sorted(m for m in sys.modules if m.startswith(('fedloom.sim', "
        "'fedloom.simulation', 'fedloom.experiment', 'fedloom.studies'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
