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
  "actions": ["auth", "send", "ping"],
  "messageTypes": ["authenticated", "pending", "frame", "pong", "kicked", "session_closed", "error"],
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
    "not_mac": "Only the Mac that opened the session can do that."
  }
} /* PROTOCOL-END */);

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
});

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
};

const STATUS_TEXT = {
  idle: "Not paired",
  connecting: "Connecting to the relay\u2026",
  checking: "Checking the code\u2026",
  waiting: "Waiting for your Mac\u2026",
  paired: "Paired",
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
  return !["paired", "checking", "connecting", "waiting"].includes(state.phase);
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
  openSocket(url);
}

function openSocket(url) {
  closeSocket();
  setPhase("connecting");
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
    setPhase("checking");
    send({ action: "auth", code: state.pendingCode });
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
  state.socket = null;
  state.socketUrl = "";
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
      onPaired(String(message.code || state.pendingCode), String(message.peer || ""));
      break;
    case "pending":
      setPhase("waiting");
      showNotice(UI_MESSAGES.waiting);
      break;
    case "frame":
      logEntry("mac", "Mac", message.data);
      break;
    case "kicked":
      endSession(UI_MESSAGES.kicked, "Your Mac removed this browser from the session.");
      break;
    case "pong":
      break; // keepalive answered; nothing for the person to see
    case "session_closed":
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
}

function endSession(alertText, logText) {
  state.closeExpected = true;
  state.pairedCode = "";
  closeSocket();
  setPhase("closed");
  showAlert(alertText);
  logSystem(logText);
  elements.code.value = "";
  codeCharactersBefore = 0;
}

function leaveSession() {
  state.closeExpected = true;
  state.pairedCode = "";
  closeSocket();
  setPhase("idle");
  hideAlert();
  logSystem("You left the session.");
  elements.code.focus();
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

function onSend(event) {
  event.preventDefault();
  const text = elements.message.value;
  if (!text.trim() || state.phase !== "paired") {
    return;
  }
  const wire = JSON.stringify({ action: "send", data: text });
  if (new TextEncoder().encode(wire).length > PROTOCOL.maxFrameBytes) {
    showAlert(UI_MESSAGES.messageTooLarge);
    return;
  }
  if (send({ action: "send", data: text })) {
    logEntry("me", "You", text);
    elements.message.value = "";
  }
}

// ---- presentation -----------------------------------------------------------------

function setPhase(phase) {
  state.phase = phase;
  elements.status.dataset.state = phase;
  const paired = phase === "paired";
  elements.statusText.textContent = paired
    ? `${STATUS_TEXT.paired} \u00B7 session ${spacedCode(state.pairedCode)}`
    : STATUS_TEXT[phase];
  elements.message.disabled = !paired;
  elements.sendButton.disabled = !paired;
  elements.message.placeholder = paired ? "Type a message and press Enter" : "Pair first, then type a message";
  elements.code.disabled = paired;
  elements.relayUrl.disabled = paired;
  elements.pairButton.disabled = !canPair();
  elements.pairButton.hidden = paired;
  elements.leaveButton.hidden = !paired;
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

function logEntry(kind, who, data) {
  const item = document.createElement("li");
  item.className = `entry entry-${kind}`;
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
  item.append(label, body, time);
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
    state.closeExpected = true;
    closeSocket();
  });
}

start();
