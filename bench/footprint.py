#!/usr/bin/env python3
"""Footprint of start_server itself (not its worker): RSS and CPU time holding 1 and 1,000
sockets, idle for 10 s and across 100 reloads, and the system calls it makes in 10 idle seconds
(strace -c); ours and Perl's, each case RUNS times.

Usage: python3 bench/footprint.py [RUNS]     (default 3; installs strace)
"""
import re, subprocess, sys, time

from common import IMPLEMENTATIONS, Server, build, ensure_package, free_ports, median, summary

IDLE = 10
RELOADS = 100


def syscalls_while_idle(pid):
    trace = subprocess.run(["timeout", "-s", "INT", str(IDLE), "strace", "-c", "-f", "-p",
                            str(pid)], capture_output=True, text=True)
    total = re.search(r"^\s*100\.00\s+\S+\s+\S+\s+\S+\s+(\d+)", trace.stderr, re.M)
    if total:
        return int(total.group(1))
    # strace prints only the header when nothing was called.
    calls = re.findall(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)", trace.stderr, re.M)
    return sum(int(c) for c in calls)


def measure(binary, sockets):
    server = Server(binary, free_ports(sockets), options=["--interval=0"])
    try:
        generation = server.wait_sole(1)[0]
        time.sleep(0.5)  # let the start-up settle before sampling
        rss_idle = server.rss_kib()
        cpu_before = server.cpu_seconds()
        calls = syscalls_while_idle(server.pid)
        cpu_idle = server.cpu_seconds() - cpu_before
        cpu_before = server.cpu_seconds()
        lost = 0
        for _ in range(RELOADS):
            generation, repeated = server.reload(generation)
            lost += repeated
        cpu_reloads = server.cpu_seconds() - cpu_before
        rss_after = server.rss_kib()
    finally:
        server.stop()
    return rss_idle, rss_after, cpu_idle, cpu_reloads, calls, lost


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    build()
    ensure_package("strace", "strace")
    print(f"start_server's own RSS and CPU; idle {IDLE} s, then {RELOADS} reloads "
          f"(--interval=0, hello_worker); median [min-max] of {runs} runs")
    print(f"{'case':16} {'RSS idle KiB':>22} {'RSS after KiB':>22} {'CPU idle ms':>16} "
          f"{'CPU 100 reloads ms':>22} {'syscalls idle':>16} {'lost HUPs':>10}")
    results = {}
    for sockets in (1, 1000):
        for name, binary in IMPLEMENTATIONS:
            samples = [measure(binary, sockets) for _ in range(runs)]
            results[(name, sockets)] = samples
            cols = list(zip(*samples))
            print(f"{name + ' ' + str(sockets) + ' sock':16} {summary(cols[0], digits=0):>22} "
                  f"{summary(cols[1], digits=0):>22} {summary(cols[2], scale=1000, digits=0):>16} "
                  f"{summary(cols[3], scale=1000, digits=0):>22} "
                  f"{summary(cols[4], digits=0):>16} {sum(cols[5]):>10}", flush=True)
    for sockets in (1, 1000):
        ours = median([s[0] for s in results[("ours", sockets)]])
        perl = median([s[0] for s in results[("perl", sockets)]])
        print(f"RSS ratio perl/ours with {sockets} socket(s): {perl / ours:.1f}x")


if __name__ == "__main__":
    main()
