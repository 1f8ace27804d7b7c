"""A raw HTTP/2 client for the Workload API socket: frames written by hand,
so it can send what libraries never do (any :authority, header blocks split
over many CONTINUATION frames, garbage, floods). The server's answers are
HPACK-decoded with the `hpack` package. Run by tests/workload_api.rs.

    python raw_h2.py call SOCKET AUTHORITY [SPLIT]   # FetchJWTSVID; @raw @pct @empty name the socket path forms
    python raw_h2.py garbage|oversized|flood|half SOCKET
    python raw_h2.py pidreuse SOCKET                 # root: the caller's pid reused before the call

Prints one JSON line.
"""
import json
import os
import socket as so
import struct
import sys
import time
import urllib.parse

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST, SETTINGS, PING, GOAWAY, CONT = 0, 1, 3, 4, 6, 7, 9
END_STREAM, END_HEADERS, ACK = 1, 4, 1


def frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal(name, value):
    """Literal header field without indexing, new name, no Huffman."""
    def s(b):
        assert len(b) < 127
        return bytes([len(b)]) + b
    return b"\x00" + s(name) + s(value)


def request_block(authority, path=b"/SpiffeWorkloadAPI/FetchJWTSVID"):
    fields = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", path),
              (b":authority", authority), (b"content-type", b"application/grpc"),
              (b"te", b"trailers"), (b"workload.spiffe.io", b"true")]
    return b"".join(literal(n, v) for n, v in fields)


def grpc_message(body):
    return b"\x00" + struct.pack(">I", len(body)) + body


def jwt_request(audience=b"raw-h2"):
    return b"\x0a" + bytes([len(audience)]) + audience


def connect(path):
    s = so.socket(so.AF_UNIX, so.SOCK_STREAM)
    s.settimeout(20)
    s.connect(path)
    return s


class Reader:
    def __init__(self, s):
        self.s, self.buf, self.dec = s, b"", hpack.Decoder()

    def frame(self):
        while len(self.buf) < 9 or len(self.buf) < 9 + int.from_bytes(self.buf[:3], "big"):
            chunk = self.s.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        n = int.from_bytes(self.buf[:3], "big")
        kind, flags = self.buf[3], self.buf[4]
        stream = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
        payload, self.buf = self.buf[9:9 + n], self.buf[9 + n:]
        return kind, flags, stream, payload


def exchange(s, blocks_and_data):
    """Sends the frames, reads until stream 1 ends; returns what happened."""
    s.sendall(PREFACE + frame(SETTINGS, 0, 0, b"") + blocks_and_data)
    r = Reader(s)
    out = {"headers": {}, "data": b"", "closed": False}
    block = b""
    try:
        while True:
            f = r.frame()
            if f is None:
                out["closed"] = True
                break
            kind, flags, stream, payload = f
            if kind == SETTINGS and not flags & ACK:
                s.sendall(frame(SETTINGS, ACK, 0, b""))
            elif kind == PING and not flags & ACK:
                s.sendall(frame(PING, ACK, 0, payload))
            elif kind == GOAWAY:
                out["goaway"] = int.from_bytes(payload[4:8], "big")
                break
            elif kind == RST and stream == 1:
                out["rst_stream"] = int.from_bytes(payload[:4], "big")
                break
            elif kind in (HEADERS, CONT) and stream == 1:
                block += payload
                if flags & END_HEADERS:
                    for k, v in r.dec.decode(block):
                        out["headers"][k] = v
                    block = b""
                if flags & END_STREAM:
                    break
            elif kind == DATA and stream == 1:
                out["data"] += payload
                if flags & END_STREAM:
                    break
    except (ConnectionResetError, BrokenPipeError, so.timeout) as e:
        out["closed"] = True
        out["error"] = type(e).__name__
    h = out.pop("headers")
    out["status"] = h.get(":status")
    out["grpc_status"] = h.get("grpc-status")
    out["grpc_message"] = urllib.parse.unquote(h.get("grpc-message", ""))
    data = out.pop("data")
    out["spiffe_ids"] = parse_jwt_response(data[5:]) if len(data) > 5 else []
    return out


def fields(buf):
    """Length-delimited fields of a protobuf message: [(number, bytes)]."""
    i, out = 0, []
    while i < len(buf):
        key, i = varint(buf, i)
        if key & 7 != 2:
            break
        n, i = varint(buf, i)
        out.append((key >> 3, buf[i:i + n]))
        i += n
    return out


def varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def parse_jwt_response(body):
    ids = []
    for num, svid in fields(body):
        if num == 1:
            ids += [v.decode() for n, v in fields(svid) if n == 1]
    return ids


def authority_for(spec, path):
    return {"@raw": path.encode(), "@pct": urllib.parse.quote(path, safe="").encode(),
            "@empty": b""}.get(spec, spec.encode())


def call(path, spec, split=0):
    block = request_block(authority_for(spec, path))
    if split:
        parts = [block[i:i + split] for i in range(0, len(block), split)]
        frames = frame(HEADERS, 0, 1, parts[0])
        for i, p in enumerate(parts[1:]):
            frames += frame(CONT, END_HEADERS if i == len(parts) - 2 else 0, 1, p)
    else:
        frames = frame(HEADERS, END_HEADERS, 1, block)
    frames += frame(DATA, END_STREAM, 1, grpc_message(jwt_request()))
    out = exchange(connect(path), frames)
    out["frames"] = 1 + (len(block) + split - 1) // split if split else 1
    return out


def main():
    mode, path = sys.argv[1], sys.argv[2]
    if mode == "call":
        out = call(path, sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 0)
    elif mode == "garbage":
        out = exchange(connect(path), frame(HEADERS, END_HEADERS, 1, request_block(b"localhost"))
                       + frame(DATA, END_STREAM, 1, grpc_message(b"\xff\xff\xff\xff\x0f\x0a\xff")))
    elif mode == "oversized":
        # Declares a 1 MiB message; the agent accepts 64 KiB.
        out = exchange(connect(path), frame(HEADERS, END_HEADERS, 1, request_block(b"localhost"))
                       + frame(DATA, 0, 1, b"\x00" + struct.pack(">I", 1 << 20) + b"\x0a" * 1000))
    elif mode == "flood":
        s = connect(path)
        s.sendall(PREFACE + frame(SETTINGS, 0, 0, b"") + frame(HEADERS, 0, 1, request_block(b"x")))
        sent, closed = 0, False
        try:
            while sent < 4 << 20:
                s.sendall(frame(CONT, 0, 1, literal(b"x-flood", b"v" * 100) * 140))
                sent += 16 << 10
        except (BrokenPipeError, ConnectionResetError):
            closed = True
        if not closed:
            s.settimeout(5)
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        closed = True
                        break
            except (so.timeout, ConnectionResetError):
                closed = not isinstance(sys.exc_info()[1], so.timeout)
        out = {"closed": closed, "sent_bytes": sent}
    elif mode == "half":
        s = connect(path)
        s.sendall(PREFACE + frame(SETTINGS, 0, 0, b"") + frame(HEADERS, END_HEADERS, 1, request_block(b"x"))[:20])
        s.close()
        out = {"sent": "half a HEADERS frame, then closed"}
    elif mode == "pidreuse":
        out = pid_reuse(path)
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out), flush=True)


def pid_reuse(path):
    """A connects and hands the connection to its child C, then exits; B is
    started with A's pid (ns_last_pid); C then calls over A's connection."""
    for attempt in range(10):
        go_r, go_w = os.pipe()
        res_r, res_w = os.pipe()
        a = os.fork()
        if a == 0:
            s = connect(path)
            if os.fork() == 0:  # C: keeps the connection A made
                os.read(go_r, 1)
                try:
                    out = exchange(s, frame(HEADERS, END_HEADERS, 1, request_block(b"localhost"))
                                   + frame(DATA, END_STREAM, 1, grpc_message(jwt_request())))
                except Exception as e:  # reported to the parent
                    out = {"error": repr(e)}
                os.write(res_w, json.dumps(out).encode())
                os._exit(0)
            os._exit(0)
        os.waitpid(a, 0)
        # Start times count in clock ticks (10 ms): a real reuse comes after
        # the pid space wrapped, far later; two ticks stand for that here.
        time.sleep(0.03)
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(a - 1))
        b = os.fork()
        if b == 0:  # B: same user, same binary, a different process
            time.sleep(30)
            os._exit(0)
        if b != a:
            os.kill(b, 9)
            os.waitpid(b, 0)
            os.write(go_w, b"x")
            os.read(res_r, 65536)
            continue
        os.write(go_w, b"x")
        result = json.loads(os.read(res_r, 65536))
        os.kill(b, 9)
        os.waitpid(b, 0)
        result["reused_pid"] = a
        result["attempts"] = attempt + 1
        return result
    return {"error": "could not get the pid reused in 10 attempts"}


if __name__ == "__main__":
    main()
