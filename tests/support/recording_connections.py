"""An in-memory relay.ports.Connections: records what the relay posts and closes.

A connection in `vanished` answers Delivery.GONE, as API Gateway's 410 does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from relay import protocol
from relay.model import Delivery


@dataclass
class RecordingConnections:
    sent: dict[str, list[protocol.Message]] = field(default_factory=lambda: defaultdict(list))
    closed: list[str] = field(default_factory=list)
    vanished: set[str] = field(default_factory=set)
    posts: int = 0

    def post(self, connection_id: str, message: protocol.Message) -> Delivery:
        self.posts += 1
        if connection_id in self.vanished:
            return Delivery.GONE
        if protocol.encoded_size(message) > protocol.MAX_MESSAGE_BYTES:
            return Delivery.TOO_LARGE
        self.sent[connection_id].append(message)
        return Delivery.DELIVERED

    def post_many(self, messages: Mapping[str, protocol.Message]) -> dict[str, Delivery]:
        return {connection_id: self.post(connection_id, message) for connection_id, message in messages.items()}

    def close(self, connection_id: str) -> None:
        if connection_id not in self.vanished:
            self.closed.append(connection_id)
