"""examples/papers/: every preset loads and validates, and keeps the setup its paper ran."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedloom.config import build_algorithm, build_federated, build_model, load_config

PAPERS = Path(__file__).resolve().parents[1] / "examples" / "papers"
PRESETS = sorted(PAPERS.glob("*.yaml"))
MCMAHAN = {  # model -> (parameters, E) as in McMahan et al. 2017, section 3 and Table 1
    "mnist_2nn": (199_210, 1),
    "mnist_cnn": (1_663_370, 5),
}


def test_there_are_presets_and_the_readme_lists_each():
    readme = (PAPERS / "README.md").read_text()
    assert len(PRESETS) >= 5
    for path in PRESETS:
        assert path.name in readme, f"{path.name} is missing from examples/papers/README.md"


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_every_preset_loads_and_validates(path):
    config = load_config(path)
    assert build_algorithm(config, 100).name == config.algorithm.name
    assert config.name == path.stem.replace("_", "-")


@pytest.mark.parametrize("path", sorted(PAPERS.glob("mcmahan2017_*.yaml")), ids=lambda p: p.stem)
def test_mcmahan_presets_run_the_papers_setup(path):
    config = load_config(path)
    assert config.data.dataset == "mnist" and config.data.num_clients == 100
    assert config.data.holdout_fraction == 0.0  # 600 training examples per client
    assert config.data.normalize == "none"
    assert config.server.fraction == 0.1 and config.client.batch_size == 10
    parameters, epochs = MCMAHAN[config.model.name]
    assert config.client.epochs == epochs
    expected_partition = "iid" if path.stem.endswith("_iid") else "shards"
    assert config.data.partition.kind == expected_partition


@pytest.mark.parametrize("name", sorted(MCMAHAN))
def test_the_paper_models_have_the_papers_parameter_counts(name):
    from fedloom import models

    parameters = sum(p.numel() for p in getattr(models, name)().parameters())
    assert parameters == MCMAHAN[name][0]


@pytest.mark.mnist
def test_the_iid_preset_gives_every_client_600_raw_examples(mnist):
    config = load_config(PAPERS / "mcmahan2017_2nn_iid.yaml")  # data root: $FEDLOOM_DATA
    data = build_federated(config)
    sizes = {len(data.client_batch(k)["y"]) for k in range(data.num_clients)}
    assert sizes == {600}
    x = data.client_batch(0)["x"]
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0  # raw pixels, not standardized


def test_the_fedprox_preset_is_synthetic_1_1_with_30_devices():
    config = load_config(PAPERS / "fedprox2020_synthetic_1_1.yaml")
    assert (config.data.synthetic.alpha, config.data.synthetic.beta) == (1.0, 1.0)
    data = build_federated(config)
    assert data.num_clients == 30
    assert config.client.epochs == 20 and config.client.lr == 0.01
    assert config.algorithm.mu == 1.0
    module = build_model(config, data.dataset)()
    assert sum(p.numel() for p in module.parameters()) == 60 * 10 + 10
