"""Secure aggregation with dropout recovery: the protocol core (issue 15, first slice).

The server learns the sum of the cohort's updates (and of their example counts), never one
client's update. This package is the protocol of Bonawitz et al. 2017 ("Practical secure
aggregation for privacy-preserving machine learning", CCS), in its honest-but-curious
variant, with the sparse neighbor graph of SecAgg+ (Bell et al. 2020, "Secure single-server
aggregation with (poly)logarithmic overhead", CCS) as an option. It is pure and
transport-independent: a :class:`SecAggClient` and a :class:`SecAggServer` are frozen state
values that exchange explicit messages (frozen dataclasses of ints and bytes with a byte
encoding, no pickle), one per client and phase:

===================  ======================  ====================================
phase                client -> server        server -> client (after the phase)
===================  ======================  ====================================
advertise keys       :class:`AdvertiseKeys`  :class:`KeyList`
share keys           :class:`ShareKeys`      :class:`ShareList`
masked input         :class:`MaskedInput`    :class:`UnmaskRequest`
unmasking            :class:`UnmaskResponse` (the :class:`SecAggResult`)
===================  ======================  ====================================

:func:`simulate_round` runs one round in memory (the reference for a transport).

Threat model
------------
*Honest-but-curious server*: it follows the protocol (forwards messages faithfully, reports
who dropped truthfully) and tries to learn from what it sees. Clients may drop out at any
point. What Bonawitz et al. prove for this setting (their honest-but-curious theorems, for
any pattern of dropouts between the phases):

- against any set of clients alone (the server honest), for any threshold, their joint view
  can be simulated from their own inputs: it reveals nothing about the other clients' inputs;
- against the server together with a set ``C`` of fewer than ``t`` clients, the joint view
  can be simulated from the inputs of ``C`` and the *sum* of the inputs of the other clients
  whose masked input the server received (a client that drops after sending its masked
  input is in the sum; one that drops before is not, and is never unmasked). This is
  computational: Diffie-Hellman on X25519, a secure PRG (AES-CTR), IND-CPA and INT-CTXT
  authenticated encryption (AES-GCM), the KDF (HKDF-SHA256), plus (our addition) SHA-256
  hiding the self-mask seed in its commitment (random-oracle model); the secret sharing is
  information-theoretic.

What the sum itself reveals (with few survivors, or with a colluding set that knows all
inputs but one) is not the protocol's business: the threshold keeps at least ``t`` inputs
in every unmasked sum, and central DP noise on the decoded sum (``algorithm: dp_fedavg``)
bounds it.

With more than ``t - 1`` colluding clients the server could reconstruct one honest client's
secrets; with fewer than ``t`` clients left in a phase the round aborts
(:class:`SecAggAborted`) and the server has seen only public keys, sealed shares and
one-time-padded vectors.

Beyond the semi-honest proof, the code keeps one client's two masks apart even from a server
that sends different clients different unmasking lists or replays a client's late input: each
client answers one unmasking request per round, never reveals both kinds of share for a
client, refuses a request that lists it as dropped, and the threshold must be a strict
majority of each client's share holders (so no two disjoint sets of ``t`` holders exist); the
server refuses masked inputs after that phase closed. Malformed shares, shares for another
round or pair (AES-GCM associated data binds round, sender, receiver) and wrong shares are
detected, and cannot change the result: the secret is reconstructed from the remaining
shares (checked against the client's public key or seed commitment) or the round aborts naming
the client. A second, different masked input from a client is refused (the first counts).
*Not covered*: a malicious server (it could impersonate clients to collect shares: that needs
a PKI, signatures, Bonawitz et al.'s consistency-check round and a larger threshold), and
malicious clients' *inputs* (a client can always send any update it likes: bounding its
effect is the job of clipping and robust aggregation, which cannot inspect masked inputs).

SecAgg+: a client masks with and shares to only its ``k`` neighbors in a random ``k``-regular
graph (a Harary graph with a random labeling, derived from the run seed, round and cohort).
Bell et al. prove the analogous guarantee with high probability over the random graph, for
a bounded fraction of corrupt and of dropped clients and ``k`` logarithmic in ``n``. Informally,
two things can now go wrong that cannot with the complete graph: ``t`` of one client's
``k + 1`` holders colluding (rather than ``t`` of the whole cohort), and the honest
survivors' graph falling apart, in which case the server learns the sum of each connected
part instead of one sum. Their bounds make both unlikely only for large cohorts and well
chosen ``k``; for small cohorts use the complete graph.

Parameters (:class:`SecAggConfig`, checked per cohort by :meth:`SecAggConfig.for_cohort`):
``threshold`` t (a strict majority of each client's holders up to all of them; default the
minimum, which tolerates ``n - t`` dropouts with the complete graph), ``bits`` (the group
``Z_{2^bits}``, at most 64; :func:`min_group_bits` says how many a cohort's sum needs),
``clip_range`` c (coordinates clipped to ``[-c, c]``, stochastic rounding to ``value_bits``,
decoded sum within ``n * 2c / (2^value_bits - 1)`` per coordinate), ``neighbors`` (``None``:
complete graph; an even ``k``: SecAgg+). Example counts are one more coordinate, summed
exactly: for FedAvg's weighting a client sends its count-weighted (and rescaled to fit ``c``)
update, and the server divides the two sums.

In simulation (issue 15, second slice) :class:`~fedloom.privacy.secagg.stage.SecureSum` runs
this protocol as the aggregation pipeline's reducer each round (``server.secure_aggregation``
in the run config; it composes with central DP noise on the decoded sum), and
``benchmarks/secagg.py`` measures its time and bytes against plain FedAvg. Over the gRPC
deployment (issue 15, last slice) the same client and server state values run in the client
daemons and the server (:mod:`fedloom.net.secagg_room`, :mod:`fedloom.net.secagg_executor`,
:mod:`fedloom.net.secagg_client`), with the messages as protobuf
(:mod:`fedloom.net.secagg_wire`); :mod:`fedloom.privacy.secagg.decoded` holds the two ends of
the pipeline there (a client's input, the reducer of the decoded sum).

Importing this package loads ``cryptography``; ``import fedloom`` does not import it.
"""

