#!/usr/bin/env python3
"""How long a revocation made on one replica takes to be enforced by
another (issue 13: within 1 s). Each round revokes one subject token's
`jti` through replica A's admin API and then exchanges that token at
replica B every 5 ms until B refuses it; the time from A's answer to B's
first refusal is one sample. Prints one JSON line. Loopback only; bounded.

    revocation.py A_URL B_URL TOKEN_FILE TOKENS_FILE ROUNDS AUDIENCE
"""
import base64
import http.client
import json
import sys
import time
import urllib.parse

a_url, b_url, token_file, tokens_file, rounds, audience = sys.argv[1:7]
rounds = min(int(rounds), 200)
admin = open(token_file).read().strip()
tokens = [t.strip() for t in open(tokens_file) if t.strip()]
for u in (a_url, b_url):
    if urllib.parse.urlparse(u).hostname not in ("127.0.0.1", "localhost"):
        sys.exit(f"{u} is not loopback")


def conn(url):
    p = urllib.parse.urlparse(url)
    return http.client.HTTPConnection(p.hostname, p.port, timeout=10)


def jti(tok):
    body = tok.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["jti"]


a, b = conn(a_url), conn(b_url)


def exchange(c, tok):
    form = urllib.parse.urlencode({
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": tok,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "audience": audience,
    })
    c.request("POST", "/oauth2/token", body=form, headers={"content-type": "application/x-www-form-urlencoded"})
    r = c.getresponse()
    r.read()
    return r.status


samples = []
for i in range(rounds):
    tok = tokens[-(i + 1)]
    if exchange(b, tok) != 200:
        sys.exit(f"round {i}: B refused before the revocation")
    a.request("POST", "/admin/v1/revocations",
              body=json.dumps({"kind": "jti", "value": jti(tok), "reason": "propagation benchmark"}),
              headers={"authorization": f"Bearer {admin}", "content-type": "application/json"})
    r = a.getresponse()
    r.read()
    if r.status not in (200, 201):
        sys.exit(f"revocation answered {r.status}")
    t0 = time.perf_counter()
    deadline = t0 + 10
    while exchange(b, tok) == 200:
        if time.perf_counter() > deadline:
            sys.exit(f"round {i}: B still issues 10 s after the revocation")
        time.sleep(0.005)
    samples.append((time.perf_counter() - t0) * 1000)
samples.sort()
pick = lambda p: round(samples[max(0, min(len(samples) - 1, int(p * len(samples) + 0.999999) - 1))], 1)
print(json.dumps({"rounds": len(samples), "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": round(samples[-1], 1)}))
