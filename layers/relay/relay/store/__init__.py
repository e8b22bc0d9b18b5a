"""Sessions in DynamoDB: the relay's only state, behind relay.ports.SessionStore.

One table, nine kinds of item (pk / sk), each kept by one section of this package:

    S#<code>      / #META         a session: its mac-client's connection, browser count,
                                  approval mode, `locked`, `bans` (kicks made), creation
                                  time, TTL; if resumable, away state and token hash
                                                                              (sessions)
    S#<code>      / P#<peer>      a browser of that session, its connection and the
                                  address it joined from                      (browsers)
    S#<code>      / BAN#<address> an address kicked from the session whose mac-client is
                                  one of `mac_connection_ids` (a resume adds its new
                                  connection)                                 (browsers)
    S#<code>      / H#<holder>#<seq>
                                  a message held for an away holder ("mac" or a peer
                                  id) of a resumable session                    (resume)
    S#<code>      / #EXPIRED#<created at>#<mac connection id>
                                  marks a TTL-deleted session as released        (expiry)
    C#<conn id>   / #CONN         what a connection is: unbound (its claimed attempts,
                                  `failed_auths`, only), mac or browser       (connections)
    COUNTER#<n>   / #COUNT        one shard of the live-session counter          (counter)
    IP#<address>  / W#<start>     auth attempts claimed from one address in one window,
                                  less those given back by joins (`failures`)     (limits)
    IP#<address>  / R#<start>     sessions registered from one address in one window
                                  (`registrations`)                            (sessions)

<address> is a limit key (relay.addresses): an IPv4 address, or an IPv6 /64. Every
transaction a handler makes (on the store for its request, `for_request`) carries a
ClientRequestToken derived from API Gateway's request id and the step
(relay.store.table.client_request_token), so a retry after a lost response is applied
once.

Every item carries `expires_at`, the table's TTL attribute: a resumable session's items
expire with the session (MaxSessionSeconds), but a connection record's TTL is always
the connection's (Table.expires_at), so that it outlives the connection; it keeps its
resumable session's end in `session_expires_at`. Every change that touches
more than one item is a transaction (relay.store.table.Table.transact), so a failure
leaves no partial state. Nothing here scans.

To add an operation: write it in the section that owns its items (or a new section
class mixed into DynamoDbStore), declare it on relay.ports.SessionStore, give
tests/support/memory_store.py the same behaviour, and test both in
tests/test_store_contract.py.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from relay.settings import Settings
from relay.store.expiry import ExpiryRecords
from relay.store.limits import LimitRecords
from relay.store.resume import ResumeRecords
from relay.store.sessions import SessionRecords
from relay.store.table import Table

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class DynamoDbStore(SessionRecords, ExpiryRecords, LimitRecords, ResumeRecords):
    """The DynamoDB implementation of relay.ports.SessionStore."""

    def __init__(
        self,
        client: DynamoDBClient,
        settings: Settings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(Table(client, settings, clock))

    def for_request(self, request_token: str | None) -> DynamoDbStore:
        """This store, writing for one request: each transaction's ClientRequestToken
        derives from the request id and its step (cheap: the client is shared)."""
        bound = copy.copy(self)
        bound.table = self.table.for_request(request_token)
        return bound


__all__ = ["DynamoDbStore"]
