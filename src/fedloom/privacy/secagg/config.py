"""The settings of secure aggregation and what they become for one cohort.

:class:`SecAggConfig` holds what a run configures (``server.secure_aggregation``):
``threshold``, ``bits``, ``clip_range``, ``neighbors`` (and optionally ``value_bits``).
:meth:`SecAggConfig.for_cohort` checks them against the cohort size and returns the
:class:`CohortParams` both the server and the clients use: bad values are
:class:`~fedloom.errors.ConfigError` naming the field, before any message is sent.

Why the threshold has a floor: a client's secrets are shared among its *holders* (its
neighbors and itself, ``k + 1`` of them, or the whole cohort). Each honest holder reveals,
for a given client, either a share of its self-mask seed or of its mask key, never both, and
answers one unmasking request per round. If ``2 t > holders``, no server, even one that sends
different clients different stories, can collect ``t`` shares of both; with a smaller ``t``
it could unmask one client's input. So ``t`` must be a strict majority of the holders; the
default is that minimum, which tolerates the most dropouts (``holders - t`` of each client's
holders, ``n - t`` of the cohort for the complete graph).
"""

from __future__ import annotations

from dataclasses import dataclass

from fedloom.errors import ConfigError
from fedloom.privacy.secagg.quantize import (
    MAX_BITS,
    Quantizer,
    max_value_bits,
    min_group_bits,
)

__all__ = ["CohortParams", "SecAggConfig", "min_threshold"]

_FIELD = "secure_aggregation"


def min_threshold(holders: int) -> int:
    """The least safe threshold for ``holders`` share holders: a strict majority."""
    return holders // 2 + 1


@dataclass(frozen=True)
class SecAggConfig:
    """Secure aggregation settings.

    - ``threshold``: shares needed to reconstruct a client's secret (``t``); ``None`` is the
      least safe value, a strict majority of each client's holders.
    - ``bits``: the group is ``Z_{2^bits}`` (1 to 64; masked vectors are that wide on the wire).
    - ``clip_range``: every coordinate is clipped to ``[-clip_range, clip_range]``.
    - ``neighbors``: ``None`` for the complete graph (Bonawitz et al.), or an even ``k`` for
      SecAgg+'s random ``k``-regular graph (Bell et al.).
    - ``value_bits``: per-coordinate precision; ``None`` is the finest whose cohort sum
      still fits ``bits``.

    >>> params = SecAggConfig(bits=32, clip_range=0.5).for_cohort(20)
    >>> params.threshold, params.quantizer.value_bits
    (11, 27)
    """

    threshold: int | None = None
    bits: int = 32
    clip_range: float = 1.0
    neighbors: int | None = None
    value_bits: int | None = None

    def for_cohort(self, num_clients: int) -> CohortParams:
        """The parameters of a round with ``num_clients`` clients, checked."""
        n = num_clients
        if n < 2:
            raise ConfigError(f"secure aggregation needs a cohort of at least 2 clients, got {n}")
        if not 1 <= self.bits <= MAX_BITS:
            raise ConfigError(f"{_FIELD}.bits must be in [1, {MAX_BITS}], got {self.bits}")
        if self.neighbors is not None and (self.neighbors < 2 or self.neighbors % 2):
            raise ConfigError(
                f"{_FIELD}.neighbors must be an even number >= 2 (k / 2 neighbors on each side "
                f"of a ring), or null for all, got {self.neighbors}"
            )
        degree = n - 1 if self.neighbors is None else min(self.neighbors, n - 1)
        holders = degree + 1
        least = min_threshold(holders)
        threshold = least if self.threshold is None else self.threshold
        if not least <= threshold <= holders:
            raise ConfigError(
                f"{_FIELD}.threshold must be in [{least}, {holders}] for a cohort of {n} with "
                f"{degree} neighbors each, got {threshold}: above {holders} no secret can be "
                f"reconstructed; below {least} (a strict majority of the {holders} holders) "
                "the server could collect both masks of one client"
            )
        value_bits = self.value_bits
        if value_bits is None:
            value_bits = max_value_bits(self.bits, n)
            if value_bits == 0:
                raise ConfigError(
                    f"{_FIELD}.bits = {self.bits} is too few for a cohort of {n}: the sum of "
                    f"even 1-bit values needs {min_group_bits(n, 1)} bits"
                )
        needed = min_group_bits(n, value_bits)
        if needed > self.bits:
            raise ConfigError(
                f"{_FIELD}.bits = {self.bits} is too few: the sum of {n} clients' "
                f"{value_bits}-bit values needs {needed} bits, or it wraps around and decodes "
                "to garbage; raise bits or lower value_bits"
            )
        return CohortParams(
            num_clients=n,
            threshold=threshold,
            bits=self.bits,
            neighbors=None if degree == n - 1 else degree,
            quantizer=Quantizer(self.clip_range, value_bits),
        )


@dataclass(frozen=True)
class CohortParams:
    """:class:`SecAggConfig` resolved for a cohort of ``num_clients`` (checked values)."""

    num_clients: int
    threshold: int
    bits: int
    neighbors: int | None  # None: the complete graph
    quantizer: Quantizer

    @property
    def max_count(self) -> int:
        """The largest example count one client may report: ``num_clients`` of them still
        sum below ``2^bits``."""
        return ((1 << self.bits) - 1) // self.num_clients
