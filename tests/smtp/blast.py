#!/usr/bin/env python3
"""The SMTP test server's own limit, for the SMTP bench: N small messages sent with plain
`smtplib` over CONCURRENCY connections (one thread each, nothing else done per message).

    blast.py --port P [--n 2000] [--concurrency 8] [--tls starttls|implicit|none] [--ca FILE]
             [--message FILE]

`--message` sends that file as every message (the bench passes the one SmtpBackend builds,
so both clients hand the server the same bytes); by default a small text message.

Prints one JSON line: {"messages": N, "seconds": S, "per_second": R}.
"""

import argparse
import json
import smtplib
import ssl
import threading
import time


def message(i):
    return (
        "From: news@shop.example\r\n"
        "To: zoe@example.net\r\n"
        f"Message-ID: <blast-{i}@shop.example>\r\n"
        "Subject: Bienvenue\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "Bonjour\r\n"
    ).encode()


def worker(args, indexes, errors, body):
    try:
        if args.tls == "implicit":
            context = ssl.create_default_context(cafile=args.ca)
            client = smtplib.SMTP_SSL("127.0.0.1", args.port, timeout=30, context=context)
        else:
            client = smtplib.SMTP("127.0.0.1", args.port, timeout=30)
        if args.tls == "starttls":
            client.starttls(context=ssl.create_default_context(cafile=args.ca))
        for i in indexes:
            client.sendmail("news@shop.example", ["zoe@example.net"], body or message(i))
        client.quit()
    except Exception as e:  # reported, so the bench fails loudly rather than runs fast
        errors.append(repr(e))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--tls", choices=["starttls", "implicit", "none"], default="none")
    p.add_argument("--ca")
    p.add_argument("--message", help="send this file's bytes as every message")
    args = p.parse_args()
    errors = []
    body = None
    if args.message:
        with open(args.message, "rb") as f:
            body = f.read()
    chunks = [range(k, args.n, args.concurrency) for k in range(args.concurrency)]
    threads = [threading.Thread(target=worker, args=(args, c, errors, body)) for c in chunks]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    if errors:
        raise SystemExit(f"blast failed: {errors[0]}")
    print(json.dumps({"messages": args.n, "seconds": seconds, "per_second": args.n / seconds}))


if __name__ == "__main__":
    main()
