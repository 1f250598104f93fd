#!/usr/bin/env python3
"""Upgrades in place under load: wrk at full speed against an HTTP worker
(examples/hello_worker) behind start_server, while start_server is upgraded in place (SIGUSR2)
again and again, alternating between two builds installed at the path it was started as: the
release binary and a copy with a build tag written in (another version, as a package upgrade
brings).

Usage: python3 bench/upgrade.py [UPGRADES]     (default 50; installs wrk)
Reports failed requests (socket errors and non-2xx answers, goal 0), the time from SIGUSR2 to
the new image running (it writes OK in {PID_FILE}.upgrade once it has taken over: median and
max), the size of the state handed over, and whether start_server's pid and the worker's stayed
the same.
"""
import os, re, shutil, signal, subprocess, sys, tempfile, time

from common import HELLO, OURS, ROOT, ensure_package, free_ports, median, raise_fd_limit, wait_serving

MARKER = b"SERVER_STARTER_BUILD_TAG="


def tagged(binary, tag):
    """The binary with `tag` written after its build tag marker."""
    with open(binary, "rb") as f:
        data = bytearray(f.read())
    at = data.find(MARKER)
    if at < 0:
        raise SystemExit(f"{binary} has no build tag marker")
    start = at + len(MARKER)
    data[start:start + len(tag)] = tag.encode()
    return bytes(data)


def install(path, data):
    temporary = path + ".new"
    with open(temporary, "wb") as f:
        f.write(data)
    os.chmod(temporary, 0o755)
    os.rename(temporary, path)


def report(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def main():
    upgrades = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "start_server",
                    "--example", "hello_worker"], cwd=ROOT,
                   check=True)
    ensure_package("wrk", "wrk")
    work = tempfile.mkdtemp(prefix="ss-bench-upgrade-")
    binary = os.path.join(work, "start_server")
    builds = [open(OURS, "rb").read(), tagged(OURS, "bench")]
    install(binary, builds[0])
    pid_file = os.path.join(work, "pid")
    outcome = pid_file + ".upgrade"
    log_path = os.path.join(work, "log")
    port = free_ports(1)[0]
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [binary, f"--port=127.0.0.1:{port}", f"--pid-file={pid_file}",
             f"--status-file={work}/status", "--", HELLO],
            stdout=subprocess.DEVNULL, stderr=log, preexec_fn=raise_fd_limit)
    try:
        wait_serving(port)
        worker = open(f"/proc/{server.pid}/task/{server.pid}/children").read().split()
        seconds = max(10, upgrades // 2 + 5)
        wrk = subprocess.Popen(["wrk", "-t2", "-c32", f"-d{seconds}s", "--timeout", "10s",
                                f"http://127.0.0.1:{port}/"], stdout=subprocess.PIPE, text=True)
        time.sleep(1)
        latencies = []
        for n in range(upgrades):
            install(binary, builds[(n + 1) % 2])
            before = report(outcome)
            sent = time.monotonic()
            server.send_signal(signal.SIGUSR2)
            while True:
                now = report(outcome)
                if now != before and now:
                    break
                if time.monotonic() - sent > 30:
                    raise SystemExit(f"upgrade {n + 1}: no outcome within 30 s")
                time.sleep(0.0002)
            latencies.append(time.monotonic() - sent)
            if not now.startswith("OK "):
                raise SystemExit(f"upgrade {n + 1} failed: {now}")
            time.sleep(0.3)
        out, _ = wrk.communicate()
        same_pid = server.poll() is None
        same_worker = open(f"/proc/{server.pid}/task/{server.pid}/children").read().split() \
            == worker
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    text = open(log_path).read()
    sizes = [int(s) for s in re.findall(r"\((\d+) bytes of state\)", text)]
    shutil.rmtree(work)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = sum(int(x) for x in errors.groups()) if errors else 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    non2xx = int(non2xx.group(1)) if non2xx else 0
    print(f"wrk -t2 -c32 -d{seconds}s; hello_worker; {upgrades} upgrades in place (SIGUSR2), "
          "0.3 s apart, alternating two builds")
    print(f"requests {requests}, failed {errors + non2xx} (socket errors {errors}, "
          f"non-2xx {non2xx})")
    print(f"SIGUSR2 to new image running: median {median(latencies) * 1000:.1f} ms, "
          f"max {max(latencies) * 1000:.1f} ms")
    print(f"state handed over: {min(sizes)}-{max(sizes)} bytes ({len(sizes)} upgrades logged)")
    print(f"start_server pid kept: {same_pid}; worker kept: {same_worker}")


if __name__ == "__main__":
    main()
