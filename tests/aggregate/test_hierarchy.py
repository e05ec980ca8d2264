"""Hierarchical aggregation: exactly flat FedAvg with means; robust rules at either level."""

import pytest
import torch

import fedloom as fl
from fedloom.aggregate import (
    CoordinateMedian,
    Group,
    Hierarchical,
    Krum,
    Mean,
    aggregate_stack,
    contiguous_tree,
    pipeline,
)
from fedloom.client import LocalTraining
from fedloom.data import IID, federate
from fedloom.sim.attacks import Attack


def test_contiguous_tree_shape():
    tree = contiguous_tree(10, [3, 2])
    assert len(tree.members) == 2  # 4 edges of <= 3 clients, 2 regions, one root
    assert [len(region.members) for region in tree.members] == [2, 2]
    assert tree.clients() == list(range(10))
    with pytest.raises(ValueError, match="need 3 aggregators"):
        contiguous_tree(10, [3, 2], [Mean()])


def test_means_up_a_three_level_tree_equal_the_flat_weighted_mean():
    torch.manual_seed(0)
    updates = torch.randn(10, 7)
    weights = torch.rand(10)
    weights /= weights.sum()
    ids = [9, 3, 0, 1, 2, 4, 5, 6, 7, 8]  # rows need not be in tree order
    tree = Hierarchical(contiguous_tree(10, [3, 2]))
    result, _ = tree.aggregate(updates, weights, None, ids)
    assert torch.allclose(result, weights @ updates, atol=1e-6)
    # the tree is one stacked reducer of a pipeline: the same through the pipeline
    through, _ = aggregate_stack(pipeline(reduce=tree), updates, weights, client_ids=ids)
    assert torch.allclose(through, weights @ updates, atol=1e-6)


def test_partial_participation_and_errors():
    tree = Hierarchical(Group((Group((0, 1)), Group((2, 3)))))
    updates = torch.tensor([[1.0], [3.0]])
    weights = torch.tensor([0.25, 0.75])
    result, _ = tree.aggregate(updates, weights, None, [0, 3])  # one client per edge
    assert result.item() == pytest.approx(0.25 * 1 + 0.75 * 3)
    with pytest.raises(ValueError, match=r"clients \[7\] are not in the aggregation tree"):
        tree.aggregate(updates, weights, None, [0, 7])
    with pytest.raises(ValueError, match="appear more than once"):
        Hierarchical(Group((Group((0, 1)), Group((1, 2)))))
    krum_edge = Hierarchical(Group((Group((0, 1, 2), Krum(f=1)),)))
    with pytest.raises(ValueError, match=r"node root/0 \(Krum\) got 3 inputs this round, needs 5"):
        krum_edge.aggregate(torch.zeros(3, 1), torch.full((3,), 1 / 3), None, [0, 1, 2])


def test_robust_rules_at_the_edges_or_at_the_root():
    honest = torch.full((9, 2), 1.0)
    # client 0 is malicious inside edge 0
    updates = torch.cat([torch.full((1, 2), 1e6), honest])
    weights = torch.full((10,), 0.1)
    ids = list(range(10))
    edge_median = Hierarchical(contiguous_tree(10, [5], [CoordinateMedian(), Mean()]))
    assert torch.allclose(edge_median.aggregate(updates, weights, None, ids)[0], torch.ones(2))
    # a whole edge (clients 0-2) is compromised: a median at the root over 3+ edges holds
    updates = torch.cat([torch.full((3, 2), -50.0), torch.full((9, 2), 1.0)])
    weights = torch.full((12,), 1 / 12)
    root_median = Hierarchical(contiguous_tree(12, [3], [Mean(), CoordinateMedian()]))
    assert torch.allclose(
        root_median.aggregate(updates, weights, None, list(range(12)))[0], torch.ones(2)
    )


def test_hierarchical_fedavg_run_equals_flat_fedavg(digits):
    data = federate(digits, IID(12), seed=0)
    local = LocalTraining(epochs=1, batch_size=10, lr=0.1)

    def final(algorithm, attack=None):
        history = fl.simulate(
            algorithm,
            data,
            fl.models.digits_mlp,
            rounds=3,
            fraction=0.5,
            local=local,
            attack=attack,
            eval_clients=False,
        )
        return history.final_state.params

    flat = final(fl.fedavg())
    tree = fl.fedavg().with_aggregator(Hierarchical(contiguous_tree(12, [4, 3])))
    assert torch.allclose(final(tree), flat, atol=1e-6)


def test_edge_medians_contain_a_scaling_attacker_in_a_run(digits):
    data = federate(digits, IID(12), seed=0)
    attack = Attack("scaling", 1 / 12, factor=1000.0)  # one attacker
    rules = [CoordinateMedian(), Mean()]
    algorithm = fl.fedavg().with_aggregator(Hierarchical(contiguous_tree(12, [4], rules)))
    history = fl.simulate(
        algorithm,
        data,
        fl.models.digits_mlp,
        rounds=5,
        fraction=1.0,
        local=LocalTraining(epochs=1, batch_size=10, lr=0.1),
        attack=attack,
        eval_clients=False,
    )
    assert history.reports[-1].metrics["test_accuracy"] > 0.7
