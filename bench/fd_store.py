#!/usr/bin/env python3
"""`systemctl restart` and `kill -9` of start_server with and without systemd's file descriptor
store, under a real systemd (PID 1 of a throw-away container, systemd 257, booted by the test
harness tests/systemd-container/run-in-systemd).

Two units alike but for `FileDescriptorStoreMax=`, each `Type=notify`, `Restart=always`,
`RestartSec=100ms`, start_server binding `--port` itself, examples/hello_worker as the worker. For
each unit, a client in the container connects and asks back to back (one connection at a time,
30 s timeout) while the unit is restarted RESTARTS times with `systemctl restart`, then RESTARTS
times with `kill -9` of its MainPID; after each event the script waits for the new MainPID to be
active and for 50 more answers. Counted per run: requests, answers, refused, reset, other
failures, the longest single request (connect to the end of the answer; a client waiting in the
listen backlog shows here), its 99th percentile, and the longest time the client went without an
answer (from one answer to the next, failures and retries included). Needs root,
systemd-nspawn and debootstrap (the harness says what is missing).

Usage: python3 bench/fd_store.py [RESTARTS] [--binary=PATH]   (default 20 of each)
"""
import os, shutil, subprocess, sys, tempfile

from common import HELLO, OURS, ROOT

HARNESS = os.path.join(ROOT, "tests/systemd-container/run-in-systemd")

# Asks back to back until the file STOP exists; keeps the number of answers in OUT (rewritten
# after each request), and at the end writes the figures to OUT.result.
CLIENT = r"""import os, socket, sys, time
port, out, stop = int(sys.argv[1]), sys.argv[2], sys.argv[3]
counts = {"ok": 0, "refused": 0, "reset": 0, "other": 0}
latencies = []
last_answer = time.monotonic()
longest_gap = 0.0
while not os.path.exists(stop):
    start = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
            c.sendall(b"GET / HTTP/1.0\r\n\r\n")
            answer = b""
            while True:
                chunk = c.recv(4096)
                if not chunk:
                    break
                answer += chunk
        kind = "ok" if answer.startswith(b"HTTP/1.0 200") else "other"
    except ConnectionRefusedError:
        kind = "refused"
    except (ConnectionResetError, BrokenPipeError):
        kind = "reset"
    except OSError:
        kind = "other"
    end = time.monotonic()
    latencies.append(end - start)
    counts[kind] += 1
    if kind == "ok":
        longest_gap = max(longest_gap, end - last_answer)
        last_answer = end
    with open(out + ".tmp", "w") as f:
        f.write("%d\n" % counts["ok"])
    os.rename(out + ".tmp", out)
latencies.sort()
p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
with open(out + ".result", "w") as f:
    f.write("%d %d %d %d %d %.1f %.1f %.1f\n" % (
        len(latencies), counts["ok"], counts["refused"], counts["reset"], counts["other"],
        latencies[-1] * 1000, p99 * 1000, longest_gap * 1000))
"""

# Runs as root in the container; /src holds start_server, hello_worker and client.py.
SCENARIO = r"""set -euo pipefail
events=__EVENTS__
fail() { echo "FAIL: $*"; systemctl status --no-pager -l with-store without-store 2>&1 | tail -30; exit 1; }
wait_for() { for _ in $(seq 600); do if eval "$1"; then return 0; fi; sleep 0.05; done; fail "timed out: $1"; }
install -m 755 /src/start_server /usr/bin/start_server
install -m 755 /src/hello_worker /usr/local/bin/hello_worker
unit() {
  cat > /etc/systemd/system/$1.service <<EOF
[Unit]
StartLimitIntervalSec=0
[Service]
Type=notify
ExecStart=/usr/bin/start_server --port=127.0.0.1:$2 -- /usr/local/bin/hello_worker
Restart=always
RestartSec=100ms
$3
EOF
}
unit with-store 8080 'FileDescriptorStoreMax=4'
unit without-store 8081 ''
systemctl daemon-reload
systemctl start with-store without-store
[ "$(systemctl show -P NFileDescriptorStore with-store)" = 1 ] || fail "the socket is not in the store"
answers() { cat /run/answers 2>/dev/null || echo 0; }
main_pid() { systemctl show -P MainPID "$1"; }
# measure UNIT PORT restart|kill: the client through $events events; prints its figures.
measure() {
  local unit=$1 port=$2 how=$3 old before
  rm -f /run/answers /run/answers.result /run/stop
  python3 /src/client.py "$port" /run/answers /run/stop &
  local client=$!
  wait_for '[ "$(answers)" -ge 50 ]'
  for _ in $(seq "$events"); do
    old=$(main_pid "$unit")
    case $how in
      restart) systemctl restart "$unit" ;;
      kill) kill -9 "$old" ;;
    esac
    wait_for "[ \"\$(main_pid $unit)\" != $old ] && [ \"\$(main_pid $unit)\" != 0 ] && systemctl is-active -q $unit"
    before=$(answers)
    wait_for "[ \$(answers) -ge $((before + 50)) ]"
  done
  touch /run/stop
  wait "$client"
  echo "RESULT $unit $how $(cat /run/answers.result)"
}
for how in restart kill; do
  measure with-store 8080 "$how"
  measure without-store 8081 "$how"
done
[ "$(systemctl show -P NFileDescriptorStore with-store)" = 1 ] || fail "the store lost the socket"
"""


def build(binary):
    targets = ["--example", "hello_worker"] + ([] if binary else ["--bin", "start_server"])
    subprocess.run(["cargo", "build", "--release", "--quiet", *targets], cwd=ROOT, check=True)
    return binary or OURS


def run(binary, events):
    work = tempfile.mkdtemp(prefix="ss-bench-fdstore-")
    try:
        shutil.copy(binary, os.path.join(work, "start_server"))
        shutil.copy(HELLO, os.path.join(work, "hello_worker"))
        with open(os.path.join(work, "client.py"), "w") as f:
            f.write(CLIENT)
        scenario = os.path.join(work, "scenario.sh")
        with open(scenario, "w") as f:
            f.write(SCENARIO.replace("__EVENTS__", str(events)))
        done = subprocess.run([HARNESS, "--bind", f"{work}:/src", scenario],
                              capture_output=True, text=True,
                              env=dict(os.environ, RUN_IN_SYSTEMD_TIMEOUT="1800"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = [line.split()[1:] for line in done.stdout.splitlines()
               if line.startswith("RESULT ")]
    if done.returncode or len(results) != 4:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"the scenario failed (exit status {done.returncode})")
    return results


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--binary=")]
    binaries = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--binary=")]
    events = int(args[0]) if args else 20
    binary = build(binaries[0] if binaries else None)
    results = run(binary, events)
    print(f"{events} events each, one client asking back to back; Type=notify, Restart=always, "
          f"RestartSec=100ms, hello_worker; {binary}")
    print("| unit | event | requests | answered | refused | reset | other "
          "| longest request | p99 request | longest without an answer |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for unit, how, requests, ok, refused, reset, other, longest, p99, gap in results:
        print(f"| {unit} | {how} | {requests} | {ok} | {refused} | {reset} | {other} "
              f"| {longest} ms | {p99} ms | {gap} ms |")


if __name__ == "__main__":
    main()
