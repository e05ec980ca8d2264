"""The config's task travels to deployment: `fedloom client` processes train with focal loss
and the server reports the rare class's metrics, as the simulation does."""

import pytest
import torch
import yaml
from _harness import client_process, serve_in_thread, simulated

from fedloom.config import load_config
from fedloom.net.certs import write_quickstart

CONFIG = {
    "seed": 1,
    "rounds": 2,
    "data": {"dataset": "digits", "num_clients": 2, "partition": "iid"},
    "task": {"name": "focal", "gamma": 2.0, "alpha": 0.75, "positive_class": 3,
             "class_metrics": [3], "pr_bins": 20},
    "client": {"steps": 5, "batch_size": 10, "lr": 0.1},
    "server": {"fraction": 1.0},
    "eval": {"clients": False},
}  # fmt: skip


def test_deployed_clients_train_with_the_configured_focal_loss(tmp_path):
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(CONFIG))
    clients = ["c0", "c1"]
    write_quickstart(tmp_path / "certs", clients)
    config = load_config(config_path)
    deploy = config.deploy.model_copy(update={"round_timeout_s": 120})
    thread, outcome = serve_in_thread(
        config.model_copy(update={"deploy": deploy}), clients, tmp_path / "certs"
    )
    processes = [
        client_process(config_path, tmp_path / "certs", c, k, outcome["port"])
        for k, c in enumerate(clients)
    ]
    codes = [p.wait(timeout=300) for p, _ in processes]
    thread.join(timeout=120)
    assert codes == [0, 0], [output.rest() for _, output in processes]
    history = outcome["history"]
    assert torch.allclose(history.final_state.params, simulated(config).params, atol=1e-6, rtol=0)
    plain = config.model_copy(update={"task": load_config(None).task})  # cross-entropy
    assert not torch.allclose(history.final_state.params, simulated(plain).params, atol=1e-4)
    assert "test_recall_3" in history.reports[-1].metrics


def test_a_data_hook_client_knows_the_class_count_of_every_data_set():
    """A client with its own data builds the config's model without loading the config's data
    set: EMNIST's count follows its split (47 balanced, 26 letters); a data set whose count
    lives in its files (hf) is a config error naming data.dataset, not a KeyError."""
    from fedloom.config import RunConfig
    from fedloom.errors import ConfigError
    from fedloom.net.deploy import _hook_classes

    def config(data):
        return RunConfig.model_validate({"data": data})

    assert _hook_classes(config({"dataset": "emnist"})) == 47
    assert _hook_classes(config({"dataset": "emnist", "emnist": {"split": "letters"}})) == 26
    assert _hook_classes(config({"dataset": "cifar10"})) == 10
    with pytest.raises(ConfigError, match="data.dataset: hf"):
        _hook_classes(config({"dataset": "hf", "hf": {"path": "somewhere"}}))
