"""A local SMTP server for the reliability scripts, in its own process, that can misbehave on purpose.

    python reliability/smtp_sink.py --port 2525 --log accepted.log [--faults 250:80,451:10,550:5,421:2,drop:3]

Each message's end-of-data reply is drawn from the weights of --faults (seeded):
  250   accepted: `ACCEPT <message-id>` is appended to the log (flushed, so a reader sees it at once)
  451   transient rejection;   550 permanent rejection: `REJECT550 <message-id>` is logged
  421   service closing: the reply is sent, then the connection is closed
  drop  the connection is cut after the data, without a reply (nothing accepted)
  lost  accepted (`ACCEPT`, `CUT`), then the connection is cut before the reply: the client sees a failure
        for a message the server took, which is how duplicates arise without any crash
`--auth-password` makes AUTH PLAIN/LOGIN mandatory with that password (any user name).
The server prints `ready` once it listens and runs until killed.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path


def _message_id(content: bytes) -> str:
    for line in content.split(b"\r\n"):
        if not line:
            break
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip().decode("ascii", "replace")
    return "<none>"


def main(argv: list[str] | None = None) -> int:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--faults", default="250:100")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--auth-password", default=None)
    args = parser.parse_args(argv)
    choices, weights = zip(*[(k, float(w)) for k, w in (part.split(":") for part in args.faults.split(","))])
    rng = random.Random(args.seed)
    log = open(args.log, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - open for the server's life

    class Handler:
        async def handle_DATA(self, server, session, envelope) -> str:
            msgid = _message_id(envelope.original_content or envelope.content or b"")
            outcome = rng.choices(choices, weights)[0]
            if outcome in ("250", "lost"):
                log.write(f"ACCEPT {msgid}\n")
            if outcome == "lost":
                log.write(f"CUT {msgid}\n")
            if outcome == "550":
                log.write(f"REJECT550 {msgid}\n")
            if outcome in ("drop", "lost"):
                server.transport.close()
                return "250 OK"  # never reaches the client: the transport is closed
            if outcome == "421":
                server.loop.call_later(0.01, server.transport.close)
                return "421 4.3.2 Service shutting down"
            if outcome == "451":
                return "451 4.3.0 Temporary local problem, try again"
            if outcome == "550":
                return "550 5.1.1 Mailbox unavailable"
            return "250 2.0.0 Accepted"

    def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
        password = getattr(auth_data, "password", b"")
        password = password.decode() if isinstance(password, bytes) else password
        return AuthResult(success=password == args.auth_password)

    extra = {}
    if args.auth_password is not None:
        extra = dict(authenticator=authenticate, auth_required=True, auth_require_tls=False)
    controller = Controller(Handler(), hostname="127.0.0.1", port=args.port, **extra)
    controller.start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


if __name__ == "__main__":
    sys.exit(main())
