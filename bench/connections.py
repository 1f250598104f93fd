#!/usr/bin/env python3
"""What an on-demand status costs with many workers and connections: WORKERS worker processes
share one listening socket and hold CONNECTIONS accepted connections between them (this script
is the client and holds the other ends), then examples/probe_bench (release build) measures
finding the accepted sockets (sock_diag and /proc/net/tcp), counting those each worker holds
(/proc/PID/fd), and the workers' CPU time and PSS (/proc/PID/stat, smaps_rollup), RUNS times each.

Usage: python3 bench/connections.py [RUNS] [WORKERS] [CONNECTIONS]   (default 20 64 10000)
Needs an open-file limit above CONNECTIONS (the script raises its soft limit to the hard one).
"""
import os, resource, socket, struct, subprocess, sys, time

from common import ROOT, raise_fd_limit

PROBE = os.path.join(ROOT, "target/release/examples/probe_bench")

# A worker: takes the listener's fd as its first argument, accepts QUOTA connections and holds them, says "ready",
# then waits for its stdin to close.
WORKER = r"""
import socket, sys
listener = socket.socket(fileno=int(sys.argv[1]))
quota = int(sys.argv[2])
held = [listener.accept()[0] for _ in range(quota)]
print("ready", len(held), flush=True)
sys.stdin.read()
"""


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    connections = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "probe_bench"],
                   cwd=ROOT, check=True)
    raise_fd_limit()
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < connections + 100:
        raise SystemExit(f"the open-file limit ({soft}) is below {connections} + 100")

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    address = listener.getsockname()
    quotas = [connections // workers + (1 if i < connections % workers else 0)
              for i in range(workers)]
    procs = []
    for quota in quotas:
        procs.append(subprocess.Popen(
            [sys.executable, "-c", WORKER, str(listener.fileno()), str(quota)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            pass_fds=[listener.fileno()]))
    clients = []
    try:
        started = time.monotonic()
        for _ in range(connections):
            clients.append(socket.create_connection(address))
        for proc in procs:
            line = proc.stdout.readline()
            if not line.startswith("ready"):
                raise SystemExit(f"a worker failed: {line!r}")
        print(f"{workers} workers holding {connections} accepted connections "
              f"(set up in {time.monotonic() - started:.1f} s); {runs} runs each\n")
        with open("/proc/net/tcp") as f:
            lines = sum(1 for _ in f) - 1
        pids = [str(p.pid) for p in procs]
        out = subprocess.run([PROBE, str(listener.fileno()), str(runs), *pids],
                             pass_fds=[listener.fileno()], capture_output=True, text=True,
                             check=True).stdout
    finally:
        # Reset rather than close: no TIME_WAIT left to weigh on the next run's tables.
        for c in clients:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
        for proc in procs:
            proc.kill()
            proc.wait()

    print(f"/proc/net/tcp had {lines} sockets (both ends of each connection are on this host)\n")
    print("| measure | median ms | min | max |")
    print("|---|---|---|---|")
    for line in out.splitlines():
        kind, name, *values = line.split()
        if kind == "time":
            print(f"| {name} | {values[0]} | {values[1]} | {values[2]} |")
    print()
    for line in out.splitlines():
        kind, name, *values = line.split()
        if kind == "count":
            print(f"{name}: {values[0]}")


if __name__ == "__main__":
    main()
