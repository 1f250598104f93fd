#!/usr/bin/env python3
"""Scale with the number of sockets: time from exec to the first worker serving, and time per
reload (SIGHUP to the new generation alone), with 1, 100 and 1,000 --port; ours and Perl's
(--interval=0 for both, so that only start_server's own work is measured), RUNS times each.

Usage: python3 bench/scale.py [RUNS]     (default 3)
"""
import sys, time

from common import IMPLEMENTATIONS, Server, build, free_ports, median, summary, wait_serving

RELOADS = 20


def measure(binary, sockets):
    ports = free_ports(sockets)
    server = Server(binary, ports, options=["--interval=0"])
    try:
        wait_serving(ports[0])
        startup = time.monotonic() - server.started
        generation = server.wait_sole(1)[0]
        lost = 0
        times = []
        for _ in range(RELOADS):
            start = time.monotonic()
            generation, repeated = server.reload(generation)
            lost += repeated
            if not repeated:  # a HUP Perl missed would count its 5 s wait
                times.append(time.monotonic() - start)
        per_reload = sum(times) / len(times)
    finally:
        server.stop()
    return startup, per_reload, lost


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    build()
    print(f"exec -> first answer, and mean time per reload over {RELOADS} reloads; "
          f"median [min-max] of {runs} runs, milliseconds")
    print(f"{'case':18} {'start-up ms':>24} {'per reload ms':>24} {'lost HUPs':>10}")
    per_reload = {}
    for sockets in (1, 100, 1000):
        for name, binary in IMPLEMENTATIONS:
            samples = [measure(binary, sockets) for _ in range(runs)]
            startup, reload, lost = zip(*samples)
            per_reload[(name, sockets)] = median(reload)
            print(f"{name + ' ' + str(sockets) + ' ports':18} {summary(startup, scale=1000):>24} "
                  f"{summary(reload, scale=1000):>24} {sum(lost):>10}", flush=True)
    for name, _ in IMPLEMENTATIONS:
        ratio = per_reload[(name, 1000)] / per_reload[(name, 1)]
        print(f"{name}: per-reload time with 1000 ports / with 1 port = {ratio:.2f}x")


if __name__ == "__main__":
    main()
