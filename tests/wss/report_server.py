"""Serves page.html and records the page's reports (tests/wss/run.sh).

Usage: report_server.py PORT_FILE LOG_FILE. Listens on 127.0.0.1, port 0, writes the port to
PORT_FILE, and appends one line "EVENT DATA" to LOG_FILE for each GET /report?event=..&data=..
"""

import http.server
import pathlib
import sys
import urllib.parse

PAGE = (pathlib.Path(__file__).parent / "page.html").read_bytes()
PORT_FILE, LOG_FILE = sys.argv[1], sys.argv[2]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/report":
            query = urllib.parse.parse_qs(url.query)
            line = f"{query.get('event', [''])[0]} {query.get('data', [''])[0]}\n"
            with open(LOG_FILE, "a", encoding="utf-8") as log:
                log.write(line)
            self.send_response(204)
            self.end_headers()
        elif url.path == "/":
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(PAGE)))
            self.end_headers()
            self.wfile.write(PAGE)
        else:
            self.send_error(404)

    def log_message(self, format, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
pathlib.Path(PORT_FILE).write_text(str(server.server_address[1]))
server.serve_forever()
