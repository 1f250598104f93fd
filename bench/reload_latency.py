#!/usr/bin/env python3
"""Reload latency: from SIGHUP to the new generation serving alone (the old one signalled and
gone), for the same notify-aware worker (examples/hello_worker, which sends READY=1 when it
has a NOTIFY_SOCKET) under this start_server and under Perl's (/usr/bin/start_server, Debian
package libserver-starter-perl), both with their default --interval=1.

Usage: python3 bench/reload_latency.py [RELOADS]     (default 20 reloads each)
"""
import os, signal, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = os.path.join(ROOT, "target/release/start_server")
PERL = "/usr/bin/start_server"
WORKER = os.path.join(ROOT, "target/release/examples/hello_worker")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def generations(path):
    try:
        with open(path) as f:
            return [tuple(int(x) for x in line.split(":")) for line in f if ":" in line]
    except FileNotFoundError:
        return []


def get(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data.decode()


def wait_sole(path, generation, limit=60):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        entries = generations(path)
        if len(entries) == 1 and entries[0][0] >= generation:
            return entries[0]
        time.sleep(0.0005)
    raise SystemExit(f"generation {generation} never took over ({path})")


def measure(binary, reloads):
    tmp = tempfile.mkdtemp(prefix="reload-bench-")
    status = os.path.join(tmp, "status")
    port = free_port()
    server = subprocess.Popen(
        [binary, f"--port=127.0.0.1:{port}", f"--status-file={status}", "--", WORKER],
        stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        generation = wait_sole(status, 1)[0]
        latencies = []
        for _ in range(reloads):
            start = time.monotonic()
            server.send_signal(signal.SIGHUP)
            generation = wait_sole(status, generation + 1)[0]
            latencies.append(time.monotonic() - start)
            assert f"generation {generation}" in get(port), "the new generation answers"
        return latencies
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def main():
    reloads = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "start_server",
                    "--example", "hello_worker"], cwd=ROOT, check=True)
    if not os.path.exists(PERL):
        raise SystemExit(f"{PERL} is missing: apt-get install libserver-starter-perl")
    results = {}
    for name, binary in (("ours", OURS), ("perl", PERL)):
        results[name] = measure(binary, reloads)
    print(f"reload latency, HUP -> new generation alone, {reloads} reloads each, "
          "hello_worker (sends READY=1), --interval=1 (default)")
    print(f"{'':6} {'median ms':>10} {'min ms':>10} {'max ms':>10}")
    for name, values in results.items():
        ms = [v * 1000 for v in values]
        print(f"{name:6} {statistics.median(ms):10.1f} {min(ms):10.1f} {max(ms):10.1f}")
    ratio = statistics.median(results["perl"]) / statistics.median(results["ours"])
    print(f"median ratio perl/ours: {ratio:.0f}x")


if __name__ == "__main__":
    main()
