"""The relay's rules: who may register, authenticate and send, and who hears about it.

`Relay` speaks to its two ports (relay.ports: SessionStore for state, Connections for
pushing to connections) and answers each client request with at most one reply to its
sender. It knows nothing of AWS: relay.wiring gives it the DynamoDB store and the
Management API; tests give it an in-memory store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relay import protocol, session_codes
from relay.addresses import limit_key
from relay.model import (
    AlreadyBound,
    AttemptClaim,
    Browser,
    BrowserConnection,
    CodeSpaceExhausted,
    Delivery,
    ExpiredSession,
    InvalidCode,
    MacConnection,
    RateLimited,
    SessionFull,
    StoreUnavailable,
    TooManyAttempts,
    UnboundConnection,
)
from relay.observability import Metric, count, logger
from relay.protocol import ErrorCode
from relay.settings import Settings

if TYPE_CHECKING:
    from relay.ports import Connections, SessionStore


class Relay:
    def __init__(
        self,
        store: SessionStore,
        connections: Connections,
        settings: Settings,
        request_token: str | None = None,
    ) -> None:
        self.store = store
        self.connections = connections
        self.settings = settings
        # The API Gateway request id being answered: the store makes each of its
        # writes idempotent with it (a write retried after a lost response lands once).
        self.request_token = request_token

    def for_request(self, request_token: str | None) -> Relay:
        """This relay, answering one request (cheap: the store and clients are shared)."""
        return Relay(self.store, self.connections, self.settings, request_token)

    def reply(self, connection_id: str, message: protocol.Message) -> Delivery:
        return self.connections.post(connection_id, message)

    def reply_error(self, connection_id: str, code: ErrorCode) -> Delivery:
        return self.reply(connection_id, protocol.error(code))

    def ping(self, connection_id: str, request: protocol.PingRequest) -> None:
        """A keepalive: answered, nothing else."""
        self.reply(connection_id, protocol.pong())

    # ---- register --------------------------------------------------------------

    def register(self, connection_id: str, request: protocol.RegisterRequest, source_ip: str | None = None) -> None:
        """A new session for this mac-client; with `source_ip`, one of its address's
        registrations for this window is claimed in the same write (RegistrationsPerIp)."""
        try:
            code = self.store.register_mac_client(
                connection_id,
                request.client_id,
                request.approve,
                address=limit_key(source_ip) if source_ip is not None else None,
                request_token=self.request_token,
            )
        except AlreadyBound:
            self.reply_error(connection_id, ErrorCode.ALREADY_BOUND)
            return
        except RateLimited:
            count(Metric.REGISTRATIONS_RATE_LIMITED)
            self.reply_error(connection_id, ErrorCode.RATE_LIMITED)
            return
        except CodeSpaceExhausted:
            logger.error("no free session code within the attempt bound")
            self.reply_error(connection_id, ErrorCode.INTERNAL_ERROR)
            return
        count(Metric.SESSIONS_REGISTERED)
        logger.info("session registered", extra={"code": protocol.redact_code(code)})
        if self.reply(connection_id, protocol.registered(code)) is Delivery.GONE:
            # The mac-client left before hearing its code: nobody can ever use it.
            self.end_session(code, connection_id)

    # ---- auth ------------------------------------------------------------------

    def authenticate(
        self,
        connection_id: str,
        request: protocol.AuthRequest,
        source_ip: str,
        user_agent: str | None = None,
    ) -> None:
        code = protocol.normalise_code(request.code)
        # Claim, then look: nothing is looked up unless an attempt was claimed against
        # both limits first, so concurrent or pipelined guesses cannot overrun them.
        claim = self._claim(connection_id, source_ip)
        if claim is None:
            return
        # Malformed, unknown and locked codes get the same answer, so that the answer
        # tells a guesser nothing about the code space.
        well_formed = protocol.is_well_formed_code(code)
        context = self.store.load_auth_context(connection_id, code if well_formed else None, claim.address)
        if context.connection is not None and not isinstance(context.connection, UnboundConnection):
            self.reply_error(connection_id, ErrorCode.ALREADY_BOUND)
            return
        attempts = context.connection.failed_auths if context.connection is not None else None
        session = context.session
        if session is None or session.locked:
            self.attempt_failed(connection_id, source_ip, attempts=attempts)
            return
        if context.banned:
            count(Metric.AUTH_BANNED)
            self.reply_error(connection_id, ErrorCode.BANNED)
            return
        if session.browser_count >= self.settings.max_browsers:
            self.reply_error(connection_id, ErrorCode.SESSION_FULL)
            return
        peer = session_codes.generate_peer_id()
        admitted = not session.approve
        try:
            self.store.add_browser(
                connection_id, session, peer, admitted=admitted, claim=claim, request_token=self.request_token
            )
        except AlreadyBound:
            self.reply_error(connection_id, ErrorCode.ALREADY_BOUND)
            return
        except SessionFull:
            self.reply_error(connection_id, ErrorCode.SESSION_FULL)
            return
        except InvalidCode:
            # Ended, locked, or this address kicked, since the lookup.
            self.attempt_failed(connection_id, source_ip, attempts=attempts)
            return
        logger.info("browser joined", extra={"code": protocol.redact_code(code), "peer": peer, "admitted": admitted})
        browser = BrowserConnection(
            connection_id=connection_id,
            code=code,
            peer=peer,
            mac_connection_id=session.mac_connection_id,
            admitted=admitted,
        )
        to_mac = protocol.peer_joined(peer) if admitted else protocol.join_request(peer, source_ip, user_agent)
        # The mac-client hears first: if it cannot be told, the browser is not let in.
        try:
            told_mac = self.connections.post(session.mac_connection_id, to_mac)
        except Exception:
            self.store.remove_browser(browser, request_token=self.request_token)
            raise
        if told_mac is Delivery.GONE:
            # The session died with its mac-client: the code no longer opens anything.
            self.end_session(code, session.mac_connection_id, spare=connection_id)
            self.reply_error(connection_id, ErrorCode.INVALID_CODE)
            return
        self.reply(connection_id, protocol.authenticated(code, peer) if admitted else protocol.pending())
        self._confirm_still_bound(browser)

    def _confirm_still_bound(self, browser: BrowserConnection) -> None:
        """If the mac-client left at this very moment, its session_closed may have reached
        the browser before our reply did: make sure the browser's last word is the truth."""
        try:
            now = self.store.get_connection(browser.connection_id)
        except StoreUnavailable:
            logger.warning("could not confirm the new browser's binding", exc_info=True)
            return
        if not isinstance(now, BrowserConnection) or now.code != browser.code:
            self.reply(browser.connection_id, protocol.session_closed())

    # ---- claiming attempts (auth; issue 11's resume) -----------------------------

    def _claim(self, connection_id: str, source_ip: str) -> AttemptClaim | None:
        """Claim one attempt; None after answering the refusal."""
        try:
            return self.store.claim_attempt(connection_id, limit_key(source_ip), self.request_token)
        except TooManyAttempts:
            logger.warning("attempt refused: the connection's limit is used up; closing")
            self.reply_error(connection_id, ErrorCode.TOO_MANY_ATTEMPTS)
            self.connections.close(connection_id)
        except RateLimited:
            count(Metric.AUTH_RATE_LIMITED)
            self.reply_error(connection_id, ErrorCode.RATE_LIMITED)
        return None

    def claim_attempt(self, connection_id: str, source_ip: str) -> bool:
        """Claim one attempt to present a secret. False: refused, and the refusal
        (too_many_attempts + close, or rate_limited) has already been answered."""
        return self._claim(connection_id, source_ip) is not None

    def attempt_failed(
        self,
        connection_id: str,
        source_ip: str,
        error: ErrorCode = ErrorCode.INVALID_CODE,
        attempts: int | None = None,
    ) -> None:
        """The claimed attempt presented a wrong secret: the claim is kept. Answers
        `error` (invalid_code; resume: invalid_token), or too_many_attempts and closes
        the connection when this was its last attempt. `attempts`: the connection's
        claimed attempts, if already read after the claim (read here otherwise)."""
        count(Metric.AUTH_FAILURES)
        if attempts is None:
            connection = self.store.get_connection(connection_id)
            attempts = connection.failed_auths if isinstance(connection, UnboundConnection) else 0
        if attempts >= self.settings.max_auth_attempts:
            logger.warning("too many failed attempts; closing", extra={"failures": attempts})
            self.reply_error(connection_id, ErrorCode.TOO_MANY_ATTEMPTS)
            self.connections.close(connection_id)
        else:
            self.reply_error(connection_id, error)

    # ---- send ------------------------------------------------------------------

    def send(self, connection_id: str, request: protocol.SendRequest) -> None:
        connection = self.store.get_connection(connection_id)
        if isinstance(connection, BrowserConnection):
            self._send_to_mac(connection, request)
        elif isinstance(connection, MacConnection):
            self._send_to_browsers(connection, request)
        else:
            self.reply_error(connection_id, ErrorCode.NOT_BOUND)

    def _reject_payload(self, connection_id: str) -> None:
        count(Metric.PAYLOAD_REJECTIONS)
        self.reply_error(connection_id, ErrorCode.PAYLOAD_TOO_LARGE)

    def _send_to_mac(self, browser: BrowserConnection, request: protocol.SendRequest) -> None:
        if not browser.admitted:
            self.reply_error(browser.connection_id, ErrorCode.NOT_ADMITTED)
            return
        if request.to not in (None, protocol.MAC_PEER):
            self.reply_error(browser.connection_id, ErrorCode.UNKNOWN_PEER)
            return
        delivery = self.connections.post(browser.mac_connection_id, protocol.frame(browser.peer, request.data))
        if delivery is Delivery.DELIVERED:
            count(Metric.FRAMES_RELAYED)
        elif delivery is Delivery.TOO_LARGE:
            self._reject_payload(browser.connection_id)
        else:
            self.end_session(browser.code, browser.mac_connection_id, spare=browser.connection_id)
            self.reply_error(browser.connection_id, ErrorCode.PEER_GONE)

    def _send_to_browsers(self, mac: MacConnection, request: protocol.SendRequest) -> None:
        message = protocol.frame(protocol.MAC_PEER, request.data)
        if protocol.encoded_size(message) > protocol.MAX_MESSAGE_BYTES:
            self._reject_payload(mac.connection_id)
            return
        if request.to is None:
            browsers = [b for b in self.store.list_browsers(mac.code, mac.connection_id) if b.admitted]
        else:
            browser = self.store.get_browser(mac.code, mac.connection_id, request.to)
            if browser is None or not browser.admitted:
                self.reply_error(mac.connection_id, ErrorCode.UNKNOWN_PEER)
                return
            browsers = [browser]
        deliveries = self.connections.post_many({b.connection_id: message for b in browsers})
        delivered = sum(1 for d in deliveries.values() if d is Delivery.DELIVERED)
        if delivered:
            count(Metric.FRAMES_RELAYED, delivered)
        for browser in browsers:
            if deliveries[browser.connection_id] is Delivery.GONE:
                self.remove_browser(browser.connection_in(mac))
        if any(d is Delivery.TOO_LARGE for d in deliveries.values()):
            self._reject_payload(mac.connection_id)

    # ---- admission control -----------------------------------------------------

    def _mac_and_browser(self, connection_id: str, peer: str) -> tuple[MacConnection, Browser] | None:
        """The caller as a mac-client and its browser `peer`, or None after replying an error."""
        connection = self.store.get_connection(connection_id)
        if connection is None or isinstance(connection, UnboundConnection):
            self.reply_error(connection_id, ErrorCode.NOT_BOUND)
            return None
        if not isinstance(connection, MacConnection):
            self.reply_error(connection_id, ErrorCode.NOT_MAC)
            return None
        browser = self.store.get_browser(connection.code, connection_id, peer)
        if browser is None:
            self.reply_error(connection_id, ErrorCode.UNKNOWN_PEER)
            return None
        return connection, browser

    def kick(self, connection_id: str, request: protocol.KickRequest) -> None:
        found = self._mac_and_browser(connection_id, request.peer)
        if found is None:
            return
        mac, browser = found
        # The kicked browser's address may not join this session again.
        removed = self.store.remove_browser(
            browser.connection_in(mac), ban_address=browser.address, request_token=self.request_token
        )
        if removed:
            logger.info("browser kicked", extra={"peer": browser.peer})
            self.connections.post(browser.connection_id, protocol.kicked())
        self.reply(connection_id, protocol.peer_left(browser.peer))

    def admit(self, connection_id: str, request: protocol.AdmitRequest) -> None:
        found = self._mac_and_browser(connection_id, request.peer)
        if found is None:
            return
        mac, browser = found
        if not browser.admitted and not self.store.admit_browser(mac.code, browser, self.request_token):
            self.reply_error(connection_id, ErrorCode.UNKNOWN_PEER)  # it left meanwhile
            return
        logger.info("browser admitted", extra={"peer": browser.peer})
        delivery = self.connections.post(browser.connection_id, protocol.authenticated(mac.code, browser.peer))
        if delivery is Delivery.GONE:
            self.remove_browser(browser.connection_in(mac))
            return
        self.reply(connection_id, protocol.peer_joined(browser.peer))

    def lock(self, connection_id: str, request: protocol.LockRequest) -> None:
        """From now on the code opens nothing new; browsers already in stay."""
        self._set_locked(connection_id, locked=True)

    def unlock(self, connection_id: str, request: protocol.UnlockRequest) -> None:
        self._set_locked(connection_id, locked=False)

    def _set_locked(self, connection_id: str, locked: bool) -> None:
        connection = self.store.get_connection(connection_id)
        if isinstance(connection, BrowserConnection):
            self.reply_error(connection_id, ErrorCode.NOT_MAC)
            return
        if not isinstance(connection, MacConnection) or not self.store.set_session_locked(
            connection.code, connection_id, locked
        ):
            self.reply_error(connection_id, ErrorCode.NOT_BOUND)
            return
        logger.info("session locked" if locked else "session unlocked")
        self.reply(connection_id, protocol.locked() if locked else protocol.unlocked())

    # ---- leaving ---------------------------------------------------------------

    def disconnect(self, connection_id: str) -> None:
        connection = self.store.get_connection(connection_id)
        if connection is None:
            return  # never bound, or already cleaned up (a second $disconnect)
        if isinstance(connection, UnboundConnection):
            self.store.forget_connection(connection_id)
        elif isinstance(connection, MacConnection):
            self.end_session(connection.code, connection_id)
        else:
            self.remove_browser(connection)

    def end_session(self, code: str, mac_connection_id: str, spare: str | None = None) -> None:
        """End the session and tell its browsers, except `spare` (which gets its own answer)."""
        ended = self.store.remove_session(code, mac_connection_id, self.request_token)
        if ended is None:
            return
        logger.info("session ended", extra={"code": protocol.redact_code(code)})
        self.connections.post_many(
            {b.connection_id: protocol.session_closed() for b in ended.browsers if b.connection_id != spare}
        )

    def expire_session(self, expired: ExpiredSession) -> None:
        """DynamoDB's TTL removed this session: its mac-client never said goodbye."""
        ended = self.store.release_expired_session(expired)
        if ended is None:
            return
        logger.info("session expired", extra={"code": protocol.redact_code(expired.code)})
        self.connections.post_many({b.connection_id: protocol.session_closed() for b in ended.browsers})
        self.store.forget_connection(expired.mac_connection_id)
        self.connections.close(expired.mac_connection_id)

    def remove_browser(self, browser: BrowserConnection) -> None:
        if not self.store.remove_browser(browser, request_token=self.request_token):
            return
        left = self.reply(browser.mac_connection_id, protocol.peer_left(browser.peer))
        if left is Delivery.GONE:
            self.end_session(browser.code, browser.mac_connection_id)
