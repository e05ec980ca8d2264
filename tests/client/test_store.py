"""The client-state store is a value: writes make a new one and never touch the old."""

import torch

from fedloom.client.store import client_state, with_writes


def test_writes_merge_into_a_new_value():
    first = with_writes({}, {3: {"scaffold/c": torch.ones(2)}})
    second = with_writes(
        first, {3: {"ewc/fisher": torch.zeros(2)}, 5: {"scaffold/c": -torch.ones(2)}}
    )
    assert set(first) == {3} and set(first[3]) == {"scaffold/c"}  # untouched
    assert set(second) == {3, 5} and set(second[3]) == {"scaffold/c", "ewc/fisher"}
    assert torch.equal(client_state(second, 5, "scaffold/c"), -torch.ones(2))
    assert client_state(second, 9, "scaffold/c") is None  # never took part
    assert client_state(second, 5, "ewc/fisher") is None
