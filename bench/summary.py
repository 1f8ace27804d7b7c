#!/usr/bin/env python3
"""Helper of bench/run (issue 14): raw crypto rates from criterion, and the
summary table at the top of docs/BENCHMARKS.md. Standard library only.

  summary.py crypto CRITERION_HOME [OTHER_CPU_PCT]
      reads CRITERION_HOME/raw_aws_lc_rs/{sign_ES256,verify_ES256,verify_RS256}/new/estimates.json
      and prints one JSON object (median ns per operation, one core)
  summary.py table --dir DIR --command CMD --mode full|quick --duration S
                   [--doc FILE] [--commit C] [--openbao VERSION]
      reads DIR/{crypto.json,exchange.jsonl,exchange-warm.jsonl,exchange-rs256.jsonl,
      exchange-durable.jsonl,x509.jsonl,broker.jsonl,broker-durable.jsonl,workload.jsonl,status.tsv},
      prints the markdown block and, with --doc, replaces the block between
      the markers in FILE (or inserts it under the first "# " heading)

Nothing here starts a process or touches the network.
"""

import argparse
import json
import os
import platform
import re
import sys
import time

START = "<!-- bench/run summary start -->"
END = "<!-- bench/run summary end -->"
OTHER_LIMIT = 5.0  # percent of the machine: above it the run is flagged

CRYPTO = {  # key in crypto.json -> criterion directory under raw_aws_lc_rs/
    "es256_sign_ns": "sign_ES256",
    "es256_verify_ns": "verify_ES256",
    "rs256_verify_ns": "verify_RS256",
}


def crypto(home, other):
    out = {}
    for key, name in CRYPTO.items():
        path = os.path.join(home, "raw_aws_lc_rs", name, "new", "estimates.json")
        with open(path) as f:
            est = json.load(f)
        out[key] = round(est["median"]["point_estimate"], 1)
    if other not in (None, ""):
        out["other_cpu_pct"] = float(other)
    print(json.dumps(out, separators=(",", ":")))


# --- reading what the areas left ---

def load_runs(path):
    runs = {}
    if not os.path.exists(path):
        return runs
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if "concurrency" in r:
                runs[(r.get("target"), r["concurrency"])] = r
    return runs


def load_status(path):
    status = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t", 2)
                if len(parts) == 3:
                    status[parts[0]] = (parts[1], parts[2])
    return status


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = f", {kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"nproc {os.cpu_count()}, {model}{mem}, {platform.system()} {platform.release()} {platform.machine()}"


# --- formatting ---

def rate(r):
    if r is None:
        return "–"
    s = f"{r['flows_per_sec']:,.0f}"
    if r.get("errors"):
        s += f" ({r['errors']:,} errors)"
    return s


def ms(r, key="p99_ms"):
    if r is None or r.get(key) is None:
        return "–"
    v = r[key]
    return f"{v:.2f} ms" if v < 10 else f"{v:.1f} ms"


def num(v, suffix=""):
    return "–" if v is None else f"{v:,.0f}{suffix}"


def pct(v):
    return "–" if v is None else f"{v:.0f}" if v >= 10 else f"{v:.1f}"


def ratio(l, b):
    if l is None or b is None or not b.get("flows_per_sec"):
        return None
    return l["flows_per_sec"] / b["flows_per_sec"]


