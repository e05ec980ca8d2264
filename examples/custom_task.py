"""A task of your own: federated linear regression, with a loss and a metric you write."""

import torch

import fedloom as fl


def loss(outputs, batch):  # the loss of every example: fedloom takes the mean
    return (outputs.squeeze(1) - batch["y"]).pow(2)


def metrics(outputs, batch):  # per-example values: fedloom reports their means
    return {"abs_error": (outputs.squeeze(1) - batch["y"]).abs()}


task = fl.Task("linear", loss=loss, metrics=metrics, score="abs_error", higher_is_better=False)

rng = torch.Generator().manual_seed(0)
x = torch.randn(1200, 5, generator=rng)
y = x @ torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0]) + 0.1 * torch.randn(1200, generator=rng)
dataset = fl.Dataset("linear", x[:1000], y[:1000], x[1000:], y[1000:], num_classes=1)
data = fl.federate(dataset, fl.data.IID(num_clients=20))
local = fl.LocalTraining(epochs=2, batch_size=10, lr=0.05)

if __name__ == "__main__":
    for engine in ("sequential", "vectorized"):
        history = fl.simulate(
            fl.fedavg(), data, lambda: torch.nn.Linear(5, 1), task=task,
            rounds=10, fraction=0.5, local=local, engine=engine,
        )  # fmt: skip
        error = history.reports[-1].metrics["test_abs_error"]
        print(f"{engine}: mean absolute test error {error:.4f} (noise level 0.08)")
