"""The LEAF / FedProx ``Synthetic(alpha, beta)`` generator.

Li et al. 2020 ("Federated Optimization in Heterogeneous Networks", section 5.1), following
Shamir et al. 2014: device k draws ``u_k ~ N(0, alpha)``, ``W_k ~ N(u_k, 1)`` (10x60),
``b_k ~ N(u_k, 1)``; ``B_k ~ N(0, beta)``, ``v_k ~ N(B_k, 1)`` (60-dim); its inputs are
``x ~ N(v_k, Sigma)`` with ``Sigma = diag(j^-1.2)`` and labels ``y = argmax(softmax(W_k x + b_k))``.
``alpha`` controls how much local models differ, ``beta`` how much local inputs differ.
Device sizes follow a power law (log-normal). Each device keeps 80% for training and 20% goes to
the global test set, as in LEAF.
"""

from __future__ import annotations

import numpy as np
import torch

from fedloom.data.dataset import Dataset

__all__ = ["load_synthetic"]


def load_synthetic(
    alpha: float = 1.0,
    beta: float = 1.0,
    *,
    num_devices: int = 30,
    dim: int = 60,
    num_classes: int = 10,
    seed: int = 0,
    iid: bool = False,
) -> Dataset:
    """Generate Synthetic(alpha, beta); ``train_owner`` holds each example's device.

    ``iid=True`` gives the paper's Synthetic-IID: one shared W, b and v = 0 for every device.
    """
    rng = np.random.default_rng(seed)
    sizes = (rng.lognormal(4, 2, num_devices).astype(int) + 50).clip(max=5000)
    sigma = np.array([(j + 1) ** -1.2 for j in range(dim)])
    shared_w = rng.normal(0, 1, (num_classes, dim))
    shared_b = rng.normal(0, 1, num_classes)
    train_x, train_y, owner, test_x, test_y = [], [], [], [], []
    for device, size in enumerate(sizes):
        if iid:
            w, b, v = shared_w, shared_b, np.zeros(dim)
        else:
            u = rng.normal(0, np.sqrt(alpha))
            w = rng.normal(u, 1, (num_classes, dim))
            b = rng.normal(u, 1, num_classes)
            v = rng.normal(rng.normal(0, np.sqrt(beta)), 1, dim)
        x = rng.normal(v, np.sqrt(sigma), (size, dim))
        y = np.argmax(x @ w.T + b, axis=1)  # argmax of softmax == argmax of logits
        cut = int(0.8 * size)
        train_x.append(x[:cut])
        train_y.append(y[:cut])
        owner.append(np.full(cut, device))
        test_x.append(x[cut:])
        test_y.append(y[cut:])

    def tensor(parts: list[np.ndarray], dtype: torch.dtype) -> torch.Tensor:
        return torch.from_numpy(np.concatenate(parts)).to(dtype)

    return Dataset(
        name="synthetic_iid" if iid else f"synthetic({alpha:g},{beta:g})",
        train_x=tensor(train_x, torch.float32),
        train_y=tensor(train_y, torch.int64),
        test_x=tensor(test_x, torch.float32),
        test_y=tensor(test_y, torch.int64),
        num_classes=num_classes,
        train_owner=np.concatenate(owner),
    )
