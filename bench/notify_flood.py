#!/usr/bin/env python3
"""Reload latency while another user floods the workers' notification socket.

A reload (HUP -> the new worker sends READY=1 -> the old one is signalled and gone, measured as in
reload_latency.py, from the HUP to the status file listing the new generation alone) is timed
quietly and, alternately, while a process running as another user (uid 65534, through setpriv)
sends 100,000 datagrams to start_server's NOTIFY_SOCKET (read from a worker's environment).
Needs root.

Usage: python3 bench/notify_flood.py [RELOADS] [--binary=PATH]   (default 10 of each)
"""
import subprocess, sys, time

from common import HELLO, OURS, Server, build, free_ports, median, summary

DATAGRAMS = 100_000

# Sends DATAGRAMS messages (blocking when start_server's queue is full), after saying "go".
FLOODER = r"""
import socket, sys
name, count = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
address = "\0" + name[1:]
print("go", flush=True)
for _ in range(count):
    s.sendto(b"READY=1\nSTATUS=flood\n", address)
"""


def notify_socket(server):
    generation, pid = server.wait_sole(1)
    with open(f"/proc/{pid}/environ", "rb") as f:
        for entry in f.read().split(b"\0"):
            if entry.startswith(b"NOTIFY_SOCKET="):
                return entry.split(b"=", 1)[1].decode()
    raise SystemExit("the worker has no NOTIFY_SOCKET")


def start_flood(name):
    flooder = subprocess.Popen(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
         FLOODER, name, str(DATAGRAMS)], stdout=subprocess.PIPE, cwd="/")
    assert flooder.stdout.readline() == b"go\n"
    return flooder


def measure(binary, reloads):
    """Alternates quiet and flooded reloads on one server, so that the machine's own load
    drifting over time weighs on both alike."""
    server = Server(binary, free_ports(1), worker=HELLO)
    try:
        name = notify_socket(server)
        generation = server.wait_sole(1)[0]
        quiet, flooded, flood_seconds, cpu = [], [], [], []
        for _ in range(reloads):
            start = time.monotonic()
            generation, repeated = server.reload(generation)
            if not repeated:
                quiet.append(time.monotonic() - start)
            flooder = start_flood(name)
            cpu_before = server.cpu_seconds()
            start = time.monotonic()
            generation, repeated = server.reload(generation)
            if not repeated:
                flooded.append(time.monotonic() - start)
            flooder.wait()
            flood_seconds.append(time.monotonic() - start)
            cpu.append(server.cpu_seconds() - cpu_before)
        return quiet, flooded, flood_seconds, cpu
    finally:
        server.stop()


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--binary=")]
    binaries = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--binary=")]
    reloads = int(args[0]) if args else 10
    build()
    binary = binaries[0] if binaries else OURS
    quiet, flooded, flood_seconds, cpu = measure(binary, reloads)
    print(f"reload latency, HUP -> new generation alone, {reloads} reloads each, hello_worker "
          f"(sends READY=1), {binary}; median [min-max]")
    print(f"quiet                       {summary(quiet, ' ms', scale=1000)}")
    print(f"{DATAGRAMS} datagrams from uid 65534 {summary(flooded, ' ms', scale=1000)}"
          f"  (each flood took {summary(flood_seconds, ' s', digits=2)}, "
          f"start_server CPU {summary(cpu, ' µs/datagram', scale=1e6 / DATAGRAMS, digits=2)})")
    print(f"ratio flooded/quiet: {median(flooded) / median(quiet):.1f}x")


if __name__ == "__main__":
    main()
