"""A client's own data for ``fedloom client --data-hook examples/deploy/own_data.py:load``.

The hook takes no arguments and returns ``(x, y)``: float inputs shaped as the model
expects (one row per example) and integer labels. Here: a slice of scikit-learn's digits
standing in for a hospital's or a phone's local files; replace the body with your loader.
"""

import numpy as np
from sklearn.datasets import load_digits


def load():
    digits = load_digits()
    rows = slice(0, 300)  # this client's examples
    x = (digits.data[rows] / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)  # as fedloom's digits
    y = digits.target[rows].astype(np.int64)
    return x, y
