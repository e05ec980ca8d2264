"""The ``client.compression`` section: how updates (and optionally the broadcast) are
compressed, built into a :class:`~fedloom.compress.Compression`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from fedloom import compress
from fedloom.errors import ConfigError
from fedloom.registry import Section

__all__ = ["CompressionConfig", "build_compression", "check_compression"]

FIELD = "client.compression"


class CompressionConfig(Section):
    """Compression of the clients' updates (after their update transforms) and, optionally,
    of the server's broadcast; the bytes metrics count the codes sent (see the README's
    Compression section)."""

    kind: Literal["none", "fp16", "bf16", "int8", "qsgd", "topk"] = Field(
        default="none",
        description="none (float32), fp16, bf16, int8 (symmetric integers, a float32 scale "
        "per block), qsgd (Alistarh et al. 2017, unbiased) or topk (the k largest values)",
    )
    bits: int | None = Field(
        default=None, description="int8: bits a value, one of 2, 4, 8 (default 8)"
    )
    levels: int | None = Field(default=None, description="qsgd: levels s >= 1 (default 16)")
    block_size: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description="int8 and qsgd: values sharing one scale or norm (default 0: the whole update)",
    )
    k: int | None = Field(default=None, description="topk: values kept (at most the model's size)")
    fraction: float | None = Field(
        default=None, description="topk: the fraction of values kept, in (0, 1] (instead of k)"
    )
    error_feedback: bool = Field(
        default=False,
        description="keep what the compressor dropped on the client and add it to the next "
        "update (Stich et al. 2018); needs a kind other than none",
    )
    download: Literal["none", "fp16", "bf16", "int8"] = Field(
        default="none", description="compress the broadcast model too (deterministic kinds)"
    )


_OPTIONS = {"bits": ("int8",), "levels": ("qsgd",), "block_size": ("int8", "qsgd"),
            "k": ("topk",), "fraction": ("topk",)}  # fmt: skip


def build_compression(config: CompressionConfig | None) -> compress.Compression | None:
    """The run's compression (``None`` when off); a :class:`ConfigError` names the field of
    every problem."""
    if config is None:
        return None
    problems = []
    for option, kinds in _OPTIONS.items():
        if getattr(config, option) is not None and config.kind not in kinds:
            problems.append(
                f"{FIELD}.{option}: applies to kind {' or '.join(kinds)}, not {config.kind}"
            )
    if config.bits is not None and config.bits not in compress.quantize.INT_BITS:
        allowed = ", ".join(map(str, compress.quantize.INT_BITS))
        problems.append(f"{FIELD}.bits: {config.bits} is not supported; int8 packs {allowed} bits")
    if config.levels is not None and not 1 <= config.levels <= compress.quantize.MAX_LEVELS:
        problems.append(
            f"{FIELD}.levels: {config.levels}; QSGD needs 1 <= levels <= "
            f"{compress.quantize.MAX_LEVELS} (each value takes 1 + ceil(log2(levels + 1)) bits)"
        )
    if config.kind == "topk":
        if (config.k is None) == (config.fraction is None):
            problems.append(f"{FIELD}: topk needs exactly one of k and fraction")
        if config.k is not None and config.k < 1:
            problems.append(f"{FIELD}.k: {config.k}; keep at least 1 value")
        if config.fraction is not None and not 0 < config.fraction <= 1:
            problems.append(f"{FIELD}.fraction: {config.fraction}; must be in (0, 1]")
    if config.error_feedback and config.kind == "none":
        problems.append(f"{FIELD}.error_feedback: needs a kind other than none")
    if problems:
        raise ConfigError(problems)
    block = config.block_size or 0
    upload = {
        "none": lambda: None,
        "fp16": compress.Float16,
        "bf16": compress.BFloat16,
        "int8": lambda: compress.IntQuantizer(bits=config.bits or 8, block_size=block),
        "qsgd": lambda: compress.QSGD(levels=config.levels or 16, block_size=block),
        "topk": lambda: compress.TopK(k=config.k or 0, fraction=config.fraction or 0.0),
    }[config.kind]()
    download = {
        "none": lambda: None,
        "fp16": compress.Float16,
        "bf16": compress.BFloat16,
        "int8": lambda: compress.IntQuantizer(bits=8, block_size=block),
    }[config.download]()
    if upload is None and download is None:
        return None
    return compress.Compression(upload, download, config.error_feedback)


def check_compression(compression: compress.Compression | None, num_params: int) -> None:
    """Raise a :class:`ConfigError` when the compression does not fit a model of
    ``num_params`` parameters (top-k's ``k`` above it)."""
    upload = compression.upload if compression is not None else None
    if isinstance(upload, compress.TopK) and upload.k > num_params:
        raise ConfigError(
            f"{FIELD}.k: {upload.k} is more than the model's {num_params} parameters; "
            "lower k or give a fraction"
        )
