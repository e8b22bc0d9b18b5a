"use strict";

// The protocol facts this page repeats from layers/relay/relay/protocol.py, in ONE
// block. tests/clients/test_browser_protocol.py parses the JSON between the markers
// and checks it against relay.protocol, so it must stay strict JSON.
const PROTOCOL = Object.freeze(/* PROTOCOL-BEGIN */ {
  "version": 1,
  "codeAlphabet": "ABCDEFGHJKMNPQRSTUVWXYZ23456789",
  "codeLength": 6,
  "codeSeparators": " -",
  "excludedCharacters": "0O1IL",
  "maxFrameBytes": 32768,
  "idleTimeoutSeconds": 600,
  "keepaliveSeconds": 540,
  "actions": ["auth", "send", "ping", "resume", "leave"],
  "messageTypes": [
    "authenticated",
    "pending",
    "frame",
    "pong",
    "kicked",
    "session_closed",
    "error",
    "resumed",
    "peer_away",
    "peer_back",
    "left",
    "ended"
  ],
  "errorMessages": {
    "bad_request": "The relay could not understand that message.",
    "unknown_action": "The relay does not know that request. Reload the page and try again.",
    "invalid_code": "That code does not match an open session. Check the code on your Mac and try again.",
    "already_bound": "This page is already paired. Leave the session before entering another code.",
    "not_bound": "Pair with a code before sending messages.",
    "unknown_peer": "That browser is no longer in the session.",
    "session_full": "This session already has as many browsers as it allows. Close one, or ask for a new code.",
    "too_many_attempts": "Too many wrong codes. The relay closed the connection; check the code on your Mac, then try again.",
    "payload_too_large": "That message is too large to send.",
    "peer_gone": "Your Mac has disconnected.",
    "internal_error": "The relay had a problem. Please try again.",
    "rate_limited": "Too many failed attempts from your network. Wait a few minutes, then try again.",
    "not_admitted": "Your Mac has not let this browser in yet. Wait for it to accept you.",
    "not_mac": "Only the Mac that opened the session can do that.",
    "banned": "Your Mac removed this network from the session, so this code no longer works here. Ask the person at the Mac.",
    "invalid_token": "This pairing has ended (it could not be resumed). Enter the code from your Mac to pair again.",
    "peer_away": "Your Mac is reconnecting and no more messages can be held for it. Wait until it is back, then send again."
  }
} /* PROTOCOL-END */);

// The end-to-end layer's facts, repeated from clients/relay_mac/e2e.py: strict JSON,
// checked by tests/clients/test_browser_e2e_crypto.py against clients/e2e-vectors.json
// (which test_e2e_vectors.py checks against the Python module).
const E2E = Object.freeze(/* E2E-BEGIN */ {
  "layer": "pairing-relay-e2e/1",
  "version": 1,
  "macPeer": "mac",
  "replayWindow": 64,
  "maxCounter": 9007199254740991,
  "sasDigits": 6,
  "sasBytes": 8,
  "labels": {
    "browserToMac": "pairing-relay-e2e/1 browser->mac",
    "macToBrowser": "pairing-relay-e2e/1 mac->browser",
    "sas": "pairing-relay-e2e/1 sas"
  },
  "reasons": [
    "malformed",
    "unsupported_version",
    "truncated",
    "tampered",
    "replayed",
    "too_old",
    "no_keys",
    "not_encrypted",
    "bad_handshake"
  ]
} /* E2E-END */);

// Situations the page reports that are not relay error codes.
const UI_MESSAGES = Object.freeze({
  sessionClosed: "Your Mac closed the session. Ask for a new code to pair again.",
  kicked: "Your Mac removed this browser from the session.",
  waiting: "Code accepted. Waiting for your Mac to let this browser in\u2026",
  connectionLost: "Lost the connection to the relay. Check your network, then enter the code again.",
  relayUnreachable: "Could not reach the relay at {url}. Check the relay URL and that the relay is running.",
  relayUrlInvalid: "Enter the relay URL, starting with ws:// or wss://.",
  codeIncomplete: "A code has {length} characters; this one has {count}.",
  codeExcluded: "\u201C{char}\u201D is never used in codes (they leave out 0, O, 1, I and L).",
  codeNotAllowed: "\u201C{char}\u201D cannot be part of a code.",
  codeTooLong: "A code has only {length} characters.",
  messageTooLarge: "That message is too large to send.",
  unexpectedReply: "The relay sent something this page does not understand.",
  e2eSettingUp: "Setting up end-to-end encryption\u2026",
  e2eEncrypted: "End-to-end encrypted. Check that your Mac shows the same number: {sas}",
  e2eUnsupported: "Not encrypted: this browser cannot do X25519 key agreement. Update it to encrypt end to end.",
  e2eNoAnswer: "Not encrypted: your Mac did not answer the encryption handshake (it may not support it).",
  e2eDeclined: "Not encrypted: your Mac has end-to-end encryption turned off.",
  e2eRekey: "Your Mac asked for a new key agreement. Compare the new number.",
  e2eRejected: "A message was rejected and not shown: {reason}.",
  e2eTooLarge: "That message is too large to send once encrypted.",
  macAway: "Your Mac is reconnecting\u2026 What you send meanwhile is kept for it.",
  macBack: "Your Mac is back.",
  resuming: "Lost the connection to the relay. Reconnecting to the same session\u2026",
  resumed: "Reconnected: still paired with session {code}.",
  resumingSaved: "Reconnecting to session {code}\u2026",
  left: "You left the session.",
});

