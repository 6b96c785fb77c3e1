#!/usr/bin/env python3
"""Idle memory per WebSocket connection of a running tagcast.

Usage: idle-rss.py PID PORT [COUNT]

Opens COUNT (default 5000) idle WebSocket connections to 127.0.0.1:PORT, spread over source
addresses 127.0.0.2.. (bind before connect), reads VmRSS of PID from /proc before and after, and
prints the difference per connection. Loopback only, bounded count; closes everything at the end.
"""
import socket
import sys
import time

REQUEST = (
    "GET /?tags=%7B%22user%22%3A%22{n}%22%7D HTTP/1.1\r\nHost: localhost\r\n"
    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main():
    pid, port = int(sys.argv[1]), int(sys.argv[2])
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 5000
    # Warm up: one connection, so that lazily allocated runtime state is not counted.
    warm = connect(port, 0)
    time.sleep(0.5)
    before = rss_kib(pid)
    sockets = [connect(port, n) for n in range(1, count + 1)]
    time.sleep(1.0)
    after = rss_kib(pid)
    print(f"connections={count} rss_before_kib={before} rss_after_kib={after} "
          f"per_connection_bytes={(after - before) * 1024 / count:.0f}")
    for sock in sockets + [warm]:
        sock.close()


def connect(port, n):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((f"127.0.0.{2 + n % 200}", 0))
    sock.connect(("127.0.0.1", port))
    sock.sendall(REQUEST.format(n=n).encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("server closed during the handshake")
        answer += chunk
    if not answer.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(answer[:200])
    return sock


if __name__ == "__main__":
    main()
