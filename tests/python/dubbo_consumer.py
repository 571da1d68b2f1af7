"""A consumer written with Apache Dubbo's Python implementation (PyPI
`apache-dubbo` 3.0.0b1): it discovers SERVICE through the ZooKeeper at
HOST:PORT (Dubbo's layout, `/dubbo/<service>/providers`) and calls its
`Echo` method over Triple, then prints what happened as JSON, for
tests/zookeeper.rs to check.

usage: dubbo_consumer.py HOST:PORT SERVICE MESSAGE...

Dubbo-python's Triple client sends whatever bytes its serializer returns;
SERVICE is `interop.Interop` from tests/proto/interop.proto, so the
messages are protobuf, encoded here by hand (EchoRequest.message is field
1, a string; so is EchoReply.message) to need no generated code.
"""

import json
import sys
import time

import dubbo
from dubbo.configs import ReferenceConfig, RegistryConfig

zookeeper, service, messages = sys.argv[1], sys.argv[2], sys.argv[3:]


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_echo_request(message: str) -> bytes:
    data = message.encode("utf-8")
    return b"\x0a" + varint(len(data)) + data


def decode_echo_reply(data: bytes) -> str:
    """Field 1 (a length-delimited string) of an EchoReply; other fields skipped."""
    i, message = 0, ""
    while i < len(data):
        key, shift = 0, 0
        while True:
            byte = data[i]
            i += 1
            key |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        field, wire = key >> 3, key & 7
        if wire == 2:
            length, shift = 0, 0
            while True:
                byte = data[i]
                i += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            if field == 1:
                message = data[i : i + length].decode("utf-8")
            i += length
        elif wire == 0:
            while data[i] & 0x80:
                i += 1
            i += 1
        else:
            raise ValueError(f"unexpected wire type {wire}")
    return message


registry = RegistryConfig.from_url(f"zookeeper://{zookeeper}")
bootstrap = dubbo.Dubbo(registry_config=registry)
client = bootstrap.create_client(ReferenceConfig(protocol="tri", service=service))
echo = client.unary(
    method_name="Echo",
    request_serializer=encode_echo_request,
    response_deserializer=decode_echo_reply,
)

out = {"replies": [], "errors": []}
# The registry's first notification arrives from kazoo's thread: retry
# while the directory is still empty, for at most 20 s.
deadline = time.monotonic() + 20
for message in messages:
    while True:
        try:
            out["replies"].append(echo(message))
            break
        except Exception as err:  # noqa: BLE001 - reported to the test
            if time.monotonic() > deadline:
                out["errors"].append(f"{type(err).__name__}: {err}")
                break
            time.sleep(0.2)
print(json.dumps(out), flush=True)
