"""The wire format: exact round trips, and every malformed tensor refused with a reason."""

import pathlib
import subprocess
import sys
import zlib

import pytest
import torch

from fedloom.net.codec import WireError, decode_tensor, encode_tensor
from fedloom.net.proto import fedloom_pb2 as pb

MAX = 1 << 20


@pytest.mark.parametrize(
    "tensor",
    [
        torch.randn(3, 4),
        torch.randn(5, dtype=torch.float64),
        torch.arange(7, dtype=torch.int64).reshape(7, 1),
        torch.zeros(0),
        torch.tensor(2.5),
        torch.randn(4, 6).t(),  # non-contiguous
    ],
)
@pytest.mark.parametrize("compress", [False, True])
def test_round_trip_is_exact(tensor, compress):
    message = encode_tensor(tensor, compress=compress)
    wire = pb.Tensor.FromString(message.SerializeToString())
    decoded = decode_tensor(wire, max_bytes=MAX)
    assert decoded.dtype == tensor.dtype and decoded.shape == tensor.shape
    assert torch.equal(decoded, tensor)


def test_bytes_are_little_endian_raw_values():
    message = encode_tensor(torch.tensor([1.0, -2.0]))
    assert message.dtype == "float32" and list(message.shape) == [2]
    assert message.data == b"\x00\x00\x80\x3f\x00\x00\x00\xc0"


def _tensor(**fields):
    base = {"dtype": "float32", "shape": [2], "data": b"\x00" * 8, "compression": ""}
    return pb.Tensor(**{**base, **fields})


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"dtype": "object"}, "unknown dtype 'object'"),
        ({"dtype": "pickle"}, "unknown dtype 'pickle'"),
        ({"shape": [3]}, "needs 12 bytes, got 8"),
        ({"shape": [-1, -8]}, "negative dimension"),
        ({"shape": [1 << 20, 1 << 10]}, "over the 1048576 limit"),
        ({"compression": "lzma"}, "unknown compression 'lzma'"),
        # NumPy's own limit is 64 dimensions (a ValueError that once escaped the handler)
        ({"shape": [1] * 70}, "tensor has 70 dimensions, at most 8 allowed"),
        ({"compression": "zlib", "data": b"not zlib"}, "corrupt zlib payload"),
        # a compressed bomb: 8 bytes claimed, 100 MB inside
        (
            {"compression": "zlib", "data": zlib.compress(b"\x00" * 100_000_000)},
            "does not inflate to exactly 8 bytes",
        ),
    ],
)
def test_malformed_tensors_are_refused(fields, reason):
    with pytest.raises(WireError, match=reason):
        decode_tensor(_tensor(**fields), max_bytes=MAX)


def test_unsupported_dtypes_are_refused_when_sending():
    with pytest.raises(WireError, match="cannot send dtype torch.complex64"):
        encode_tensor(torch.zeros(2, dtype=torch.complex64))


def test_no_pickle_in_the_network_code():
    root = pathlib.Path(__file__).parents[2] / "src" / "fedloom" / "net"
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert "import pickle" not in text and "pickle.loads" not in text, path


def test_checked_in_protobuf_code_is_current(tmp_path):
    """The generated modules match what the .proto produces now."""
    src = pathlib.Path(__file__).parents[2] / "src"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{src}",
            f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            str(src / "fedloom/net/proto/fedloom.proto"),
        ],
        check=True,
    )
    for name in ("fedloom_pb2.py", "fedloom_pb2_grpc.py", "fedloom_pb2.pyi"):
        generated = (tmp_path / "fedloom/net/proto" / name).read_text()
        assert generated == (src / "fedloom/net/proto" / name).read_text(), name


def test_a_tensor_of_a_shape_the_model_cannot_have_is_refused_before_decoding():
    with pytest.raises(WireError, match="tensor has shape \\(2,\\), expected \\(3,\\)"):
        decode_tensor(_tensor(), max_bytes=MAX, shape=(3,))
    assert decode_tensor(_tensor(), max_bytes=MAX, shape=(2,)).tolist() == [0.0, 0.0]
