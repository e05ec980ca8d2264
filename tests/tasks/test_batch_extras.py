"""Named batch tensors beyond x and y: padded token sequences with an attention mask.

The mask is an extra entry of the data set; the task feeds ``(x, mask)`` to the model. Every
engine must slice it with the same rows as ``x`` and ``y`` (and pad it with them in a
vectorized cohort), evaluation must pass it too, and a deployed client must train on it.
"""

import pytest
import torch
from torch import nn

import fedloom as fl
from fedloom.client import ClientProgram, LocalContext, LocalTraining, make_objective, train_client
from fedloom.data import IID, Dataset, federate
from fedloom.engine import Evaluator
from fedloom.params import buffer_spec, flatten_buffers, flatten_params, param_spec
from fedloom.tasks import Task, classification
from fedloom.types import ClientPlan

VOCAB, LENGTH, CLASSES = 12, 6, 3


class MaskedBag(nn.Module):
    """Mean of the embeddings of the real tokens (mask 1), then a linear classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 8)
        self.head = nn.Linear(8, CLASSES)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        summed = (self.embed(tokens) * mask.unsqueeze(-1)).sum(1)
        return self.head(summed / mask.sum(1, keepdim=True).clamp(min=1.0))


def masked_task() -> Task:
    base = classification()
    return Task("masked", base.loss, base.metrics, score="accuracy", inputs=("x", "mask"))


def sequences(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sequences of random lengths 1..LENGTH whose real tokens are all of the label's class
    (token id mod 3), padded with tokens of any class."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (n,), generator=g)
    real = CLASSES * torch.randint(0, VOCAB // CLASSES, (n, LENGTH), generator=g) + labels[:, None]
    lengths = torch.randint(1, LENGTH + 1, (n,), generator=g)
    mask = (torch.arange(LENGTH)[None, :] < lengths[:, None]).float()
    padding = torch.randint(0, VOCAB, (n, LENGTH), generator=g)
    return torch.where(mask.bool(), real, padding), labels, mask


def masked_data(*, scramble_padding: bool = False) -> fl.FederatedDataset:
    x, y, mask = sequences(330, seed=1)
    if scramble_padding:  # other token ids where the mask is 0: must change nothing
        noise = torch.randint(0, VOCAB, x.shape, generator=torch.Generator().manual_seed(9))
        x = torch.where(mask.bool(), x, noise)
    dataset = Dataset(
        "masked", x[:300], y[:300], x[300:], y[300:], num_classes=CLASSES,
        train_extra={"mask": mask[:300]}, test_extra={"mask": mask[300:]},
    )  # fmt: skip
    return federate(dataset, IID(num_clients=7), holdout_fraction=0.2, seed=0)


def train(data: fl.FederatedDataset, engine: str) -> tuple[torch.Tensor, dict[str, float]]:
    torch.manual_seed(0)
    history = fl.simulate(
        fl.fedavg(), data, MaskedBag, task=masked_task(), rounds=3, fraction=0.6,
        local=LocalTraining(epochs=2, batch_size=8, lr=0.3), engine=engine, seed=4,
    )  # fmt: skip
    return history.final_state.params, history.reports[-1].metrics


def test_a_mask_reaches_training_and_evaluation_on_every_engine_with_the_same_result():
    data = masked_data()
    params, metrics = train(data, "sequential")
    for engine in ("vectorized", "process"):
        other, other_metrics = train(data, engine)
        assert torch.allclose(other, params, atol=1e-5, rtol=0), engine
        assert other_metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    # evaluation used the mask: the same numbers by hand, with plain PyTorch
    module = MaskedBag()
    torch.nn.utils.vector_to_parameters(params, module.parameters())
    test = data.dataset.test_batch()
    with torch.no_grad():
        logits = module(test["x"], test["mask"])
    loss = nn.functional.cross_entropy(logits, test["y"])
    assert metrics["test_loss"] == pytest.approx(float(loss), rel=1e-5)
    accuracy = float((logits.argmax(1) == test["y"]).float().mean())
    assert metrics["test_accuracy"] == pytest.approx(accuracy)
    assert accuracy > 0.8  # it learned the tokens' class (chance: 1/3)


def test_padded_tokens_never_leak_into_the_model():
    """Scrambling the tokens under the mask leaves every engine's model bit for bit equal;
    scrambling a real token does not (so the comparison can fail)."""
    for engine in ("sequential", "vectorized"):
        params, _ = train(masked_data(), engine)
        scrambled, _ = train(masked_data(scramble_padding=True), engine)
        assert torch.equal(params, scrambled), engine
    data = masked_data()
    x = data.dataset.train_x.clone()
    x[0, 0] = (x[0, 0] + 1) % VOCAB
    changed = Dataset(
        "masked", x, data.dataset.train_y, data.dataset.test_x, data.dataset.test_y,
        num_classes=CLASSES, train_extra=data.dataset.train_extra,
        test_extra=data.dataset.test_extra,
    )  # fmt: skip
    moved, _ = train(federate(changed, IID(num_clients=7), holdout_fraction=0.2), "sequential")
    assert not torch.equal(moved, train(data, "sequential")[0])


def test_per_client_scores_use_each_clients_own_mask():
    data = masked_data()
    module = MaskedBag()
    params, buffers = flatten_params(module), flatten_buffers(module)
    scores = Evaluator(module, data, task=masked_task()).client_scores(params, buffers)
    for k in (0, 3):
        index = torch.from_numpy(data.client_holdout[k])
        held = data.dataset.train_batch(index)
        with torch.no_grad():
            predicted = module(held["x"], held["mask"]).argmax(1)
        assert scores[k] == pytest.approx(float((predicted == held["y"]).float().mean()))


def test_a_deployed_client_trains_on_its_mask_like_the_simulation():
    from _deployed import one_deployed_round

    torch.manual_seed(0)
    module = MaskedBag()
    params, buffers = flatten_params(module), flatten_buffers(module)
    data = masked_data().client_batch(2)
    settings = LocalTraining(epochs=2, batch_size=8, lr=0.3)
    plan = ClientPlan(0, 0, seed=77)
    deployed = one_deployed_round(
        plan, params, buffers, settings=settings, program=ClientProgram(),
        data=data, module=module, task=masked_task(),
    )  # fmt: skip
    objective = make_objective(module, param_spec(module), buffer_spec(module), task=masked_task())
    simulated = train_client(
        plan, data, params, buffers, objective=objective, settings=settings,
        context=LocalContext(params),
    )  # fmt: skip
    assert torch.equal(deployed.update, simulated.update)
    assert deployed.num_examples == len(data["y"])


def test_a_batch_without_the_tasks_inputs_is_a_clear_error():
    x, y, _ = sequences(20, seed=0)
    plain = federate(Dataset("no-mask", x[:16], y[:16], x[16:], y[16:], num_classes=3), IID(2))
    with pytest.raises(ValueError, match=r"feeds \['x', 'mask'\] to the model.*no \['mask'\]"):
        fl.simulate(fl.fedavg(), plain, MaskedBag, task=masked_task(), rounds=1, fraction=1.0,
                    engine="sequential", on_client_error="abort")  # fmt: skip


@pytest.mark.parametrize(
    ("train_extra", "test_extra", "message"),
    [
        ({"mask": torch.ones(16, 6)}, {}, "must name the same entries"),
        ({"mask": torch.ones(15, 6)}, {"mask": torch.ones(4, 6)}, r"one row per example \(16\)"),
        ({"y": torch.ones(16)}, {"y": torch.ones(4)}, "an identifier other than"),
    ],
)
def test_bad_extras_are_named(train_extra, test_extra, message):
    x, y, _ = sequences(20, seed=0)
    with pytest.raises(ValueError, match=message):
        Dataset("bad", x[:16], y[:16], x[16:], y[16:], num_classes=3,
                train_extra=train_extra, test_extra=test_extra)  # fmt: skip
