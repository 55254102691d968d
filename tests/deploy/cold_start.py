#!/usr/bin/env python3
"""The bootstrap's own cold start, without an emulator's overhead: a minimal Lambda Runtime
API on loopback hands one invocation (an empty SQS batch) to a freshly started `bootstrap`
and times, from the process start, its first `GET /next` (init done) and its answer (first
response), and the CPU time the process used until then. Repeated; prints the median and the
spread per handler.

    python3 tests/deploy/cold_start.py --bootstrap target/lambda-release/bootstrap [--runs 20]
"""

import argparse
import http.server
import json
import os
import statistics
import subprocess
import threading
import time

EVENT = json.dumps({"Records": []}).encode()


class RuntimeApi(http.server.BaseHTTPRequestHandler):
    """GET /2018-06-01/runtime/invocation/next and POST .../response, once per process."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        server = self.server
        if not self.path.endswith("/invocation/next"):
            self.send_error(404)
            return
        if server.handed:
            # The answered process asks for its next invocation: hold it until it is killed.
            server.done.wait(10)
            self.send_error(503)
            return
        server.handed = True
        server.next_at = time.monotonic()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Lambda-Runtime-Aws-Request-Id", "cold-start-1")
        self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30000))
        self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:000000000000:function:relance-launch")
        self.send_header("Content-Length", str(len(EVENT)))
        self.end_headers()
        self.wfile.write(EVENT)

    def do_POST(self):
        server = self.server
        length = int(self.headers.get("Content-Length", 0))
        server.body = self.rfile.read(length).decode()
        server.answer_at = time.monotonic()
        server.ok = self.path.endswith("/response")
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()
        server.done.set()


class Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # The held `GET /next` of a killed process: nothing to report.
        pass


def once(bootstrap, handler, env):
    server = Server(("127.0.0.1", 0), RuntimeApi)
    server.handed, server.done, server.ok, server.body = False, threading.Event(), False, ""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(env, AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{server.server_address[1]}", _HANDLER=handler)
    start = time.monotonic()
    proc = subprocess.Popen([bootstrap], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    answered = server.done.wait(30)
    # CPU time to the first answer (every thread, from schedstat, in ns): unlike the wall
    # times, barely moved by other work on the machine.
    cpu_ms = 0.0
    task_dir = f"/proc/{proc.pid}/task"
    for task in os.listdir(task_dir) if os.path.isdir(task_dir) else []:
        try:
            with open(f"{task_dir}/{task}/schedstat") as f:
                cpu_ms += int(f.read().split()[0]) / 1e6
        except (OSError, ValueError, IndexError):
            pass
    proc.kill()
    _, err = proc.communicate()
    server.shutdown()
    if not answered or not server.ok:
        raise SystemExit(f"{handler}: no answer ({server.body!r}); stderr: {err.decode()[-2000:]}")
    return (server.next_at - start) * 1000, (server.answer_at - start) * 1000, cpu_ms


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--handlers", default="launch,step-executor,sms-sender")
    args = parser.parse_args()
    # What the template gives every function (names only: nothing is called for an empty batch).
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_LAMBDA_FUNCTION_NAME": "relance-launch", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST", "AWS_LAMBDA_LOG_STREAM_NAME": "cold",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/relance-launch",
        "RUST_LOG": "info",
        "RELANCE_STATE_TABLE": "relance-state", "RELANCE_TIMERS_TABLE": "relance-timers",
        "RELANCE_TIMER_SHARDS": "4", "RELANCE_EVENT_BUS": "relance-bus",
        "RELANCE_FROM_EMAIL": "news@example.com",
        **{f"RELANCE_{q}_QUEUE_URL": f"http://127.0.0.1:9/000000000000/relance-{q.lower()}"
           for q in ["STEP", "EMAIL", "SMS", "PUSH", "WEB_PUSH", "LAUNCH", "WEBHOOK"]},
    }
    size = os.path.getsize(args.bootstrap)
    print(f"{args.bootstrap}: {size / 1e6:.1f} MB, {args.runs} cold starts per handler")
    for handler in args.handlers.split(","):
        inits, answers, cpus = zip(*(once(args.bootstrap, handler, env) for _ in range(args.runs)))
        q = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(p * len(xs)))]
        print(f"{handler}: init (start to first GET /next) median {statistics.median(inits):.1f} ms, "
              f"p90 {q(inits, 0.9):.1f}, min {min(inits):.1f}; first response median "
              f"{statistics.median(answers):.1f} ms, p90 {q(answers, 0.9):.1f}, max {max(answers):.1f}; "
              f"CPU to the first response median {statistics.median(cpus):.1f} ms")


if __name__ == "__main__":
    main()