def main_table(a):
    d = a.dir
    status = load_status(os.path.join(d, "status.tsv"))
    cr = None
    if os.path.exists(os.path.join(d, "crypto.json")):
        with open(os.path.join(d, "crypto.json")) as f:
            cr = json.load(f)
    ncpu = os.cpu_count() or 1
    rows = []
    busy = []  # (label, pct) above the limit

    def area_note(area):
        st, msg = status.get(area, ("not run", "not run (not in --areas)"))
        if st == "ok":
            return None
        return f"{st.upper()}: {msg}" if st in ("failed", "interrupted") else msg

    def other_cell(area, op, c, l, b):
        cells = []
        for side, r in (("Lanyard", l), ("OpenBao", b)):
            if r is None:
                continue
            v = r.get("other_cpu_pct")
            cells.append(pct(v))
            if v is not None and v > OTHER_LIMIT:
                busy.append((f"{area} {side} c={c}", v))
        return " / ".join(cells) if cells else "–"

    def limit_cell(l, crypto_us, what=""):
        if l is None or crypto_us is None:
            return "n/a"
        limit = ncpu * 1e6 / crypto_us
        return f"{100 * l['flows_per_sec'] / limit:.0f} % of {limit:,.0f}/s" + (f" ({what})" if what else "")

    es_pair = es_sign = rs_es = None
    if cr:
        es_pair = (cr["es256_sign_ns"] + cr["es256_verify_ns"]) / 1000
        es_sign = cr["es256_sign_ns"] / 1000
        rs_es = (cr["rs256_verify_ns"] + cr["es256_sign_ns"]) / 1000

    def pair_rows(area, op, lan, bao, points, tokens=None):
        """tokens: None, or "cold" / "warm" for the exchange rows: the label then
        says how the subject tokens were used, and a cold row in which a token
        was reused (or reuse is not reported) is not a measurement of its target."""
        runs = load_runs(os.path.join(d, f"{area}.jsonl"))
        note = area_note(area)
        for c, target_text, check, crypto_us, crypto_what in points:
            l, b = runs.get((lan, c)), runs.get((bao, c))
            label = op(l) if callable(op) else op
            if l is None and b is None:
                rows.append([label, str(c), note or "no result", "", "", "", "", target_text, "not measured", "", "", ""])
                continue
            rt = ratio(l, b)
            met = "–"
            if l is not None and b is not None and rt is not None:
                met = check(rt, l)
            elif note:
                met = "not measured"
            if tokens:
                label += "; " + token_use(l, b)
                reused = [r for r in (l, b) if r is not None and r.get("token_reuse") is not False]
                if tokens == "cold" and reused:
                    met = "**not measured** (a subject token was reused, or reuse is not reported)"
                early = [f"{side} stopped after {r['seconds']:g} s: token pool used up"
                         for side, r in (("Lanyard", l), ("OpenBao", b)) if r is not None and r.get("pool_exhausted")]
                if early:
                    met += " (" + "; ".join(early) + ")"
            if note:
                met += f" ({note})"
            rows.append([
                label, str(c), rate(l), ms(l), rate(b), ms(b),
                "–" if rt is None else f"{rt:.2f}x",
                target_text, met, limit_cell(l, crypto_us, crypto_what),
                f"{num(l and l.get('server_cpu_us_per_flow'))} / {num(b and b.get('server_cpu_us_per_flow'))}",
                other_cell(area, op, c, l, b),
            ])

    def ratio_check(want):
        return lambda rt, l: "**met**" if rt >= want else f"**not met** ({rt:.2f}x < {want:g}x)"

    def exchange_check(rt, l):
        misses = []
        if rt < 10:
            misses.append(f"{rt:.2f}x < 10x")
        if l["p99_ms"] > 5:
            misses.append(f"p99 {l['p99_ms']:.1f} ms > 5 ms")
        return "**met**" if not misses else "**not met** (" + "; ".join(misses) + ")"

    def token_use(l, b):
        """How the subject tokens were used, from the loadgen's token fields."""
        parts = []
        for side, r in (("Lanyard", l), ("OpenBao", b)):
            if r is None:
                continue
            sent, distinct = r.get("tokens_sent"), r.get("distinct_tokens_sent")
            if sent is None or distinct is None or r.get("token_reuse") is None:
                parts.append(f"{side} reuse not reported")
            elif r["token_reuse"]:
                parts.append(f"{side} {sent:,} sent, each ~{sent / max(distinct, 1):.0f}x")
            else:
                parts.append(f"{side} {sent:,} sent, none reused")
        return "tokens: " + ", ".join(parts) if parts else "tokens: –"

    def variant(rt, l):
        return "–"

    def warm_label(l):
        pool = l.get("token_pool") if l else None
        return f"token exchange, warm: {pool or 1000:,} ES256 tokens reused round-robin (vs OpenBao, same flow)"

    pair_rows("exchange", "token exchange, cold: distinct ES256 subject tokens (vs OpenBao JWT login + OIDC token)",
              "lanyard-exchange", "openbao-jwt-oidc",
              [(32, "≥ 10x and Lanyard p99 ≤ 5 ms", exchange_check, es_pair, "")], tokens="cold")
    pair_rows("exchange-warm", warm_label, "lanyard-exchange", "openbao-jwt-oidc",
              [(32, "variant (no target)", variant, es_sign, "ES256 sign only")], tokens="warm")
    pair_rows("exchange-rs256", "token exchange, RS256 subject tokens, cold (vs OpenBao, same flow)",
              "lanyard-exchange", "openbao-jwt-oidc",
              [(32, "variant (no target)", variant, rs_es, "RS256 verify + ES256 sign")], tokens="cold")
    pair_rows("exchange-durable", "token exchange, cold, vs OpenBao with raft storage and a file audit device "
              "(durable before it answers, like Lanyard)", "lanyard-exchange", "openbao-jwt-oidc",
              [(32, "variant (no target)", variant, es_pair, "")], tokens="cold")
    pair_rows("x509", "X.509-SVID signing (vs OpenBao pki/sign)",
              "lanyard-sign-x509", "openbao-pki-sign",
              [(32, "≥ 4x", ratio_check(4), es_pair, "")])
    pair_rows("broker", "PostgreSQL credentials (vs OpenBao database engine)",
              "lanyard-broker-creds", "openbao-db-creds",
              [(1, "≥ 1.3x", ratio_check(1.3), None, ""),
               (16, "≥ 2x", ratio_check(2), None, "")])
    pair_rows("broker-durable", "PostgreSQL credentials vs OpenBao with raft storage and a file audit device "
              "(leases durable, like Lanyard's)", "lanyard-broker-creds", "openbao-db-creds",
              [(1, "variant (no target)", variant, None, ""),
               (16, "variant (no target)", variant, None, "")])

    # Workload API: Lanyard only (OpenBao has no Workload API), as measured.
    runs = load_runs(os.path.join(d, "workload.jsonl"))
    note = area_note("workload")
    points = sorted(c for (t, c) in runs if t == "lanyard-workload-jwt") or [None]
    for c in points:
        l = runs.get(("lanyard-workload-jwt", c))
        op = "Workload API FetchJWTSVID (agent cache; no OpenBao peer)"
        if l is None:
            rows.append([op, "–", note or "no result", "", "–", "–", "–", "as measured", "not measured", "n/a", "", ""])
            continue
        # Issue 10's targets: p99 < 1 ms at 10 clients, >= 30,000 calls/s at 100.
        target, check = "as measured", "–"
        if c == 10 and l.get("p99_ms") is not None:
            target = "p99 < 1 ms (issue 10)"
            check = "met" if l["p99_ms"] < 1.0 else f"**not met** (p99 {ms(l)} ≥ 1 ms)"
        elif c == 100 and l.get("flows_per_sec") is not None:
            target = "≥ 30,000/s (issue 10)"
            check = "met" if l["flows_per_sec"] >= 30000 else f"**not met** ({rate(l)}/s < 30,000/s)"
        rows.append([op, str(c), rate(l), ms(l), "–", "–", "–", target,
                     check + (f" ({note})" if note else ""), "n/a",
                     f"{num(l.get('agent_cpu_us_per_call'))} / –", other_cell("workload", op, c, l, None)])

    out = []
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    mode = ("smoke run (`--quick`): short points, not figures to quote" if a.mode == "quick"
            else "full run")
    out.append(START)
    out.append("## Summary: `bench/run` (issue 14)")
    out.append("")
    out.append(f"Generated by `bench/run`; replaced on each run. Last run: {now}, command "
               f"`{a.command}`, {mode}, {a.duration} s per point after 1 s of warm-up; "
               f"machine: {machine()}; Lanyard at commit `{a.commit or '?'}`"
               + (f", {a.openbao}" if a.openbao else "") + ".")
    out.append("")
    out.append("| operation | c | Lanyard ops/s | Lanyard p99 | OpenBao ops/s | OpenBao p99 | Lanyard/OpenBao "
               "| target | met? | Lanyard / raw-crypto limit | CPU µs/op Lanyard / OpenBao | other CPU % (Lanyard / OpenBao run) |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        out.append("| " + " | ".join(r) + " |")
    out.append("")
    if cr:
        line = ("Raw aws-lc-rs on this machine (`cargo bench -p lanyard-jose --bench sign`, criterion median, one core): "
                f"ES256 sign {cr['es256_sign_ns'] / 1000:.1f} µs ({1e9 / cr['es256_sign_ns']:,.0f}/s), "
                f"ES256 verify {cr['es256_verify_ns'] / 1000:.1f} µs ({1e9 / cr['es256_verify_ns']:,.0f}/s), "
                f"RS256 verify {cr['rs256_verify_ns'] / 1000:.1f} µs ({1e9 / cr['rs256_verify_ns']:,.0f}/s)")
        if cr.get("other_cpu_pct") is not None:
            line += f"; other processes took {pct(cr['other_cpu_pct'])} % of the machine meanwhile"
            if cr["other_cpu_pct"] > OTHER_LIMIT:
                busy.append(("raw crypto bench", cr["other_cpu_pct"]))
        out.append(line + ".")
    else:
        st = status.get("crypto", ("not run", "not in --areas"))
        out.append(f"Raw aws-lc-rs rates: not measured ({st[0]}: {st[1]}).")
    out.append("")
    if busy:
        worst = ", ".join(f"{label} {v:.0f} %" for label, v in busy)
        out.append(f"**WARNING: other processes took more than {OTHER_LIMIT:.0f} % of the machine's CPU during: "
                   f"{worst}. Rates and p99 of those runs are disturbed (CPU µs/op much less so); "
                   "re-run on an idle machine before quoting them.**")
    else:
        out.append(f"Other processes took at most {OTHER_LIMIT:.0f} % of the machine's CPU during every run.")
    failed = {k: v for k, v in status.items() if v[0] != "ok"}
    if failed:
        out.append("")
        out.append("Areas that did not complete: " + "; ".join(f"{k} ({v[0]}: {v[1]})" for k, v in failed.items()) + ".")
    out.append("")
    out.append("Notes:")
    out.append("")
    out.append("- One op: exchange = one `POST /oauth2/token` for Lanyard, `auth/jwt/login` + `identity/oidc/token` for "
               "OpenBao; X.509 = one `SignX509Svids` call with one CSR (gRPC over mTLS) vs one `pki/sign` (HTTP); "
               "credentials = one PostgreSQL user created (`CREATE ROLE` + `GRANT`, PostgreSQL fsync on) by either "
               "(Lanyard also makes its lease and audit records durable in its SQLite store, fsync on, before answering; "
               "OpenBao runs `-dev`, whose own storage is in memory); "
               "FetchJWTSVID = one call answered from the agent's cache (OpenBao has no Workload API, so no ratio; "
               "targets from issue 10). Closed loop, load generator on the same machine, everything on 127.0.0.1; "
               "the sections below describe each setup.")
    pools = []
    for area in ("exchange", "exchange-rs256", "exchange-warm", "exchange-durable"):
        for (t, c), r in sorted(load_runs(os.path.join(d, f"{area}.jsonl")).items(), key=str):
            if t == "lanyard-exchange" and r.get("token_pool"):
                pools.append(f"{r['token_pool']:,} {r.get('subject_alg', '')} {'cold' if area != 'exchange-warm' else 'warm'}"
                             .replace("  ", " "))
                break
    out.append("- Exchange subject tokens: **cold** (the headline row, and the RS256 row) = every flow presents a "
               "token that server has not seen: `bench/exchange/run.sh --distinct` mints 10,000 x (duration + 1 s "
               "warm-up) distinct Kubernetes-projected-shaped tokens"
               + " and the load generator sends each at most once, warm-up included (`--no-reuse`: a run that uses up "
               "the pool stops early and says so; it never wraps), and the by-hand check flow uses a token of its own. "
               "**warm** = a pool of 1,000 tokens sent round-robin, each many times, as a pod presents its projected "
               "token again and again during its life: a verified-token cache (keyed by the token's SHA-256) may then "
               "skip the subject token's signature check; OpenBao has no such cache. Each exchange row says how many "
               "tokens each side sent and whether any was reused; a cold row with a reused token is not a measurement "
               "of its target. The variants (warm, RS256: a 2048-bit RSA issuer key, which Kubernetes clusters mostly "
               "use, cheaper to verify; the durable peer, below) are reported beside the headline, never instead "
               "of it: no target."
               + (f" Token pools minted in this run: {', '.join(pools)}." if pools else ""))
    out.append("- Durable peer: the headline OpenBao is `bao server -dev` (storage in memory, no audit device), as "
               "the targets were set. The durable-peer rows run OpenBao as in production: raft storage on disk and a "
               "file audit device declared in its configuration (bench/lib/openbao.sh, `--openbao-storage raft`), "
               "so that, like Lanyard (SQLite, fsync on, audit event and lease durable before the answer), it writes "
               "to disk before it answers.")
    out.append("- Raw-crypto limit = nproc / (single-core time of the signatures one op needs), i.e. every core "
               "doing nothing but those signatures. Assumed per op: exchange = one ES256 verify (subject token) + "
               "one ES256 sign (JWT-SVID), for the RS256 row one RS256 verify + one ES256 sign, for the warm row one "
               "ES256 sign only (a cache hit skips the verify: an upper bound, as if every flow hit); X.509 = one ECDSA P-256 verify (the CSR) + one ECDSA P-256 sign "
               "(the certificate), taken as the ES256 verify + sign figures (same curve and hash; the DER "
               "signature encoding is negligible); TLS record crypto, HTTP and the audit event are not in it. "
               "n/a for credentials (bound by PostgreSQL commits) and FetchJWTSVID (no signature per cached call).")
    out.append("- CPU µs/op = utime + stime of the server's process (tree; for credentials without PostgreSQL, "
               "for FetchJWTSVID `lanyard dev`'s agent) from `/proc/PID/stat` before and after the run, over the "
               "ops of the run including warm-up.")
    out.append("- Other CPU % = busy time of the whole machine (`/proc/stat`) minus the servers, PostgreSQL, the "
               "load generator and the scripts' own helpers, over nproc x wall time of the run; above "
               f"{OTHER_LIMIT:.0f} % the run is flagged.")
    out.append("- Targets from issue 14; ratios are Lanyard ops/s over OpenBao ops/s in the same run.")
    out.append(END)
    block = "\n".join(out) + "\n"
    sys.stdout.write(block)
    if busy:
        for label, v in busy:
            print(f"[bench] WARNING: other processes took {v:.1f} % of the CPU during {label}", file=sys.stderr)

    if a.doc:
        with open(a.doc) as f:
            text = f.read()
        if START in text and END in text:
            pre, rest = text.split(START, 1)
            _, post = rest.split(END, 1)
            text = pre + block.rstrip("\n") + post
        else:
            m = re.search(r"^# .*\n", text, re.M)
            at = m.end() if m else 0
            text = text[:at] + "\n" + block + text[at:]
        tmp = a.doc + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, a.doc)


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "crypto":
        crypto(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
        return
    p = argparse.ArgumentParser(prog="summary.py table")
    p.add_argument("cmd", choices=["table"])
    p.add_argument("--dir", required=True)
    p.add_argument("--command", required=True)
    p.add_argument("--mode", choices=["full", "quick"], required=True)
    p.add_argument("--duration", required=True)
    p.add_argument("--doc")
    p.add_argument("--commit", default="")
    p.add_argument("--openbao", default="")
    main_table(p.parse_args())


if __name__ == "__main__":
    main()
