"""The server's side of a round: a frozen state value fed messages, advanced phase by phase.

``receive(message)`` files one client message and returns the new state; it never raises for
what a client sent: a message for another round or phase, from a client outside the cohort,
malformed, or contradicting one already received is recorded as a :class:`Rejection` and
otherwise ignored (the first of two different messages from one client wins, so a client
cannot change the result by sending a second). ``advance()`` closes the current phase and
returns the messages to send, by client; ``finish()`` closes the last one and returns the
:class:`SecAggResult`. Both raise :class:`SecAggAborted` when fewer than ``threshold``
clients are left (Bonawitz et al. 2017, figure 4): the round fails, and the server has seen
only public keys, sealed shares and masked vectors.

Unmasking: the masked inputs are summed as they arrive (O(P) memory). At the end, for each
survivor ``u`` the server reconstructs ``b_u`` from its seed shares (checked against ``u``'s
commitment) and subtracts ``PRG(b_u)``; for each dropped ``v`` it reconstructs ``v``'s mask key
(checked against ``v``'s advertised public key), recomputes ``v``'s pairwise masks with its
surviving neighbors and removes them. Wrong shares are found (:func:`~fedloom.privacy.
secagg.shamir.recover`) and recorded; if too many are wrong the round aborts naming the
client. Seed shares are only ever accepted for survivors and key shares only for dropped
clients, sets fixed when the masked-input phase closes, so the server never holds both for
one client, and a masked input arriving after that is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from fedloom.privacy.secagg import channel, prg
from fedloom.privacy.secagg.client import holder_x
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
    ClientMessage,
    KeyList,
    MaskedInput,
    Phase,
    ServerMessage,
    ShareKeys,
    ShareList,
    UnmaskRequest,
    UnmaskResponse,
    decode_message,
    unpack_vector,
)
from fedloom.privacy.secagg.shamir import Share, recover

__all__ = ["Rejection", "SecAggResult", "SecAggServer"]

_PHASE_OF = {
    AdvertiseKeys: Phase.ADVERTISE,
    ShareKeys: Phase.SHARE,
    MaskedInput: Phase.MASKED,
    UnmaskResponse: Phase.UNMASK,
}


@dataclass(frozen=True)
class Rejection:
    """Something from ``client_id`` the server did not use, and why."""

    client_id: int
    phase: str
    reason: str


@dataclass(frozen=True, eq=False)
class SecAggResult:
    """The unmasked round: the float ``sum`` of the survivors' (clipped) updates, decoded to
    within ``len(survivor_ids) * quantizer.step`` per coordinate; ``quantized_sum``, the exact
    integer sum of their quantized vectors; ``num_examples``, the sum of their counts."""

    round: int
    sum: np.ndarray
    quantized_sum: np.ndarray
    num_examples: int
    survivor_ids: tuple[int, ...]
    dropped_ids: tuple[int, ...]
    rejections: tuple[Rejection, ...]
    error_bound: float


@dataclass(frozen=True, eq=False)
class SecAggServer:
    """The server's protocol state in one round. Start with :meth:`start`."""

    params: CohortParams
    seed: int
    round: int
    cohort_ids: tuple[int, ...]
    num_params: int
    graph: Mapping[int, frozenset[int]]
    phase: Phase = Phase.ADVERTISE
    adverts: Mapping[int, AdvertiseKeys] = field(default_factory=dict)
    share_keys: Mapping[int, ShareKeys] = field(default_factory=dict)
    masked_digests: Mapping[int, bytes] = field(default_factory=dict)
    masked_sum: np.ndarray | None = field(default=None, repr=False)
    survivors: tuple[int, ...] = ()
    dropped: tuple[int, ...] = ()
    responses: Mapping[int, UnmaskResponse] = field(default_factory=dict, repr=False)
    seed_shares: Mapping[int, Mapping[int, bytes]] = field(default_factory=dict, repr=False)
    key_shares: Mapping[int, Mapping[int, bytes]] = field(default_factory=dict, repr=False)
    rejections: tuple[Rejection, ...] = ()

    @classmethod
    def start(
        cls,
        config: SecAggConfig,
        *,
        seed: int,
        round: int,
        cohort_ids: Sequence[int],
        num_params: int,
    ) -> SecAggServer:
        """A server collecting key advertisements from ``cohort_ids`` for ``round``, whose
        clients' updates have ``num_params`` coordinates."""
        cohort = tuple(sorted(cohort_ids))
        params = config.for_cohort(len(cohort))
        graph = neighbor_graph(cohort, neighbors=params.neighbors, seed=seed, round=round)
        return cls(params, seed, round, cohort, int(num_params), graph)

    @property
    def vector_length(self) -> int:
        """The masked vector's length: the update's coordinates, then the example count."""
        return self.num_params + 1

    # -- receiving -------------------------------------------------------------------------
    def _reject(self, client_id: int, phase: Phase, reason: str) -> SecAggServer:
        return replace(
            self, rejections=(*self.rejections, Rejection(client_id, phase.value, reason))
        )

    def receive_bytes(self, data: bytes, *, client_id: int) -> SecAggServer:
        """:meth:`receive` for a message's bytes from an authenticated ``client_id``."""
        try:
            message = decode_message(data)
        except MessageError as error:
            return self._reject(client_id, self.phase, f"undecodable message: {error}")
        client_types = (AdvertiseKeys, ShareKeys, MaskedInput, UnmaskResponse)
        if not isinstance(message, client_types) or message.client_id != client_id:
            return self._reject(client_id, self.phase, f"not a client message from {client_id}")
        return self.receive(message)

    def receive(self, message: ClientMessage) -> SecAggServer:
        """The state after ``message``; a message the protocol cannot use is a rejection."""
        sender, phase = message.client_id, _PHASE_OF[type(message)]
        if message.round != self.round:
            return self._reject(
                sender, phase, f"for round {message.round}, this is round {self.round}"
            )
        if sender not in self.cohort_ids:
            return self._reject(sender, phase, "not in this round's cohort")
        if phase is not self.phase:
            return self._reject(
                sender,
                phase,
                f"arrived in phase {self.phase.value}: too late or too early, not used",
            )
        if isinstance(message, AdvertiseKeys):
            return self._receive_keys(message)
        if isinstance(message, ShareKeys):
            return self._receive_shares(message)
        if isinstance(message, MaskedInput):
            return self._receive_masked(message)
        return self._receive_unmask(message)

    def _duplicate(
        self, seen: Mapping[int, ClientMessage], message: ClientMessage, phase: Phase
    ) -> SecAggServer | None:
        """``self`` for a repeat of a received message, a rejection for a different one."""
        sender = message.client_id
        if sender not in seen:
            return None
        if seen[sender] == message:
            return self
        return self._reject(sender, phase, "sent two different messages; the first is kept")

    def _receive_keys(self, message: AdvertiseKeys) -> SecAggServer:
        repeat = self._duplicate(self.adverts, message, Phase.ADVERTISE)
        if repeat is not None:
            return repeat
        known = {
            k
            for advert in self.adverts.values()
            for k in (advert.channel_public, advert.mask_public)
        }
        try:
            for public in (message.channel_public, message.mask_public):
                channel.check_public_key(public)
        except SecAggError as error:
            return self._reject(message.client_id, Phase.ADVERTISE, str(error))
        if message.channel_public == message.mask_public or known & {
            message.channel_public,
            message.mask_public,
        }:
            return self._reject(message.client_id, Phase.ADVERTISE, "reuses a public key")
        return replace(self, adverts={**self.adverts, message.client_id: message})

    def _receive_shares(self, message: ShareKeys) -> SecAggServer:
        sender = message.client_id
        if sender not in self.adverts:
            return self._reject(sender, Phase.SHARE, "advertised no keys")
        repeat = self._duplicate(self.share_keys, message, Phase.SHARE)
        if repeat is not None:
            return repeat
        expected = sorted(self.graph[sender] & set(self.adverts))
        receivers = [share.receiver for share in message.shares]
        if sorted(receivers) != expected or any(s.sender != sender for s in message.shares):
            return self._reject(
                sender,
                Phase.SHARE,
                f"shares for {sorted(receivers)}, expected one each for {expected}",
            )
        if len(message.seed_commitment) != 32:
            return self._reject(sender, Phase.SHARE, "the seed commitment is not 32 bytes")
        return replace(self, share_keys={**self.share_keys, sender: message})

    def _receive_masked(self, message: MaskedInput) -> SecAggServer:
        sender = message.client_id
        if sender not in self.share_keys:
            return self._reject(sender, Phase.MASKED, "shared no keys")
        digest = hashlib.sha256(message.masked).digest()
        if sender in self.masked_digests:
            if self.masked_digests[sender] == digest:
                return self
            return self._reject(
                sender, Phase.MASKED, "sent two different masked inputs; the first is kept"
            )
        try:
            vector = unpack_vector(message.masked, length=self.vector_length, bits=self.params.bits)
        except MessageError as error:
            return self._reject(sender, Phase.MASKED, str(error))
        state = self
        for accused in sorted(set(message.invalid_senders) & self.graph[sender]):
            reason = f"client {sender} reports that its share from this client does not open"
            state = state._reject(accused, Phase.SHARE, reason)
        total = vector if self.masked_sum is None else self.masked_sum + vector
        total &= prg.group_mask(self.params.bits)  # the running sum stays a group element
        return replace(
            state, masked_digests={**self.masked_digests, sender: digest}, masked_sum=total
        )

    def _receive_unmask(self, message: UnmaskResponse) -> SecAggServer:
        responder = message.client_id
        if responder not in self.survivors:
            return self._reject(responder, Phase.UNMASK, "sent no masked input")
        repeat = self._duplicate(self.responses, message, Phase.UNMASK)
        if repeat is not None:
            return repeat
        state = replace(self, responses={**self.responses, responder: message})
        holding = self.graph[responder] | {responder}
        survivors, dropped = set(self.survivors), set(self.dropped)
        kinds = (("seed", message.seed_shares, survivors), ("key", message.key_shares, dropped))
        seed_shares, key_shares = dict(self.seed_shares), dict(self.key_shares)
        for kind, shares, owners in kinds:
            store = seed_shares if kind == "seed" else key_shares
            for revealed in shares:
                owner = revealed.owner
                problem = None
                if owner not in owners or owner not in holding:
                    problem = f"a {kind} share of client {owner}, which it may not reveal"
                elif responder in store.get(owner, {}):
                    problem = f"two {kind} shares of client {owner}"
                else:
                    try:
                        if Share.from_bytes(revealed.share).x != holder_x(responder):
                            problem = f"a {kind} share of client {owner} at another holder's point"
                    except ShareError as error:
                        problem = f"a malformed {kind} share of client {owner}: {error}"
                if problem is not None:
                    state = state._reject(responder, Phase.UNMASK, problem)
                    continue
                store[owner] = {**store.get(owner, {}), responder: revealed.share}
        return replace(state, seed_shares=seed_shares, key_shares=key_shares)

    # -- advancing ---------------------------------------------------------------------------
    def _require(self, ids: Sequence[int] | Mapping[int, object], what: str) -> None:
        if len(ids) < self.params.threshold:
            raise SecAggAborted(
                f"{len(ids)} clients {what}, fewer than the threshold {self.params.threshold}",
                round=self.round,
                phase=self.phase.value,
            )

    def advance(self) -> tuple[dict[int, ServerMessage], SecAggServer]:
        """Close the current phase: the next phase's message for each remaining client."""
        if self.phase is Phase.ADVERTISE:
            self._require(self.adverts, "advertised keys")
            have = set(self.adverts)
            out: dict[int, ServerMessage] = {
                u: KeyList(
                    self.round, tuple(self.adverts[v] for v in sorted((self.graph[u] | {u}) & have))
                )
                for u in sorted(have)
            }
            return out, replace(self, phase=Phase.SHARE)
        if self.phase is Phase.SHARE:
            self._require(self.share_keys, "shared keys")
            have = set(self.share_keys)
            out = {
                v: ShareList(
                    self.round,
                    tuple(
                        share
                        for u in sorted(self.graph[v] & have)
                        for share in self.share_keys[u].shares
                        if share.receiver == v
                    ),
                )
                for v in sorted(have)
            }
            zero = np.zeros(self.vector_length, dtype=np.uint64)
            return out, replace(self, phase=Phase.MASKED, masked_sum=zero)
        if self.phase is Phase.MASKED:
            self._require(self.masked_digests, "sent masked inputs")
            survivors = tuple(sorted(self.masked_digests))
            dropped = tuple(sorted(set(self.share_keys) - set(survivors)))
            request = UnmaskRequest(self.round, survivors, dropped)
            state = replace(self, phase=Phase.UNMASK, survivors=survivors, dropped=dropped)
            return {u: request for u in survivors}, state
        raise ProtocolError(
            f"advance() in phase {self.phase.value}: call finish() to end the unmasking phase"
        )

    def finish(self) -> tuple[SecAggResult, SecAggServer]:
        """Close the unmasking phase: remove every mask and decode the survivors' sum."""
        if self.phase is not Phase.UNMASK or self.masked_sum is None:
            raise ProtocolError(f"finish() in phase {self.phase.value}, expected unmasking")
        self._require(self.responses, "answered the unmasking request")
        state, total = self, self.masked_sum.copy()
        length, bits = self.vector_length, self.params.bits
        for u in self.survivors:
            commitment = self.share_keys[u].seed_commitment

            def seed_ok(secret: bytes, u: int = u, commitment: bytes = commitment) -> bool:
                return channel.commit_seed(secret, round=self.round, client_id=u) == commitment

            self_seed, state = state._recover(u, "self-mask seed", self.seed_shares, seed_ok)
            total -= prg.expand(
                self_seed, length, bits=bits, label=prg.self_mask_label(self.round, u)
            )
        for v in self.dropped:
            affected = sorted(self.graph[v] & set(self.survivors))
            if not affected:
                continue
            public = self.adverts[v].mask_public

            def key_ok(secret: bytes, public: bytes = public) -> bool:
                return channel.public_key(secret) == public

            private, state = state._recover(v, "mask key", self.key_shares, key_ok)
            for u in affected:
                shared = channel.agree(private, self.adverts[u].mask_public)
                seed = channel.mask_seed(shared, round=self.round, a=u, b=v)
                label = prg.pair_mask_label(self.round, u, v)
                pair_mask = prg.expand(seed, length, bits=bits, label=label)
                if u < v:
                    total -= pair_mask
                else:
                    total += pair_mask
        total &= prg.group_mask(bits)
        quantizer, survivors = self.params.quantizer, self.survivors
        result = SecAggResult(
            round=self.round,
            sum=quantizer.dequantize_sum(total[:-1], num_clients=len(survivors)),
            quantized_sum=total[:-1],
            num_examples=int(total[-1]),
            survivor_ids=survivors,
            dropped_ids=tuple(sorted(set(self.cohort_ids) - set(survivors))),
            rejections=state.rejections,
            error_bound=quantizer.error_bound(len(survivors)),
        )
        return result, replace(state, phase=Phase.DONE)

    def _recover(
        self,
        owner: int,
        what: str,
        store: Mapping[int, Mapping[int, bytes]],
        accept: Callable[[bytes], bool],
    ) -> tuple[bytes, SecAggServer]:
        shares = [Share.from_bytes(data) for data in store.get(owner, {}).values()]
        try:
            recovered = recover(shares, threshold=self.params.threshold, accept=accept)
        except ShareError as error:
            raise SecAggAborted(
                f"cannot reconstruct client {owner}'s {what} from {len(shares)} shares: {error}",
                round=self.round,
                phase=self.phase.value,
            ) from error
        state = self
        for x in recovered.bad_xs:
            holder = x - 1
            reason = (
                f"its share of client {owner}'s {what} is wrong (dealt wrong by {owner} or "
                f"revealed wrong by {holder}); the secret was reconstructed without it"
            )
            state = state._reject(holder, Phase.UNMASK, reason)
        return recovered.secret, state
