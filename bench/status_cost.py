#!/usr/bin/env python3
"""What a status and a metrics scrape cost the running start_server, with WORKERS workers
holding CONNECTIONS connections accepted from its socket: start_server (release build) runs
--workers=WORKERS copies of a worker that keeps every connection it accepts
(tests/common/workers/holding_worker.py), this script opens the connections, then times RUNS of
each request as the client sees it, and start_server's CPU time for them (/proc/PID/schedstat):
a plain `status` (what --check asks), `status` with `usage` (what --status asks: every
generation's and worker's CPU, memory, processes and connections), and GET /metrics on
--metrics-listen. Then the system calls start_server makes in 10 idle seconds (strace -c), with
the metrics endpoint on; and again with --worker-max-memory (its 5-second check) instead of the
connections.

Usage: python3 bench/status_cost.py [RUNS] [WORKERS] [CONNECTIONS]   (default 20 64 10000)
"""
import json, os, re, socket, subprocess, sys, tempfile, time

from common import ROOT, ensure_package, free_ports, raise_fd_limit, summary

OURS = os.path.join(ROOT, "target/release/start_server")
WORKER = os.path.join(ROOT, "tests/common/workers/holding_worker.py")
IDLE = 10


def cpu_ns(pid):
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def syscalls_while_idle(pid):
    trace = subprocess.run(["timeout", "-s", "INT", str(IDLE), "strace", "-c", "-f", "-p",
                            str(pid)], capture_output=True, text=True)
    total = re.search(r"^\s*100\.00\s+\S+\s+\S+\s+\S+\s+(\d+)", trace.stderr, re.M)
    if total:
        return int(total.group(1))
    calls = re.findall(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)", trace.stderr, re.M)
    return sum(int(c) for c in calls)


class Control:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.file = self.sock.makefile("rb")

    def ask(self, request):
        self.sock.sendall(json.dumps(request).encode() + b"\n")
        return json.loads(self.file.readline())


def scrape(port):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def start(workers, options):
    tmp = tempfile.mkdtemp(prefix="ss-bench-")
    control = os.path.join(tmp, "control")
    port, metrics = free_ports(2)
    process = subprocess.Popen(
        [OURS, f"--port=127.0.0.1:{port}", f"--control={control}", f"--workers={workers}",
         f"--metrics-listen=127.0.0.1:{metrics}", "--backlog=4096", *options, "--",
         sys.executable, WORKER],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=raise_fd_limit)
    deadline = time.monotonic() + 120
    while True:
        try:
            status = Control(control).ask({"command": "status"})["status"]
            if sum(w["state"] == "up" for w in status["workers"]) == workers:
                return process, control, port, metrics
        except (OSError, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the workers never came up")
        time.sleep(0.1)


def timed(runs, pid, work):
    """Wall time per run (ms) and start_server's CPU time per run (ms)."""
    walls = []
    before = cpu_ns(pid)
    for _ in range(runs):
        started = time.perf_counter()
        work()
        walls.append((time.perf_counter() - started) * 1000)
    return walls, (cpu_ns(pid) - before) / runs / 1e6


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    connections = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "start_server"], cwd=ROOT,
                   check=True)
    ensure_package("strace", "strace")
    raise_fd_limit()

    process, control, port, metrics = start(workers, [])
    clients = []
    try:
        started = time.monotonic()
        for _ in range(connections):
            c = socket.create_connection(("127.0.0.1", port))
            if c.recv(6) != b"hello\n":
                raise SystemExit("a connection was not accepted")
            clients.append(c)
        print(f"{workers} workers holding {connections} accepted connections "
              f"(set up in {time.monotonic() - started:.1f} s); {runs} runs each\n")
        ask = Control(control)
        held = ask.ask({"command": "status", "usage": True})["status"]["generations"][0]
        print(f"status with usage says: {held['connections']} connections, "
              f"{held['processes']} processes, {held['memory_bytes'] >> 20} MiB "
              f"({held['memory_source']})\n")
        print("| request | client sees, ms | start_server's CPU per request, ms |")
        print("|---|---|---|")
        for name, work in [
            ("status", lambda: ask.ask({"command": "status"})),
            ("status with usage (--status)", lambda: ask.ask({"command": "status", "usage": True})),
            ("GET /metrics", lambda: scrape(metrics)),
        ]:
            walls, cpu = timed(runs, process.pid, work)
            print(f"| {name} | {summary(walls, digits=2)} | {cpu:.2f} |")
        size = len(scrape(metrics))
        print(f"\nmetrics answer: {size} bytes")
        calls = syscalls_while_idle(process.pid)
        print(f"system calls in {IDLE} idle s (metrics endpoint on, {connections} connections "
              f"held): {calls}")
    finally:
        for c in clients:
            c.close()
        process.terminate()
        process.wait()

    process, control, port, metrics = start(workers, ["--worker-max-memory=100G"])
    try:
        before = cpu_ns(process.pid)
        calls = syscalls_while_idle(process.pid)
        cpu = (cpu_ns(process.pid) - before) / 1e6
        print(f"system calls in {IDLE} idle s with --worker-max-memory ({workers} workers "
              f"measured every 5 s): {calls}, CPU {cpu:.1f} ms")
    finally:
        process.terminate()
        process.wait()


if __name__ == "__main__":
    main()
