"""The live-session counter: a fixed number of shards (COUNTER#<n> / #COUNT).

Each shard is updated in the same transaction as the session it counts, so the count
is never off, 1,000 registrations a second spread over the shards, and reading it is
one BatchGetItem: nothing scans.
"""

from __future__ import annotations

import random

from relay.store.table import Item, Section, counter_key, number


class CounterShards(Section):
    def _counter_update(self, delta: int) -> Item:
        """A transaction item moving one shard, drawn at random, by `delta`."""
        shard = random.randrange(self.table.settings.counter_shards)
        return self.table.update(counter_key(shard), "ADD sessions :delta", {":delta": {"N": str(delta)}})

    def session_count(self) -> int:
        """Live sessions: the sum of the counter shards."""
        keys = [counter_key(shard) for shard in range(self.table.settings.counter_shards)]
        return sum(number(item, "sessions") for item in self.table.batch_get(keys))
