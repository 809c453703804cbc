"""The demo workload: a toy request handler that spends its time in the three
places mixedstack shows together -- Python code, C code (zlib, hashlib, json) and
the kernel (file reads and stats). Runs for about 3 seconds."""
import hashlib
import json
import os
import tempfile
import time
import zlib


def parse_request(payload):
    return json.loads(payload)


def score(item):
    total = 0
    for ch in item["name"]:
        total = (total * 31 + ord(ch)) % 1_000_003
    return total


def rank(items):
    return sorted(items, key=score)  # a C builtin calling back into Python


def checksum(blob):
    return hashlib.sha256(blob).hexdigest()


def compress(blob):
    return zlib.compress(blob, 6)


def read_back(path):
    with open(path, "rb") as f:
        data = f.read()
    os.stat(path)
    return data


def handler(payload, path):
    items = parse_request(payload)["items"]
    ranked = rank(items)
    blob = json.dumps(ranked).encode() * 20
    checksum(blob)
    compress(blob)
    for _ in range(40):
        read_back(path)


def main(seconds=3.0):
    payload = json.dumps({"items": [{"name": "item-%d" % i, "size": i} for i in range(2000)]})
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(os.urandom(1 << 20))
    try:
        deadline = time.perf_counter() + seconds
        requests = 0
        while time.perf_counter() < deadline:
            handler(payload, f.name)
            requests += 1
    finally:
        os.unlink(f.name)
    print("handled %d requests" % requests)


if __name__ == "__main__":
    main()
