#!/usr/bin/env python3
"""Writes a contacts file and an events file to plan an A/B test with `relance simulate`.

Each contact gets the variant the scenario's SHA-256 bucket gives it (DESIGN §3.1), opens with
that variant's rate, at a time spread over the days after the send, so the simulated winner
rule sees opens arrive as they would. Deterministic (seeded), standard library only.

    python3 examples/plan-experiment.py --contacts 20000 --rates 0.20 0.23 --out /tmp/plan
    relance simulate examples/subject-test.yaml --contacts /tmp/plan/contacts.jsonl \\
      --events /tmp/plan/events.jsonl --start 2026-12-01T09:00:00Z --until P5D --journal \\
      | grep '"winner"'
"""
import argparse, hashlib, json, os, random
from datetime import datetime, timedelta, timezone


def bucket(scenario, step, contact):
    digest = hashlib.sha256(f"{scenario}:{step}:{contact}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10000


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contacts", type=int, default=20000)
    p.add_argument("--rates", type=float, nargs="+", default=[0.20, 0.23],
                   help="open rate of each variant, in list order")
    p.add_argument("--shares", type=float, nargs="+", default=None,
                   help="percent of each variant (default: equal)")
    p.add_argument("--scenario", default="subject-test")
    p.add_argument("--step", default="welcome")
    p.add_argument("--start", default="2026-12-01T09:00:00Z")
    p.add_argument("--spread-hours", type=float, default=72.0,
                   help="opens arrive uniformly over this many hours after the send")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    shares = a.shares or [100 / len(a.rates)] * len(a.rates)
    bounds, upper = [], 0
    for s in shares:
        upper += round(s * 100)
        bounds.append(upper)
    start = datetime.fromisoformat(a.start.replace("Z", "+00:00")).astimezone(timezone.utc)
    rng = random.Random(a.seed)
    os.makedirs(a.out, exist_ok=True)
    events = []
    with open(os.path.join(a.out, "contacts.jsonl"), "w") as contacts:
        for i in range(a.contacts):
            c = f"p{i:06d}"
            contacts.write(json.dumps({"id": c, "email": f"{c}@example.org", "first_name": "Sam"}) + "\n")
            b = bucket(a.scenario, a.step, c)
            variant = next(k for k, u in enumerate(bounds) if b < u)
            if rng.random() < a.rates[variant]:
                at = start + timedelta(seconds=rng.uniform(60, a.spread_hours * 3600))
                events.append((at, c))
    events.sort()
    with open(os.path.join(a.out, "events.jsonl"), "w") as out:
        for at, c in events:
            stamp = at.replace(microsecond=0).isoformat().replace("+00:00", "Z")
            out.write(json.dumps({"at": stamp, "contact": c, "opened": a.step}) + "\n")
    print(f"{a.contacts} contacts, {len(events)} opens in {a.out}")


if __name__ == "__main__":
    main()
