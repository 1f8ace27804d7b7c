#!/usr/bin/env python3
"""Mint a pool of Kubernetes-projected-service-account-shaped tokens for the
token-exchange benchmark.

Writes into OUT_DIR:
  issuer_key.pem   the issuer private key (PKCS#8; benchmark only): EC P-256
                   for ES256 (the default), 2048-bit RSA for --alg RS256
  issuer_pub.pem   its public key (SubjectPublicKeyInfo), for OpenBao's jwt_validation_pubkeys
  jwks.json        the public key as a JWKS (kid = RFC 7638 thumbprint, alg,
                   use sig; kty EC with crv/x/y, or kty RSA with n/e), for Lanyard
  tokens.txt       N distinct JWTs, one per line
  smoke.txt        one more distinct token (not in tokens.txt), for the scripts'
                   by-hand check flow, so that check never warms a token of the load
  wrong_ns.txt     one token like the others but from namespace "other", which
                   both targets must refuse (a check that the bindings are on)

Each token looks like what the kubelet projects into a pod with
`audience: lanyard`: iss is the in-cluster issuer, sub the service account,
and the `kubernetes.io` claim names namespace, service account, pod and node.
Tokens differ in jti, pod name/uid and node; they are valid for one hour.

Large pools are minted in parallel (--jobs, default: every CPU from 20,000
tokens on): about 10,000 ES256 or 2,000 RS256 tokens/s per core. The JWT is
assembled here (header and claims JSON, base64url, one signature); the first
token is checked with PyJWT against the public key before anything is written.

Needs PyJWT and cryptography (run.sh installs both into its venv).
"""

import argparse
import base64
import json
import multiprocessing
import os
import sys
import time
import uuid

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ISSUER = "https://kubernetes.default.svc.cluster.local"
AUDIENCE = "lanyard"
NAMESPACE = "bench"
SERVICE_ACCOUNT = "api"
NODES = 4


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


PARALLEL_FROM = 20_000  # default --jobs: one process below this many tokens


def uint_bytes(n: int) -> bytes:
    return n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")


def public_jwk(public_key, alg: str) -> dict:
    numbers = public_key.public_numbers()
    if alg == "ES256":
        jwk = {
            "crv": "P-256",
            "kty": "EC",
            "x": b64url(numbers.x.to_bytes(32, "big")),
            "y": b64url(numbers.y.to_bytes(32, "big")),
        }
    else:
        jwk = {"e": b64url(uint_bytes(numbers.e)), "kty": "RSA", "n": b64url(uint_bytes(numbers.n))}
    # RFC 7638 thumbprint: the required members, sorted, no whitespace.
    canonical = json.dumps(jwk, sort_keys=True, separators=(",", ":")).encode()
    digest = hashes.Hash(hashes.SHA256())
    digest.update(canonical)
    jwk.update({"kid": b64url(digest.finalize()), "alg": alg, "use": "sig"})
    return jwk


# --- minting (module level so that worker processes can run it) ---

_STATE = {}


def _init(pem: bytes, alg: str, kid: str, now: int, ttl: int, sa_uid: str, node_uids: list) -> None:
    _STATE.update(
        key=serialization.load_pem_private_key(pem, password=None),
        alg=alg,
        header=b64url(json.dumps({"alg": alg, "kid": kid, "typ": "JWT"}, separators=(",", ":")).encode()),
        now=now,
        ttl=ttl,
        sa_uid=sa_uid,
        node_uids=node_uids,
    )


