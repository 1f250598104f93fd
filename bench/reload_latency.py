#!/usr/bin/env python3
"""Reload latency: from SIGHUP to the new generation serving alone (the old one signalled and
gone), for the same notify-aware worker (examples/hello_worker, which sends READY=1 when it has a
NOTIFY_SOCKET) under ours and under Perl's start_server, both with their default --interval=1.

Usage: python3 bench/reload_latency.py [RELOADS]     (default 20 reloads each)
"""
import sys, time

from common import IMPLEMENTATIONS, Server, build, free_ports, http_get, median, summary


def measure(binary, reloads):
    port = free_ports(1)[0]
    server = Server(binary, [port])
    try:
        generation = server.wait_sole(1)[0]
        latencies = []
        for _ in range(reloads):
            start = time.monotonic()
            generation, repeated = server.reload(generation)
            if not repeated:
                latencies.append(time.monotonic() - start)
            assert f"generation {generation}" in http_get(port), "the new generation answers"
        return latencies
    finally:
        server.stop()


def main():
    reloads = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    build()
    results = {name: measure(binary, reloads) for name, binary in IMPLEMENTATIONS}
    print(f"reload latency, HUP -> new generation alone, {reloads} reloads each, "
          "hello_worker (sends READY=1), --interval=1 (default); median [min-max]")
    for name, values in results.items():
        print(f"{name:6} {summary(values, ' ms', scale=1000)}")
    ratio = median(results["perl"]) / median(results["ours"])
    print(f"median ratio perl/ours: {ratio:.0f}x")


if __name__ == "__main__":
    main()
