"""A scripted model behind an OpenAI-compatible chat completions endpoint.

It answers each role of examples/sdlc.cond from the files in answers/, reading the request the
way a model would: the role from the system prompt, the pass from the evidence in the prompt
(monitoring's verdict, the fixed code, the health check's answer). `record.sh` runs the
workflow against it with `--record` to write cassette.json; nothing here is used by a run
that replays the cassette.

    python3 scripted_model.py --port 8400      # then point a provider at http://127.0.0.1:8400/v1
"""
import argparse
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))


def answer_file(name):
    with open(os.path.join(HERE, "answers", name)) as f:
        return f.read()


def files(*pairs):
    return [{"path": path, "content": answer_file(name)} for path, name in pairs]


ROLES = {
    "You are the coder": "coder",
    "You are the code reviewer": "reviewer",
    "You write test data": "test_data",
    "You are the tester": "tester",
    "You are the devops engineer": "devops",
    "You are the deployer": "deployer",
    "You are the monitor": "monitor",
}


def reply_for(role, prompt):
    fixed = "DEFAULT_VERSION" in prompt
    if role == "coder":
        if "Monitoring sent the previous version back" in prompt:
            return {
                "files": files(("app.py", "app_v2.py")),
                "summary": "/health no longer depends on the deployment: it reports APP_VERSION "
                "when set, else the built-in DEFAULT_VERSION 1.0.0, and answers status ok.",
            }
        return {
            "files": files(("app.py", "app_v1.py")),
            "summary": "app.py: a ThreadingHTTPServer with GET /items (the inventory) and GET "
            "/health (status and the version from APP_VERSION); --port-file and --ttl for "
            "scripted deployments.",
        }
    if role == "reviewer":
        if fixed:
            return {
                "approved": True,
                "score": 92,
                "findings": [],
                "recommendations": ["Set DEFAULT_VERSION from the release process."],
                "summary": "The health check now always reports a version.",
            }
        return {
            "approved": True,
            "score": 74,
            "findings": [
                "/health reports degraded unless the deployment sets APP_VERSION, and nothing "
                "in the change sets it."
            ],
            "recommendations": ["Fall back to a version built into the code."],
            "summary": "Small and correct; the health check leans on the environment.",
        }
    if role == "tester":
        return {
            "files": files(("test_app.py", "test_app.py")),
            "summary": "Four tests against the real server on a free port: /items matches the "
            "fixture, out-of-stock items are listed, /health answers 200, unknown paths 404.",
        }
    if role == "test_data":
        return {
            "files": files(("fixtures/items.json", "items.json")),
            "summary": "The two items the service lists, one of them out of stock.",
        }
    if role == "devops":
        return {
            "files": files(("service.env", "service.env")),
            "summary": "service.env: listen on 127.0.0.1 only, stop after 300 seconds.",
        }
    if role == "deployer":
        return {
            "files": files(("deploy.sh", "deploy.sh"), ("stop.sh", "stop.sh")),
            "summary": "deploy.sh starts app.py in the background on a free port and prints its "
            "URL as JSON; stop.sh stops it.",
        }
    if role == "monitor":
        healthy = '"status":"ok"' in prompt.replace(" ", "")
        if healthy:
            return {
                "severity": "ok",
                "summary": "Healthy: /health reports ok with version 1.0.0 and /items lists 2 items.",
                "findings": ["/health: status ok, version 1.0.0", "/items: 2 items"],
                "metrics": {"health_status": "ok", "items": 2, "out_of_stock": 1},
            }
        return {
            "severity": "error",
            "summary": "GET /health reports status degraded because APP_VERSION is not set, so "
            "the service cannot say which build it runs. Make /health report a version without "
            "depending on the deployment's environment.",
            "findings": [
                "/health: status degraded, version null",
                "/health problems: APP_VERSION is not set",
                "/items: 2 items, as expected",
            ],
            "metrics": {"health_status": "degraded", "items": 2, "out_of_stock": 1},
        }
    raise ValueError(f"no scripted answer for role {role}")


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        if not self.path.endswith("/chat/completions"):
            return self.send(404, {"error": {"message": f"no route {self.path}"}})
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        messages = body["messages"]
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        role = next((r for start, r in ROLES.items() if system.startswith(start)), None)
        prompt = "\n".join(m["content"] for m in messages if m["role"] != "system")
        if role is None:
            return self.send(400, {"error": {"message": "unknown system prompt"}})
        text = json.dumps(reply_for(role, prompt), indent=1)
        self.send(200, {
            "id": "scripted",
            "object": "chat.completion",
            "model": body.get("model", "scripted"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            # A rough count (4 characters a token), as the scripted model's own report.
            "usage": {"prompt_tokens": sum(len(m["content"]) for m in messages) // 4,
                      "completion_tokens": len(text) // 4},
        })

    def send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8400)
    parser.add_argument("--port-file")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(str(server.server_address[1]))
        os.replace(args.port_file + ".tmp", args.port_file)
    print(f"scripted model on http://127.0.0.1:{server.server_address[1]}/v1", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
