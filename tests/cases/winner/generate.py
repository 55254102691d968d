#!/usr/bin/env python3
"""Writes contacts.jsonl, events.jsonl and case.json of this case; run it from anywhere.

400 contacts w000..w399 sign up (the scenario's trigger): w000 at 12-01 08:00, w001..w299 at
09:00, w300..w399 the next day at 10:00. Before the winner each gets the variant of its
bucket (../bucket.py: subject-a below 5000). An hour after its send, a contact sent subject-a
opens it unless its number is a multiple of 5; one sent subject-b opens it only if it is.
The check falls at 12-01 20:00 (PT12H after w000's send, the step's first): the counts then
go through ../bucket.py's winner(), which must name subject-a; from then on every send is
subject-a."""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
from bucket import pick, step_bucket, winner, write_case  # noqa: E402

VARIANTS = ["subject-a", "subject-b"]
CHECK = "2026-12-01T20:00:00Z"


def signup(n):
    if n == 0:
        return "2026-12-01T08:00:00Z", "2026-12-01T09:00:00Z"
    if n < 300:
        return "2026-12-01T09:00:00Z", "2026-12-01T10:00:00Z"
    return "2026-12-02T10:00:00Z", "2026-12-02T11:00:00Z"


contacts = [f"w{n:03d}" for n in range(400)]
events, sends, ends, records = [], [], {}, []
counts = [[0, 0], [0, 0]]  # sends and openers per variant at the check (all before it)
for n, c in enumerate(contacts):
    at, open_at = signup(n)
    events.append({"at": at, "contact": c, "event": "signup"})
    if n < 300:
        v = pick(step_bucket("case-winner", "welcome", c), [50, 50])
        opens = (n % 5 != 0) if v == 0 else (n % 5 == 0)
        counts[v][0] += 1
        counts[v][1] += opens
    else:
        v, opens = 0, n % 2 == 0  # after the winner: subject-a; late opens change nothing
    if opens:
        events.append({"at": open_at, "contact": c, "opened": "welcome"})
        if n % 50 == 0:  # a sample: engagement is journaled with its step as it arrives
            records.append({"contact": c, "kind": "opened", "step": "welcome", "at": open_at})
    sends.append([c, "welcome", at])
    ends[c] = "success"
    records.append({"contact": c, "kind": "assigned", "step": "welcome", "message": VARIANTS[v], "at": at})
    if n >= 300:  # after the winner, the send itself carries the winning message
        records.append({"contact": c, "kind": "sent", "step": "welcome", "message": VARIANTS[v], "at": at})

won, zs = winner([tuple(x) for x in counts], 100, 0.95)
assert won == 0, (counts, zs)
records.append({"kind": "winner", "contact": None, "step": "welcome", "message": "subject-a", "at": CHECK})
records.append({"kind": "winner"})  # and no other winner record
events.sort(key=lambda e: e["at"])
case = {
    "comment": [
        "Written by generate.py (see its docstring for the derivation).",
        f"At the check ({CHECK}): subject-a {counts[0][0]} sends, {counts[0][1]} openers; "
        f"subject-b {counts[1][0]} sends, {counts[1][1]} openers; leader subject-a, z = {zs[0]:.2f} >= 1.6449.",
    ],
    "start": "2026-12-01T00:00:00Z",
    "until": "P3D",
    "expect": {
        "sends": sends,
        "ends": ends,
        "records": records,
        "no_records": [
            {"kind": "winner", "message": "subject-b"},
            {"kind": "assigned", "message": "subject-b", "at": "2026-12-02T10:00:00Z"},
        ],
    },
}
with open(os.path.join(HERE, "contacts.jsonl"), "w") as f:
    for c in contacts:
        f.write(json.dumps({"id": c, "email": f"{c}@example.com"}) + "\n")
with open(os.path.join(HERE, "events.jsonl"), "w") as f:
    for e in events:
        f.write(json.dumps(e) + "\n")
write_case(os.path.join(HERE, "case.json"), case)
print(case["comment"][1])
