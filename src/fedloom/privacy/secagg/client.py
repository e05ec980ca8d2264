"""The client's side of a round: a frozen state value and one method per phase.

Each method takes the server's message of the previous phase and returns ``(message to the
server, next client state)``; the old state is unchanged, so a transport may keep it, retry,
or throw it away. In order (Bonawitz et al. 2017, figure 4, semi-honest, with SecAgg+'s
neighbor graph):

1. :meth:`SecAggClient.advertise`: two fresh X25519 public keys (channel and mask).
2. :meth:`SecAggClient.share_keys`: given its holders' keys (neighbors and itself), a
   fresh self-mask seed ``b``; Shamir shares of ``b`` and of the mask private key, each
   holder's pair sealed for that holder; a commitment to ``b``.
3. :meth:`SecAggClient.masked_input`: given the shares sent to it, whose senders are the
   neighbors it masks with, ``y = quantize(x) || count + PRG(b) + sum_{v > u} PRG(s_uv) -
   sum_{v < u} PRG(s_uv)`` in ``Z_{2^bits}``.
4. :meth:`SecAggClient.unmask`: for each surviving neighbor the share of its seed ``b_v``
   (and its own), for each dropped neighbor the share of its mask key. Once per round.

The refusals are the security: a client answers one unmasking request per round, never
reveals both kinds of share for one client, and refuses a request that lists it as dropped
(a client that dropped and reappears: if the server got its seed shares too, it could strip
both masks from a late masked input). The threshold's floor (a strict majority of holders,
:func:`~fedloom.privacy.secagg.config.min_threshold`) turns these local refusals into a
global guarantee.

Secrets come from ``os.urandom``, one 32-byte root per client and round, expanded with
HKDF; never from :mod:`fedloom.rng`, whose streams the server can compute from the run seed.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedloom.privacy.secagg import channel, prg
from fedloom.privacy.secagg.config import CohortParams, SecAggConfig
from fedloom.privacy.secagg.errors import (
    MessageError,
    ProtocolError,
    SecAggAborted,
    SecAggError,
    ShareError,
)
from fedloom.privacy.secagg.graph import neighbor_graph
from fedloom.privacy.secagg.messages import (
    AdvertiseKeys,
    EncryptedShare,
    KeyList,
    MaskedInput,
    Phase,
    RevealedShare,
    ShareKeys,
    ShareList,
    SharePayload,
    UnmaskRequest,
    UnmaskResponse,
    pack_vector,
)
from fedloom.privacy.secagg.shamir import Share, split
from fedloom.rng import numpy_rng

__all__ = ["SecAggClient", "holder_x"]


def holder_x(client_id: int) -> int:
    """The Shamir point of a client's shares (``client_id + 1``: 0 is the secret's)."""
    return client_id + 1


def _derive(root: bytes, purpose: bytes, *keys: int, length: int = 32) -> bytes:
    info = b"fedloom/secagg/v1/client/" + purpose + struct.pack(f">{len(keys)}Q", *keys)
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(root)


def _stream(root: bytes, purpose: bytes) -> Callable[[int], bytes]:
    """Successive pseudorandom chunks for one purpose (Shamir coefficients), from the root."""
    counter = iter(range(1 << 62))
    return lambda size: _derive(root, purpose, next(counter), length=size)


@dataclass(frozen=True, eq=False)
class SecAggClient:
    """One client's protocol state in one round. Start with :meth:`start`."""

    params: CohortParams
    seed: int
    round: int
    client_id: int
    cohort_ids: tuple[int, ...]
    neighbors: frozenset[int]
    phase: Phase = Phase.ADVERTISE
    root: bytes = field(default=b"", repr=False)
    keys: Mapping[int, AdvertiseKeys] = field(default_factory=dict, repr=False)
    own_shares: tuple[bytes, bytes] = field(default=(b"", b""), repr=False)  # key, seed
    peers: tuple[int, ...] = ()
    received: Mapping[int, SharePayload] = field(default_factory=dict, repr=False)
    invalid_senders: tuple[int, ...] = ()

    @classmethod
    def start(
        cls,
        config: SecAggConfig,
        *,
        seed: int,
        round: int,
        client_id: int,
        cohort_ids: Sequence[int],
        secret_seed: bytes | None = None,
    ) -> SecAggClient:
        """A client of ``cohort_ids`` about to advertise its keys in ``round``. ``seed`` is
        the run seed (the neighbor graph, the rounding). ``secret_seed`` makes the secrets
        reproducible, for tests only: it must be secret, and reusing it across runs reuses
        keys; the default draws them from ``os.urandom``."""
        cohort = tuple(sorted(cohort_ids))
        if client_id not in cohort:
            raise ProtocolError(f"client {client_id} is not in the cohort {list(cohort)}")
        params = config.for_cohort(len(cohort))
        graph = neighbor_graph(cohort, neighbors=params.neighbors, seed=seed, round=round)
        root = (
            os.urandom(32)
            if secret_seed is None
            else _derive(secret_seed, b"root", round, client_id)
        )
        return cls(params, seed, round, client_id, cohort, graph[client_id], root=root)

    # -- secrets, all derived from the root ---------------------------------------------
    def _secret(self, purpose: bytes) -> bytes:
        return _derive(self.root, purpose, self.round, self.client_id)

    @property
    def _channel_private(self) -> bytes:
        return self._secret(b"channel-key")

    @property
    def _mask_private(self) -> bytes:
        return self._secret(b"mask-key")

    @property
    def _self_seed(self) -> bytes:
        return self._secret(b"self-seed")

    def _expect(self, phase: Phase, message: object) -> None:
        if self.phase is not phase:
            done = self.phase is Phase.DONE
            raise ProtocolError(
                f"client {self.client_id} got a {type(message).__name__} in phase "
                f"{self.phase.value}, expected phase {phase.value}"
                + (": it answers one unmasking request per round" if done else "")
            )
        round = getattr(message, "round", self.round)
        if round != self.round:
            raise ProtocolError(
                f"client {self.client_id} got a {type(message).__name__} for round {round}, "
                f"this is round {self.round}"
            )

    # -- phase 1 ---------------------------------------------------------------------------
    def advertise(self) -> tuple[AdvertiseKeys, SecAggClient]:
        """The client's two public keys for this round."""
        self._expect(Phase.ADVERTISE, None)
        return self._advert(), replace(self, phase=Phase.SHARE)

    def _advert(self) -> AdvertiseKeys:
        return AdvertiseKeys(
            self.round,
            self.client_id,
            channel.public_key(self._channel_private),
            channel.public_key(self._mask_private),
        )

    # -- phase 2 ---------------------------------------------------------------------------
    def share_keys(self, key_list: KeyList) -> tuple[ShareKeys, SecAggClient]:
        """Shares of the mask key and self-mask seed for every holder in ``key_list``."""
        self._expect(Phase.SHARE, key_list)
        keys: dict[int, AdvertiseKeys] = {}
        allowed = self.neighbors | {self.client_id}
        for advert in key_list.keys:
            if (
                advert.client_id not in allowed
                or advert.client_id in keys
                or advert.round != self.round
            ):
                raise ProtocolError(
                    f"client {self.client_id}'s key list has an unexpected entry for client "
                    f"{advert.client_id} (round {advert.round}): not a neighbor, repeated, or "
                    "another round"
                )
            keys[advert.client_id] = advert
        if keys.get(self.client_id) != self._advert():
            raise ProtocolError(f"client {self.client_id}'s key list lacks or alters its own keys")
        publics = [
            k for advert in keys.values() for k in (advert.channel_public, advert.mask_public)
        ]
        if len(set(publics)) != len(publics):
            raise ProtocolError(f"client {self.client_id}'s key list repeats a public key")
        holders = sorted(keys)
        t = self.params.threshold
        if len(holders) < t:
            raise SecAggAborted(
                f"client {self.client_id} has {len(holders)} holders with keys (itself "
                f"included), fewer than the threshold {t}",
                round=self.round,
                phase=Phase.SHARE.value,
            )
        xs = [holder_x(h) for h in holders]
        key_shares = split(
            self._mask_private, threshold=t, xs=xs, randbytes=_stream(self.root, b"k")
        )
        seed_shares = split(self._self_seed, threshold=t, xs=xs, randbytes=_stream(self.root, b"s"))
        sealed, own_shares = [], (b"", b"")
        for holder, key_share, seed_share in zip(holders, key_shares, seed_shares, strict=True):
            if holder == self.client_id:
                own_shares = (key_share.to_bytes(), seed_share.to_bytes())
                continue
            payload = SharePayload(
                self.round, self.client_id, holder, key_share.to_bytes(), seed_share.to_bytes()
            )
            sealed.append(self._seal(payload, keys[holder]))
        message = ShareKeys(
            self.round,
            self.client_id,
            channel.commit_seed(self._self_seed, round=self.round, client_id=self.client_id),
            tuple(sealed),
        )
        return message, replace(self, phase=Phase.MASKED, keys=keys, own_shares=own_shares)

    def _pair_key(self, peer: AdvertiseKeys, *, sender: int, receiver: int) -> bytes:
        try:
            shared = channel.agree(self._channel_private, peer.channel_public)
        except SecAggError as error:
            raise ProtocolError(f"client {peer.client_id}'s channel key: {error}") from error
        return channel.channel_key(shared, round=self.round, sender=sender, receiver=receiver)

    def _seal(self, payload: SharePayload, peer: AdvertiseKeys) -> EncryptedShare:
        key = self._pair_key(peer, sender=self.client_id, receiver=peer.client_id)
        nonce = _derive(self.root, b"nonce", self.round, peer.client_id, length=channel.NONCE_BYTES)
        ciphertext = channel.seal(
            key,
            payload.to_bytes(),
            round=self.round,
            sender=self.client_id,
            receiver=peer.client_id,
            nonce=nonce,
        )
        return EncryptedShare(self.client_id, peer.client_id, ciphertext)

    def _open(self, share: EncryptedShare) -> SharePayload:
        """The payload of one share, or :class:`ShareError`/:class:`MessageError` naming why not."""
        key = self._pair_key(self.keys[share.sender], sender=share.sender, receiver=self.client_id)
        plaintext = channel.open_share(
            key, share.ciphertext, round=self.round, sender=share.sender, receiver=self.client_id
        )
        payload = SharePayload.from_bytes(plaintext)
        if (payload.round, payload.sender, payload.receiver) != (
            self.round,
            share.sender,
            self.client_id,
        ):
            raise ShareError(f"client {share.sender}'s share names another round or pair")
        for data in (payload.key_share, payload.seed_share):
            if Share.from_bytes(data).x != holder_x(self.client_id):
                raise ShareError(f"client {share.sender}'s share is for another holder")
        return payload

    # -- phase 3 ---------------------------------------------------------------------------
    def masked_input(
        self, share_list: ShareList, update: np.ndarray, num_examples: int
    ) -> tuple[MaskedInput, SecAggClient]:
        """The masked vector of ``update`` (float, flat) and ``num_examples``; the shares in
        ``share_list`` are opened now, and the neighbors whose shares fail are reported."""
        self._expect(Phase.MASKED, share_list)
        senders = [share.sender for share in share_list.shares]
        holders = set(self.keys) - {self.client_id}
        if (
            len(set(senders)) != len(senders)
            or not set(senders) <= holders
            or any(share.receiver != self.client_id for share in share_list.shares)
        ):
            raise ProtocolError(
                f"client {self.client_id}'s share list has shares from {sorted(senders)}: "
                f"repeated, or not from its holders {sorted(holders)}, or not addressed to it"
            )
        t = self.params.threshold
        if len(senders) + 1 < t:
            raise SecAggAborted(
                f"client {self.client_id} has {len(senders)} neighbors left that shared keys, "
                f"fewer than threshold {t} - 1",
                round=self.round,
                phase=Phase.MASKED.value,
            )
        count_max = self.params.max_count
        if not isinstance(num_examples, (int, np.integer)) or not 0 <= num_examples <= count_max:
            raise SecAggError(
                f"client {self.client_id}'s example count must be an integer in [0, "
                f"{count_max}] (so {self.params.num_clients} of them cannot overflow "
                f"{self.params.bits} bits), got {num_examples!r}"
            )
        received, invalid = {}, []
        for share in share_list.shares:
            try:
                received[share.sender] = self._open(share)
            except (ShareError, MessageError):
                invalid.append(share.sender)
        peers = tuple(sorted(senders))
        rng = numpy_rng(self.seed, "secagg/quantize", self.round, self.client_id)
        quantized = self.params.quantizer.quantize(update, rng=rng)
        masked = np.empty(quantized.size + 1, dtype=np.uint64)
        masked[:-1] = quantized
        masked[-1] = num_examples
        bits = self.params.bits
        label = prg.self_mask_label(self.round, self.client_id)
        masked += prg.expand(self._self_seed, masked.size, bits=bits, label=label)
        for peer in peers:
            pair_mask = self._pair_mask(peer, masked.size)
            if self.client_id < peer:
                masked += pair_mask
            else:
                masked -= pair_mask
        masked &= prg.group_mask(bits)
        message = MaskedInput(
            self.round, self.client_id, pack_vector(masked, bits=bits), tuple(sorted(invalid))
        )
        state = replace(
            self,
            phase=Phase.UNMASK,
            peers=peers,
            received=received,
            invalid_senders=tuple(sorted(invalid)),
        )
        return message, state

    def _pair_mask(self, peer: int, length: int) -> np.ndarray:
        try:
            shared = channel.agree(self._mask_private, self.keys[peer].mask_public)
        except SecAggError as error:
            raise ProtocolError(f"client {peer}'s mask key: {error}") from error
        seed = channel.mask_seed(shared, round=self.round, a=self.client_id, b=peer)
        label = prg.pair_mask_label(self.round, self.client_id, peer)
        return prg.expand(seed, length, bits=self.params.bits, label=label)

    # -- phase 4 ---------------------------------------------------------------------------
    def unmask(self, request: UnmaskRequest) -> tuple[UnmaskResponse, SecAggClient]:
        """Seed shares of surviving neighbors (and its own), key shares of dropped ones."""
        self._expect(Phase.UNMASK, request)
        survivors, dropped = set(request.survivors), set(request.dropped)
        if survivors & dropped:
            raise ProtocolError(
                f"client {self.client_id} refuses an unmasking request that lists "
                f"{sorted(survivors & dropped)} both as survivors and as dropped"
            )
        if self.client_id not in survivors:
            raise ProtocolError(
                f"client {self.client_id} refuses an unmasking request that does not list it "
                "as a survivor: the server will remove its masks as a dropped client's, so "
                "revealing its self-mask seed shares too could unmask its input"
            )
        t = self.params.threshold
        if len(survivors) < t:
            raise SecAggAborted(
                f"only {len(survivors)} survivors, fewer than threshold {t}: the sum would "
                "say too much about too few inputs",
                round=self.round,
                phase=Phase.UNMASK.value,
            )
        own = RevealedShare(self.client_id, self.own_shares[1])
        seed_shares = [own] + [
            RevealedShare(v, self.received[v].seed_share)
            for v in self.peers
            if v in survivors and v in self.received
        ]
        key_shares = [
            RevealedShare(v, self.received[v].key_share)
            for v in self.peers
            if v in dropped and v in self.received
        ]
        message = UnmaskResponse(
            self.round, self.client_id, tuple(sorted(seed_shares, key=_owner)), tuple(key_shares)
        )
        return message, replace(self, phase=Phase.DONE)


def _owner(share: RevealedShare) -> int:
    return share.owner
