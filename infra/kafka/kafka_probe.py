#!/usr/bin/env python3
"""Cheap, dependency-free Kafka readiness probe (stdlib only, ~50 ms instead of a JVM tool).

Usage: kafka_probe.py [host] [port]

Sends a real ApiVersions request, then a Metadata request (version negotiated from the
ApiVersions answer) asking for no topics, and succeeds (exit 0) only when the broker lists
at least one live broker -- a KRaft broker only lists itself once it is registered and
unfenced, i.e. when it can actually serve produce/consume/admin requests.
Exit 1 otherwise, with the reason on stderr.
"""

import socket
import struct
import sys

API_METADATA = 3
API_VERSIONS = 18
CLIENT_ID = b"tracewatch-probe"


def _recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        buf += chunk
    return bytes(buf)


def _uvarint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_uvarint(data, pos):
    shift = result = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _call(sock, api_key, version, corr, body, flexible_header):
    header = struct.pack(">hhih", api_key, version, corr, len(CLIENT_ID)) + CLIENT_ID
    if flexible_header:
        header += _uvarint(0)  # empty tagged fields
    msg = header + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    resp = _recv_exact(sock, size)
    (rcorr,) = struct.unpack(">i", resp[:4])
    if rcorr != corr:
        raise ValueError(f"correlation id mismatch: {rcorr} != {corr}")
    return resp[4:]


def probe(host, port, timeout=3.0):
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        # ApiVersions v0: empty body, response header v0, supported by every broker.
        body = _call(sock, API_VERSIONS, 0, 1, b"", flexible_header=False)
        (err, n) = struct.unpack(">hi", body[:6])
        if err != 0:
            raise ValueError(f"ApiVersions error code {err}")
        ranges = {}
        for i in range(n):
            key, lo, hi = struct.unpack(">hhh", body[6 + 6 * i : 12 + 6 * i])
            ranges[key] = (lo, hi)
        if API_METADATA not in ranges:
            raise ValueError("broker does not advertise Metadata")
        lo, hi = ranges[API_METADATA]
        version = min(hi, 12)
        if version < max(lo, 1):
            raise ValueError(f"no usable Metadata version in [{lo}, {hi}]")

        flexible = version >= 9
        if not flexible:
            req = struct.pack(">i", 0)  # topics: empty array (v1+: no topics, not all)
            if version >= 4:
                req += b"\x00"  # allow_auto_topic_creation
            if version >= 8:
                req += b"\x00\x00"  # include cluster/topic authorized operations
        else:
            req = _uvarint(1)  # compact array, 0 elements
            req += b"\x00"  # allow_auto_topic_creation
            if version <= 10:
                req += b"\x00"  # include_cluster_authorized_operations
            req += b"\x00"  # include_topic_authorized_operations
            req += _uvarint(0)  # tagged fields
        resp = _call(sock, API_METADATA, version, 2, req, flexible_header=flexible)
        pos = 0
        if flexible:
            _, pos = _read_uvarint(resp, pos)  # response header tagged fields
        if version >= 3:
            pos += 4  # throttle_time_ms
        if flexible:
            n, pos = _read_uvarint(resp, pos)
            n -= 1
        else:
            (n,) = struct.unpack(">i", resp[pos : pos + 4])
            pos += 4
        if n < 1:
            raise ValueError("broker answers but lists no live broker yet (still fenced?)")
        (node_id,) = struct.unpack(">i", resp[pos : pos + 4])
        return node_id, version


def main(argv):
    host = argv[1] if len(argv) > 1 else "127.0.0.1"
    port = int(argv[2]) if len(argv) > 2 else 9092
    try:
        node_id, version = probe(host, port)
    except Exception as exc:  # any failure means "not ready"
        print(f"not ready: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"ready: {host}:{port} broker node.id={node_id} (Metadata v{version})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
