#!/usr/bin/env python3
"""Times N single-entry creations through the admin API (one keep-alive
connection, sequential), as `lanyard entry create` makes them; prints one
JSON line with p50/p99/max in ms. Loopback only.

    create_latency.py BASE_URL TOKEN_FILE TENANT N TAG
"""
import http.client
import json
import sys
import time
import urllib.parse

base, token_file, tenant, n, tag = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
url = urllib.parse.urlparse(base)
if url.hostname not in ("127.0.0.1", "localhost"):
    sys.exit(f"{base} is not loopback")
token = open(token_file).read().strip()
conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
lat = []
for i in range(min(n, 10000)):
    body = json.dumps({
        "spiffe_id": f"spiffe://example.org/latency/{tag}/{i}",
        "tenant": tenant,
        "parent": "spiffe://example.org/lanyard/node/latency",
        "selectors": [f"unix:uid:{i}", f"unix:gid:{tag}"],
    })
    t0 = time.perf_counter()
    conn.request("POST", "/admin/v1/entries", body=body,
                 headers={"authorization": f"Bearer {token}", "content-type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    lat.append((time.perf_counter() - t0) * 1000)
    if resp.status != 201:
        sys.exit(f"create answered {resp.status}")
lat.sort()
pick = lambda p: round(lat[max(0, min(len(lat) - 1, int(p * len(lat) + 0.999999) - 1))], 2)
print(json.dumps({"creates": len(lat), "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": round(lat[-1], 2)}))