// Resumable sessions (issue 11): after a drop the page reconnects with this backoff
// (each delay drawn from the upper half of its step) and sends `resume`; the token lives
// in sessionStorage so that reloading the tab keeps the pairing, and dies with the tab.
const RESUME_BACKOFF_INITIAL_MS = 500;
const RESUME_BACKOFF_MAX_MS = 30000;
const RESUME_STORAGE_KEY = "pairing-relay.resume";
// How long "Leave session" waits for the relay's `left` before closing anyway.
const LEAVE_TIMEOUT_MS = 2000;

// Why a received e2e message was rejected, one entry per E2E.reasons.
const E2E_REASON_TEXT = Object.freeze({
  malformed: "not a well-formed encrypted message",
  unsupported_version: "an encryption version this page does not know",
  truncated: "the ciphertext was cut short",
  tampered: "it failed authentication (altered in transit, or not from your Mac)",
  replayed: "a replay of a message already received",
  too_old: "too far out of order",
  no_keys: "encrypted, but this page has no key agreement with your Mac",
  not_encrypted: "not encrypted, although encryption was set up",
  bad_handshake: "a handshake message that does not fit the handshake in progress",
});

// How long the page waits for the Mac's answer to its commit before it says "not encrypted".
const E2E_WAIT_MS = 5000;

const DEFAULT_LOCAL_RELAY = "ws://127.0.0.1:3001";
const LOCAL_HOSTS = new Set(["127.0.0.1", "localhost", "[::1]", "::1"]);

const elements = {
  status: document.getElementById("status"),
  statusText: document.getElementById("status-text"),
  pairForm: document.getElementById("pair-form"),
  code: document.getElementById("code"),
  codeFeedback: document.getElementById("code-feedback"),
  relayUrl: document.getElementById("relay-url"),
  pairButton: document.getElementById("pair-button"),
  leaveButton: document.getElementById("leave-button"),
  alert: document.getElementById("alert"),
  log: document.getElementById("log"),
  sendForm: document.getElementById("send-form"),
  message: document.getElementById("message"),
  sendButton: document.getElementById("send-button"),
  e2eStatus: document.getElementById("e2e-status"),
  e2eText: document.getElementById("e2e-text"),
  sas: document.getElementById("sas"),
};

const STATUS_TEXT = {
  idle: "Not paired",
  connecting: "Connecting to the relay\u2026",
  checking: "Checking the code\u2026",
  waiting: "Waiting for your Mac\u2026",
  paired: "Paired",
  away: "Mac reconnecting\u2026",
  resuming: "Reconnecting\u2026",
  closed: "Session closed",
  lost: "Connection lost",
  blocked: "Too many attempts",
};

const state = {
  socket: null,
  socketUrl: "",
  // What a close of the current socket means; set before the page closes it on purpose.
  closeExpected: false,
  phase: "idle",
  pendingCode: "",
  pairedCode: "",
  peer: "",
  keepaliveTimer: 0,
  // The end-to-end link with the Mac: see e2eReset().
  e2e: null,
  // Resumable sessions: the token that resumes this browser, the reconnect timer and
  // how many reconnects failed in a row; whether we wait for admission.
  resumeToken: "",
  resumeTimer: 0,
  resumeFailures: 0,
  admitted: true,
  leaveTimer: 0,
};

function fill(template, values) {
  return template.replace(/\{(\w+)\}/g, (whole, key) => (key in values ? String(values[key]) : whole));
}

// ---- code entry --------------------------------------------------------------

function normaliseCode(raw) {
  let code = "";
  for (const char of raw.trim().toUpperCase()) {
    if (!PROTOCOL.codeSeparators.includes(char)) {
      code += char;
    }
  }
  return code;
}

function spacedCode(code) {
  const half = Math.floor(code.length / 2);
  return code.length === PROTOCOL.codeLength ? `${code.slice(0, half)} ${code.slice(half)}` : code;
}

// Keeps only what can be part of a code, upper-cased, and says why anything was dropped.
function filterCodeInput(raw) {
  let kept = "";
  let count = 0;
  let problem = "";
  for (const typed of raw) {
    const char = typed.toUpperCase();
    if (PROTOCOL.codeSeparators.includes(char)) {
      kept += char;
    } else if (PROTOCOL.codeAlphabet.includes(char) && char.length === 1) {
      if (count < PROTOCOL.codeLength) {
        kept += char;
        count += 1;
      } else {
        problem = fill(UI_MESSAGES.codeTooLong, { length: PROTOCOL.codeLength });
      }
    } else if (PROTOCOL.excludedCharacters.includes(char)) {
      problem = fill(UI_MESSAGES.codeExcluded, { char });
    } else {
      problem = fill(UI_MESSAGES.codeNotAllowed, { char: typed });
    }
  }
  return { kept, count, problem };
}

function setCodeFeedback(text) {
  elements.codeFeedback.textContent = text;
  elements.code.setAttribute("aria-invalid", text ? "true" : "false");
}

let codeCharactersBefore = 0;

function onCodeInput() {
  const input = elements.code;
  const raw = input.value;
  const caret = input.selectionStart ?? raw.length;
  const { kept, count, problem } = filterCodeInput(raw);
  if (kept !== raw) {
    // Put the caret where it was, less the characters dropped before it.
    const keptBeforeCaret = filterCodeInput(raw.slice(0, caret)).kept.length;
    input.value = kept;
    input.setSelectionRange(keptBeforeCaret, keptBeforeCaret);
  }
  setCodeFeedback(problem);
  const completed = count === PROTOCOL.codeLength && codeCharactersBefore < PROTOCOL.codeLength;
  codeCharactersBefore = count;
  // Submitting on the last character saves a key press; only when it was just typed,
  // so that editing a complete code does not fire again.
  if (completed && !problem && canPair()) {
    submitCode();
  }
}

