"""`relay-mac`: the reference mac-client at a terminal (or in a script with `--json`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence

from relay.protocol import IDLE_TIMEOUT_SECONDS

from relay_mac import events
from relay_mac.backoff import DEFAULT_INITIAL_SECONDS, DEFAULT_MAX_SECONDS, BackoffPolicy
from relay_mac.client import (
    DEFAULT_KEEPALIVE_SECONDS,
    DEFAULT_OPEN_TIMEOUT_SECONDS,
    DEFAULT_URL,
    ClientSettings,
    EventSink,
    MacClient,
    StartupError,
    new_client_id,
)
from relay_mac.render import HumanRenderer, JsonRenderer
from relay_mac.secure import DEFAULT_WAIT_SECONDS
from relay_mac.stdin_lines import stdin_lines

EXIT_OK = 0
EXIT_FAILED = 1


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def _keepalive_seconds(text: str) -> float:
    value = _positive_seconds(text)
    if value >= IDLE_TIMEOUT_SECONDS:
        raise argparse.ArgumentTypeError(
            f"must be under {IDLE_TIMEOUT_SECONDS} s, the relay's idle timeout, or the connection is dropped"
        )
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("cannot be negative")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay-mac",
        description=(
            "Reference mac-client of the pairing relay: registers, shows the session code, "
            "prints what browsers send and sends each line you type (to all browsers, or "
            "'@peer text' to one). Commands: /peers, /kick PEER, /admit PEER, /lock, /unlock. Frames are end-to-end "
            "encrypted with each browser that supports it; compare the string shown for it with its page."
        ),
    )
    parser.add_argument(
        "--url",
        default=DEFAULT_URL,
        help=f"relay WebSocket URL (default {DEFAULT_URL}, relay-local; on AWS wss://ID.execute-api.REGION.amazonaws.com/STAGE)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON event per line, for scripts")
    parser.add_argument(
        "--approve",
        action="store_true",
        help="ask before letting each browser in: it waits until you type /admit PEER (or /kick PEER)",
    )
    parser.add_argument(
        "--keepalive",
        type=_keepalive_seconds,
        default=DEFAULT_KEEPALIVE_SECONDS,
        metavar="SECONDS",
        help=f"send an application ping this often (default {DEFAULT_KEEPALIVE_SECONDS:g}; "
        f"must stay under the {IDLE_TIMEOUT_SECONDS} s idle timeout)",
    )
    parser.add_argument(
        "--no-e2e",
        dest="e2e",
        action="store_false",
        help="turn end-to-end encryption off: frames go in clear, which both ends say",
    )
    parser.add_argument(
        "--e2e-wait",
        type=_positive_seconds,
        default=DEFAULT_WAIT_SECONDS,
        metavar="SECONDS",
        help="how long a browser has to start its encryption handshake before it counts as "
        "one without encryption (default %(default)s)",
    )
    parser.add_argument(
        "--no-resume",
        dest="resumable",
        action="store_false",
        help="do not ask for a resumable session: after a dropped connection, register a new code",
    )
    parser.add_argument(
        "--lock-after-first",
        action="store_true",
        help="lock the session as soon as the first browser is in: nobody else can join with the code",
    )
    parser.add_argument("--client-id", default=None, help="id sent with register (default: random)")
    parser.add_argument(
        "--backoff-initial",
        type=_positive_seconds,
        default=DEFAULT_INITIAL_SECONDS,
        metavar="SECONDS",
        help="first reconnect delay (default %(default)s)",
    )
    parser.add_argument(
        "--backoff-max",
        type=_positive_seconds,
        default=DEFAULT_MAX_SECONDS,
        metavar="SECONDS",
        help="longest reconnect delay (default %(default)s)",
    )
    parser.add_argument(
        "--max-reconnects",
        type=_non_negative_int,
        default=None,
        metavar="N",
        help="give up after N failed reconnect attempts in a row (default: never)",
    )
    parser.add_argument(
        "--open-timeout",
        type=_positive_seconds,
        default=DEFAULT_OPEN_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="how long to wait for the relay to accept a connection (default %(default)s)",
    )
    return parser


def settings_from_args(args: argparse.Namespace) -> ClientSettings:
    return ClientSettings(
        url=args.url,
        client_id=args.client_id or new_client_id(),
        keepalive_seconds=args.keepalive,
        backoff=BackoffPolicy(
            initial_seconds=min(args.backoff_initial, args.backoff_max), max_seconds=args.backoff_max
        ),
        max_reconnect_attempts=args.max_reconnects,
        open_timeout_seconds=args.open_timeout,
        approve=args.approve,
        e2e=args.e2e,
        e2e_wait_seconds=args.e2e_wait,
        resumable=args.resumable,
        lock_after_first=args.lock_after_first,
    )


async def run_client(settings: ClientSettings, sink: EventSink) -> MacClient:
    # Ctrl-D at a terminal means "quit"; the end of piped or redirected input only means
    # there is nothing more to send, so a script can run `relay-mac --json < /dev/null`.
    client = MacClient(settings, sink, stdin_lines(sys.stdin.fileno()), stop_at_end_of_input=sys.stdin.isatty())
    loop = asyncio.get_running_loop()
    # Stop cleanly on Ctrl-C or `kill`: `end` (then the close frame) lets the relay end the
    # session and tell the browsers at once, instead of after a grace period.
    for signum, reason in ((signal.SIGINT, "interrupted"), (signal.SIGTERM, "terminated")):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, client.stop, reason)
    await client.run()
    return client


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    sink: EventSink = JsonRenderer(sys.stdout) if args.json else HumanRenderer(sys.stdout, sys.stderr)
    try:
        client = asyncio.run(run_client(settings, sink))
    except StartupError as exc:
        if args.json:
            with contextlib.suppress(BrokenPipeError):
                sink(events.error(events.LOCAL_STARTUP_FAILED, str(exc)))
        print(f"relay-mac: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        # Whoever read our output went away (e.g. `relay-mac --json | head`); nothing to report to.
        with contextlib.suppress(OSError):
            sys.stdout.close()
        return EXIT_FAILED
    if client.gave_up:
        print(f"relay-mac: {client.stop_reason}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
