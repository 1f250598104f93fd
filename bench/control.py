#!/usr/bin/env python3
"""The control socket: `start_server --check` latency (a whole process: exec, connect, one
request, exit), and the cost of a `status` request to a start_server running many workers
(round trip over one connection, reply size, start_server's own CPU time per request).

Ours only: Perl's start_server has no control socket. Workers per generation come from
--workers when this build has it (else one worker, said in the output).

Usage: python3 bench/control.py [CHECKS] [WORKERS]     (default 200 checks, 64 workers)
"""
import json, os, socket, subprocess, sys, tempfile, time

from common import HELLO, OURS, Server, build, free_ports, summary, wait_serving


def has_workers_option():
    help_text = subprocess.run([OURS, "--help"], capture_output=True, text=True).stdout
    return "--workers" in help_text


def start(workers):
    port = free_ports(1)[0]
    control = os.path.join(tempfile.mkdtemp(prefix="ss-bench-control-"), "control")
    options = [f"--control={control}"]
    if workers > 1:
        options.append(f"--workers={workers}")
    server = Server(OURS, [port], worker=HELLO, options=options)
    wait_serving(port)
    return server, control


def ask(stream, reader, request):
    stream.sendall(json.dumps(request).encode() + b"\n")
    line = reader.readline()
    return json.loads(line), len(line)


def wait_all_up(stream, reader, workers, limit=120):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        reply, _ = ask(stream, reader, {"command": "status"})
        status = reply["status"]
        up = [w for w in status["workers"] if w["state"] == "up"]
        if len(up) >= workers and status["generations"][-1]["state"] == "up":
            return
        time.sleep(0.05)
    raise SystemExit(f"{workers} workers never came up")


def check_latency(control, runs):
    latencies = []
    for _ in range(runs):
        start = time.monotonic()
        result = subprocess.run([OURS, "--check", f"--control={control}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        latencies.append(time.monotonic() - start)
        if result.returncode != 0:
            raise SystemExit("--check failed on a healthy server")
    return latencies


def cpu_ns(pid):
    """CPU time of the (single-threaded) process in nanoseconds: schedstat, finer than ticks."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def status_cost(server, stream, reader, requests):
    round_trips = []
    cpu_before = cpu_ns(server.pid)
    size = 0
    for _ in range(requests):
        start = time.monotonic()
        reply, size = ask(stream, reader, {"command": "status"})
        round_trips.append(time.monotonic() - start)
        assert reply["ok"]
    cpu = (cpu_ns(server.pid) - cpu_before) / 1e9
    return round_trips, size, cpu / requests


def context_switches(pid):
    with open(f"/proc/{pid}/status") as f:
        return sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)


def idle_wakeups(server, control, seconds=5):
    """start_server's context switches while 10 clients sit connected (silent, or with half a
    request)."""
    idle = []
    for i in range(10):
        client = socket.socket(socket.AF_UNIX)
        client.connect(control)
        if i % 2:
            client.sendall(b'{"command":"sta')
        idle.append(client)
    time.sleep(0.5)
    before = context_switches(server.pid)
    time.sleep(seconds)
    switches = context_switches(server.pid) - before
    for client in idle:
        client.close()
    return switches


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    wanted = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    build()
    workers = wanted if has_workers_option() else 1
    if workers != wanted:
        print(f"this build has no --workers: one worker per generation, not {wanted}")
    server, control = start(workers)
    try:
        stream = socket.socket(socket.AF_UNIX)
        stream.connect(control)
        reader = stream.makefile("rb")
        wait_all_up(stream, reader, workers)
        latencies = check_latency(control, runs)
        print(f"--check, {runs} runs (exec + connect + status + exit): "
              f"{summary(latencies, ' ms', scale=1000, digits=2)}, "
              f"max {max(latencies) * 1000:.2f} ms")
        requests = 1000
        round_trips, size, cpu = status_cost(server, stream, reader, requests)
        print(f"status with {workers} workers, {requests} requests on one connection: "
              f"round trip {summary(round_trips, ' ms', scale=1000, digits=3)}, "
              f"reply {size} bytes, start_server CPU {cpu * 1e6:.1f} us per request")
        stream.close()
        print(f"start_server context switches in 5 idle s with 10 idle clients: "
              f"{idle_wakeups(server, control)}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
