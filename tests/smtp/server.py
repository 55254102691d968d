#!/usr/bin/env python3
"""A real SMTP server for Relance's tests and SMTP bench (aiosmtpd, with a throwaway CA
made by trustme for its TLS certificate).

    server.py [--port 0] [--tls starttls|implicit|none] [--auth user:pass] [--out FILE]
              [--transient-once] [--reject ADDRESS]... [--policy-reject]

When it listens it prints one JSON line on stdout, `{"port": N, "ca": "/path/ca.pem"}`
(`ca` is null without TLS), and serves until it is killed or its standard input closes (so
a test process that dies takes it along).

- `--out FILE`: appends one JSON line per accepted message: `mail_from`, `rcpt_tos`, `data`
  (the raw message), `headers` (name and decoded value pairs, in order) and `parts` (each
  text part's content type and decoded content).
- `--transient-once`: the first DATA of each Message-ID is answered `451 4.3.0 try again`,
  every later one is accepted.
- `--reject ADDRESS` (repeatable): RCPT TO that address is answered `550 5.1.1 no such user`.
- `--policy-reject`: every DATA is answered `554 5.7.1 message refused by policy`.
- `--ca FILE`: where the CA certificate is written (default: a new temporary directory).
- `--auth user:pass`: AUTH PLAIN or LOGIN with these credentials is required before MAIL
  (over TLS when there is TLS); a wrong password is answered `535 5.7.8`.
"""

import argparse
import asyncio
import email
import email.policy
import json
import logging
import os
import ssl
import sys
import tempfile
import threading
import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Handler:
    """The server's answers: records accepted messages, injects the faults asked for."""

    def __init__(self, out, rejects, transient_once, policy_reject):
        self.out = out
        self.rejects = {a.lower() for a in rejects}
        self.transient_once = transient_once
        self.policy_reject = policy_reject
        # Message-IDs already answered 451 once (--transient-once).
        self.seen = set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower() in self.rejects:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        if self.policy_reject:
            return "554 5.7.1 message refused by policy"
        message = email.message_from_bytes(raw, policy=email.policy.default)
        if self.transient_once:
            key = str(message.get("Message-ID", ""))
            if key not in self.seen:
                self.seen.add(key)
                return "451 4.3.0 try again"
        if self.out:
            self.record(envelope, raw, message)
        return "250 2.0.0 OK queued"

    def record(self, envelope, raw, message):
        parts = []
        for part in message.walk():
            if part.is_multipart():
                continue
            try:
                content = part.get_content()
            except (LookupError, ValueError) as e:
                content = f"<undecodable: {e}>"
            if isinstance(content, bytes):
                content = content.decode("utf-8", "replace")
            parts.append({"content_type": part.get_content_type(), "content": content})
        line = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "data": raw.decode("utf-8", "replace"),
            "headers": [[k, str(v)] for k, v in message.items()],
            "parts": parts,
        }
        with open(self.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
            f.flush()


class Authenticator:
    """Accepts PLAIN and LOGIN with the one user and password given."""

    def __init__(self, user, password):
        self.user = user.encode("utf-8")
        self.password = password.encode("utf-8")

    def __call__(self, server, session, envelope, mechanism, auth_data):
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ok = auth_data.login == self.user and auth_data.password == self.password
        return AuthResult(success=ok, handled=False)


def tls_contexts(mode, ca_path):
    """The server context for `mode` and the path of the CA that signed its certificate
    (written to `ca_path`, or into a new temporary directory)."""
    if mode == "none":
        return None, None
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1", "::1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    if ca_path is None:
        ca_path = os.path.join(tempfile.mkdtemp(prefix="relance-smtp-"), "ca.pem")
    ca.cert_pem.write_to_path(ca_path)
    return context, ca_path


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--tls", choices=["starttls", "implicit", "none"], default="none")
    p.add_argument("--auth", metavar="USER:PASS")
    p.add_argument("--out", metavar="FILE")
    p.add_argument("--ca", metavar="FILE", help="where to write the CA certificate (PEM)")
    p.add_argument("--transient-once", action="store_true")
    p.add_argument("--reject", action="append", default=[], metavar="ADDRESS")
    p.add_argument("--policy-reject", action="store_true")
    args = p.parse_args(argv)
    if args.auth is not None and ":" not in args.auth:
        p.error("--auth wants USER:PASS")
    return args


async def serve(args):
    context, ca_path = tls_contexts(args.tls, args.ca)
    handler = Handler(args.out, args.reject, args.transient_once, args.policy_reject)
    authenticator = None
    if args.auth is not None:
        user, password = args.auth.split(":", 1)
        authenticator = Authenticator(user, password)
    loop = asyncio.get_running_loop()

    def factory():
        kwargs = dict(
            hostname="relance-test-smtp",
            enable_SMTPUTF8=True,
            authenticator=authenticator,
            auth_required=authenticator is not None,
            loop=loop,
        )
        if args.tls == "starttls":
            kwargs.update(tls_context=context, require_starttls=True, auth_require_tls=True)
        else:
            # Implicit TLS: the whole connection is encrypted, so AUTH is offered at once;
            # without TLS the server only listens on loopback for tests.
            kwargs.update(auth_require_tls=False)
        return SMTP(handler, **kwargs)

    server = await loop.create_server(
        factory,
        host=args.host,
        port=args.port,
        ssl=context if args.tls == "implicit" else None,
    )
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"port": port, "ca": ca_path}), flush=True)

    stop = loop.create_future()

    def watch_stdin():
        # The parent closing our stdin (or dying) ends the server.
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except OSError:
            pass
        loop.call_soon_threadsafe(lambda: stop.done() or stop.set_result(None))

    threading.Thread(target=watch_stdin, daemon=True).start()
    async with server:
        await stop


def main():
    args = parse_args(sys.argv[1:])
    # aiosmtpd logs every session and a deprecation per AUTH at INFO/WARNING; errors only.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    # With implicit TLS the whole connection is encrypted, which aiosmtpd cannot tell when
    # AUTH is allowed before STARTTLS: its warning does not apply.
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
