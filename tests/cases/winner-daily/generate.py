#!/usr/bin/env python3
"""Writes contacts.jsonl, events.jsonl and case.json of this case; run it from anywhere.

320 contacts d000..d319 sign up (the trigger): d000..d149 on 12-01 at 09:00, d150..d279 on
12-01 at 18:00, d280..d319 on 12-03 at 09:00. Before the winner each gets the variant of its
bucket (../bucket.py: offer-a below 5000). Half an hour after its send, a contact sent
offer-b clicks unless its number is a multiple of 4 (3 in 4); one sent offer-a clicks four
times if its number is a multiple of 4 (1 in 4, but more clicks than offer-b's).
Checks: 12-01 15:00 (PT6H after the first send), then every P1D: 12-02 15:00. At the first,
fewer than 100 sends for a variant, so no winner although the leader's z is high; at the
second every variant has 100 sends and offer-b wins (../bucket.py's winner() on distinct
clickers). From then on every send is offer-b."""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
from bucket import pick, step_bucket, winner, write_case  # noqa: E402

VARIANTS = ["offer-a", "offer-b"]
FIRST_CHECK, SECOND_CHECK = "2026-12-01T15:00:00Z", "2026-12-02T15:00:00Z"


def signup(n):
    if n < 150:
        return "2026-12-01T09:00:00Z", "2026-12-01T09:30:00Z"
    if n < 280:
        return "2026-12-01T18:00:00Z", "2026-12-01T18:30:00Z"
    return "2026-12-03T09:00:00Z", "2026-12-03T09:30:00Z"


contacts = [f"d{n:03d}" for n in range(320)]
events, sends, ends, records = [], [], {}, []
first, second = [[0, 0], [0, 0]], [[0, 0], [0, 0]]  # sends and distinct clickers per variant
clicks_a = 0
for n, c in enumerate(contacts):
    at, click_at = signup(n)
    events.append({"at": at, "contact": c, "event": "signup"})
    if n < 280:
        v = pick(step_bucket("case-winner-daily", "offer", c), [50, 50])
        times = (1 if n % 4 != 0 else 0) if v == 1 else (4 if n % 4 == 0 else 0)
        for counts in ([first, second] if n < 150 else [second]):
            counts[v][0] += 1
            counts[v][1] += times > 0
        if v == 0:
            clicks_a += times
    else:
        v, times = 1, 0
    link = f"https://example.org/{'ab'[v]}"
    for _ in range(times):
        events.append({"at": click_at, "contact": c, "clicked": "offer", "link": link})
    sends.append([c, "offer", at])
    ends[c] = "success"
    records.append({"contact": c, "kind": "assigned", "step": "offer", "message": VARIANTS[v], "at": at})
    if n >= 280:
        records.append({"contact": c, "kind": "sent", "step": "offer", "message": VARIANTS[v], "at": at})

won1, z1 = winner([tuple(x) for x in first], 100, 0.99)
won2, z2 = winner([tuple(x) for x in second], 100, 0.99)
assert won1 is None and min(n for n, _ in first) < 100 and z1[0] >= 2.3263, (first, z1)
assert won2 == 1, (second, z2)
# Counting clicks instead of clickers would make offer-a the leader.
assert clicks_a / second[0][0] > second[1][1] / second[1][0], (clicks_a, second)
records.append({"kind": "winner", "contact": None, "step": "offer", "message": "offer-b", "at": SECOND_CHECK})
records.append({"kind": "winner"})  # the only one
events.sort(key=lambda e: e["at"])
case = {
    "comment": [
        "Written by generate.py (see its docstring for the derivation).",
        f"First check {FIRST_CHECK}: offer-a {first[0][0]} sends, {first[0][1]} clickers; "
        f"offer-b {first[1][0]} sends, {first[1][1]} clickers: below min_sends 100, no winner (z = {z1[0]:.2f}).",
        f"Second check {SECOND_CHECK}: offer-a {second[0][0]} sends, {second[0][1]} clickers ({clicks_a} clicks); "
        f"offer-b {second[1][0]} sends, {second[1][1]} clickers; offer-b wins, z = {z2[0]:.2f} >= 2.3263.",
    ],
    "start": "2026-12-01T00:00:00Z",
    "until": "P3D",
    "expect": {
        "sends": sends,
        "ends": ends,
        "records": records,
        "no_records": [{"kind": "winner", "message": "offer-a"},
                       {"kind": "assigned", "message": "offer-a", "at": "2026-12-03T09:00:00Z"}],
    },
}
with open(os.path.join(HERE, "contacts.jsonl"), "w") as f:
    for c in contacts:
        f.write(json.dumps({"id": c, "email": f"{c}@example.com"}) + "\n")
with open(os.path.join(HERE, "events.jsonl"), "w") as f:
    for e in events:
        f.write(json.dumps(e) + "\n")
write_case(os.path.join(HERE, "case.json"), case)
print("\n".join(case["comment"][1:]))
