"""Sessions in DynamoDB: the relay's only state.

One table, four kinds of item (pk / sk):

    S#<code>      / #META         a session: its mac-client's connection, browser count, TTL
    S#<code>      / P#<peer>      a browser of that session and its connection
    C#<conn id>   / #CONN         what a connection is: unbound (failed auths only), mac or browser
    COUNTER#<n>   / #COUNT        one shard of the live-session counter
    IP#<address>  / W#<start>     failed auths from one source address in one time window

Every change that touches more than one item is a transaction, so a failure leaves no
partial state. Codes are unique because the session item is written with
`attribute_not_exists`: two registrations that draw the same code cannot both win,
which the original check-then-insert design could not promise.

The browser's connection item carries its mac-client's connection id, so relaying a
browser's frame costs one read. Nothing here scans: the live-session count is the sum
of a fixed number of counter shards, each updated in the same transaction as the
session it counts, so 1,000 registrations a second spread over the shards.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from relay import session_codes
from relay.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

META = "#META"
CONN = "#CONN"
COUNT = "#COUNT"
PEER_PREFIX = "P#"

Item = dict[str, Any]


class Role(StrEnum):
    MAC = "mac"
    BROWSER = "browser"


@dataclass(frozen=True, slots=True)
class Connection:
    """What the relay knows about one WebSocket connection."""

    connection_id: str
    role: Role | None  # None: unbound (it may have failed auth attempts on record)
    code: str | None = None
    peer: str | None = None
    mac_connection_id: str | None = None  # for browsers: where their frames go
    failed_auths: int = 0
    admitted: bool = True  # False for a browser waiting for the mac-client's approval


@dataclass(frozen=True, slots=True)
class Session:
    code: str
    mac_connection_id: str
    browser_count: int
    approve: bool = False  # browsers wait for the mac-client's admission


@dataclass(frozen=True, slots=True)
class AuthContext:
    """Everything auth needs to decide, read in one round trip."""

    connection: Connection | None
    session: Session | None
    failures_from_ip: int


@dataclass(frozen=True, slots=True)
class Browser:
    peer: str
    connection_id: str
    admitted: bool = True


@dataclass(frozen=True, slots=True)
class EndedSession:
    """A session that was just ended, with the browsers that were unbound from it."""

    code: str
    browsers: list[Browser]


# Ending a session retries when browsers join or leave at the same moment.
_END_ATTEMPTS = 5


class StoreError(Exception):
    """A session-store outcome the caller must turn into a protocol answer."""


class AlreadyBound(StoreError):
    pass


class InvalidCode(StoreError):
    pass


class SessionFull(StoreError):
    pass


class CodeSpaceExhausted(StoreError):
    """Every fresh code drawn collided with a live session, up to the configured bound."""


def _session_key(code: str) -> Item:
    return {"pk": {"S": f"S#{code}"}, "sk": {"S": META}}


def _peer_key(code: str, peer: str) -> Item:
    return {"pk": {"S": f"S#{code}"}, "sk": {"S": PEER_PREFIX + peer}}


def _connection_key(connection_id: str) -> Item:
    return {"pk": {"S": f"C#{connection_id}"}, "sk": {"S": CONN}}


def _counter_key(shard: int) -> Item:
    return {"pk": {"S": f"COUNTER#{shard}"}, "sk": {"S": COUNT}}


def _ip_window_key(source_ip: str, window_start: int) -> Item:
    return {"pk": {"S": f"IP#{source_ip}"}, "sk": {"S": f"W#{window_start}"}}


def _belongs_to(peer_item: Item, mac_connection_id: str) -> bool:
    return bool(peer_item.get("mac_connection_id", {}).get("S") == mac_connection_id)


def _cancellation_codes(error: ClientError) -> list[str]:
    reasons = error.response.get("CancellationReasons") or []
    return [reason.get("Code", "None") for reason in reasons]


def _is_transaction_cancelled(error: ClientError) -> bool:
    return bool(error.response.get("Error", {}).get("Code") == "TransactionCanceledException")


class SessionStore:
    """The DynamoDB port: every read and write of session state goes through here."""

    def __init__(
        self,
        client: DynamoDBClient,
        settings: Settings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._settings = settings
        self._table = settings.table_name
        self._clock = clock

    # ---- helpers ---------------------------------------------------------------

    def _now(self) -> int:
        return int(self._clock())

    def _expires_at(self) -> str:
        return str(self._now() + self._settings.session_ttl_seconds)

    def _live(self, item: Item | None) -> bool:
        """TTL deletion can lag by days, so an item past its expiry counts as gone."""
        if not item:
            return False
        expires_at = item.get("expires_at")
        return expires_at is None or int(expires_at["N"]) > self._now()

    def _counter_update(self, delta: int) -> Item:
        shard = random.randrange(self._settings.counter_shards)
        return {
            "Update": {
                "TableName": self._table,
                "Key": _counter_key(shard),
                "UpdateExpression": "ADD sessions :delta",
                "ExpressionAttributeValues": {":delta": {"N": str(delta)}},
            }
        }

    def _transact(self, items: Sequence[Item]) -> None:
        self._client.transact_write_items(TransactItems=list(items))  # type: ignore[arg-type]

    # ---- connections -----------------------------------------------------------

    def get_connection(self, connection_id: str) -> Connection | None:
        item = self._client.get_item(
            TableName=self._table, Key=_connection_key(connection_id), ConsistentRead=True
        ).get("Item")
        return self._connection_from(connection_id, item)

    def _connection_from(self, connection_id: str, item: Item | None) -> Connection | None:
        if item is None or not self._live(item):
            return None

        def text(name: str) -> str | None:
            value = item.get(name)
            return value["S"] if value else None

        role = text("role")
        return Connection(
            connection_id=connection_id,
            role=Role(role) if role else None,
            code=text("code"),
            peer=text("peer"),
            mac_connection_id=text("mac_connection_id"),
            failed_auths=int(item["failed_auths"]["N"]) if "failed_auths" in item else 0,
            admitted=item.get("admitted", {"BOOL": True})["BOOL"],
        )

    def _session_from(self, code: str, item: Item | None, include_expired: bool = False) -> Session | None:
        if item is None or not (include_expired or self._live(item)):
            return None
        return Session(
            code=code,
            mac_connection_id=item["mac_connection_id"]["S"],
            browser_count=int(item["browser_count"]["N"]),
            approve=item.get("approve", {"BOOL": False})["BOOL"],
        )

    def _window_start(self) -> int:
        window = self._settings.auth_failure_window_seconds
        return self._now() // window * window

    def load_auth_context(self, connection_id: str, code: str | None, source_ip: str) -> AuthContext:
        """The connection, the session (if `code` is given) and the source's recent failures:
        one BatchGetItem, so auth pays one round trip for its reads."""
        wanted = {
            "connection": _connection_key(connection_id),
            "ip": _ip_window_key(source_ip, self._window_start()),
        }
        if code is not None:
            wanted["session"] = _session_key(code)
        found: dict[str, Item] = {}
        keys = list(wanted.values())
        while keys:
            response = self._client.batch_get_item(RequestItems={self._table: {"Keys": keys, "ConsistentRead": True}})
            for item in response.get("Responses", {}).get(self._table, []):
                found[item["pk"]["S"]] = item
            unprocessed: Any = response.get("UnprocessedKeys") or {}
            keys = list(unprocessed.get(self._table, {}).get("Keys", []))
        ip_item = found.get(wanted["ip"]["pk"]["S"])
        session_item = found.get(wanted["session"]["pk"]["S"]) if code is not None else None
        return AuthContext(
            connection=self._connection_from(connection_id, found.get(wanted["connection"]["pk"]["S"])),
            session=self._session_from(code, session_item) if code is not None else None,
            failures_from_ip=int(ip_item["failures"]["N"]) if ip_item and self._live(ip_item) else 0,
        )

    def record_failed_auth(self, connection_id: str, source_ip: str) -> int:
        """Count one failed auth on this connection and from its source address.

        Returns the connection's count so far. Both counters are single atomic
        UpdateItems (ADD), so concurrent failures are never lost.
        """
        window_start = self._window_start()
        self._client.update_item(
            TableName=self._table,
            Key=_ip_window_key(source_ip, window_start),
            UpdateExpression="ADD failures :one SET expires_at = if_not_exists(expires_at, :exp)",
            ExpressionAttributeValues={
                ":one": {"N": "1"},
                ":exp": {"N": str(window_start + 2 * self._settings.auth_failure_window_seconds)},
            },
        )
        response = self._client.update_item(
            TableName=self._table,
            Key=_connection_key(connection_id),
            UpdateExpression="ADD failed_auths :one SET expires_at = if_not_exists(expires_at, :exp)",
            ExpressionAttributeValues={":one": {"N": "1"}, ":exp": {"N": self._expires_at()}},
            ReturnValues="UPDATED_NEW",
        )
        return int(response["Attributes"]["failed_auths"]["N"])

    def forget_connection(self, connection_id: str) -> None:
        self._client.delete_item(TableName=self._table, Key=_connection_key(connection_id))

    # ---- register --------------------------------------------------------------

    def register_mac_client(self, connection_id: str, client_id: str, approve: bool = False) -> str:
        """Create a session with a fresh code whose mac-client is this connection.

        Raises AlreadyBound if the connection is already in a session, and
        CodeSpaceExhausted if every code drawn (up to the bound) was taken.
        """
        expires_at = self._expires_at()
        for _ in range(self._settings.max_code_attempts):
            # Looked up on the module at each call so that tests can replace it.
            code = session_codes.generate_session_code()
            try:
                self._transact(
                    [
                        {
                            "Update": {
                                "TableName": self._table,
                                "Key": _connection_key(connection_id),
                                "UpdateExpression": "SET #role = :mac, code = :code, expires_at = :exp",
                                "ConditionExpression": "attribute_not_exists(#role)",
                                "ExpressionAttributeNames": {"#role": "role"},
                                "ExpressionAttributeValues": {
                                    ":mac": {"S": Role.MAC.value},
                                    ":code": {"S": code},
                                    ":exp": {"N": expires_at},
                                },
                            }
                        },
                        {
                            "Put": {
                                "TableName": self._table,
                                "Item": {
                                    **_session_key(code),
                                    "mac_connection_id": {"S": connection_id},
                                    "client_id": {"S": client_id},
                                    "browser_count": {"N": "0"},
                                    "approve": {"BOOL": approve},
                                    "created_at": {"N": str(self._now())},
                                    "expires_at": {"N": expires_at},
                                },
                                "ConditionExpression": "attribute_not_exists(pk)",
                            }
                        },
                        self._counter_update(+1),
                    ]
                )
            except ClientError as error:
                if not _is_transaction_cancelled(error):
                    raise
                reasons = _cancellation_codes(error)
                if reasons[:1] == ["ConditionalCheckFailed"]:
                    raise AlreadyBound from None
                if reasons[1:2] == ["ConditionalCheckFailed"]:
                    continue  # the code is taken by a live session: draw another
                raise
            return code
        raise CodeSpaceExhausted

    # ---- auth ------------------------------------------------------------------

    def validate_session_code(self, code: str, include_expired: bool = False) -> Session | None:
        """The live session with this (normalised) code, if there is one."""
        item = self._client.get_item(TableName=self._table, Key=_session_key(code), ConsistentRead=True).get("Item")
        return self._session_from(code, item, include_expired)

    def add_browser(self, connection_id: str, session: Session, peer: str, admitted: bool = True) -> None:
        """Bind this connection to the session as a browser with the given peer id.

        The session must still be the same live session (same mac-client) with room
        for one more browser when the transaction commits; a mac-client ending its
        session concurrently therefore can never leave this browser bound to it.
        """
        expires_at = self._expires_at()
        try:
            self._transact(
                [
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": _session_key(session.code),
                            "UpdateExpression": "ADD browser_count :one",
                            "ConditionExpression": (
                                "mac_connection_id = :mac AND browser_count < :max AND expires_at > :now"
                            ),
                            "ExpressionAttributeValues": {
                                ":one": {"N": "1"},
                                ":mac": {"S": session.mac_connection_id},
                                ":max": {"N": str(self._settings.max_browsers)},
                                ":now": {"N": str(self._now())},
                            },
                        }
                    },
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": {
                                **_peer_key(session.code, peer),
                                "connection_id": {"S": connection_id},
                                "mac_connection_id": {"S": session.mac_connection_id},
                                "admitted": {"BOOL": admitted},
                                "expires_at": {"N": expires_at},
                            },
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": _connection_key(connection_id),
                            "UpdateExpression": (
                                "SET #role = :browser, code = :code, peer = :peer, "
                                "mac_connection_id = :mac, admitted = :admitted, expires_at = :exp "
                                "REMOVE failed_auths"
                            ),
                            "ConditionExpression": "attribute_not_exists(#role)",
                            "ExpressionAttributeNames": {"#role": "role"},
                            "ExpressionAttributeValues": {
                                ":browser": {"S": Role.BROWSER.value},
                                ":code": {"S": session.code},
                                ":peer": {"S": peer},
                                ":mac": {"S": session.mac_connection_id},
                                ":admitted": {"BOOL": admitted},
                                ":exp": {"N": expires_at},
                            },
                        }
                    },
                ]
            )
        except ClientError as error:
            if not _is_transaction_cancelled(error):
                raise
            reasons = _cancellation_codes(error)
            if reasons[2:3] == ["ConditionalCheckFailed"]:
                raise AlreadyBound from None
            if reasons[:1] == ["ConditionalCheckFailed"]:
                current = self.validate_session_code(session.code)
                if current is None or current.mac_connection_id != session.mac_connection_id:
                    raise InvalidCode from None
                raise SessionFull from None
            raise

    # ---- relay -----------------------------------------------------------------

    def get_browser(self, code: str, mac_connection_id: str, peer: str) -> Browser | None:
        """The browser `peer` of the session this mac-client owns, if it is there."""
        item = self._client.get_item(TableName=self._table, Key=_peer_key(code, peer), ConsistentRead=True).get("Item")
        if item is None or not self._live(item) or not _belongs_to(item, mac_connection_id):
            return None
        return Browser(
            peer=peer,
            connection_id=item["connection_id"]["S"],
            admitted=item.get("admitted", {"BOOL": True})["BOOL"],
        )

    def list_browsers(self, code: str, mac_connection_id: str, include_expired: bool = False) -> list[Browser]:
        """The browsers of the session this mac-client owns, with one Query.

        Matching on the mac-client keeps apart two sessions that held the same code one
        after the other (a code is free again once TTL has deleted its session).
        """
        return list(self._iter_browsers(code, mac_connection_id, include_expired))

    def _iter_browsers(self, code: str, mac_connection_id: str, include_expired: bool) -> Iterator[Browser]:
        paginator = self._client.get_paginator("query")
        pages = paginator.paginate(
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :peer)",
            ExpressionAttributeValues={":pk": {"S": f"S#{code}"}, ":peer": {"S": PEER_PREFIX}},
            ConsistentRead=True,
        )
        for page in pages:
            for item in page.get("Items", []):
                if (include_expired or self._live(item)) and _belongs_to(item, mac_connection_id):
                    yield Browser(
                        peer=item["sk"]["S"].removeprefix(PEER_PREFIX),
                        connection_id=item["connection_id"]["S"],
                        admitted=item.get("admitted", {"BOOL": True})["BOOL"],
                    )

    def admit_browser(self, code: str, browser: Browser) -> bool:
        """Let a pending browser's frames flow; False if it is no longer waiting."""
        try:
            self._transact(
                [
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": _peer_key(code, browser.peer),
                            "UpdateExpression": "SET admitted = :yes",
                            "ConditionExpression": "connection_id = :conn AND admitted = :no",
                            "ExpressionAttributeValues": {
                                ":yes": {"BOOL": True},
                                ":no": {"BOOL": False},
                                ":conn": {"S": browser.connection_id},
                            },
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": _connection_key(browser.connection_id),
                            "UpdateExpression": "SET admitted = :yes",
                            "ConditionExpression": "code = :code AND peer = :peer",
                            "ExpressionAttributeValues": {
                                ":yes": {"BOOL": True},
                                ":code": {"S": code},
                                ":peer": {"S": browser.peer},
                            },
                        }
                    },
                ]
            )
        except ClientError as error:
            if not _is_transaction_cancelled(error):
                raise
            return False
        return True

    # ---- leaving ---------------------------------------------------------------

    def remove_browser(self, connection: Connection) -> bool:
        """Unbind a browser and forget its connection; False if it was already gone."""
        assert connection.code is not None
        assert connection.peer is not None
        delete_peer = {
            "Delete": {
                "TableName": self._table,
                "Key": _peer_key(connection.code, connection.peer),
                "ConditionExpression": "connection_id = :conn",
                "ExpressionAttributeValues": {":conn": {"S": connection.connection_id}},
            }
        }
        delete_connection = {"Delete": {"TableName": self._table, "Key": _connection_key(connection.connection_id)}}
        release_seat = {
            "Update": {
                "TableName": self._table,
                "Key": _session_key(connection.code),
                "UpdateExpression": "ADD browser_count :minus_one",
                "ConditionExpression": "mac_connection_id = :mac",
                "ExpressionAttributeValues": {
                    ":minus_one": {"N": "-1"},
                    ":mac": {"S": connection.mac_connection_id or ""},
                },
            }
        }
        try:
            self._transact([delete_peer, delete_connection, release_seat])
            return True
        except ClientError as error:
            if not _is_transaction_cancelled(error):
                raise
            reasons = _cancellation_codes(error)
        if reasons[:1] == ["ConditionalCheckFailed"]:
            self.forget_connection(connection.connection_id)  # already unbound elsewhere
            return False
        # The session has ended already: its seat count no longer matters.
        try:
            self._transact([delete_peer, delete_connection])
            return True
        except ClientError as error:
            if not _is_transaction_cancelled(error):
                raise
            self.forget_connection(connection.connection_id)
            return False

    def release_expired_session(self, code: str, mac_connection_id: str, created_at: int) -> EndedSession | None:
        """Clean up after DynamoDB's TTL deleted a session whose $disconnect never came.

        One transaction lowers the count and unbinds the session's browsers; a marker
        item written in it makes a re-delivered stream record a no-op, so the count drops
        exactly once. Browsers are matched by their mac-client, so a new session that
        drew the same code before the stream ran is left alone. None if already released.
        """
        marker = {
            "Put": {
                "TableName": self._table,
                "Item": {
                    "pk": {"S": f"S#{code}"},
                    # The mac-client's connection id tells apart two sessions that held
                    # the same code and were created in the same second.
                    "sk": {"S": f"#EXPIRED#{created_at}#{mac_connection_id}"},
                    "expires_at": {"N": str(self._now() + 24 * 3600)},
                },
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
        for _ in range(_END_ATTEMPTS):
            browsers = self.list_browsers(code, mac_connection_id, include_expired=True)
            items = [marker, self._counter_update(-1)]
            for browser in browsers:
                items += self._unbind_items(code, browser)
            try:
                self._transact(items)
            except ClientError as error:
                if not _is_transaction_cancelled(error):
                    raise
                if _cancellation_codes(error)[:1] == ["ConditionalCheckFailed"]:
                    return None  # released before
                continue  # a browser left meanwhile: list again
            return EndedSession(code=code, browsers=browsers)
        raise StoreError(f"could not release expired session {code[:2]}****")

    def remove_session(self, code: str, mac_connection_id: str) -> EndedSession | None:
        """End a session: its code stops working, the count drops and its browsers are
        unbound, all in one transaction, so a failure part-way leaves the session whole.

        The transaction requires the session's browser count to equal the browsers just
        listed, so a browser joining in between makes it retry rather than leave that
        browser bound to a dead session. Returns None if the session had already ended
        (a second $disconnect, or a GoneException seen by two senders at once).
        """
        for attempt in range(_END_ATTEMPTS):
            session = self.validate_session_code(code, include_expired=True)
            if session is None or session.mac_connection_id != mac_connection_id:
                self.forget_connection(mac_connection_id)
                return None
            browsers = self.list_browsers(code, mac_connection_id, include_expired=True)
            last_attempt = attempt == _END_ATTEMPTS - 1
            # On the last attempt, end the session even if the count and the list disagree.
            condition = "mac_connection_id = :mac" + ("" if last_attempt else " AND browser_count = :n")
            values = {":mac": {"S": mac_connection_id}}
            if not last_attempt:
                values[":n"] = {"N": str(len(browsers))}
            items: list[Item] = [
                {
                    "Delete": {
                        "TableName": self._table,
                        "Key": _session_key(code),
                        "ConditionExpression": condition,
                        "ExpressionAttributeValues": values,
                    }
                },
                {"Delete": {"TableName": self._table, "Key": _connection_key(mac_connection_id)}},
                self._counter_update(-1),
            ]
            for browser in browsers:
                items += self._unbind_items(code, browser)
            try:
                self._transact(items)
            except ClientError as error:
                if not _is_transaction_cancelled(error):
                    raise
                continue  # someone joined or left meanwhile: look again
            return EndedSession(code=code, browsers=browsers)
        raise StoreError(f"could not end session {code[:2]}****")

    def _unbind_items(self, code: str, browser: Browser) -> list[Item]:
        """Transaction items that take a browser out of a session: its seat and its binding."""
        return [
            {
                "Delete": {
                    "TableName": self._table,
                    "Key": _peer_key(code, browser.peer),
                    "ConditionExpression": "connection_id = :conn",
                    "ExpressionAttributeValues": {":conn": {"S": browser.connection_id}},
                }
            },
            {
                # Deleting the connection's record unbinds it (it may auth again).
                "Delete": {
                    "TableName": self._table,
                    "Key": _connection_key(browser.connection_id),
                    "ConditionExpression": "attribute_not_exists(pk) OR (code = :code AND peer = :peer)",
                    "ExpressionAttributeValues": {":code": {"S": code}, ":peer": {"S": browser.peer}},
                }
            },
        ]

    # ---- debug -----------------------------------------------------------------

    def session_count(self) -> int:
        """Live sessions: the sum of the counter shards, one BatchGetItem, no Scan."""
        keys: list[Item] = [_counter_key(shard) for shard in range(self._settings.counter_shards)]
        total = 0
        while keys:
            response = self._client.batch_get_item(
                RequestItems={self._table: {"Keys": keys[:100], "ConsistentRead": True}}
            )
            for item in response.get("Responses", {}).get(self._table, []):
                total += int(item.get("sessions", {"N": "0"})["N"])
            unprocessed: Any = response.get("UnprocessedKeys") or {}
            keys = list(unprocessed.get(self._table, {}).get("Keys", [])) + keys[100:]
        return total


TTL_PRINCIPAL = "dynamodb.amazonaws.com"


def expired_session_from_stream(
    user_identity: dict[str, Any] | None, old_image: dict[str, Any]
) -> tuple[str, str, int] | None:
    """(code, mac connection id, created_at) if a stream REMOVE is a session deleted by TTL.

    `old_image` is the deserialised image Powertools' DynamoDBStreamEvent gives. Items
    the relay deletes itself carry no Service identity and are skipped: whoever deleted
    them has already cleaned up.
    """
    identity = user_identity or {}
    if identity.get("type") != "Service" or identity.get("principalId") != TTL_PRINCIPAL:
        return None
    if old_image.get("sk") != META or not str(old_image.get("pk", "")).startswith("S#"):
        return None
    return (
        str(old_image["pk"]).removeprefix("S#"),
        str(old_image["mac_connection_id"]),
        int(old_image.get("created_at", 0)),
    )
