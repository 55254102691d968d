#!/usr/bin/env python3
"""Writes contacts.jsonl, events.jsonl and case.json of this case; run it from anywhere.

160 contacts c000..c159 sign up (the trigger): c000..c119 on 12-01 at 09:00, c120..c159 on
12-03 at 09:00. Before the winner each gets the variant of its bucket (../bucket.py: price-a
below 5000). Three hours after signing up, a contact sent price-b buys (amount 199) when its
number is even, one sent price-a (amount 19) when it is a multiple of 10; a purchase within
P7D of the entry converts it (value = amount). The check falls at 12-02 09:00 (P1D after the
first send); ../bucket.py's winner() on those counts must name price-b. The late contacts
buy nothing, so they only show that every later send is price-b."""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
from bucket import pick, step_bucket, winner, write_case  # noqa: E402

VARIANTS = ["price-a", "price-b"]
CHECK = "2026-12-02T09:00:00Z"
contacts = [f"c{n:03d}" for n in range(160)]
events, sends, ends, records, no_records = [], [], {}, [], []
counts = [[0, 0], [0, 0]]
for n, c in enumerate(contacts):
    at = "2026-12-01T09:00:00Z" if n < 120 else "2026-12-03T09:00:00Z"
    events.append({"at": at, "contact": c, "event": "signup"})
    if n < 120:
        v = pick(step_bucket("case-winner-converted", "price", c), [50, 50])
        buys = n % 2 == 0 if v == 1 else n % 10 == 0
        counts[v][0] += 1
        counts[v][1] += buys
        if buys:
            amount = [19, 199][v]
            events.append({"at": "2026-12-01T12:00:00Z", "contact": c, "event": "purchase", "amount": amount})
            records.append({"contact": c, "kind": "converted", "at": "2026-12-01T12:00:00Z", "value": amount})
        else:
            no_records.append({"contact": c, "kind": "converted"})
    else:
        v = 1
        records.append({"contact": c, "kind": "sent", "step": "price", "message": VARIANTS[v], "at": at})
    sends.append([c, "price", at])
    ends[c] = "success"
    records.append({"contact": c, "kind": "assigned", "step": "price", "message": VARIANTS[v], "at": at})

won, zs = winner([tuple(x) for x in counts], 50, 0.95)
assert won == 1, (counts, zs)
records.append({"kind": "winner", "contact": None, "step": "price", "message": "price-b", "at": CHECK})
records.append({"kind": "winner"})
no_records += [{"kind": "winner", "message": "price-a"}, {"kind": "converted", "contact": "c120"}]
events.sort(key=lambda e: e["at"])
case = {
    "comment": [
        "Written by generate.py (see its docstring for the derivation).",
        f"At the check ({CHECK}): price-a {counts[0][0]} sends, {counts[0][1]} converted; "
        f"price-b {counts[1][0]} sends, {counts[1][1]} converted; price-b wins, z = {zs[0]:.2f} >= 1.6449.",
    ],
    "start": "2026-12-01T00:00:00Z",
    "until": "P4D",
    "expect": {"sends": sends, "ends": ends, "records": records, "no_records": no_records},
}
with open(os.path.join(HERE, "contacts.jsonl"), "w") as f:
    for c in contacts:
        f.write(json.dumps({"id": c, "email": f"{c}@example.com"}) + "\n")
with open(os.path.join(HERE, "events.jsonl"), "w") as f:
    for e in events:
        f.write(json.dumps(e) + "\n")
write_case(os.path.join(HERE, "case.json"), case)
print(case["comment"][1])
