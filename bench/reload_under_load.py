#!/usr/bin/env python3
"""Reload under load: wrk at full speed against an HTTP worker (examples/hello_worker) behind
start_server, while start_server is reloaded (SIGHUP) every 50 ms, or while the serving worker is
killed with SIGKILL at random moments; ours and Perl's start_server, one after the other.

Usage: python3 bench/reload_under_load.py [SECONDS]     (default 30 per run; installs wrk)
Reports requests served, socket errors (connect/read/write/timeout), non-2xx answers, and the
number of reloads (or kills) that happened.
"""
import random, re, signal, subprocess, sys, threading, time

from common import IMPLEMENTATIONS, Server, build, ensure_package, free_ports, wait_serving


def run(binary, mode, seconds, interval):
    port = free_ports(1)[0]
    server = Server(binary, [port], options=[f"--interval={interval}"])
    try:
        server.wait_sole(1)
        wait_serving(port)
        wrk = subprocess.Popen(["wrk", "-t2", "-c32", f"-d{seconds}s", "--timeout", "10s",
                                f"http://127.0.0.1:{port}/"], stdout=subprocess.PIPE, text=True)
        events = 0
        stop = time.monotonic() + seconds - 0.5
        rng = random.Random(42)
        while time.monotonic() < stop:
            if mode == "reload":
                server.signal(signal.SIGHUP)
                time.sleep(0.05)
            else:
                entries = server.generations()
                if entries:
                    try:
                        import os
                        os.kill(entries[-1][1], signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(rng.uniform(0.05, 0.5))
            events += 1
        out, _ = wrk.communicate()
        generation = max((g for g, _ in server.generations()), default=0)
    finally:
        server.stop()
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = tuple(int(x) for x in errors.groups()) if errors else (0, 0, 0, 0)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    non2xx = int(non2xx.group(1)) if non2xx else 0
    return requests, errors, non2xx, events, generation


def main():
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    build()
    ensure_package("wrk", "wrk")
    print(f"wrk -t2 -c32 -d{seconds}s; hello_worker; SIGHUP every 50 ms, or SIGKILL to the "
          "serving worker every 50-500 ms")
    print(f"{'run':24} {'requests':>9} {'connect':>8} {'read':>6} {'write':>6} {'timeout':>8} "
          f"{'non-2xx':>8} {'signals':>8} {'last gen':>9}")
    for mode in ("reload", "kill"):
        for interval in ("1", "0"):
            for name, binary in IMPLEMENTATIONS:
                requests, errors, non2xx, events, generation = run(binary, mode, seconds, interval)
                label = f"{name} {mode} --interval={interval}"
                print(f"{label:24} {requests:9d} {errors[0]:8d} {errors[1]:6d} {errors[2]:6d} "
                      f"{errors[3]:8d} {non2xx:8d} {events:8d} {generation:9d}", flush=True)


if __name__ == "__main__":
    main()
