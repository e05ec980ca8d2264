"""Objective terms and state logics travel as data (a name, numbers, tensors) and come back
as equal objects; anything that cannot travel is an error naming it."""

from dataclasses import dataclass

import pytest
import torch

from fedloom.algorithms.feddyn import feddyn
from fedloom.algorithms.scaffold import scaffold
from fedloom.client import LocalContext, LocalTraining, ProximalTerm
from fedloom.client.portable import Description, describe, portable, portable_names, rebuild
from fedloom.client.store import OwnState
from fedloom.client.terms import LinearTerm, linear_correction
from fedloom.errors import FedloomError
from fedloom.net.codec import decode_portable, encode_portable
from fedloom.net.server import Access, RoundBoard


@portable("test/anchor")
@dataclass(frozen=True)
class AnchorTerm:
    """``weight/2 ||w - anchor||^2`` toward a fixed point: a user's own term."""

    weight: float
    anchor: torch.Tensor
    power: int = 2

    def __call__(self, w, context):
        return 0.5 * self.weight * (w - self.anchor).abs().pow(self.power).sum()


def _through_the_wire(value):
    return rebuild(decode_portable(encode_portable(value, compress=True), max_bytes=1 << 20))


def test_terms_and_state_logics_come_back_equal_from_the_wire():
    anchor = AnchorTerm(0.25, torch.tensor([1.0, -2.0, 3.5]), power=3)
    back = _through_the_wire(anchor)
    assert (back.weight, back.power, type(back.power)) == (0.25, 3, int)
    assert torch.equal(back.anchor, anchor.anchor)
    assert _through_the_wire(ProximalTerm(0.5)) == ProximalTerm(0.5)
    assert torch.equal(_through_the_wire(LinearTerm(torch.arange(3.0))).g, torch.arange(3.0))
    assert _through_the_wire(feddyn(0.1).state) == feddyn(0.1).state
    assert _through_the_wire(scaffold().state) == scaffold().state
    assert {"proximal", "linear", "scaffold/control_variates", "feddyn/regularizer"} <= set(
        portable_names()
    )


def test_the_linear_term_is_the_gradient_correction_it_stands_for():
    g, w = torch.tensor([0.5, -1.0]), torch.tensor([2.0, 3.0], requires_grad=True)
    (grad,) = torch.autograd.grad(LinearTerm(g)(w, LocalContext(w)), [w])
    assert grad.tolist() == [0.5, -1.0]  # the SGD step adds exactly g
    total = linear_correction([LinearTerm(g), ProximalTerm(1.0), LinearTerm(torch.ones(2))])
    assert total.tolist() == [1.5, 0.0]
    assert linear_correction([ProximalTerm(1.0)]) is None


def test_what_cannot_travel_is_named():
    def closure_term(w, context):
        return w.sum()

    with pytest.raises(FedloomError, match="function cannot travel.*@fedloom.client.portable"):
        describe(closure_term)

    @portable("test/bad-field")
    @dataclass(frozen=True)
    class Labelled:
        label: str

    with pytest.raises(FedloomError, match="Labelled.label is a str"):
        describe(Labelled("x"))
    with pytest.raises(FedloomError, match="sent 'nobody/knows', which this client does not"):
        rebuild(Description("nobody/knows"))
    with pytest.raises(FedloomError, match="got fields \\['weight'\\].*has \\['anchor', 'power'"):
        rebuild(Description("test/anchor", {"weight": 1.0}))
    with pytest.raises(ValueError, match="name is taken"):
        portable("proximal")(Labelled)


def test_a_server_whose_objective_cannot_travel_refuses_to_start():
    from fedloom.client import ClientProgram

    def closure_term(w, context):
        return w.sum()

    with pytest.raises(FedloomError, match="function cannot travel"):
        RoundBoard(
            Access(("a",)),
            LocalTraining(),
            max_tensor_bytes=1 << 16,
            program=ClientProgram(terms=(closure_term,)),
        )


def test_a_deployed_clients_own_state_survives_a_restart(tmp_path):
    path = tmp_path / "me.safetensors"
    own = OwnState(path)
    assert own.entries == {}
    own.commit({"scaffold/c": torch.tensor([1.0, 2.0])})
    own.commit({"feddyn/g": torch.tensor([3.0])})
    again = OwnState(path)
    assert sorted(again.entries) == ["feddyn/g", "scaffold/c"]
    assert again.entries["scaffold/c"].tolist() == [1.0, 2.0]
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(FedloomError, match="cannot read the client state file"):
        OwnState(path)


def test_scaffolds_client_half_reports_what_the_server_folds():
    logic = scaffold().state
    c = torch.tensor([1.0, -1.0])
    own = {"scaffold/c": torch.tensor([0.5, 0.5])}
    assert logic.correction({"c": c}, own).tolist() == [0.5, -1.5]
    assert logic.correction({"c": c}, {}).tolist() == [1.0, -1.0]  # c_k = 0 before
    from fedloom.types import ClientResult

    result = ClientResult(3, torch.tensor([-0.2, 0.4]), torch.zeros(0), 10, 4, 40, 1.0)
    writes, report = logic.remember({"c": c}, own, result, settings=LocalTraining(lr=0.1))
    # c_k+ = c_k - c - update / (K lr) = (0.5 - 1 + 0.5, 0.5 + 1 - 1) = (0, 0.5)
    assert writes["scaffold/c"].tolist() == pytest.approx([0.0, 0.5])
    assert report["control_change"].tolist() == pytest.approx([-0.5, 0.0])
    acc = logic.fold(logic.start(c), c, report)
    assert logic.finish(acc, c, num_clients=5).tolist() == pytest.approx([0.9, -1.0])
