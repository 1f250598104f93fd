//! A cgroup per generation, with the real start_server under a real systemd (the project's
//! harness, one boot for every check): with `Delegate=yes`, as root and as another user, each
//! worker runs in its generation's (and copy's) cgroup as `status` names it, a helper that
//! clears its environment, leaves its session and ignores SIGTERM does not outlive its
//! generation (nor a worker's SIGKILL, which is its cgroup's), a worker that burns CPU shows
//! it, and a stop leaves the unit's cgroup empty without systemd having to kill anything; without delegation (a plain root shell, another
//! user), everything works as before and one log line says why.

mod common;

use std::fs;

use common::*;

/// A worker that starts a helper which clears its environment, leaves its session and ignores
/// SIGTERM (it would outlive its generation without cgroups), burns 3 seconds of CPU when
/// /run/burn exists, then serves HTTP; it ignores SIGTERM too when /run/stubborn exists.
const LEAKY_WORKER: &str = r#"#!/bin/sh
setsid sh -c 'trap "" TERM; exec env -i sleep 1000' </dev/null >/dev/null 2>&1 &
if [ -e /run/burn ]; then timeout 3 sh -c 'while :; do :; done' & fi
if [ -e /run/stubborn ]; then trap '' TERM; export STOP_SIGNALS=SIGUSR2; fi
exec /usr/local/lib/worker.py
"#;

const SCENARIO: &str = r#"
install -m 755 /src/start_server /usr/bin/start_server
install -m 755 /src/worker.py /usr/local/lib/worker.py
install -m 755 /src/leaky /usr/local/bin/leaky
# The JSON status of the start_server at control socket $1 (as $as, the user that runs it), and
# a Python expression on it.
as=()
st() { "${as[@]}" start_server --status --json --control="$1"; }
json() { python3 -c "import json, sys; s = json.load(sys.stdin); print($1)"; }
gone() { for p in "$@"; do if kill -0 "$p" 2>/dev/null; then return 1; fi; done; }
holds() { [ -z "$(find "$1" -name cgroup.procs -exec cat {} + 2>/dev/null)" ] && return 1 || return 0; }

echo "== Delegate=yes, as root"
unit=/sys/fs/cgroup/system.slice/cg.service
systemd-run --quiet --unit=cg -p Delegate=yes -p Type=notify -p RuntimeDirectory=cg \
  -p KillMode=mixed -p SuccessExitStatus=3 -E SEND_READY=1 \
  start_server --port=127.0.0.1:8080 --control=/run/cg/control --workers=2 \
  --kill-old-timeout=1 -- /usr/local/bin/leaky || fail "the unit did not start"
status=$(st /run/cg/control)
[ "$(json "s['generations'][0]['cgroup']" <<<"$status")" = /system.slice/cg.service/gen-1 ] \
  || fail "generation 1's cgroup: $status"
main=$(systemctl show -P MainPID cg)
grep -qx "0::/system.slice/cg.service/supervisor" /proc/$main/cgroup \
  || fail "start_server is in $(cat /proc/$main/cgroup)"
for pid in $(json "' '.join(str(w['pid']) for w in s['workers'])" <<<"$status"); do
  named=$(json "[w['cgroup'] for w in s['workers'] if w['pid'] == $pid][0]" <<<"$status")
  [[ $named == /system.slice/cg.service/gen-1/slot-[01] ]] || fail "worker $pid: $named"
  grep -qx "0::$named" /proc/$pid/cgroup || fail "worker $pid is in $(cat /proc/$pid/cgroup), not $named"
done
wait_for '[ $(cat $unit/gen-1/slot-*/cgroup.procs | xargs -r ps -o comm= -p | grep -cx sleep) = 2 ]'
helpers=$(cat $unit/gen-1/slot-*/cgroup.procs | xargs ps -o pid=,comm= -p | awk '$2 == "sleep" {printf "%s ", $1}')
for p in $helpers; do
  [ -z "$(tr -d '\0' </proc/$p/environ)" ] || fail "helper $p kept its environment"
  [ "$(ps -o sid= -p $p)" -eq "$p" ] || fail "helper $p did not leave its session"
done
echo "generation 1's helpers: $helpers"

touch /run/burn /run/stubborn
start_server --reload --control=/run/cg/control || fail "the reload failed"
# The helpers ignore TERM: their cgroup is killed --kill-old-timeout after the workers' signal.
wait_for "gone $helpers"
wait_for "[ ! -e $unit/gen-1 ]"
journalctl -u cg --no-pager | grep -F "generation 1: processes still in /system.slice/cg.service/gen-1 after their grace: cgroup.kill" \
  || fail "start_server did not say it killed generation 1's cgroup"
