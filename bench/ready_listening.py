#!/usr/bin/env python3
"""Reloads of unmodified servers: from SIGHUP to the new generation promoted (listed in the
status file, the old one signalled) and to it alone (the old one gone), for real servers from
Debian's packages and a Go program, under ours with --ready=listening, ours with the default
--ready=notify and Perl's start_server, all with the default --interval=1, in one run; and
start_server's own CPU time per reload (/proc/PID/schedstat), whose difference between
--ready=listening and --ready=notify is what looking at /proc costs while a generation is on
trial. `sleep` never listens: its trial is looked at for the whole interval.

Usage: python3 bench/ready_listening.py [RELOADS] [SERVER...]   (default 10 reloads; all)
Installs what is missing: starlet starman libnet-server-ss-prefork-perl libplack-perl
python3-uvicorn gunicorn h2o nginx-light golang-go.
"""
import os, shutil, signal, subprocess, sys, tempfile, time

from common import OURS, PERL, ROOT, build, free_ports, median, raise_fd_limit, summary

SERVERS_DIR = os.path.join(ROOT, "bench/listening_probe/servers")
PSGI = os.path.join(ROOT, "tests/common/workers/app.psgi")

# name: (the worker's command line, run by sh in the work directory; (a check that exits 0
# when it is installed, its package))
SERVERS = {
    "starlet": ("exec plackup -s Starlet --max-workers=2 -E deployment app.psgi",
                [("command -v plackup", "libplack-perl"), ("perl -MStarlet -e1", "starlet")]),
    "starlet64": ("exec plackup -s Starlet --max-workers=64 -E deployment app.psgi", []),
    "starman": ("exec starman --workers=2 app.psgi",
                [("command -v starman", "starman"),
                 ("perl -MNet::Server::SS::PreFork -e1", "libnet-server-ss-prefork-perl")]),
    # The fd of SERVER_STARTER_PORT: 3 under ours, 4 under Perl's.
    "uvicorn": ('exec /usr/bin/python3 -m uvicorn --fd "${SERVER_STARTER_PORT##*=}" '
                "--log-level warning asgi_app:app",
                [("/usr/bin/python3 -c 'import uvicorn'", "python3-uvicorn")]),
    # Under ours gunicorn takes the socket from LISTEN_FDS (a --bind fd:// as well would take it
    # twice); Perl's sets no LISTEN_FDS.
    "gunicorn": ('[ -n "$LISTEN_FDS" ] || set -- --bind "fd://${SERVER_STARTER_PORT##*=}"; '
                 'exec gunicorn --workers 2 "$@" wsgi_app:app', [("command -v gunicorn", "gunicorn")]),
    "h2o": ("exec h2o -c h2o.conf", [("command -v h2o", "h2o")]),
    "nginx": ('NGINX="${SERVER_STARTER_PORT##*=};" exec nginx -e stderr -c "$PWD/nginx.conf" '
              "-g 'daemon off;'", [("command -v nginx", "nginx-light")]),
    "go": ("exec ./fileserver", [("command -v go", "golang-go")]),
    "sleep": ("exec sleep 600", []),
}

MODES = (("ours listening", OURS, ["--ready=listening"]), ("ours notify", OURS, []),
         ("perl", PERL, []))


