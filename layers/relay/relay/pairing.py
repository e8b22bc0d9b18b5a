"""The relay's rules: who may register, authenticate and send, and who hears about it.

`Relay` speaks to its two ports (relay.ports: SessionStore for state, Connections for
pushing to connections) and answers each client request with at most one reply to its
sender. It knows nothing of AWS: relay.wiring gives it the DynamoDB store and the
Management API; tests give it an in-memory store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relay import protocol, resume_tokens, session_codes
from relay.addresses import limit_key
from relay.model import (
    Absence,
    AlreadyBound,
    AttemptClaim,
    Browser,
    BrowserConnection,
    CodeSpaceExhausted,
    Delivery,
    ExpiredPlace,
    ExpiredSession,
    HoldRefused,
    InvalidCode,
    InvalidToken,
    Joining,
    MacConnection,
    NotAway,
    RateLimited,
    Registration,
    ResumedBrowser,
    ResumedMac,
    Resumption,
    Role,
    SessionFull,
    StoreUnavailable,
    TooManyAttempts,
    UnboundConnection,
)
from relay.observability import Metric, count, logger
from relay.protocol import ErrorCode
from relay.settings import Settings

if TYPE_CHECKING:
    from relay.ports import Connections, GraceTimer, SessionStore


class _NoGraceTimer:
    """Where no timer is wired (the debug endpoint): nobody there can go away."""

    def start(self, absence: Absence) -> None:
        raise RuntimeError("no grace timer configured (GRACE_QUEUE_URL)")


class Relay:
    def __init__(
        self,
        store: SessionStore,
        connections: Connections,
        settings: Settings,
        grace_timer: GraceTimer | None = None,
    ) -> None:
        self.store = store
        self.connections = connections
        self.settings = settings
        self.grace_timer: GraceTimer = grace_timer or _NoGraceTimer()

    def for_request(self, request_token: str | None) -> Relay:
        """This relay, answering one request: its store makes each write idempotent with the
        API Gateway request id, so a write retried after a lost response lands once
        (cheap: the store's client and the connections are shared)."""
        return Relay(self.store.for_request(request_token), self.connections, self.settings, self.grace_timer)

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
        issued: list[resume_tokens.IssuedToken] = []

        def mac_token_hash(code: str) -> str:
            issued.append(resume_tokens.issue(code, protocol.MAC_PEER))
            return issued[-1].token_hash

        try:
            code = self.store.register_mac_client(
                Registration(
                    connection_id,
                    request.client_id,
                    request.approve,
                    mac_token_hash if request.resumable else None,
                    address=limit_key(source_ip) if source_ip is not None else None,
                )
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
        token = issued[-1].token if issued else None
        if self.reply(connection_id, protocol.with_resume_token(protocol.registered(code), token)) is Delivery.GONE:
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
        issued = resume_tokens.issue(code, peer) if session.resumable else None
        try:
            self.store.add_browser(
                Joining(
                    connection_id,
                    session,
                    peer,
                    admitted=admitted,
                    token_hash=issued.token_hash if issued else None,
                    claim=claim,
                )
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
        browser = session.browser_connection(connection_id, peer, admitted)
        to_mac = protocol.peer_joined(peer) if admitted else protocol.join_request(peer, source_ip, user_agent)
        # The mac-client hears first: if it cannot be told, the browser is not let in.
        # (An away mac-client of a resumable session learns of it from `resumed`.)
        try:
            told_mac = Delivery.GONE if session.mac_away else self.connections.post(session.mac_connection_id, to_mac)
        except Exception:
            self.store.remove_browser(browser)
            raise
        if told_mac is Delivery.GONE and session.resumable:
            if not session.mac_away:
                self.mac_went_away(code, session.mac_connection_id)
        elif told_mac is Delivery.GONE:
            # The session died with its mac-client: the code no longer opens anything.
            self.end_session(code, session.mac_connection_id, spare=connection_id)
            self.reply_error(connection_id, ErrorCode.INVALID_CODE)
            return
        answer = protocol.authenticated(code, peer) if admitted else protocol.pending()
        self.reply(connection_id, protocol.with_resume_token(answer, issued.token if issued else None))
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
            return self.store.claim_attempt(connection_id, limit_key(source_ip))
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
        message = protocol.frame(browser.peer, request.data)
        if browser.mac_away:
            if protocol.encoded_size(message) > protocol.MAX_MESSAGE_BYTES:
                self._reject_payload(browser.connection_id)
                return
            self._hold(browser.code, protocol.MAC_PEER, message, sender=browser.connection_id)
            return
        delivery = self.connections.post(browser.mac_connection_id, message)
        if delivery is Delivery.DELIVERED:
            count(Metric.FRAMES_RELAYED)
        elif delivery is Delivery.TOO_LARGE:
            self._reject_payload(browser.connection_id)
        elif browser.resumable:
            self.mac_went_away(browser.code, browser.mac_connection_id)
            self._hold(browser.code, protocol.MAC_PEER, message, sender=browser.connection_id)
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
        for browser in browsers:
            if browser.away:
                self._hold(mac.code, browser.peer, message, sender=mac.connection_id)
        browsers = [b for b in browsers if not b.away]
        deliveries = self.connections.post_many({b.connection_id: message for b in browsers})
        delivered = sum(1 for d in deliveries.values() if d is Delivery.DELIVERED)
        if delivered:
            count(Metric.FRAMES_RELAYED, delivered)
        for browser in browsers:
            if deliveries[browser.connection_id] is Delivery.GONE:
                if mac.resumable:
                    self.browser_went_away(browser.connection_in(mac))
                    self._hold(mac.code, browser.peer, message, sender=mac.connection_id)
                else:
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
        removed = self.store.remove_browser(browser.connection_in(mac), ban_address=browser.address)
        if removed:
            logger.info("browser kicked", extra={"peer": browser.peer})
            self.connections.post(browser.connection_id, protocol.kicked())
        self.reply(connection_id, protocol.peer_left(browser.peer))

    def admit(self, connection_id: str, request: protocol.AdmitRequest) -> None:
        found = self._mac_and_browser(connection_id, request.peer)
        if found is None:
            return
        mac, browser = found
        if not browser.admitted and not self.store.admit_browser(mac.code, browser):
            self.reply_error(connection_id, ErrorCode.UNKNOWN_PEER)  # it left meanwhile
            return
        logger.info("browser admitted", extra={"peer": browser.peer})
        welcome = protocol.authenticated(mac.code, browser.peer)
        if browser.away:
            self._hold(mac.code, browser.peer, welcome, sender=connection_id)
        elif self.connections.post(browser.connection_id, welcome) is Delivery.GONE:
            if not mac.resumable:
                self.remove_browser(browser.connection_in(mac))
                return
            self.browser_went_away(browser.connection_in(mac))
            self._hold(mac.code, browser.peer, welcome, sender=connection_id)
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
            if connection.resumable:
                self.mac_went_away(connection.code, connection_id)
            else:
                self.end_session(connection.code, connection_id)
        elif connection.resumable:
            self.browser_went_away(connection)
        else:
            self.remove_browser(connection)

    def end_session(self, code: str, mac_connection_id: str, spare: str | None = None) -> bool:
        """End the session and tell its browsers, except `spare` (which gets its own answer)."""
        ended = self.store.remove_session(code, mac_connection_id)
        if ended is None:
            return False
        logger.info("session ended", extra={"code": protocol.redact_code(code)})
        self.connections.post_many(
            {
                b.connection_id: protocol.session_closed()
                for b in ended.browsers
                if b.connection_id != spare and not b.away
            }
        )
        return True

    def expire_session(self, expired: ExpiredSession) -> None:
        """DynamoDB's TTL removed this session: its mac-client never said goodbye."""
        ended = self.store.release_expired_session(expired)
        if ended is None:
            return
        logger.info("session expired", extra={"code": protocol.redact_code(expired.code)})
        self.connections.post_many({b.connection_id: protocol.session_closed() for b in ended.browsers if not b.away})
        self.store.forget_connection(expired.mac_connection_id)
        self.connections.close(expired.mac_connection_id)

    def expire_place(self, expired: ExpiredPlace) -> None:
        """DynamoDB's TTL removed a browser's place before its session's item: the
        session's clean-up cannot find this browser any more, so it is told here."""
        if self.store.release_expired_place(expired):
            logger.info("browser's place expired", extra={"peer": expired.peer})
            self.connections.post(expired.connection_id, protocol.session_closed())

    def remove_browser(self, browser: BrowserConnection) -> None:
        if self.store.remove_browser(browser):
            self._tell_mac_it_left(browser)

    def _tell_mac_it_left(self, browser: BrowserConnection) -> None:
        if not browser.mac_away:  # an away mac-client learns who is left from `resumed`
            self._tell_mac(browser, protocol.peer_left(browser.peer))

    # ---- resumable sessions ----------------------------------------------------

    def mac_went_away(self, code: str, mac_connection_id: str) -> None:
        """The mac-client of a resumable session dropped: its browsers hear peer_away and
        its session waits ResumeGraceSeconds for it."""
        # The timer first: if it fires for a mac-client that never was marked away (the
        # mark failed, or it resumed), it finds nothing to do; the other order could leave
        # an away session with no timer.
        self.grace_timer.start(Absence(code, protocol.MAC_PEER, mac_connection_id))
        browsers = self.store.mark_mac_away(code, mac_connection_id)
        if browsers is None:
            return
        logger.info("mac-client away", extra={"code": protocol.redact_code(code)})
        self.connections.post_many({b.connection_id: protocol.peer_away(protocol.MAC_PEER) for b in browsers})

    def browser_went_away(self, browser: BrowserConnection) -> None:
        self.grace_timer.start(Absence(browser.code, browser.peer, browser.connection_id))
        if not self.store.mark_browser_away(browser):
            return
        logger.info("browser away", extra={"peer": browser.peer})
        if not browser.mac_away:
            self._tell_mac(browser, protocol.peer_away(browser.peer))

    def _tell_mac(self, browser: BrowserConnection, message: protocol.Message) -> None:
        """A notice about a browser to its mac-client. A mac-client found gone (410) is
        away in a resumable session; otherwise its session ends."""
        if self.reply(browser.mac_connection_id, message) is not Delivery.GONE:
            return
        if browser.resumable:
            self.mac_went_away(browser.code, browser.mac_connection_id)
        else:
            self.end_session(browser.code, browser.mac_connection_id)

    def _hold(self, code: str, holder: str, message: protocol.Message, sender: str) -> None:
        """Keep a message for an away holder; if it is back, deliver it where it is now."""
        for _ in range(2):
            try:
                self.store.hold_message(code, holder, message)
                count(Metric.FRAMES_HELD)
                return
            except HoldRefused:
                self.reply_error(sender, ErrorCode.PEER_AWAY)
                return
            except NotAway:
                pass
            # It resumed (or left) between our read and the hold: look it up once more.
            present, target = self._holder_connection(code, holder)
            if not present:
                continue  # away again: hold it for the next resume
            if target is None:
                self.reply_error(sender, ErrorCode.PEER_GONE)
            elif self.connections.post(target, message) is Delivery.GONE:
                self.reply_error(sender, ErrorCode.PEER_AWAY)
            return
        self.reply_error(sender, ErrorCode.PEER_AWAY)

    def _holder_connection(self, code: str, holder: str) -> tuple[bool, str | None]:
        """(present, its connection): (False, None) while away, (True, None) once gone."""
        session = self.store.validate_session_code(code)
        if session is None:
            return True, None
        if holder == protocol.MAC_PEER:
            return (False, None) if session.mac_away else (True, session.mac_connection_id)
        browser = self.store.get_browser(code, session.mac_connection_id, holder)
        if browser is None:
            return True, None
        return (False, None) if browser.away else (True, browser.connection_id)

    def resume(self, connection_id: str, request: protocol.ResumeRequest, source_ip: str) -> None:
        """Take a place in a resumable session back on this (fresh) connection."""
        # Claim, then look, as auth does: a token is looked up only after an attempt was
        # claimed against both limits; a resume that succeeds gives the address's share back.
        claim = self._claim(connection_id, source_ip)
        if claim is None:
            return
        presented = resume_tokens.read(request.token)
        if presented is None:
            self.attempt_failed(connection_id, source_ip, error=ErrorCode.INVALID_TOKEN)
            return
        issued = resume_tokens.issue(presented.code, presented.holder)
        resumption = Resumption(
            presented.code, presented.holder, presented.token_hash, issued.token_hash, connection_id, claim
        )
        try:
            if presented.for_mac:
                mac = self.store.resume_mac(resumption)
            else:
                browser = self.store.resume_browser(resumption)
        except InvalidToken:
            self.attempt_failed(connection_id, source_ip, error=ErrorCode.INVALID_TOKEN)
            return
        except AlreadyBound:
            self.reply_error(connection_id, ErrorCode.ALREADY_BOUND)
            return
        count(Metric.SESSIONS_RESUMED)
        if presented.for_mac:
            self._mac_resumed(mac, issued.token)
        else:
            self._browser_resumed(browser, issued.token)

    def _mac_resumed(self, resumed: ResumedMac, token: str) -> None:
        session = resumed.session
        connection_id = session.mac_connection_id
        logger.info("mac-client resumed", extra={"code": protocol.redact_code(session.code)})
        if not resumed.was_away:
            self.connections.close(resumed.old_connection_id)  # superseded; its $disconnect finds nothing
        peers = [{"peer": b.peer, "state": _state(b)} for b in resumed.browsers]
        answer = protocol.resumed(Role.MAC.value, session.code, peers, token)
        if self.reply(connection_id, answer) is Delivery.GONE or not self._deliver_held(
            session.code, protocol.MAC_PEER, session.created_at, connection_id
        ):
            self.mac_went_away(session.code, connection_id)
            return
        present = [b for b in resumed.browsers if not b.away]
        self.connections.post_many({b.connection_id: protocol.peer_back(protocol.MAC_PEER) for b in present})

    def _browser_resumed(self, resumed: ResumedBrowser, token: str) -> None:
        browser = resumed.connection
        logger.info("browser resumed", extra={"peer": browser.peer})
        if not resumed.was_away:
            self.connections.close(resumed.old_connection_id)
        session = self.store.validate_session_code(browser.code)
        created_at = session.created_at if session else 0
        mac_state = protocol.PeerState.AWAY if browser.mac_away else protocol.PeerState.PRESENT
        answer = protocol.resumed(
            Role.BROWSER.value,
            browser.code,
            [{"peer": protocol.MAC_PEER, "state": mac_state.value}],
            token,
            browser.peer,
        )
        if self.reply(browser.connection_id, answer) is Delivery.GONE or not self._deliver_held(
            browser.code, browser.peer, created_at, browser.connection_id
        ):
            self.browser_went_away(browser)
            return
        if not browser.admitted:
            self.reply(browser.connection_id, protocol.pending())
        if not browser.mac_away:
            self._tell_mac(browser, protocol.peer_back(browser.peer))

    def _deliver_held(self, code: str, holder: str, created_at: int, connection_id: str) -> bool:
        """Post what was held for this holder, in order; each is forgotten once posted.
        False if the connection dropped again (what is left stays held)."""
        delivered: list[int] = []
        try:
            for held in self.store.held_messages(code, holder, created_at):
                if self.connections.post(connection_id, held.message) is Delivery.GONE:
                    return False
                delivered.append(held.sequence)
        finally:
            if delivered:
                self.store.drop_held(code, holder, delivered)
        return True

    def end(self, connection_id: str, request: protocol.EndRequest) -> None:
        """The mac-client's goodbye: the session ends now, for everyone."""
        connection = self.store.get_connection(connection_id)
        if not isinstance(connection, MacConnection):
            code = ErrorCode.NOT_MAC if isinstance(connection, BrowserConnection) else ErrorCode.NOT_BOUND
            self.reply_error(connection_id, code)
            return
        self.end_session(connection.code, connection_id)
        self.reply(connection_id, protocol.ended())

    def leave(self, connection_id: str, request: protocol.LeaveRequest) -> None:
        """A browser's goodbye: it leaves the session now."""
        connection = self.store.get_connection(connection_id)
        if isinstance(connection, MacConnection):
            self.reply(
                connection_id,
                protocol.error(
                    ErrorCode.BAD_REQUEST, "leave is for browsers; the mac-client ends its session with end."
                ),
            )
            return
        if not isinstance(connection, BrowserConnection):
            self.reply_error(connection_id, ErrorCode.NOT_BOUND)
            return
        removed = self.store.remove_browser(connection)
        if removed:
            logger.info("browser left", extra={"peer": connection.peer})
        self.reply(connection_id, protocol.left())  # a repeated leave is answered the same
        if removed:
            self._tell_mac_it_left(connection)

    def grace_expired(self, absence: Absence) -> None:
        """The grace timer fired: if the holder is still away on that same connection,
        its place goes (a mac-client's session ends; a browser is removed)."""
        session = self.store.validate_session_code(absence.code)
        if session is None:
            return
        if absence.holder == protocol.MAC_PEER:
            still_away = session.mac_away and session.mac_connection_id == absence.connection_id
            if still_away and self.end_session(absence.code, absence.connection_id):
                count(Metric.GRACE_EXPIRIES)
            return
        browser = self.store.get_browser(absence.code, session.mac_connection_id, absence.holder)
        if browser is None or not browser.away or browser.connection_id != absence.connection_id:
            return
        gone = BrowserConnection(
            connection_id=browser.connection_id,
            code=absence.code,
            peer=browser.peer,
            mac_connection_id=session.mac_connection_id,
            admitted=browser.admitted,
            resumable=True,
            mac_away=session.mac_away,
        )
        count(Metric.GRACE_EXPIRIES)
        self.remove_browser(gone)


def _state(browser: Browser) -> str:
    if browser.away:
        return protocol.PeerState.AWAY.value
    return (protocol.PeerState.PRESENT if browser.admitted else protocol.PeerState.PENDING).value