cpu() { st /run/cg/control | json "sum(w['cpu_seconds'] for w in s['workers'] if w['generation'] == 2)"; }
first=$(cpu)
more_cpu() { python3 -c "import sys; sys.exit(0 if $(cpu) > $1 + 0.5 else 1)"; }
wait_for "more_cpu $first"
echo "generation 2's CPU: $first s, then $(cpu) s"
status=$(st /run/cg/control)
[ "$(json "s['generations'][0]['memory_source']" <<<"$status")" != None ] || fail "no memory: $status"
# Two workers and their helpers (and burners, if still burning).
[ "$(json "s['generations'][0]['processes'] >= 4" <<<"$status")" = True ] || fail "processes: $status"
start_server --status --control=/run/cg/control | grep -E "^  2 +up .*: 0 connections open, .*, [4-9] processes" \
  || fail "the summary: $(start_server --status --control=/run/cg/control)"

# Generation 2's workers ignore TERM: at the stop, their SIGKILL after --kill-old-timeout is their
# cgroup's kill, which takes their helpers along (nothing is left to drain).
systemctl stop cg
if pgrep -x sleep; then fail "helpers outlived the stop"; fi
if holds $unit; then fail "processes left in the unit's cgroup"; fi
journal=$(journalctl -u cg --no-pager)
grep -F "workers still alive after their signal, sending KILL" <<<"$journal" \
  || fail "generation 2's workers were not killed: $journal"
if grep -F "cg.service/gen-2 after their grace" <<<"$journal"; then
  fail "generation 2's helpers outlived their workers' SIGKILL"
fi
if grep -F "Killing process" <<<"$journal"; then fail "systemd had to kill what start_server left"; fi

echo "== Delegate=yes, as nobody, started in a subgroup (DelegateSubgroup=)"
systemd-run --quiet --unit=cgn -p Delegate=yes -p DelegateSubgroup=main -p User=nobody \
  -p Type=notify -p RuntimeDirectory=cgn -E SEND_READY=1 \
  start_server --port=127.0.0.1:8082 --control=/run/cgn/control -- /usr/local/lib/worker.py \
  || fail "the unit did not start as nobody"
as=(setpriv --reuid=65534 --regid=65534 --clear-groups)
status=$(st /run/cgn/control)
as=()
pid=$(json "s['workers'][0]['pid']" <<<"$status")
grep -qx "0::/system.slice/cgn.service/gen-1" /proc/$pid/cgroup || fail "as nobody: $status"
[ "$(stat -c %U /proc/$pid)" = nobody ] || fail "the worker is not nobody's"
systemctl stop cgn

echo "== no delegation: a plain root shell, and nobody"
for who in root nobody; do
  log=/tmp/plain-$who.log
  as=()
  if [ $who = nobody ]; then as=(setpriv --reuid=65534 --regid=65534 --clear-groups); fi
  SEND_READY=1 "${as[@]}" start_server --port=127.0.0.1:8081 --control=/tmp/plain-$who.control \
    -- /usr/local/lib/worker.py 2>$log &
  wait_for "curl -sf http://127.0.0.1:8081/ >/dev/null"
  "${as[@]}" start_server --reload --control=/tmp/plain-$who.control || fail "$who: the reload failed"
  [[ $(curl -sf http://127.0.0.1:8081/) == *gen=2* ]] || fail "$who: generation 2 does not serve"
  status=$(st /tmp/plain-$who.control)
  [ "$(json "[g['cgroup'] for g in s['generations']]" <<<"$status")" = "[None]" ] || fail "$who: $status"
  [ "$(grep -c '^cgroups: ' $log)" = 1 ] || fail "$who: $(cat $log)"
  grep -E "^cgroups: its cgroup /system.slice/[^ ]+ is systemd's: set Delegate=yes in the unit" $log \
    || fail "$who: $(cat $log)"
  kill %1
  wait %1 || fail "$who: start_server did not stop cleanly"
done
"#;

#[test]
fn generations_get_cgroups_under_delegate_yes_and_start_server_says_why_not_without() {
    let tmp = TempDir::new();
    fs::copy(bin(), tmp.path("start_server")).expect("copy the binary");
    tmp.script("worker.py", HTTP_WORKER);
    tmp.script("leaky", LEAKY_WORKER);
    let output = run_in_systemd(&tmp, SCENARIO);
    println!("{output}");
}
