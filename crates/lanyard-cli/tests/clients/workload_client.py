"""Workload API client on Python grpcio (gRPC C-core), with stubs generated
from Lanyard's proto by grpcio-tools. Run by tests/workload_api.rs.

    python workload_client.py SOCKET PROTO_DIR SPIFFE_ID AUDIENCE [--hang]

Fetches X.509-SVIDs, bundles and a JWT-SVID, validates the JWT-SVID through
the Workload API, prints one JSON line and exits 0; exits 1 with the error
otherwise. With --hang it prints the JSON, then keeps its FetchX509SVID
stream open until killed (the "caller disappears mid-stream" test).
"""
import json
import os
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc


def stubs(proto_dir):
    out = tempfile.mkdtemp(prefix="lanyard-pystubs-")
    import grpc_tools
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out}",
                      f"--grpc_python_out={out}", os.path.join(proto_dir, "workload.proto")])
    if rc != 0:
        raise SystemExit(f"grpcio-tools failed: {rc}")
    sys.path.insert(0, out)
    import workload_pb2, workload_pb2_grpc  # noqa: E401
    return workload_pb2, workload_pb2_grpc


def main():
    socket, proto_dir, spiffe_id, audience = sys.argv[1:5]
    hang = "--hang" in sys.argv
    pb, pb_grpc = stubs(proto_dir)
    # The default C-core channel: it sends the percent-encoded socket path as :authority.
    channel = grpc.insecure_channel(f"unix:{socket}")
    stub = pb_grpc.SpiffeWorkloadAPIStub(channel)
    md = [("workload.spiffe.io", "true")]
    result = {"client": f"grpcio {grpc.__version__}"}

    stream = stub.FetchX509SVID(pb.X509SVIDRequest(), metadata=md, timeout=None if hang else 30)
    first = next(stream)
    ids = [s.spiffe_id for s in first.svids]
    if spiffe_id not in ids:
        raise SystemExit(f"X.509-SVIDs {ids} lack {spiffe_id}")
    svid = next(s for s in first.svids if s.spiffe_id == spiffe_id)
    if not (svid.x509_svid[:1] == b"\x30" and svid.x509_svid_key[:1] == b"\x30" and svid.bundle[:1] == b"\x30"):
        raise SystemExit("X.509-SVID, key or bundle is not DER")
    result["x509_svids"] = ids

    bundles = next(stub.FetchX509Bundles(pb.X509BundlesRequest(), metadata=md, timeout=30))
    result["x509_bundles"] = sorted(bundles.bundles.keys())
    jwt_bundles = next(stub.FetchJWTBundles(pb.JWTBundlesRequest(), metadata=md, timeout=30))
    jwks = json.loads(jwt_bundles.bundles["spiffe://example.org"])
    result["jwt_bundle_keys"] = len(jwks["keys"])

    jwt = stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=[audience], spiffe_id=spiffe_id),
                            metadata=md, timeout=30)
    token = jwt.svids[0].svid
    result["jwt_spiffe_id"] = jwt.svids[0].spiffe_id
    validated = stub.ValidateJWTSVID(pb.ValidateJWTSVIDRequest(audience=audience, svid=token),
                                     metadata=md, timeout=30)
    result["validated_spiffe_id"] = validated.spiffe_id
    aud = validated.claims.fields["aud"]
    result["validated_aud"] = ([v.string_value for v in aud.list_value.values]
                               if aud.HasField("list_value") else [aud.string_value])
    try:
        stub.ValidateJWTSVID(pb.ValidateJWTSVIDRequest(audience="other", svid=token), metadata=md, timeout=30)
        result["wrong_audience"] = "accepted"
    except grpc.RpcError as e:
        result["wrong_audience"] = e.code().name
    try:
        stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=[audience]), timeout=30)
        result["no_header"] = "OK"
    except grpc.RpcError as e:
        result["no_header"] = e.code().name
    print(json.dumps(result), flush=True)
    if hang:
        for _ in stream:
            pass
        time.sleep(3600)


if __name__ == "__main__":
    try:
        main()
    except grpc.RpcError as e:
        print(f"gRPC error: {e.code().name}: {e.details()}", file=sys.stderr)
        sys.exit(1)
