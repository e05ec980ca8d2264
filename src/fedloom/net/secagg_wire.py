"""Secure-aggregation messages on the wire: protobuf (``proto/secagg.proto``) <-> the protocol's
message values (:mod:`fedloom.privacy.secagg.messages`), checked on the way in.

The protocol's state machines (:class:`~fedloom.privacy.secagg.SecAggServer`,
:class:`~fedloom.privacy.secagg.SecAggClient`) judge what a message *means* (another round,
a second different masked input, a share that does not open, a share a client may not
reveal); this module judges its *form* first, so nothing a peer sends can make either side
allocate or compute more than the round's sizes allow:

- ids are non-negative, in the cohort, not repeated where a set is meant;
- a client message names its authenticated sender; counts are bounded by the cohort;
- public keys and commitments are 32 bytes, Shamir shares 74, sealed shares at most
  :data:`MAX_CIPHERTEXT_BYTES`; a masked vector is exactly ``P + 1`` elements of the group's
  width (:func:`~fedloom.privacy.secagg.messages.unpack_vector` then checks each element).

A violation is a :class:`~fedloom.net.codec.WireError` whose message says what and why; the
server logs it with the client's name and records a refusal; it never reaches the protocol.
No pickle anywhere: protobuf in, frozen dataclasses of ints and bytes out.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from fedloom.net.codec import WireError
from fedloom.net.proto import secagg_pb2 as spb
from fedloom.privacy.secagg import channel
from fedloom.privacy.secagg.messages import (
    AdvertiseKeys,
    ClientMessage,
    EncryptedShare,
    KeyList,
    MaskedInput,
    RevealedShare,
    ShareKeys,
    ShareList,
    UnmaskRequest,
    UnmaskResponse,
    _container,
)
from fedloom.privacy.secagg.shamir import Share

__all__ = [
    "MAX_CIPHERTEXT_BYTES",
    "SHARE_BYTES",
    "client_message_from_pb",
    "client_message_to_pb",
    "key_list_from_pb",
    "key_list_to_pb",
    "masked_bytes",
    "share_list_from_pb",
    "share_list_to_pb",
    "unmask_request_from_pb",
    "unmask_request_to_pb",
]

SHARE_BYTES = len(Share(1, 0).to_bytes())  # 74: x (8 bytes) then y (66)
MAX_CIPHERTEXT_BYTES = 512  # a sealed share pair is 210 bytes; room for a future version
COMMITMENT_BYTES = 32


def masked_bytes(num_params: int, bits: int) -> int:
    """The size of a masked input: ``P + 1`` group elements of ``bits`` bits."""
    return (num_params + 1) * _container(bits).itemsize


# -- protocol value -> protobuf ---------------------------------------------------------------


def _advert_pb(m: AdvertiseKeys) -> spb.AdvertiseKeys:
    return spb.AdvertiseKeys(round=m.round, client_id=m.client_id,
                             channel_public=m.channel_public, mask_public=m.mask_public)  # fmt: skip


def _share_pb(s: EncryptedShare) -> spb.EncryptedShare:
    return spb.EncryptedShare(sender=s.sender, receiver=s.receiver, ciphertext=s.ciphertext)


def _revealed_pb(shares: Iterable[RevealedShare]) -> list[spb.RevealedShare]:
    return [spb.RevealedShare(owner=s.owner, share=s.share) for s in shares]


def client_message_to_pb(message: ClientMessage, *, client_name: str) -> spb.ClientMessage:
    """The wire form of a client's message of any phase."""
    out = spb.ClientMessage(client_id=client_name)
    if isinstance(message, AdvertiseKeys):
        out.advertise_keys.CopyFrom(_advert_pb(message))
    elif isinstance(message, ShareKeys):
        out.share_keys.CopyFrom(
            spb.ShareKeys(round=message.round, client_id=message.client_id,
                          seed_commitment=message.seed_commitment,
                          shares=[_share_pb(s) for s in message.shares])
        )  # fmt: skip
    elif isinstance(message, MaskedInput):
        out.masked_input.CopyFrom(
            spb.MaskedInput(round=message.round, client_id=message.client_id,
                            masked=message.masked, invalid_senders=list(message.invalid_senders))
        )  # fmt: skip
    else:
        out.unmask_response.CopyFrom(
            spb.UnmaskResponse(round=message.round, client_id=message.client_id,
                               seed_shares=_revealed_pb(message.seed_shares),
                               key_shares=_revealed_pb(message.key_shares))
        )  # fmt: skip
    return out


def key_list_to_pb(message: KeyList) -> spb.KeyList:
    return spb.KeyList(round=message.round, keys=[_advert_pb(k) for k in message.keys])


def share_list_to_pb(message: ShareList) -> spb.ShareList:
    return spb.ShareList(round=message.round, shares=[_share_pb(s) for s in message.shares])


def unmask_request_to_pb(message: UnmaskRequest) -> spb.UnmaskRequest:
    return spb.UnmaskRequest(
        round=message.round, survivors=list(message.survivors), dropped=list(message.dropped)
    )


# -- protobuf -> protocol value, checked ------------------------------------------------------


