#!/usr/bin/env python3
"""The assignment bucket of DESIGN §3.1, written apart from the Rust code, to derive the
expectations of the cases in this folder.

  bucket = u64 big-endian of the first 8 bytes of SHA-256(text) mod 10000

where text is "{scenario}:{step}:{contact}" for a split or variants (the scenario holdout uses
the step name "holdout"), and "holdout:{seed}:{contact}" for the policy's global control group.

Usage: bucket.py SCENARIO STEP CONTACT...   prints "contact bucket" per contact
"""
import hashlib
import json
import sys


def bucket(text):
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") % 10000


def step_bucket(scenario, step, contact):
    return bucket(f"{scenario}:{step}:{contact}")


def pick(b, percents):
    """The index of the path or variant owning bucket b: consecutive ranges of basis points
    (percent x 100) in list order."""
    low = 0
    for i, p in enumerate(percents):
        high = low + round(p * 100)
        if b < high:
            return i
        low = high
    raise ValueError(f"percents {percents} do not cover bucket {b}")


if __name__ == "__main__":
    if len(sys.argv) < 4:
        print(__doc__)
        sys.exit(2)
    scenario, step = sys.argv[1], sys.argv[2]
    for c in sys.argv[3:]:
        print(c, step_bucket(scenario, step, c))


def winner(counts, min_sends, confidence):
    """The winner rule of DESIGN §3.1, apart from the Rust code: counts is [(n_i, s_i), ...]
    in list order (sends, distinct contacts with the metric). The leader has the highest
    s_i/n_i (ties: list order); it wins when every n_i >= min_sends and, against each other
    variant, the one-sided pooled two-proportion z >= the normal quantile of confidence.
    Returns (leader index or None, [z against each other variant])."""
    from statistics import NormalDist

    rates = [s / n if n else 0.0 for n, s in counts]
    leader = max(range(len(counts)), key=lambda i: (rates[i], -i))
    zs = []
    for j, (n, s) in enumerate(counts):
        if j == leader:
            continue
        nl, sl = counts[leader]
        pooled = (sl + s) / (nl + n) if nl + n else 0.0
        se = (pooled * (1 - pooled) * (1 / nl + 1 / n)) ** 0.5 if nl and n else 0.0
        zs.append((rates[leader] - rates[j]) / se if se else 0.0)
    quantile = NormalDist().inv_cdf(confidence)
    won = all(n >= min_sends for n, _ in counts) and all(z >= quantile for z in zs)
    return (leader if won else None), zs


def write_case(path, case):
    """Writes case.json with one send, record or comment line per line, for reading diffs."""
    def block(items, indent):
        pad = " " * indent
        return "[\n" + ",\n".join(pad + json.dumps(i) for i in items) + "]"

    out = ["{" + '"comment": ' + block(case["comment"], 2) + ","]
    out.append(f' "start": {json.dumps(case["start"])}, "until": {json.dumps(case["until"])},')
    parts = []
    for key, value in case["expect"].items():
        if isinstance(value, list):
            parts.append(f'  {json.dumps(key)}: ' + block(value, 3))
        else:
            parts.append(f"  {json.dumps(key)}: {json.dumps(value)}")
    out.append(' "expect": {\n' + ",\n".join(parts) + "}}")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