function canPair() {
  return !["paired", "away", "resuming", "checking", "connecting", "waiting"].includes(state.phase);
}

// "paired" and "away" (the Mac is reconnecting) are both inside the session.
function inSession(phase = state.phase) {
  return phase === "paired" || phase === "away";
}

// ---- relay connection ---------------------------------------------------------

function relayUrl() {
  return elements.relayUrl.value.trim();
}

function isWebSocketUrl(text) {
  try {
    const url = new URL(text);
    return url.protocol === "ws:" || url.protocol === "wss:";
  } catch {
    return false;
  }
}

function send(message) {
  if (!state.socket || state.socket.readyState !== WebSocket.OPEN) {
    return false;
  }
  state.socket.send(JSON.stringify(message));
  return true;
}

function submitCode() {
  hideAlert();
  const code = normaliseCode(elements.code.value);
  if (code.length !== PROTOCOL.codeLength) {
    setCodeFeedback(fill(UI_MESSAGES.codeIncomplete, { length: PROTOCOL.codeLength, count: code.length }));
    elements.code.focus();
    return;
  }
  const url = relayUrl();
  if (!isWebSocketUrl(url)) {
    showAlert(UI_MESSAGES.relayUrlInvalid);
    elements.relayUrl.focus();
    return;
  }
  state.pendingCode = code;
  const socket = state.socket;
  if (socket && socket.readyState === WebSocket.OPEN && state.socketUrl === url) {
    // A wrong code leaves the connection open: try again on it (the relay counts attempts per connection).
    setPhase("checking");
    send({ action: "auth", code });
    return;
  }
  openSocket(url, () => {
    setPhase("checking");
    send({ action: "auth", code: state.pendingCode });
  });
}

// ---- resumable sessions --------------------------------------------------------

function saveResume() {
  try {
    const saved = { relay: state.socketUrl, token: state.resumeToken, code: state.pairedCode || state.pendingCode, peer: state.peer, admitted: state.admitted };
    window.sessionStorage.setItem(RESUME_STORAGE_KEY, JSON.stringify(saved));
  } catch {
    // Storage off (a privacy mode): the pairing then does not survive a reload, nothing worse.
  }
}

function loadResume() {
  try {
    const saved = JSON.parse(window.sessionStorage.getItem(RESUME_STORAGE_KEY) || "null");
    if (saved && typeof saved.token === "string" && saved.token && isWebSocketUrl(saved.relay)) {
      return saved;
    }
  } catch {
    // unreadable: start afresh
  }
  return null;
}

function forgetResume() {
  state.resumeToken = "";
  state.resumeFailures = 0;
  window.clearTimeout(state.resumeTimer);
  state.resumeTimer = 0;
  try {
    window.sessionStorage.removeItem(RESUME_STORAGE_KEY);
  } catch {
    // nothing stored
  }
}

function keepToken(message) {
  if (typeof message.resume_token === "string" && message.resume_token) {
    state.resumeToken = message.resume_token;
    saveResume();
  }
}

function resumeOn(url) {
  openSocket(url, () => send({ action: "resume", token: state.resumeToken }), "resuming");
}

function scheduleResume(url) {
  window.clearTimeout(state.resumeTimer);
  const step = Math.min(RESUME_BACKOFF_MAX_MS, RESUME_BACKOFF_INITIAL_MS * 2 ** state.resumeFailures);
  const delay = step / 2 + (Math.random() * step) / 2;
  state.resumeFailures += 1;
  setPhase("resuming");
  state.resumeTimer = window.setTimeout(() => {
    state.resumeTimer = 0;
    if (state.resumeToken) {
      resumeOn(url);
    }
  }, delay);
}

function onResumed(message) {
  const link = state.e2e;
  state.resumeFailures = 0;
  state.pairedCode = String(message.code || state.pairedCode);
  state.peer = String(message.peer || state.peer);
  keepToken(message);
  hideAlert();
  if (!state.admitted) {
    setPhase("waiting");
    showNotice(UI_MESSAGES.waiting);
    return;
  }
  // `resumed` lists the Mac's state: a page that comes back while its Mac is away gets no
  // `peer_away`, only the `peer_back` that ends it.
  const peers = Array.isArray(message.peers) ? message.peers : [];
  const macAway = peers.some((entry) => entry && entry.peer === E2E.macPeer && entry.state === "away");
  setPhase(macAway ? "away" : "paired");
  logSystem(fill(UI_MESSAGES.resumed, { code: spacedCode(state.pairedCode) }));
  if (macAway) {
    logSystem(UI_MESSAGES.macAway);
  }
  startKeepalive();
  // A new key agreement; the keys of the last one (if this page still has them: not after a
  // reload) open the frames the relay held for us, which arrive right after `resumed`.
  startE2e(link ? link.channel || link.previous : null);
}

function onPeerAway(peer) {
  if (peer !== E2E.macPeer || !inSession()) {
    return;
  }
  setPhase("away");
  logSystem(UI_MESSAGES.macAway);
}

function onPeerBack(peer) {
  if (peer !== E2E.macPeer || state.phase !== "away") {
    return;
  }
  // The Mac asks for a new key agreement (`rekey`) once it is back.
  setPhase("paired");
  logSystem(UI_MESSAGES.macBack);
}

