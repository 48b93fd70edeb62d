"""Inventory service: GET /items lists the items, GET /health reports the service's health.

Run it with:  python3 app.py --host 127.0.0.1 --port 8080
"""
import argparse
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The build's version; a deployment may override it with APP_VERSION.
DEFAULT_VERSION = "1.0.0"

ITEMS = [
    {"id": 1, "name": "widget", "stock": 12},
    {"id": 2, "name": "gadget", "stock": 0},
]


def health():
    """The service is healthy when it knows which build it runs: APP_VERSION, else the
    version it was built as."""
    version = os.environ.get("APP_VERSION") or DEFAULT_VERSION
    return {"status": "ok", "version": version}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            self.reply(200, health())
        elif self.path == "/items":
            self.reply(200, {"items": ITEMS})
        else:
            self.reply(404, {"error": f"no route {self.path}"})

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        pass


def make_server(host, port):
    return ThreadingHTTPServer((host, port), Handler)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--port-file", help="write the port listened on to this file")
    parser.add_argument("--ttl", type=float, help="stop after this many seconds")
    args = parser.parse_args()
    server = make_server(args.host, args.port)
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(server.server_address[1]))
        os.replace(tmp, args.port_file)
    if args.ttl:
        timer = threading.Timer(args.ttl, server.shutdown)
        timer.daemon = True
        timer.start()
    server.serve_forever()


if __name__ == "__main__":
    main()
