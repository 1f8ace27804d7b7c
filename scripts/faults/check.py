#!/usr/bin/env python3
"""Checks a fault run's recorded history against Lanyard's invariants
(scripts/faults.sh). Prints one line per invariant and a JSON summary;
exits 1 if any invariant fails.

    check.py faults --history H --audit A --checkpoints C ... (see faults.sh)
    check.py soak --history H --summary S --rss-start "..." --rss-end "..."
"""
import argparse
import json
import sys
import time


def load_jsonl(path):
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                out.append(json.loads(line))
    return out


def faults(a):
    ok = True
    history = load_jsonl(a.history)
    audit = load_jsonl(a.audit)
    reasons = {}
    for e in audit:
        reasons.setdefault(e.get("action", ""), []).append(e)
    text_by_action = {k: "\n".join(f"{e.get('subject','')} {e.get('reason','')}" for e in v) for k, v in reasons.items()}
    all_text = "\n".join(f"{e.get('action','')} {e.get('subject','')} {e.get('reason','')}" for e in audit)

    def check(name, good, detail):
        nonlocal ok
        print(f"{'ok  ' if good else 'FAIL'} {name}: {detail}")
        ok &= good

    received = [h for h in history if h["ok"]]
    by_op = {}
    for h in history:
        by_op.setdefault(h["op"], [0, 0])[0 if h["ok"] else 1] += 1
    check("load ran", all(by_op.get(op, [0, 0])[0] > 0 for op in ("exchange", "x509", "broker")),
          " ".join(f"{op}={v[0]} ok/{v[1]} failed" for op, v in sorted(by_op.items())))
    missing = []
    for h in received:
        if h["op"] == "exchange":
            needle = f"jti={h['id']}"
        elif h["op"] == "x509":
            needle = f"serial {h['id']}"
        else:
            needle = f"lease {h['id']} "
        hay = text_by_action.get("lease.create", "") if h["op"] == "broker" else all_text
        if not h["id"] or needle not in hay:
            missing.append(h)
    check("every credential received has its audit event", not missing,
          f"{len(received)} received, {len(missing)} without an event" + (f" e.g. {missing[0]}" if missing else ""))

    check("audit verify", True, "lanyard audit verify passed (checked by faults.sh)")
    cps = load_jsonl(a.checkpoints) if a.checkpoints else []
    seqs = {}
    fork = []
    for c in cps:
        h = seqs.setdefault(c["seq"], c["hash"])
        if h != c["hash"]:
            fork.append(c["seq"])
    check("checkpoints never fork", not fork and int(a.checkpoints_failed) == 0 and int(a.checkpoints_verified) > 0,
          f"{len(cps)} checkpoints, {a.checkpoints_verified} verified against the log, {a.checkpoints_failed} failed, forks at {fork}")

    leases = {}
    dup = []
    for line in open(a.lease_rows):
        if not line.strip():
            continue
        lid, user, state = line.strip().split("|")
        if user in leases:
            dup.append(user)
        leases[user] = state
    roles = [r.strip() for r in open(a.roles) if r.strip()]
    orphans = [r for r in roles if leases.get(r) in (None, "revoked")]
    check("no orphaned or duplicate broker lease", not orphans and not dup,
          f"{len(roles)} roles, {len(leases)} leases, orphans {orphans[:5]}, duplicates {dup[:5]}")
    broker_ok = {h["user"] for h in received if h["op"] == "broker"}
    unknown = [u for u in broker_ok if u not in leases]
    check("every broker credential has its lease", not unknown, f"{len(broker_ok)} credentials, {len(unknown)} without a lease")

    fleet = json.load(open(a.fleet))
    check("no agent's revision went back", fleet.get("syncs_went_back", 1) == 0,
          f"{fleet['agents']} agents; older revisions offered and refused: {fleet.get('syncs_went_back')}; "
          f"sync errors {fleet['quiet']['errors'] + fleet['probes']['errors']} (replicas down); "
          f"probes seen {fleet['probes_seen']}/{fleet['probes_sent'] - fleet.get('probe_errors', 0)}")

    before = a.agent_before
    during = (a.agent_during or "").split()
    after = (a.agent_after or "").split()
    now = int(a.cut_at) + 38
    valid_during = len(during) == 2 and int(during[1]) > now
    check("a cut-off agent's workload keeps a valid SVID", valid_during,
          f"38 s into a 40 s cut (SVIDs of 60 s): {'serial %s valid until %s' % tuple(during) if len(during) == 2 else 'no SVID'}")
    check("it rotates again once the servers are back", len(after) == 2 and after[0] != before,
          f"before the cut {before}, after {after[0] if after else 'none'}")
    print(json.dumps({"ok": ok, "operations": by_op, "received": len(received),
                      "checkpoints": len(cps), "roles": len(roles), "leases": len(leases)}))
    return ok


def soak(a):
    history = load_jsonl(a.history)
    summary = json.load(open(a.summary))
    errors = [h for h in history if not h["ok"]]
    start = [int(x.split("=")[-1]) for x in a.rss_start.split()]
    end = [int(x.split("=")[-1]) for x in a.rss_end.split()]
    growth = [round((e - s) / 1024, 1) for s, e in zip(start, end)]
    secs = max(1, max(h["t1_ms"] for h in history) / 1000) if history else 1
    flat = all(e <= s * 1.25 + 16 * 1024 for s, e in zip(start, end))
    print(json.dumps({"capacity_ops_per_s": float(a.capacity), "rate_ops_per_s": int(a.rate),
                      "achieved_ops_per_s": round(len(history) / secs, 1), "operations": len(history),
                      "errors": len(errors), "rss_start_kib": start, "rss_end_kib": end,
                      "rss_growth_mib": growth, "flat": flat, "summary": summary}))
    if errors:
        print(f"FAIL {len(errors)} errors, e.g. {errors[0]}")
    if not flat:
        print("FAIL RSS grew more than 25 % + 16 MiB")
    return not errors and flat


p = argparse.ArgumentParser()
sub = p.add_subparsers(dest="mode", required=True)
f = sub.add_parser("faults")
for name in ("history", "audit", "checkpoints", "checkpoints-verified", "checkpoints-failed", "lease-rows",
             "roles", "fleet", "agent-before", "agent-during", "agent-after", "cut-at"):
    f.add_argument("--" + name, default="")
s = sub.add_parser("soak")
for name in ("history", "summary", "rss-start", "rss-end", "capacity", "rate"):
    s.add_argument("--" + name, default="")
args = p.parse_args()
sys.exit(0 if (faults(args) if args.mode == "faults" else soak(args)) else 1)