function openSocket(url, onOpen, phase = "connecting") {
  closeSocket();
  setPhase(phase);
  let socket;
  try {
    socket = new WebSocket(url);
  } catch {
    setPhase("idle");
    showAlert(UI_MESSAGES.relayUrlInvalid);
    return;
  }
  state.socket = socket;
  state.socketUrl = url;
  state.closeExpected = false;
  let opened = false;
  socket.addEventListener("open", () => {
    opened = true;
    onOpen();
  });
  socket.addEventListener("message", (event) => onRelayMessage(event.data));
  socket.addEventListener("close", () => {
    if (state.socket !== socket) {
      return; // an old socket the page already replaced
    }
    onSocketClosed(opened);
  });
}

function closeSocket() {
  stopKeepalive();
  const socket = state.socket;
  state.socket = null;
  state.socketUrl = "";
  if (socket && socket.readyState <= WebSocket.OPEN) {
    socket.close(1000, "page closed the connection");
  }
}

function onSocketClosed(opened) {
  stopKeepalive();
  const expected = state.closeExpected;
  const phase = state.phase;
  const url = state.socketUrl;
  state.socket = null;
  state.socketUrl = "";
  if (!expected && state.resumeToken && (inSession(phase) || phase === "waiting" || phase === "resuming")) {
    // A resumable session: the relay keeps our seat for a grace period. The keys stay
    // too, for the frames the relay holds for us meanwhile.
    if (phase !== "resuming") {
      showNotice(UI_MESSAGES.resuming);
      logSystem("Connection to the relay lost; reconnecting.");
    }
    scheduleResume(url);
    return;
  }
  e2eReset();
  if (expected) {
    return;
  }
  if (!opened) {
    setPhase("lost");
    showAlert(fill(UI_MESSAGES.relayUnreachable, { url: relayUrl() }));
  } else if (phase !== "idle" || state.pairedCode) {
    setPhase("lost");
    showAlert(UI_MESSAGES.connectionLost);
    logSystem("Connection to the relay lost.");
  }
  state.pairedCode = "";
}

function onRelayMessage(text) {
  let message;
  try {
    message = JSON.parse(text);
  } catch {
    message = null;
  }
  if (!message || typeof message !== "object" || typeof message.type !== "string") {
    showAlert(UI_MESSAGES.unexpectedReply);
    return;
  }
  handleRelayMessage(message);
}

function handleRelayMessage(message) {
  switch (message.type) {
    case "authenticated":
      state.admitted = true;
      state.pairedCode = String(message.code || state.pendingCode);
      state.peer = String(message.peer || "");
      keepToken(message);
      onPaired(state.pairedCode, state.peer);
      break;
    case "pending":
      state.admitted = false;
      keepToken(message);
      setPhase("waiting");
      showNotice(UI_MESSAGES.waiting);
      break;
    case "resumed":
      onResumed(message);
      break;
    case "peer_away":
      onPeerAway(String(message.peer || ""));
      break;
    case "peer_back":
      onPeerBack(String(message.peer || ""));
      break;
    case "left":
      finishLeaving();
      break;
    case "frame":
      // One at a time, in arrival order: opening a frame is asynchronous (WebCrypto).
      state.frameQueue = (state.frameQueue || Promise.resolve()).then(() => onFrame(message.data));
      break;
    case "kicked":
      endSession(UI_MESSAGES.kicked, "Your Mac removed this browser from the session.");
      break;
    case "pong":
      break; // keepalive answered; nothing for the person to see
    case "session_closed":
    case "ended":
      endSession(UI_MESSAGES.sessionClosed, "The session was closed by your Mac.");
      break;
    case "error":
      showRelayError(String(message.error || ""), String(message.message || ""));
      break;
    default:
      break; // types a newer relay may add carry nothing this page needs
  }
}

function showRelayError(code, relayText) {
  const text = PROTOCOL.errorMessages[code] || relayText || PROTOCOL.errorMessages.internal_error;
  switch (code) {
    case "invalid_token":
      // The grace period ran out (or the session ended meanwhile): pair again with a code.
      forgetResume();
      e2eReset();
      state.pairedCode = "";
      setPhase("idle");
      showAlert(text);
      logSystem("The session could not be resumed.");
      elements.code.focus();
      break;
    case "banned":
    case "invalid_code":
      setPhase("idle");
      // Marked invalid for assistive technology; the words are in the alert, once.
      elements.code.setAttribute("aria-invalid", "true");
      showAlert(text);
      elements.code.focus();
      elements.code.select();
      break;
    case "too_many_attempts":
    case "rate_limited":
      // The relay closes the connection next; that close is not a lost connection.
      state.closeExpected = true;
      setPhase("blocked");
      showAlert(text);
      break;
    case "session_full":
    case "already_bound":
      setPhase(state.pairedCode ? "paired" : "idle");
      showAlert(text);
      break;
    case "peer_gone":
    case "peer_away":
    case "not_admitted":
      showAlert(text);
      break;
    default:
      if (state.phase === "checking") {
        setPhase("idle");
      }
      showAlert(text);
  }
}

function onPaired(code, peer) {
  state.pairedCode = code;
  state.peer = peer;
  hideAlert();
  setCodeFeedback("");
  setPhase("paired");
  logSystem(`Paired with session ${spacedCode(code)}${peer ? ` as ${peer}` : ""}.`);
  startKeepalive();
  elements.message.focus();
  startE2e();
}

