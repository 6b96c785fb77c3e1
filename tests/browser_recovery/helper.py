"""Serves page.html and web/tagcast.js, records the page's reports, and proxies WebSocket
connections to tagcast so that they can all be cut at once (tests/browser_recovery/run.sh).

Usage: helper.py UPSTREAM_HOST:PORT PORTS_FILE LOG_FILE. Listens on 127.0.0.1 port 0 twice (HTTP,
proxy) and writes "HTTP_PORT PROXY_PORT" to PORTS_FILE. GET /report?event=..&data=.. appends
"EVENT DATA" to LOG_FILE; GET /cut drops every proxied connection, both sides, at once.
"""

import http.server
import pathlib
import socket
import sys
import threading
import urllib.parse

HERE = pathlib.Path(__file__).parent
FILES = {
    "/": ("text/html; charset=utf-8", (HERE / "page.html").read_bytes()),
    "/tagcast.js": ("text/javascript", (HERE / "../../web/tagcast.js").read_bytes()),
}
UPSTREAM, PORTS_FILE, LOG_FILE = sys.argv[1], sys.argv[2], sys.argv[3]
host, port = UPSTREAM.rsplit(":", 1)
open_sockets = set()
lock = threading.Lock()


def pump(source, target):
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    for end in (source, target):
        try:
            end.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def proxy(listener):
    while True:
        client, _ = listener.accept()
        server = socket.create_connection((host, int(port)))
        with lock:
            open_sockets.update((client, server))
        threading.Thread(target=pump, args=(client, server), daemon=True).start()
        threading.Thread(target=pump, args=(server, client), daemon=True).start()


def cut():
    with lock:
        for end in open_sockets:
            try:
                end.shutdown(socket.SHUT_RDWR)
                end.close()
            except OSError:
                pass
        count = len(open_sockets) // 2
        open_sockets.clear()
    return count


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/report":
            query = urllib.parse.parse_qs(url.query)
            line = f"{query.get('event', [''])[0]} {query.get('data', [''])[0]}\n"
            with lock, open(LOG_FILE, "a", encoding="utf-8") as log:
                log.write(line)
            self.answer(204, "text/plain", b"")
        elif url.path == "/cut":
            self.answer(200, "text/plain", f"{cut()}\n".encode())
        elif url.path in FILES:
            self.answer(200, *FILES[url.path])
        else:
            self.send_error(404)

    def answer(self, status, content_type, body):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


proxy_listener = socket.create_server(("127.0.0.1", 0))
threading.Thread(target=proxy, args=(proxy_listener,), daemon=True).start()
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
ports = f"{server.server_address[1]} {proxy_listener.getsockname()[1]}"
pathlib.Path(PORTS_FILE).write_text(ports)
server.serve_forever()
