"""Model files: a model's named tensors as safetensors, written and read with checksums.

``model.safetensors`` in a run directory is the final global model; ``model.init`` in a
config starts a run from such a file. Loading checks everything before a single weight is
used: the checksums (a damaged file), the tensor names and shapes (a file of another
model), and finiteness (a model that diverged), each as one line naming the file.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fedloom.errors import FedloomError
from fedloom.params import buffer_spec, flatten_buffers, flatten_params, param_spec
from fedloom.storage import read_tensors, write_tensors

__all__ = ["FORMAT", "load_model", "save_model"]

FORMAT = "fedloom-model-v1"


def save_model(path: Path, module: nn.Module, params: torch.Tensor, buffers: torch.Tensor) -> Path:
    """Write the model at ``params``/``buffers``: one named tensor per parameter and float
    buffer. safetensors holds only tensors, so loading a model file never runs code."""
    tensors = {name: view.clone() for name, view in param_spec(module).views(params).items()}
    if buffers.numel():
        tensors.update({n: v.clone() for n, v in buffer_spec(module).views(buffers).items()})
    return write_tensors(path, tensors, {"format": FORMAT}, durable=False)


def load_model(path: str | Path, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The flat ``(params, buffers)`` stored in ``path`` for ``module``'s architecture."""
    what = "model file"
    if not Path(path).is_file():
        raise FedloomError(f"the {what} {path} does not exist")
    tensors, metadata = read_tensors(path, what=what)
    if metadata.get("format") != FORMAT:
        raise FedloomError(f"{path} is not a fedloom model file ({FORMAT})")
    expected = {
        name: tuple(view.shape)
        for spec, flat in ((param_spec(module), flatten_params(module)),
                           (buffer_spec(module), flatten_buffers(module)))
        for name, view in spec.views(flat).items()
    }  # fmt: skip
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        raise FedloomError(
            f"the {what} {path} is for another model: missing {missing or 'nothing'}, "
            f"unexpected {extra or 'nothing'}"
        )
    for name, shape in expected.items():
        tensor = tensors[name]
        if tuple(tensor.shape) != shape or not tensor.is_floating_point():
            raise FedloomError(
                f"the {what} {path}: {name} is {tensor.dtype} {tuple(tensor.shape)}, this model "
                f"needs a float tensor of shape {shape}"
            )
        if not bool(torch.isfinite(tensor).all()):
            raise FedloomError(f"the {what} {path}: {name} holds non-finite values (NaN or inf)")

    def flat(spec_names: tuple[str, ...]) -> torch.Tensor:
        if not spec_names:
            return torch.zeros(0)
        return torch.cat([tensors[n].reshape(-1).to(torch.float32) for n in spec_names])

    return flat(param_spec(module).names), flat(buffer_spec(module).names)