function endSession(alertText, logText) {
  forgetResume();
  e2eReset();
  state.closeExpected = true;
  state.pairedCode = "";
  closeSocket();
  setPhase("closed");
  showAlert(alertText);
  logSystem(logText);
  elements.code.value = "";
  codeCharactersBefore = 0;
}

// "Leave session": tell the relay (`leave`, answered by `left`) so that the Mac hears at
// once, then close. Without an answer within LEAVE_TIMEOUT_MS the page closes anyway.
function leaveSession() {
  forgetResume();
  e2eReset();
  stopKeepalive();
  state.closeExpected = true;
  state.pairedCode = "";
  setPhase("idle");
  hideAlert();
  logSystem(UI_MESSAGES.left);
  elements.code.focus();
  if (send({ action: "leave" })) {
    state.leaveTimer = window.setTimeout(finishLeaving, LEAVE_TIMEOUT_MS);
  } else {
    finishLeaving();
  }
}

function finishLeaving() {
  window.clearTimeout(state.leaveTimer);
  state.leaveTimer = 0;
  state.closeExpected = true;
  closeSocket();
}

// API Gateway drops a connection after ten idle minutes and does not count WebSocket
// pings, so the page sends an application ping while paired.
function startKeepalive() {
  stopKeepalive();
  state.keepaliveTimer = window.setInterval(() => send({ action: "ping" }), PROTOCOL.keepaliveSeconds * 1000);
}

function stopKeepalive() {
  if (state.keepaliveTimer) {
    window.clearInterval(state.keepaliveTimer);
    state.keepaliveTimer = 0;
  }
}

// ---- sending --------------------------------------------------------------------

function fitsInAFrame(message) {
  return new TextEncoder().encode(JSON.stringify(message)).length <= PROTOCOL.maxFrameBytes;
}

async function onSend(event) {
  event.preventDefault();
  const text = elements.message.value;
  const link = state.e2e;
  if (!text.trim() || !inSession() || !link || !canSendOn(link)) {
    return;
  }
  if (!fitsInAFrame({ action: "send", data: text })) {
    showAlert(UI_MESSAGES.messageTooLarge);
    return;
  }
  let data = text;
  if (link.status === "encrypted") {
    // Taken before the await: two quick sends never share a counter.
    const counter = link.channel.counter;
    link.channel.counter += 1;
    data = await sealEnvelope(link.channel.sendKey, counter, text);
    if (state.e2e !== link) {
      return; // the link changed while sealing (a new handshake, or the session ended)
    }
    if (!fitsInAFrame({ action: "send", data })) {
      showAlert(UI_MESSAGES.e2eTooLarge);
      return;
    }
  }
  if (send({ action: "send", data })) {
    logEntry("me", "You", text, link.status === "encrypted");
    elements.message.value = "";
  }
}

// ---- end-to-end encryption (docs/PROTOCOL.md, "End-to-end encryption") ---------------
//
// WebCrypto only: X25519, HKDF-SHA256, AES-256-GCM, SHA-256. The page starts the
// handshake once paired (commit), the Mac answers with its key, the page reveals its
// own; each side then derives one key per direction and the number both show.

class E2eError extends Error {
  constructor(reason) {
    super(E2E_REASON_TEXT[reason] || reason);
    this.reason = reason;
  }
}

function b64urlEncode(bytes) {
  let binary = "";
  for (const byte of new Uint8Array(bytes)) {
    binary += String.fromCharCode(byte);
  }
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// Strict: unpadded base64url only, and (when given) exactly `length` bytes.
function b64urlDecode(text, length) {
  if (typeof text !== "string" || !/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) {
    throw new E2eError("malformed");
  }
  let binary;
  try {
    binary = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4));
  } catch {
    throw new E2eError("malformed");
  }
  const bytes = Uint8Array.from(binary, (char) => char.charCodeAt(0));
  if (b64urlEncode(bytes) !== text || (length !== undefined && bytes.length !== length)) {
    throw new E2eError("malformed");
  }
  return bytes;
}

