#!/usr/bin/env python3
"""Mint a pool of Kubernetes-projected-service-account-shaped tokens for the
token-exchange benchmark.

Writes into OUT_DIR:
  issuer_key.pem   the EC P-256 issuer private key (PKCS#8; benchmark only)
  issuer_pub.pem   its public key (SubjectPublicKeyInfo), for OpenBao's jwt_validation_pubkeys
  jwks.json        the public key as a JWKS (kid, alg ES256, use sig), for Lanyard
  tokens.txt       N distinct ES256 JWTs, one per line
  wrong_ns.txt     one token like the others but from namespace "other", which
                   both targets must refuse (a check that the bindings are on)

Each token looks like what the kubelet projects into a pod with
`audience: lanyard`: iss is the in-cluster issuer, sub the service account,
and the `kubernetes.io` claim names namespace, service account, pod and node.
Tokens differ in jti, pod name/uid and node; they are valid for one hour.

Needs PyJWT and cryptography (run.sh installs both into its venv).
"""

import argparse
import base64
import json
import os
import sys
import time
import uuid

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

ISSUER = "https://kubernetes.default.svc.cluster.local"
AUDIENCE = "lanyard"
NAMESPACE = "bench"
SERVICE_ACCOUNT = "api"
NODES = 4


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(public_key: ec.EllipticCurvePublicKey) -> dict:
    numbers = public_key.public_numbers()
    jwk = {
        "crv": "P-256",
        "kty": "EC",
        "x": b64url(numbers.x.to_bytes(32, "big")),
        "y": b64url(numbers.y.to_bytes(32, "big")),
    }
    # RFC 7638 thumbprint: the required members, sorted, no whitespace.
    canonical = json.dumps(jwk, sort_keys=True, separators=(",", ":")).encode()
    digest = hashes.Hash(hashes.SHA256())
    digest.update(canonical)
    jwk.update({"kid": b64url(digest.finalize()), "alg": "ES256", "use": "sig"})
    return jwk


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("-n", "--count", type=int, default=1000, help="tokens to mint (default 1000)")
    parser.add_argument("--ttl", type=int, default=3600, help="token lifetime in seconds (default 3600)")
    args = parser.parse_args()
    if not 1 <= args.count <= 1_000_000:
        parser.error("--count must be 1..1000000")

    os.makedirs(args.out_dir, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    jwk = public_jwk(public)

    def write(name: str, data: bytes, mode: int = 0o644) -> None:
        path = os.path.join(args.out_dir, name)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as f:
            f.write(data)

    write(
        "issuer_key.pem",
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        0o600,
    )
    write(
        "issuer_pub.pem",
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    )
    write("jwks.json", (json.dumps({"keys": [jwk]}, indent=2) + "\n").encode())

    now = int(time.time())
    sa_uid = str(uuid.uuid4())
    node_uids = [str(uuid.uuid4()) for _ in range(NODES)]

    def mint(i: int, namespace: str) -> str:
        node = i % NODES
        claims = {
            "iss": ISSUER,
            "aud": [AUDIENCE],
            "sub": f"system:serviceaccount:{namespace}:{SERVICE_ACCOUNT}",
            "exp": now + args.ttl,
            "iat": now,
            "nbf": now,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": SERVICE_ACCOUNT, "uid": sa_uid},
                "pod": {"name": f"api-{i}", "uid": str(uuid.uuid4())},
                "node": {"name": f"node-{node}", "uid": node_uids[node]},
            },
        }
        return jwt.encode(claims, key, algorithm="ES256", headers={"kid": jwk["kid"]})

    lines = [mint(i, NAMESPACE) for i in range(args.count)]
    if len(set(lines)) != len(lines):
        print("mint_tokens: duplicate tokens minted", file=sys.stderr)
        return 1
    write("tokens.txt", ("\n".join(lines) + "\n").encode())
    write("wrong_ns.txt", (mint(0, "other") + "\n").encode())
    print(f"mint_tokens: {args.count} tokens, kid {jwk['kid']}, in {args.out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