def _id(value: int, cohort: Collection[int], what: str) -> int:
    if value not in cohort:
        raise WireError(f"{what} {value} is not in the round's cohort")
    return int(value)


def _ids(values: Iterable[int], cohort: Collection[int], what: str) -> tuple[int, ...]:
    ids = tuple(_id(v, cohort, what) for v in values)
    if len(set(ids)) != len(ids):
        raise WireError(f"{what}s repeat an id: {sorted(ids)[:20]}")
    return ids


def _bytes(value: bytes, size: int, what: str) -> bytes:
    if len(value) != size:
        raise WireError(f"{what} is {size} bytes, got {len(value)}")
    return bytes(value)


def _round(value: int) -> int:
    if value < 0:
        raise WireError(f"round {value} is negative")
    return int(value)


def _advert(m: spb.AdvertiseKeys, cohort: Collection[int]) -> AdvertiseKeys:
    return AdvertiseKeys(
        _round(m.round),
        _id(m.client_id, cohort, "client"),
        _bytes(m.channel_public, channel.KEY_BYTES, "a channel public key"),
        _bytes(m.mask_public, channel.KEY_BYTES, "a mask public key"),
    )


def _sealed(m: spb.EncryptedShare, cohort: Collection[int]) -> EncryptedShare:
    size = len(m.ciphertext)
    if not channel.NONCE_BYTES + 16 <= size <= MAX_CIPHERTEXT_BYTES:
        raise WireError(
            f"a sealed share is {size} bytes, outside [{channel.NONCE_BYTES + 16}, "
            f"{MAX_CIPHERTEXT_BYTES}]"
        )
    return EncryptedShare(
        _id(m.sender, cohort, "share sender"),
        _id(m.receiver, cohort, "share receiver"),
        bytes(m.ciphertext),
    )


def _revealed(
    shares: Iterable[spb.RevealedShare], cohort: Collection[int]
) -> tuple[RevealedShare, ...]:
    return tuple(
        RevealedShare(_id(s.owner, cohort, "share owner"), _bytes(s.share, SHARE_BYTES, "a share"))
        for s in shares
    )


def client_message_from_pb(
    message: spb.ClientMessage,
    *,
    sender: int,
    cohort: Collection[int],
    num_params: int,
    bits: int,
) -> ClientMessage:
    """The protocol message in ``message`` from the authenticated client ``sender``, or
    :class:`WireError`: a body missing, another sender named, a field of the wrong size or
    a count beyond the cohort's."""
    kind = message.WhichOneof("body")
    if kind is None:
        raise WireError("a secure-aggregation message without a body")
    body = getattr(message, kind)
    if body.client_id != sender:
        raise WireError(f"a {kind} message naming client {body.client_id}, sent by client {sender}")
    n = len(cohort)
    if kind == "advertise_keys":
        return _advert(body, cohort)
    if kind == "share_keys":
        if len(body.shares) >= n:
            raise WireError(f"{len(body.shares)} sealed shares, at most {n - 1} in a cohort of {n}")
        return ShareKeys(
            _round(body.round),
            sender,
            _bytes(body.seed_commitment, COMMITMENT_BYTES, "a seed commitment"),
            tuple(_sealed(s, cohort) for s in body.shares),
        )
    if kind == "masked_input":
        size = masked_bytes(num_params, bits)
        return MaskedInput(
            _round(body.round),
            sender,
            _bytes(
                body.masked, size, f"a masked input of {num_params} + 1 elements of {bits} bits"
            ),
            tuple(sorted(_ids(body.invalid_senders, set(cohort) - {sender}, "accused sender"))),
        )
    if len(body.seed_shares) + len(body.key_shares) > n:
        raise WireError(
            f"{len(body.seed_shares) + len(body.key_shares)} revealed shares, at most one per "
            f"client of the cohort of {n}"
        )
    return UnmaskResponse(
        _round(body.round),
        sender,
        _revealed(body.seed_shares, cohort),
        _revealed(body.key_shares, cohort),
    )


def key_list_from_pb(message: spb.KeyList, cohort: Collection[int]) -> KeyList:
    """The server's key list, checked (sizes, ids in the cohort, at most one per client)."""
    if len(message.keys) > len(cohort):
        raise WireError(f"a key list of {len(message.keys)} entries for a cohort of {len(cohort)}")
    keys = tuple(_advert(k, cohort) for k in message.keys)
    _ids((k.client_id for k in keys), cohort, "key list client")
    return KeyList(_round(message.round), keys)


def share_list_from_pb(message: spb.ShareList, cohort: Collection[int]) -> ShareList:
    """The sealed shares the server routed to this client, checked for form."""
    if len(message.shares) >= len(cohort):
        raise WireError(f"a share list of {len(message.shares)} for a cohort of {len(cohort)}")
    return ShareList(_round(message.round), tuple(_sealed(s, cohort) for s in message.shares))


def unmask_request_from_pb(message: spb.UnmaskRequest, cohort: Collection[int]) -> UnmaskRequest:
    """The survivors and dropped clients the server announces, checked for form."""
    return UnmaskRequest(
        _round(message.round),
        _ids(message.survivors, cohort, "survivor"),
        _ids(message.dropped, cohort, "dropped client"),
    )