function concatBytes(parts) {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function equalBytes(a, b) {
  return a.length === b.length && a.every((byte, index) => byte === b[index]);
}

// Each field as a 2-byte big-endian length and its bytes: layer, code, mac peer, browser
// peer, browser key, mac key.
function transcriptBytes(code, macPeer, browserPeer, browserPublic, macPublic) {
  const encoder = new TextEncoder();
  const fields = [encoder.encode(E2E.layer), encoder.encode(code), encoder.encode(macPeer), encoder.encode(browserPeer), browserPublic, macPublic];
  return concatBytes(fields.flatMap((field) => [new Uint8Array([field.length >> 8, field.length & 0xff]), field]));
}

async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

async function hkdfBits(secretKey, salt, label, bytes) {
  const params = { name: "HKDF", hash: "SHA-256", salt, info: new TextEncoder().encode(label) };
  return new Uint8Array(await crypto.subtle.deriveBits(params, secretKey, bytes * 8));
}

function sasOf(bytes) {
  let number = 0n;
  for (const byte of bytes) {
    number = (number << 8n) | BigInt(byte);
  }
  return (number % 10n ** BigInt(E2E.sasDigits)).toString().padStart(E2E.sasDigits, "0");
}

function spacedSas(sas) {
  const half = Math.floor(sas.length / 2);
  return `${sas.slice(0, half)} ${sas.slice(half)}`;
}

// The shared secret, then HKDF-SHA256 with SHA-256(transcript) as salt: a key per
// direction and the number. Raw keys are returned for the test vectors only.
async function deriveSession(privateKey, macPublic, transcript) {
  let shared;
  try {
    const peerKey = await crypto.subtle.importKey("raw", macPublic, { name: "X25519" }, true, []);
    shared = await crypto.subtle.deriveBits({ name: "X25519", public: peerKey }, privateKey, 256);
  } catch {
    throw new E2eError("bad_handshake"); // e.g. a low-order point
  }
  const secretKey = await crypto.subtle.importKey("raw", shared, "HKDF", false, ["deriveBits"]);
  const salt = await sha256(transcript);
  const browserToMac = await hkdfBits(secretKey, salt, E2E.labels.browserToMac, 32);
  const macToBrowser = await hkdfBits(secretKey, salt, E2E.labels.macToBrowser, 32);
  const sas = sasOf(await hkdfBits(secretKey, salt, E2E.labels.sas, E2E.sasBytes));
  return { browserToMac, macToBrowser, sas };
}

async function aesKey(raw, usage) {
  return crypto.subtle.importKey("raw", raw, { name: "AES-GCM" }, false, [usage]);
}

function nonceOf(counter) {
  const nonce = new Uint8Array(12);
  new DataView(nonce.buffer).setBigUint64(4, BigInt(counter));
  return nonce;
}

async function sealEnvelope(key, counter, data) {
  return sealBytes(key, counter, new TextEncoder().encode(JSON.stringify(data)));
}

async function sealBytes(key, counter, plaintext) {
  if (!Number.isSafeInteger(counter) || counter < 0 || counter > E2E.maxCounter) {
    throw new Error("counter exhausted: make a new key agreement");
  }
  const sealed = await crypto.subtle.encrypt({ name: "AES-GCM", iv: nonceOf(counter) }, key, plaintext);
  return { e2e: E2E.version, n: counter, ct: b64urlEncode(sealed) };
}

// Accepts each counter once, and none more than E2E.replayWindow behind the highest.
class ReplayWindow {
  constructor() {
    this.highest = -1;
    this.seen = new Set();
  }

  check(counter) {
    if (counter <= this.highest - E2E.replayWindow) {
      throw new E2eError("too_old");
    }
    if (this.seen.has(counter)) {
      throw new E2eError("replayed");
    }
  }

  accept(counter) {
    this.seen.add(counter);
    if (counter > this.highest) {
      this.highest = counter;
      for (const old of this.seen) {
        if (old <= this.highest - E2E.replayWindow) {
          this.seen.delete(old);
        }
      }
    }
  }
}

function checkVersion(message) {
  if (!Number.isInteger(message.e2e)) {
    throw new E2eError("malformed");
  }
  if (message.e2e !== E2E.version) {
    throw new E2eError("unsupported_version");
  }
}

async function openEnvelope(key, window, envelope) {
  const members = envelope && typeof envelope === "object" && !Array.isArray(envelope) ? Object.keys(envelope).sort() : [];
  if (members.join(",") !== "ct,e2e,n") {
    throw new E2eError("malformed");
  }
  checkVersion(envelope);
  const counter = envelope.n;
  if (!Number.isSafeInteger(counter) || counter < 0 || counter > E2E.maxCounter) {
    throw new E2eError("malformed");
  }
  const sealed = b64urlDecode(envelope.ct);
  if (sealed.length < 16) {
    throw new E2eError("truncated");
  }
  window.check(counter); // before decrypting; recorded only after, so a forgery cannot move it
  let plaintext;
  try {
    plaintext = await crypto.subtle.decrypt({ name: "AES-GCM", iv: nonceOf(counter) }, key, sealed);
  } catch {
    throw new E2eError("tampered");
  }
  let data;
  try {
    data = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(plaintext));
  } catch {
    throw new E2eError("malformed");
  }
  window.accept(counter);
  return data;
}

function e2eKind(data) {
  if (!data || typeof data !== "object" || Array.isArray(data) || !("e2e" in data)) {
    return "plain";
  }
  return "hs" in data ? "handshake" : "sealed";
}

async function newHandshake() {
  const pair = await crypto.subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
  const publicBytes = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  return { privateKey: pair.privateKey, publicBytes, commit: await sha256(publicBytes) };
}

// The link: { status: "handshaking" | "encrypted" | "plain", handshake, channel, timer, note }.
function e2eReset() {
  if (state.e2e && state.e2e.timer) {
    window.clearTimeout(state.e2e.timer);
  }
  state.e2e = null;
  state.frameQueue = Promise.resolve();
}

function canSendOn(link) {
  return link.status === "encrypted" || link.status === "plain";
}

async function x25519Supported() {
  try {
    await crypto.subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
    return true;
  } catch {
    return false;
  }
}

// `previous`: the last agreement's channel, kept only to open frames sealed before this
// one (held by the relay while one side was away); dropped once the new keys exist.
async function startE2e(previous = null) {
  e2eReset();
  const link = { status: "handshaking", handshake: null, committed: false, channel: null, previous, timer: 0, note: "", heldPlain: [] };
  state.e2e = link;
  refreshPhase();
  if (!window.crypto || !crypto.subtle || !(await x25519Supported())) {
    settlePlain(link, UI_MESSAGES.e2eUnsupported);
    return;
  }
  const handshake = await newHandshake();
  if (state.e2e !== link) {
    return;
  }
  link.handshake = handshake;
  link.timer = window.setTimeout(() => settlePlain(link, UI_MESSAGES.e2eNoAnswer), E2E_WAIT_MS);
  link.committed = send({ action: "send", data: { e2e: E2E.version, hs: "commit", commit: b64urlEncode(handshake.commit) } });
}

