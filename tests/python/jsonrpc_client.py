"""A raw-socket JSON-RPC 1.0 client, written the way Python clients of Go's
net/rpc/jsonrpc are: one JSON object per request on a TCP socket. Prints
the replies as JSON for tests/polyglot.rs to check.

usage: jsonrpc_client.py HOST PORT
"""
import json
import socket
import sys

sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
decoder = json.JSONDecoder()
buffered = ""


def send(*requests):
    sock.sendall("".join(json.dumps(r) for r in requests).encode())


def receive():
    global buffered
    while True:
        text = buffered.lstrip()
        if text:
            try:
                value, end = decoder.raw_decode(text)
                buffered = text[end:]
                return value
            except ValueError:
                pass
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("the server closed the connection")
        buffered += chunk.decode()


out = {}
send({"method": "Calculator.Add", "params": [{"a": 10, "b": 50}], "id": 0})
out["add"] = receive()

# Go's default field names are capitalised; the server matches them anyway.
send({"method": "Calculator.Add", "params": [{"A": 1, "B": 2}], "id": 1})
out["go_names"] = receive()

# Three requests in one write; replies may come in any order.
send(
    {"method": "Calculator.Add", "params": [{"a": 1, "b": 1}], "id": 2},
    {"method": "Calculator.Add", "params": [{"a": 2, "b": 2}], "id": 3},
    {"method": "Calculator.Add", "params": [{"a": 3, "b": 3}], "id": 4},
)
out["pipelined"] = sorted([receive() for _ in range(3)], key=lambda reply: reply["id"])

send({"method": "Calculator.Div", "params": [{"a": 1, "b": 0}], "id": 5})
out["app_error"] = receive()

send({"method": "Calculator.Nope", "params": [{}], "id": 6})
out["unknown"] = receive()

send({"method": "interop.Interop.Echo", "params": [{"message": "proto over JSON-RPC"}], "id": 7})
out["proto"] = receive()

print(json.dumps(out))