def _mint(i: int, namespace: str) -> str:
    st = _STATE
    node = i % NODES
    claims = {
        "iss": ISSUER,
        "aud": [AUDIENCE],
        "sub": f"system:serviceaccount:{namespace}:{SERVICE_ACCOUNT}",
        "exp": st["now"] + st["ttl"],
        "iat": st["now"],
        "nbf": st["now"],
        "jti": str(uuid.uuid4()),
        "kubernetes.io": {
            "namespace": namespace,
            "serviceaccount": {"name": SERVICE_ACCOUNT, "uid": st["sa_uid"]},
            "pod": {"name": f"api-{i}", "uid": str(uuid.uuid4())},
            "node": {"name": f"node-{node}", "uid": st["node_uids"][node]},
        },
    }
    signing_input = st["header"] + "." + b64url(json.dumps(claims, separators=(",", ":")).encode())
    data = signing_input.encode("ascii")
    if st["alg"] == "ES256":
        r, s = decode_dss_signature(st["key"].sign(data, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        sig = st["key"].sign(data, padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64url(sig)


def _mint_range(bounds: tuple) -> list:
    start, end = bounds
    return [_mint(i, NAMESPACE) for i in range(start, end)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("-n", "--count", type=int, default=1000, help="tokens to mint (default 1000)")
    parser.add_argument("--alg", choices=["ES256", "RS256"], default="ES256",
                        help="signature algorithm of the issuer key and tokens (default ES256; RS256: 2048-bit RSA)")
    parser.add_argument("--ttl", type=int, default=3600, help="token lifetime in seconds (default 3600)")
    parser.add_argument("-j", "--jobs", type=int, default=0,
                        help=f"processes minting in parallel (default: nproc from {PARALLEL_FROM:,} tokens on, else 1)")
    args = parser.parse_args()
    if not 1 <= args.count <= 1_000_000:
        parser.error("--count must be 1..1000000")
    if not 0 <= args.jobs <= 64:
        parser.error("--jobs must be 0..64")
    jobs = args.jobs or ((os.cpu_count() or 1) if args.count >= PARALLEL_FROM else 1)
    jobs = max(1, min(jobs, args.count))

    os.makedirs(args.out_dir, exist_ok=True)
    if args.alg == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key()
    jwk = public_jwk(public, args.alg)

    def write(name: str, data: bytes, mode: int = 0o644) -> None:
        path = os.path.join(args.out_dir, name)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as f:
            f.write(data)

    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public_pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    init = (pem, args.alg, jwk["kid"], int(time.time()), args.ttl, str(uuid.uuid4()),
            [str(uuid.uuid4()) for _ in range(NODES)])

    t0 = time.monotonic()
    _init(*init)
    if jobs == 1:
        lines = _mint_range((0, args.count))
    else:
        step = -(-args.count // (jobs * 4))  # a few chunks per process
        chunks = [(a, min(a + step, args.count)) for a in range(0, args.count, step)]
        with multiprocessing.get_context("fork").Pool(jobs, initializer=_init, initargs=init) as pool:
            lines = [t for part in pool.map(_mint_range, chunks) for t in part]
    seconds = time.monotonic() - t0
    smoke = _mint(args.count, NAMESPACE)
    wrong_ns = _mint(0, "other")

    if len(lines) != args.count or len(set(lines + [smoke])) != args.count + 1:
        print("mint_tokens: duplicate or missing tokens", file=sys.stderr)
        return 1
    # The hand-assembled JWT must be what a JOSE library accepts.
    claims = jwt.decode(lines[0], public_pem, algorithms=[args.alg], audience=AUDIENCE, issuer=ISSUER)
    if jwt.get_unverified_header(lines[0]).get("kid") != jwk["kid"] or claims["kubernetes.io"]["namespace"] != NAMESPACE:
        print("mint_tokens: the first token does not carry the expected kid / namespace", file=sys.stderr)
        return 1

    write("issuer_key.pem", pem, 0o600)
    write("issuer_pub.pem", public_pem)
    write("jwks.json", (json.dumps({"keys": [jwk]}, indent=2) + "\n").encode())
    write("tokens.txt", ("\n".join(lines) + "\n").encode())
    write("smoke.txt", (smoke + "\n").encode())
    write("wrong_ns.txt", (wrong_ns + "\n").encode())
    print(f"mint_tokens: {args.count:,} {args.alg} tokens in {seconds:.1f} s ({jobs} process(es), "
          f"{args.count / max(seconds, 1e-9):,.0f}/s), kid {jwk['kid']}, in {args.out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