function settlePlain(link, note) {
  if (state.e2e !== link || link.status !== "handshaking") {
    return;
  }
  window.clearTimeout(link.timer);
  link.status = "plain";
  link.note = note;
  logSystem(note);
  for (const data of link.heldPlain.splice(0)) {
    logEntry("mac", "Mac", data, false);
  }
  refreshPhase();
}

function rejectFrame(reason) {
  const text = fill(UI_MESSAGES.e2eRejected, { reason: E2E_REASON_TEXT[reason] || reason });
  const item = document.createElement("li");
  item.className = "entry entry-system entry-rejected";
  item.dataset.reason = reason;
  item.textContent = text;
  elements.log.append(item);
  elements.log.scrollTop = elements.log.scrollHeight;
}

async function onFrame(data) {
  const link = state.e2e;
  if (!link) {
    return; // not paired any more
  }
  try {
    const kind = e2eKind(data);
    if (kind === "plain") {
      if (link.status === "handshaking" && link.heldPlain.length < E2E.replayWindow) {
        // A Mac without the layer may already be talking: shown if the link ends up plain,
        // rejected if it ends up encrypted.
        link.heldPlain.push(data);
        return;
      }
      if (link.status !== "plain") {
        throw new E2eError("not_encrypted"); // anyone who runs the relay could have written it
      }
      logEntry("mac", "Mac", data, false);
    } else if (kind === "handshake") {
      await onHandshakeStep(link, data);
    } else {
      if (link.status !== "encrypted" && link.previous) {
        const opened = await openEnvelope(link.previous.receiveKey, link.previous.window, data);
        if (state.e2e === link) {
          logEntry("mac", "Mac", opened, true);
        }
        return;
      }
      if (link.status !== "encrypted") {
        throw new E2eError("no_keys");
      }
      const opened = await openEnvelope(link.channel.receiveKey, link.channel.window, data);
      if (state.e2e === link) {
        logEntry("mac", "Mac", opened, true);
      }
    }
  } catch (error) {
    // Anything unexpected is a rejection too: nothing unreadable is shown, and the
    // queue of frames goes on.
    rejectFrame(error instanceof E2eError ? error.reason : "malformed");
  }
}

async function onHandshakeStep(link, message) {
  checkVersion(message);
  if (message.hs === "key" && link.handshake) {
    const handshake = link.handshake;
    if (!equalBytes(b64urlDecode(message.commit, 32), handshake.commit)) {
      throw new E2eError("bad_handshake"); // an answer to an older commit
    }
    const macPublic = b64urlDecode(message.key, 32);
    const transcript = transcriptBytes(state.pairedCode, E2E.macPeer, state.peer, handshake.publicBytes, macPublic);
    const keys = await deriveSession(handshake.privateKey, macPublic, transcript);
    if (state.e2e !== link || link.handshake !== handshake) {
      return;
    }
    link.handshake = null;
    link.previous = null;
    window.clearTimeout(link.timer);
    link.channel = {
      sendKey: await aesKey(keys.browserToMac, "encrypt"),
      receiveKey: await aesKey(keys.macToBrowser, "decrypt"),
      counter: 0,
      window: new ReplayWindow(),
      sas: keys.sas,
    };
    send({ action: "send", data: { e2e: E2E.version, hs: "reveal", key: b64urlEncode(handshake.publicBytes) } });
    // A late answer upgrades a page that had given up waiting: from now on, encrypted.
    link.status = "encrypted";
    link.note = fill(UI_MESSAGES.e2eEncrypted, { sas: spacedSas(keys.sas) });
    logSystem(link.note);
    for (const _ of link.heldPlain.splice(0)) {
      rejectFrame("not_encrypted");
    }
    refreshPhase();
  } else if (message.hs === "decline" && link.status === "handshaking") {
    settlePlain(link, UI_MESSAGES.e2eDeclined);
  } else if (message.hs === "rekey") {
    if (link.status === "handshaking" && link.handshake && link.committed) {
      // Our own commit is on its way (we resumed too, or reloaded): the Mac's answer to it
      // is the fresh agreement it asks for. Starting over would leave that answer stale.
      return;
    }
    // The Mac lost its keys, or resumed: a fresh agreement. The old keys still open what
    // was sealed before it, until the new ones exist.
    logSystem(UI_MESSAGES.e2eRekey);
    await startE2e(link.channel || link.previous);
  } else {
    throw new E2eError("bad_handshake");
  }
}

function refreshPhase() {
  if (inSession()) {
    const focusWasLost = document.activeElement === document.body || document.activeElement === null;
    setPhase(state.phase);
    // onPaired could not focus the message box while it was disabled; now it can.
    if (focusWasLost && !elements.message.disabled) {
      elements.message.focus();
    }
  }
}

function showE2eStatus() {
  const link = inSession() ? state.e2e : null;
  elements.e2eStatus.hidden = !link;
  if (!link) {
    elements.e2eStatus.dataset.state = "none";
    elements.sas.textContent = "";
    return;
  }
  elements.e2eStatus.dataset.state = link.status;
  if (link.status === "encrypted") {
    elements.e2eText.textContent = "End-to-end encrypted. Your Mac should show the same number:";
    elements.sas.textContent = spacedSas(link.channel.sas);
  } else if (link.status === "plain") {
    elements.e2eText.textContent = link.note;
    elements.sas.textContent = "";
  } else {
    elements.e2eText.textContent = UI_MESSAGES.e2eSettingUp;
    elements.sas.textContent = "";
  }
}