def prepare(work, port):
    """The servers' files in `work`, listening on `port`."""
    shutil.copy(PSGI, work)
    for name in ("asgi_app.py", "wsgi_app.py"):
        shutil.copy(os.path.join(SERVERS_DIR, name), work)
    os.makedirs(os.path.join(work, "www"))
    with open(os.path.join(work, "www/index.html"), "w") as f:
        f.write("hello\n")
    with open(os.path.join(work, "h2o.conf"), "w") as f:
        f.write(f"user: nobody\nnum-threads: 2\nlisten:\n  host: 127.0.0.1\n  port: {port}\n"
                f"hosts:\n  default:\n    paths:\n      /:\n        file.dir: {work}/www\n")
    with open(os.path.join(work, "nginx.conf"), "w") as f:
        f.write(f"worker_processes 2;\npid {work}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
                f"http {{\n  access_log off;\n  server {{ listen 127.0.0.1:{port}; "
                f"root {work}/www; }}\n}}\n")
    subprocess.run(["go", "build", "-o", "fileserver", os.path.join(SERVERS_DIR, "fileserver.go")],
                   cwd=work, check=True, env=dict(os.environ, HOME=work, GO111MODULE="off",
                                                   GOCACHE=os.path.join(work, "gocache")))
    os.chmod(work, 0o755)  # h2o serves as nobody


def generations(status):
    try:
        with open(status) as f:
            return sorted({int(line.split(":")[0]) for line in f if ":" in line})
    except (FileNotFoundError, ValueError):
        return []


def cpu_ns(pid):
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def reload_once(process, status, generation):
    """HUP, then the moments the next generation is listed and listed alone; None if Perl's
    start_server missed the HUP (it can, just before it blocks in wait())."""
    start = time.monotonic()
    process.send_signal(signal.SIGHUP)
    promoted = None
    while time.monotonic() < start + 10:
        listed = generations(status)
        now = time.monotonic()
        if promoted is None and any(g > generation for g in listed):
            promoted = now - start
        if len(listed) == 1 and listed[0] > generation:
            return listed[0], promoted, now - start
        time.sleep(0.0005)
    return None


def measure(name, mode, binary, options, reloads, work, port):
    command, _ = SERVERS[name]
    status = os.path.join(work, f"status-{name}")
    process = subprocess.Popen(
        [binary, f"--port=127.0.0.1:{port}", f"--status-file={status}", "--interval=1",
         f"--dir={work}", *options, "--", "sh", "-c", command],
        cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=raise_fd_limit)
    try:
        deadline = time.monotonic() + 60
        while generations(status) != [1]:
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit(f"{name} under {mode}: generation 1 never served")
            time.sleep(0.01)
        time.sleep(0.5)
        generation, promoted, alone = 1, [], []
        cpu_before = cpu_ns(process.pid)
        done = 0
        while done < reloads:
            result = reload_once(process, status, generation)
            if result is None:
                continue
            generation, up, gone = result
            promoted.append(up)
            alone.append(gone)
            done += 1
            time.sleep(0.1)
        cpu = (cpu_ns(process.pid) - cpu_before) / reloads / 1e6
        return promoted, alone, cpu
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main():
    reloads = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    names = sys.argv[2:] or list(SERVERS)
    build()
    missing = [package for name in names for check, package in SERVERS[name][1]
               if subprocess.run(["sh", "-c", check], capture_output=True).returncode]
    if missing:
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
                       stdout=subprocess.DEVNULL)
    work = tempfile.mkdtemp(prefix="ss-bench-ready-")
    port = free_ports(1)[0]
    prepare(work, port)
    print(f"reload, HUP -> new generation promoted / alone; start_server's CPU per reload; "
          f"{reloads} reloads each, --interval=1; median [min-max]", flush=True)
    rows = {}
    for name in names:
        for mode, binary, options in MODES:
            promoted, alone, cpu = measure(name, mode, binary, options, reloads, work, port)
            rows[(name, mode)] = (promoted, alone, cpu)
            print(f"{name:10} {mode:15} promoted {summary(promoted, ' ms', 1000):26} "
                  f"alone {summary(alone, ' ms', 1000):26} CPU {cpu:.2f} ms/reload", flush=True)
    print("\nlooking at /proc while on trial: CPU per reload, listening minus notify")
    for name in names:
        extra = rows[(name, "ours listening")][2] - rows[(name, "ours notify")][2]
        took = median(rows[(name, "ours listening")][0])
        print(f"{name:10} {extra:+.2f} ms over a trial of {took * 1000:.0f} ms")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
