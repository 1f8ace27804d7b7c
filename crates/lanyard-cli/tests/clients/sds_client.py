"""Envoy SDS client: Python grpcio with Envoy's API from the PyPI package
xds-protos (compiled by the gRPC project), as Envoy itself would ask.
Run by tests/workload_api.rs.

    python sds_client.py SOCKET SPIFFE_ID ROTATION_TIMEOUT_SECS

On one StreamSecrets stream: asks for the SPIFFE ID and ROOTCA, ACKs,
waits for a pushed rotation, NACKs it, then asks for ALL and `default`;
then FetchSecrets. Prints one JSON line.
"""
import json
import queue
import sys
import time

import grpc
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_spiffe_validator_config_pb2 as spiffe_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from envoy.config.core.v3 import base_pb2
from google.rpc import status_pb2

TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def secrets(resp):
    out = {}
    for any_ in resp.resources:
        assert any_.type_url == TYPE, any_.type_url
        s = secret_pb2.Secret()
        any_.Unpack(s)
        out[s.name] = s
    return out


def main():
    socket, spiffe_id, rotation_timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    channel = grpc.insecure_channel(f"unix:{socket}")
    stub = sds_pb2_grpc.SecretDiscoveryServiceStub(channel)
    node = base_pb2.Node(id="test-envoy", cluster="tests", user_agent_name="envoy")
    requests = queue.Queue()

    def gen():
        while True:
            r = requests.get()
            if r is None:
                return
            yield r

    responses = stub.StreamSecrets(gen())
    result = {}
    requests.put(discovery_pb2.DiscoveryRequest(node=node, type_url=TYPE, resource_names=[spiffe_id, "ROOTCA"]))
    first = next(responses)
    got = secrets(first)
    cert = got[spiffe_id].tls_certificate
    chain = cert.certificate_chain.inline_bytes.decode()
    key = cert.private_key.inline_bytes.decode()
    roots = got["ROOTCA"].validation_context.trusted_ca.inline_bytes.decode()
    result["first_version"] = first.version_info
    result["chain_certs"] = chain.count("BEGIN CERTIFICATE")
    result["key_pem"] = "BEGIN PRIVATE KEY" in key
    result["rootca_certs"] = roots.count("BEGIN CERTIFICATE")
    # ACK: same version, the response's nonce.
    requests.put(discovery_pb2.DiscoveryRequest(type_url=TYPE, resource_names=[spiffe_id, "ROOTCA"],
                                                version_info=first.version_info, response_nonce=first.nonce))
    # A rotation is pushed without asking.
    started = time.monotonic()
    pushed = next(responses)
    result["rotation_after_s"] = round(time.monotonic() - started, 1)
    if time.monotonic() - started > rotation_timeout:
        raise SystemExit("rotation took too long")
    new_chain = secrets(pushed)[spiffe_id].tls_certificate.certificate_chain.inline_bytes.decode()
    result["rotated"] = new_chain != chain
    result["rotation_version"] = pushed.version_info
    result["nonce_changed"] = pushed.nonce != first.nonce
    # NACK it (Envoy could not apply it): logged by the agent, no answer; then
    # new names with the same nonce are answered.
    requests.put(discovery_pb2.DiscoveryRequest(
        type_url=TYPE, resource_names=[spiffe_id, "ROOTCA"], version_info=first.version_info,
        response_nonce=pushed.nonce, error_detail=status_pb2.Status(code=3, message="test NACK")))
    requests.put(discovery_pb2.DiscoveryRequest(type_url=TYPE, resource_names=["ALL", "default"],
                                                version_info=pushed.version_info, response_nonce=pushed.nonce))
    third = next(responses)
    got = secrets(third)
    custom = got["ALL"].validation_context.custom_validator_config
    cfg = spiffe_pb2.SPIFFECertValidatorConfig()
    custom.typed_config.Unpack(cfg)
    result["all_validator"] = custom.name
    result["all_trust_domains"] = [td.name for td in cfg.trust_domains]
    result["default_has_chain"] = "BEGIN CERTIFICATE" in got["default"].tls_certificate.certificate_chain.inline_bytes.decode()
    requests.put(None)
    fetched = stub.FetchSecrets(discovery_pb2.DiscoveryRequest(node=node, type_url=TYPE, resource_names=["ROOTCA"]), timeout=30)
    result["fetch_names"] = sorted(secrets(fetched).keys())
    try:
        stub.FetchSecrets(discovery_pb2.DiscoveryRequest(type_url=TYPE, resource_names=["spiffe://example.org/not-mine"]), timeout=30)
        result["not_mine"] = "OK"
    except grpc.RpcError as e:
        result["not_mine"] = e.code().name
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    try:
        main()
    except grpc.RpcError as e:
        print(f"gRPC error: {e.code().name}: {e.details()}", file=sys.stderr)
        sys.exit(1)