from fedloom.privacy.secagg.client import SecAggClient
from fedloom.privacy.secagg.config import CohortParams, SecAggConfig, min_threshold
from fedloom.privacy.secagg.errors import (
    MessageError,
    ProtocolError,
    SecAggAborted,
    SecAggError,
    ShareError,
)
from fedloom.privacy.secagg.messages import (
    AdvertiseKeys,
    EncryptedShare,
    KeyList,
    MaskedInput,
    Phase,
    RevealedShare,
    ShareKeys,
    ShareList,
    UnmaskRequest,
    UnmaskResponse,
    decode_message,
)
from fedloom.privacy.secagg.quantize import Quantizer, max_value_bits, min_group_bits
from fedloom.privacy.secagg.server import Rejection, SecAggResult, SecAggServer
from fedloom.privacy.secagg.simulate import RoundTrace, simulate_round

__all__ = [
    "AdvertiseKeys",
    "CohortParams",
    "EncryptedShare",
    "KeyList",
    "MaskedInput",
    "MessageError",
    "Phase",
    "ProtocolError",
    "Quantizer",
    "Rejection",
    "RoundTrace",
    "RevealedShare",
    "SecAggAborted",
    "SecAggClient",
    "SecAggConfig",
    "SecAggError",
    "SecAggResult",
    "SecAggServer",
    "ShareError",
    "ShareKeys",
    "ShareList",
    "UnmaskRequest",
    "UnmaskResponse",
    "decode_message",
    "max_value_bits",
    "min_group_bits",
    "min_threshold",
    "simulate_round",
]
