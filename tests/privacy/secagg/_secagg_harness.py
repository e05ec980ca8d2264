"""A test driver for one secure-aggregation round whose every message the test can see,
hold back, alter or replay (the library's own driver is ``simulate_round``)."""

from __future__ import annotations

import numpy as np

from fedloom.privacy.secagg import (
    KeyList,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    ShareList,
    UnmaskRequest,
    decode_message,
)
from fedloom.rng import numpy_rng


class Round:
    """Clients 0..n-1 with updates uniform in [-0.9 c, 0.9 c] and counts 1..600; reproducible
    secrets (``secret_seed`` per client) so a test can rerun the same round."""

    def __init__(
        self,
        config: SecAggConfig,
        *,
        n: int = 20,
        num_params: int = 64,
        seed: int = 0,
        round: int = 1,
        data_seed: int = 0,
    ):
        self.config, self.seed, self.round = config, seed, round
        self.cohort = list(range(n))
        rng = np.random.default_rng(data_seed)
        clip = config.clip_range
        self.updates = {c: rng.uniform(-0.9 * clip, 0.9 * clip, num_params) for c in self.cohort}
        self.counts = {c: int(rng.integers(1, 601)) for c in self.cohort}
        self.server = SecAggServer.start(
            config, seed=seed, round=round, cohort_ids=self.cohort, num_params=num_params
        )
        self.clients = {
            c: SecAggClient.start(
                config,
                seed=seed,
                round=round,
                client_id=c,
                cohort_ids=self.cohort,
                secret_seed=bytes([c]) * 32,
            )
            for c in self.cohort
        }
        self.inbox: dict = dict.fromkeys(self.cohort)

    def message(self, c):
        """Client ``c``'s answer to its inbox (its state moves on; nothing is delivered)."""
        client, inbox = self.clients[c], self.inbox[c]
        if inbox is None:
            message, self.clients[c] = client.advertise()
        elif isinstance(inbox, KeyList):
            message, self.clients[c] = client.share_keys(inbox)
        elif isinstance(inbox, ShareList):
            message, self.clients[c] = client.masked_input(inbox, self.updates[c], self.counts[c])
        else:
            assert isinstance(inbox, UnmaskRequest)
            message, self.clients[c] = client.unmask(inbox)
        return message

    def deliver(self, message, client_id=None):
        sender = message.client_id if client_id is None else client_id
        self.server = self.server.receive_bytes(message.to_bytes(), client_id=sender)

    def phase(self, *, skip=()):
        """Every client with an inbox answers and the answer is delivered, except ``skip``."""
        for c in sorted(self.inbox):
            if c not in skip:
                self.deliver(self.message(c))

    def advance(self):
        outgoing, self.server = self.server.advance()
        self.inbox = {c: decode_message(m.to_bytes()) for c, m in outgoing.items()}
        return outgoing

    def finish(self):
        result, self.server = self.server.finish()
        return result

    def quantized(self, c):
        """Client ``c``'s quantized update, recomputed as the client computed it."""
        params = self.config.for_cohort(len(self.cohort))
        rng = numpy_rng(self.seed, "secagg/quantize", self.round, c)
        return params.quantizer.quantize(self.updates[c], rng=rng)

    def check_sum(self, result, survivors):
        """The result is the survivors' sum: exactly in the group, to the bound in floats."""
        assert result.survivor_ids == tuple(sorted(survivors))
        bits = self.config.for_cohort(len(self.cohort)).bits
        exact = sum(self.quantized(c) for c in survivors) & np.uint64((1 << bits) - 1)
        np.testing.assert_array_equal(result.quantized_sum, exact)
        plain = sum(self.updates[c] for c in survivors)
        assert np.abs(result.sum - plain).max() <= result.error_bound
        assert result.num_examples == sum(self.counts[c] for c in survivors)
