#!/usr/bin/env python3
"""Writes contacts.jsonl and case.json of this case from the bucket formula (../bucket.py):
run it from this folder after changing the contacts or the percents."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bucket import pick, step_bucket, write_case  # noqa: E402

os.chdir(os.path.dirname(os.path.abspath(__file__)))
contacts = ["ana", "ben", "chloe", "dan", "eve", "fay", "gus", "hana", "ivan",
            "v16832", "v10926", "v9610", "v30573"]
with open("contacts.jsonl", "w") as f:
    for n, c in enumerate(contacts):
        f.write(json.dumps({"id": c, "email": f"{c}@example.com", "phone": f"+336000000{n:02d}"}) + "\n")
hello = ["hello-a", "hello-b", "hello-c"]
nudge = ["nudge-a", "nudge-b"]
comment = ["Written by generate.py. Buckets: python3 ../bucket.py case-variants STEP CONTACT;",
           "hello: hello-a [0, 3333), hello-b [3333, 6666), hello-c [6666, 10000); nudge: nudge-a [0, 7000), nudge-b [7000, 10000).",
           "hello sends at the launch (09:00); nudge is due P1D later at 22:00 (12-02), inside the quiet hours 21:00-08:00 UTC,",
           "so it is held and sent (and assigned) at 12-03 08:00."]
sends, ends, records = [], {}, []
for c in contacts:
    hb = step_bucket("case-variants", "hello", c)
    h = hello[pick(hb, [33.33, 33.33, 33.34])]
    nb = step_bucket("case-variants", "nudge", c)
    m = nudge[pick(nb, [70, 30])]
    comment.append(f"{c}: hello {hb} {h}, nudge {nb} {m}")
    sends += [[c, "hello", "2026-12-01T09:00:00Z"], [c, "nudge", "2026-12-03T08:00:00Z"]]
    ends[c] = "success"
    records += [
        {"contact": c, "kind": "assigned", "step": "hello", "message": h, "at": "2026-12-01T09:00:00Z"},
        {"contact": c, "kind": "sent", "step": "hello", "channel": "email", "message": h, "at": "2026-12-01T09:00:00Z"},
        {"contact": c, "kind": "assigned", "step": "nudge", "message": m, "at": "2026-12-03T08:00:00Z"},
        {"contact": c, "kind": "sent", "step": "nudge", "channel": "sms", "message": m, "at": "2026-12-03T08:00:00Z"},
    ]
case = {"comment": comment, "start": "2026-12-01T09:00:00Z", "until": "P4D",
        "expect": {"sends": sends, "ends": ends, "records": records,
                   # Held by the quiet hours: nothing is assigned when the step falls due.
                   "no_records": [{"kind": "assigned", "at": "2026-12-02T22:00:00Z"}, {"kind": "held_out"}]}}
write_case("case.json", case)