// ---- presentation -----------------------------------------------------------------

function setPhase(phase) {
  state.phase = phase;
  elements.status.dataset.state = phase;
  // While the Mac is away the relay keeps what is sent for it, so sending stays open.
  const paired = inSession(phase);
  const canSend = paired && Boolean(state.e2e) && canSendOn(state.e2e);
  elements.statusText.textContent = paired
    ? `${STATUS_TEXT[phase]} \u00B7 session ${spacedCode(state.pairedCode)}`
    : STATUS_TEXT[phase];
  elements.message.disabled = !canSend;
  elements.sendButton.disabled = !canSend;
  elements.message.placeholder = canSend
    ? "Type a message and press Enter"
    : paired
      ? UI_MESSAGES.e2eSettingUp
      : "Pair first, then type a message";
  showE2eStatus();
  // While reconnecting or waiting for admission the person can still give up: Leave.
  const inAPairing = paired || phase === "resuming" || (phase === "waiting" && Boolean(state.resumeToken));
  elements.code.disabled = inAPairing;
  elements.relayUrl.disabled = inAPairing;
  elements.pairButton.disabled = !canPair();
  elements.pairButton.hidden = inAPairing;
  elements.leaveButton.hidden = !inAPairing;
  document.body.dataset.phase = phase;
}

function showAlert(text) {
  elements.alert.textContent = text;
  elements.alert.dataset.kind = "problem";
  elements.alert.hidden = false;
}

function showNotice(text) {
  elements.alert.textContent = text;
  elements.alert.dataset.kind = "notice";
  elements.alert.hidden = false;
}

function hideAlert() {
  elements.alert.textContent = "";
  elements.alert.hidden = true;
}

function displayText(data) {
  return typeof data === "string" ? data : JSON.stringify(data);
}

function logEntry(kind, who, data, encrypted) {
  const item = document.createElement("li");
  item.className = `entry entry-${kind}`;
  item.dataset.encrypted = encrypted ? "true" : "false";
  const label = document.createElement("span");
  label.className = "entry-who";
  label.textContent = who;
  const body = document.createElement("span");
  body.className = "entry-text";
  // textContent, never innerHTML: frames are whatever the other end sent.
  body.textContent = displayText(data);
  const time = document.createElement("time");
  const now = new Date();
  time.dateTime = now.toISOString();
  time.textContent = now.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  item.append(label, body);
  if (!encrypted) {
    const marker = document.createElement("span");
    marker.className = "entry-plain";
    marker.textContent = "not encrypted";
    item.append(marker);
  }
  item.append(time);
  elements.log.append(item);
  elements.log.scrollTop = elements.log.scrollHeight;
}

function logSystem(text) {
  const item = document.createElement("li");
  item.className = "entry entry-system";
  item.textContent = text;
  elements.log.append(item);
  elements.log.scrollTop = elements.log.scrollHeight;
}

// ---- start -----------------------------------------------------------------------

function initialRelayUrl(params) {
  const fromQuery = params.get("relay");
  if (fromQuery) {
    return fromQuery;
  }
  return LOCAL_HOSTS.has(window.location.hostname) ? DEFAULT_LOCAL_RELAY : "";
}

// relay-local serves this document beside the page, so a page it serves on any port
// finds its WebSocket URL without ?relay= (docs/LOCAL.md).
const LOCAL_ENDPOINTS_PATH = "/_relay-local/endpoints.json";

async function discoverLocalRelay(fallback) {
  try {
    const response = await fetch(LOCAL_ENDPOINTS_PATH, { cache: "no-store" });
    if (!response.ok) {
      return;
    }
    const endpoints = await response.json();
    const url = endpoints && endpoints.webSocketUrl;
    // Only while nobody has changed the field, and only a WebSocket URL.
    if (typeof url === "string" && /^wss?:\/\//.test(url) && elements.relayUrl.value === fallback) {
      elements.relayUrl.value = url;
    }
  } catch {
    // Not served by relay-local: keep the default.
  }
}

function start() {
  const params = new URLSearchParams(window.location.search);
  elements.relayUrl.value = initialRelayUrl(params);
  elements.code.addEventListener("input", onCodeInput);
  elements.pairForm.addEventListener("submit", (event) => {
    event.preventDefault();
    if (canPair()) {
      submitCode();
    }
  });
  elements.leaveButton.addEventListener("click", leaveSession);
  elements.sendForm.addEventListener("submit", onSend);
  setPhase("idle");
  window.addEventListener("pagehide", () => {
    // A reload (or leaving the page) is not a goodbye: the relay keeps the seat for its
    // grace period, and a reload resumes with the token in sessionStorage.
    state.closeExpected = true;
    closeSocket();
  });
  const saved = loadResume();
  if (saved) {
    elements.relayUrl.value = saved.relay;
    state.resumeToken = saved.token;
    state.pairedCode = String(saved.code || "");
    state.pendingCode = state.pairedCode;
    state.peer = String(saved.peer || "");
    state.admitted = saved.admitted !== false;
    logSystem(fill(UI_MESSAGES.resumingSaved, { code: spacedCode(state.pairedCode) }));
    resumeOn(saved.relay);
  } else if (!params.get("relay") && window.location.protocol.startsWith("http")) {
    discoverLocalRelay(elements.relayUrl.value);
  }
}

start();
