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
