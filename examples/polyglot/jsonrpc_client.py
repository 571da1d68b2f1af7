"""Call courier's calculator example over JSON-RPC 1.0 with nothing but a
socket, the way Python clients of Go's net/rpc/jsonrpc servers do.

    cargo run --example calculator -- serve 127.0.0.1:9000 &
    python examples/polyglot/jsonrpc_client.py 127.0.0.1 9000
"""
import json
import socket
import sys

host, port = (sys.argv[1], int(sys.argv[2])) if len(sys.argv) > 2 else ("127.0.0.1", 9000)
with socket.create_connection((host, port)) as sock:
    stream = sock.makefile("rw")
    # Three requests at once; replies come back one JSON object per line.
    for i, (a, b) in enumerate([(10, 50), (1, 2), (3, 4)]):
        stream.write(json.dumps({"method": "Calculator.Add", "params": [{"a": a, "b": b}], "id": i}))
    stream.flush()
    replies = sorted((json.loads(stream.readline()) for _ in range(3)), key=lambda r: r["id"])
    for reply in replies:
        print("JSON-RPC:", reply)
    stream.write(json.dumps({"method": "Calculator.Div", "params": [{"a": 1, "b": 0}], "id": 3}))
    stream.flush()
    print("JSON-RPC error:", json.loads(stream.readline())["error"])
