//! End-to-end under a real systemd (PID 1 of a throw-away container, systemd 257), with the unit
//! files shipped in `systemd/`: socket activation, `systemctl reload`, `status`, `journalctl`,
//! `stop`, booted by `tests/systemd-container/run-in-systemd`: needs root, systemd-nspawn and
//! debootstrap, and the Debian archive the first time (as CI has).

mod common;

use std::fs;
use std::path::Path;

use common::*;

/// What every scenario here starts with: our binary and the test worker in place.
const INSTALL: &str = "install -m 755 /src/start_server /usr/bin/start_server
install -m 755 /src/worker.py /usr/local/lib/test-worker.py
# The program of the units: fails at once (exit 3) while $FAIL_IF_EXISTS exists.
printf '#!/bin/sh\n[ -e \"${FAIL_IF_EXISTS:-/nonexistent}\" ] && exit 3\nexec /usr/local/lib/test-worker.py\n' \\
  > /usr/local/bin/myapp
chmod 755 /usr/local/bin/myapp
";

/// Boots the container with the binary, the test worker and the unit files, runs `scenario`.
fn run_scenario(scenario: &str) -> String {
    run_scenario_in(&TempDir::new(), scenario)
}

/// [`run_scenario`] with more files of the test's in `tmp` (at /src).
fn run_scenario_in(tmp: &TempDir, scenario: &str) -> String {
    fs::copy(bin(), tmp.path("start_server")).expect("copy the binary");
    tmp.script("worker.py", HTTP_WORKER);
    let units = tmp.path("units");
    fs::create_dir_all(&units).unwrap();
    for entry in
        fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd")).expect("read systemd/")
    {
        let shipped = entry.expect("read systemd/").path();
        fs::copy(&shipped, units.join(shipped.file_name().unwrap())).expect("copy a unit file");
    }
    let output = run_in_systemd(tmp, &format!("{INSTALL}{scenario}"));
    // Shown with --nocapture, or above a failure of the test's own assertions.
    eprintln!("{output}");
    output
}

#[test]
fn example_units_serve_reload_honestly_report_and_stop_cleanly() {
    run_scenario(
        r#"
cp /src/units/server-starter-example.socket /src/units/server-starter-example.service /etc/systemd/system/
mkdir -p /etc/systemd/system/server-starter-example.service.d
printf '[Service]\nEnvironment=FAIL_IF_EXISTS=/run/myapp-fail\n' > /etc/systemd/system/server-starter-example.service.d/test.conf
systemctl daemon-reload
systemctl start server-starter-example.socket
systemctl is-active -q server-starter-example.service && fail "the service ran before any connection"
first=$(curl -sf --max-time 30 http://127.0.0.1:8080/) || fail "no answer through the socket"
[[ $first == *gen=1* ]] || fail "first answer: $first"
wait_for 'systemctl is-active -q server-starter-example.service'
pid1=$(field pid "$first")
status=$(start_server --status --control=/run/server-starter-example/start_server.control) \
  || fail "no status through the control socket: $status"
grep -qF "healthy (generation 1 is up)" <<<"$status" || fail "status: $status"

systemctl reload server-starter-example.service || fail "the reload failed"
second=$(curl -sf --max-time 30 http://127.0.0.1:8080/)
pid2=$(field pid "$second")
[[ $second == *gen=2* && $pid2 != "$pid1" ]] || fail "reload returned before generation 2 served: $second"
systemctl status --no-pager server-starter-example.service | grep -F "Status: \"generation 2 (pid $pid2) serving (last reload " \
  || fail "status does not show ours"
journal=$(journalctl -u server-starter-example.service -o verbose --no-pager)
grep -q 'SYSLOG_IDENTIFIER=start_server' <<<"$journal" || fail "no entries of start_server"
grep -q 'MESSAGE=new worker is now running' <<<"$journal" || fail "no structured message"
grep -q 'GENERATION=2' <<<"$journal" || fail "no GENERATION field"
grep -q "WORKER_PID=$pid2" <<<"$journal" || fail "no WORKER_PID field"

# A new version that does not start: systemctl reload says so, the old generation serves on.
touch /run/myapp-fail
if out=$(systemctl reload server-starter-example.service 2>&1); then fail "a failed reload reported success"; fi
echo "failed reload: $out"
systemctl is-active -q server-starter-example.service || fail "a failed reload made the unit inactive"
third=$(curl -sf --max-time 30 http://127.0.0.1:8080/)
[[ $(field pid "$third") == "$pid2" ]] || fail "the old generation no longer serves: $third"
systemctl status --no-pager server-starter-example.service | grep -F "reload failed" || fail "status does not say the reload failed"
journalctl -u server-starter-example.service --no-pager | grep -F "start_server: reload failed: generation 3 did not start" \
  || fail "the journal does not say why the reload failed"
rm /run/myapp-fail
systemctl reload server-starter-example.service || fail "the reload after the fix failed"
fourth=$(curl -sf --max-time 30 http://127.0.0.1:8080/)
[[ $(field pid "$fourth") != "$pid2" ]] || fail "the fixed version does not serve: $fourth"

# What the README says of Type=notify-reload without ExecReload=: the same failure is reported
# as a success by systemctl reload, and only the unit's status tells.
printf '[Service]\nType=notify-reload\nExecReload=\n' > /etc/systemd/system/server-starter-example.service.d/notify-reload.conf
systemctl daemon-reload
systemctl restart server-starter-example.service
curl -sf --max-time 30 http://127.0.0.1:8080/ >/dev/null || fail "no answer with Type=notify-reload"
touch /run/myapp-fail
systemctl reload server-starter-example.service || fail "Type=notify-reload reported the failed reload (the README says it does not)"
systemctl status --no-pager server-starter-example.service | grep -F "reload failed" || fail "status does not say the reload failed"
rm /run/myapp-fail

systemctl stop server-starter-example.service server-starter-example.socket
if pgrep -f test-worker.py; then fail "workers left behind"; fi
if pgrep -x start_server; then fail "start_server left behind"; fi
[ ! -e /run/server-starter-example ] || fail "the runtime directory is left behind"
"#,
    );
}

#[test]
fn a_bake_under_notify_reload_ends_the_reload_and_a_rollback_keeps_the_unit_active() {
    run_scenario(
        r#"
cp /src/units/server-starter-example.socket /src/units/server-starter-example.service /etc/systemd/system/
# The application: READY=1 at once; while /run/myapp-bad exists, it exits a second after it
# started (during the bake).
printf '#!/bin/sh\nexport SEND_READY=1\n[ -e /run/myapp-bad ] && export EXIT_AFTER=1\nexec /usr/local/lib/test-worker.py\n' \
  > /usr/local/bin/bakedapp
chmod 755 /usr/local/bin/bakedapp
# systemctl reload sends HUP and waits for READY=1 (Type=notify-reload), for at most
# TimeoutStartSec=: a bake longer than that must make systemd wait (EXTEND_TIMEOUT_USEC=).
mkdir -p /etc/systemd/system/server-starter-example.service.d
cat > /etc/systemd/system/server-starter-example.service.d/bake.conf <<'UNIT'
[Service]
Type=notify-reload
ExecReload=
TimeoutStartSec=4
ExecStart=
ExecStart=/usr/bin/start_server --control=%t/server-starter-example/start_server.control \
    --port=127.0.0.1:8080 --interval=1 --bake=5 -- /usr/local/bin/bakedapp
UNIT
systemctl daemon-reload
systemctl start server-starter-example.socket
first=$(curl -sf --max-time 30 http://127.0.0.1:8080/) || fail "no answer through the socket"
wait_for 'systemctl is-active -q server-starter-example.service'
pid1=$(field pid "$first")
systemd-analyze log-level debug
systemctl reload server-starter-example.service || fail "the reload failed (did it time out?)"
journal=$(journalctl -u server-starter-example.service --no-pager)
grep -qF "generation 2 baked 5 secs" <<<"$journal" || fail "systemctl reload returned before the bake was over: $journal"
grep -qF "Reload operation timed out" <<<"$journal" && fail "the reload timed out"
main=$(systemctl show -P MainPID server-starter-example.service)
grep -F "Got notification message from PID $main" <<<"$journal" | grep -qF "EXTEND_TIMEOUT_USEC=15000000" \
  || fail "systemd was not asked to wait for the bake"
systemd-analyze log-level info
wait_for "[[ \$(curl -sf --max-time 30 http://127.0.0.1:8080/) == *gen=2* ]]"
second=$(curl -sf --max-time 30 http://127.0.0.1:8080/)
pid2=$(field pid "$second")
wait_for "! kill -0 $pid1 2>/dev/null"

# A generation that fails during the bake: rolled back, the old one serves on, the unit stays
# active and says so.
touch /run/myapp-bad
systemctl reload server-starter-example.service || echo "systemctl reload exited $?"
systemctl is-active -q server-starter-example.service || fail "a rollback made the unit inactive"
status=$(systemctl status --no-pager -l server-starter-example.service)
echo "$status"
grep -F "Status: \"reload rolled back: generation 3 failed during the bake: worker " <<<"$status" \
  | grep -qF "generation 2 (pid $pid2) still serving" || fail "STATUS= does not name the rollback"
[[ $(field pid "$(curl -sf --max-time 30 http://127.0.0.1:8080/)") == "$pid2" ]] || fail "generation 2 no longer serves"
journalctl -u server-starter-example.service --no-pager | grep -F "rolled back: generation 3 failed during the bake: worker " \
  || fail "the journal does not say it was rolled back"
rm /run/myapp-bad
systemctl stop server-starter-example.service server-starter-example.socket
if pgrep -f test-worker.py; then fail "workers left behind"; fi
"#,
    );
}

#[test]
fn template_units_run_an_application_from_its_environment_file() {
    run_scenario(
        r#"
# The unit as shipped, with its User= and Group= lines uncommented.
sed -e 's/^#User=myapp$/User=nobody/' -e 's/^#Group=myapp$/Group=nogroup/' /src/units/server-starter@.service \
  > /etc/systemd/system/server-starter@.service
grep -q '^User=nobody$' /etc/systemd/system/server-starter@.service || fail "no #User=myapp line in the unit"
grep -q '^Group=nogroup$' /etc/systemd/system/server-starter@.service || fail "no #Group=myapp line in the unit"
cp /src/units/server-starter@.socket /etc/systemd/system/
mkdir -p /etc/server-starter
printf 'APP_COMMAND=/usr/local/bin/myapp\nSTART_SERVER_OPTIONS=--interval=0.5 --signal-on-hup=TERM\nFAIL_IF_EXISTS=/run/myapp-fail\n' \
  > /etc/server-starter/demo.env
systemctl daemon-reload
systemctl start server-starter@demo.socket
ask() { curl -sf --max-time 30 --unix-socket /run/server-starter/demo.sock http://localhost/; }
first=$(ask) || fail "no answer through the instance's socket"
[[ $first == *gen=1* ]] || fail "first: $first"
wait_for 'systemctl is-active -q server-starter@demo.service'
main=$(systemctl show -P MainPID server-starter@demo.service)
[[ $(ps -o user= -p "$main") == nobody && $(ps -o user= -p "$(field pid "$first")") == nobody ]] \
  || fail "not running as User=: $(ps -o user=,pid=,args= -p "$main")"
[[ $(stat -c %a /run/server-starter/demo.sock) == 660 ]] || fail "SocketMode= is not 0660"
status=$(start_server --status --control=/run/server-starter/demo/start_server.control) \
  || fail "no status through the control socket: $status"
echo "$status"
grep -qF "healthy (generation 1 is up)" <<<"$status" || fail "status: $status"
systemctl reload server-starter@demo.service || fail "the reload failed"
second=$(ask)
[[ $second == *gen=2* ]] || fail "after reload: $second"
start_server --status --control=/run/server-starter/demo/start_server.control | grep -qF "healthy (generation 2 is up)" \
  || fail "status after the reload"
journalctl -u server-starter@demo.service --no-pager | grep -q "using socket /run/server-starter/demo.sock (demo) from systemd" \
  || fail "the inherited socket is not in the log"
touch /run/myapp-fail
if systemctl reload server-starter@demo.service; then fail "a failed reload reported success"; fi
systemctl is-active -q server-starter@demo.service || fail "a failed reload made the unit inactive"
third=$(ask)
[[ $(field pid "$third") == $(field pid "$second") ]] || fail "the old generation no longer serves: $third"
rm /run/myapp-fail
systemctl stop server-starter@demo.service server-starter@demo.socket
if pgrep -f test-worker.py; then fail "workers left behind"; fi
[[ $(systemctl show -P Result server-starter@demo.service) == success ]] || fail "the stop was not clean"
"#,
    );
}

#[test]
fn the_template_env_example_reloads_starlet_and_starman_gracefully() {
    let tmp = TempDir::new();
    fs::write(tmp.path("app.psgi"), PSGI_SLOW_APP).unwrap();
    run_scenario_in(
        &tmp,
        r#"
mkdir -p /srv/myapp
install -m 644 /src/app.psgi /srv/myapp/app.psgi
cp /src/units/server-starter@.socket /src/units/server-starter@.service /etc/systemd/system/
mkdir -p /etc/server-starter
# Starlet: the example as shipped. Starman: the example with its Starman lines instead.
cp /src/units/server-starter.env.example /etc/server-starter/starlet.env
sed -e 's/^APP_COMMAND=/#&/' -e 's/^START_SERVER_OPTIONS=/#&/' \
    -e 's/^#\(APP_COMMAND=.*starman\)/\1/' -e 's/^#\(START_SERVER_OPTIONS=.*QUIT.*\)/\1/' \
    /src/units/server-starter.env.example > /etc/server-starter/starman.env
for name in starlet starman; do echo "$name.env:"; grep -v '^#' /etc/server-starter/$name.env; done
[[ $(grep -c '^APP_COMMAND=' /etc/server-starter/starlet.env) == 1 ]] || fail "starlet.env"
grep -q '^APP_COMMAND=.* -s Starlet ' /etc/server-starter/starlet.env || fail "the example does not run Starlet"
grep -q '^START_SERVER_OPTIONS=.*--signal-on-hup=TERM' /etc/server-starter/starlet.env || fail "starlet.env"
[[ $(grep -c '^APP_COMMAND=' /etc/server-starter/starman.env) == 1 ]] || fail "starman.env"
grep -q '^APP_COMMAND=/usr/bin/starman ' /etc/server-starter/starman.env || fail "starman.env"
grep -q '^START_SERVER_OPTIONS=.*--signal-on-hup=QUIT' /etc/server-starter/starman.env || fail "starman.env"
# Perl servers serve through IPv4: the override the socket unit's comment gives for them.
tcp() {
  mkdir -p /etc/systemd/system/server-starter@$1.socket.d
  printf '[Socket]\nListenStream=\nListenStream=0.0.0.0:%s\n' "$2" > /etc/systemd/system/server-starter@$1.socket.d/override.conf
}
tcp starlet 8080
tcp starman 8081
systemctl daemon-reload
reloads_gracefully() {
  local name=$1 port=$2 unit=server-starter@$1.service first main old slow
  systemctl start server-starter@$name.socket
  first=$(curl -sf --max-time 30 http://127.0.0.1:$port/) || fail "$name: no answer"
  [[ $first == *gen=1* ]] || fail "$name: first answer $first"
  wait_for "systemctl is-active -q $unit"
  main=$(systemctl show -P MainPID $unit)
  old=$(pgrep -P "$main") || fail "$name: no worker"
  [[ $old =~ ^[0-9]+$ ]] || fail "$name: more than one worker: $old"
  # A request in flight during the reload: the old generation finishes it before it exits.
  rm -f /run/slow-begun
  curl -sf --max-time 60 "http://127.0.0.1:$port/slow?/run/slow-begun" > /run/slow-answer &
  slow=$!
  wait_for '[ -e /run/slow-begun ]'
  systemctl reload $unit || fail "$name: the reload failed"
  # Until the old generation has seen its signal, either may take a new connection.
  wait_for "[[ \$(curl -sf --max-time 30 http://127.0.0.1:$port/) == *gen=2* ]]"
  wait "$slow" || fail "$name: the request in flight during the reload was cut off"
  [[ $(cat /run/slow-answer) == *gen=1* ]] || fail "$name: the slow request: $(cat /run/slow-answer)"
  wait_for "! kill -0 $old 2>/dev/null"
  journalctl -u $unit --no-pager | grep -F "old worker $old died, status:0 (exit code 0)" \
    || fail "$name: the old generation did not exit by itself"
  systemctl stop $unit server-starter@$name.socket
  [[ $(systemctl show -P Result $unit) == success ]] || fail "$name: the stop was not clean"
  echo "$name: reloaded and stopped gracefully"
}
reloads_gracefully starlet 8080
reloads_gracefully starman 8081
if pgrep -f 'plackup|/usr/bin/starman'; then fail "workers left behind"; fi
"#,
    );
}

#[test]
fn usr2_upgrades_a_unit_in_place() {
    let tmp = TempDir::new();
    install(&tmp.path("start_server.new"), &newer_build());
    let scenario = format!(
        r#"
cp /src/units/server-starter-example.socket /src/units/server-starter-example.service /etc/systemd/system/
systemctl daemon-reload
systemctl start server-starter-example.socket
first=$(curl -sf --max-time 30 http://127.0.0.1:8080/) || fail "no answer through the socket"
wait_for 'systemctl is-active -q server-starter-example.service'
wait_for 'systemctl status --no-pager server-starter-example.service | grep -qF "generation 1"'
main=$(systemctl show -P MainPID server-starter-example.service)
worker=$(field pid "$first")
install -m 755 /src/start_server.new /usr/bin/start_server
( while :; do systemctl is-active -q server-starter-example.service || echo "$(systemctl is-active server-starter-example.service)" >> /tmp/not-active; sleep 0.02; done ) &
watcher=$!
( while :; do curl -sf --max-time 30 http://127.0.0.1:8080/ >/dev/null || echo failed >> /tmp/failed; done ) &
traffic=$!
since=$(date +'%Y-%m-%d %H:%M:%S')
# systemd logs each notification it gets at debug level.
systemd-analyze log-level debug
systemctl kill --kill-whom=main -s USR2 server-starter-example.service
wait_for 'systemctl status --no-pager server-starter-example.service | grep -qF "upgraded to start_server {new}"'
sleep 0.5
kill $watcher $traffic
wait $watcher $traffic 2>/dev/null || true
if [ -e /tmp/failed ]; then fail "requests failed during the upgrade: $(wc -l < /tmp/failed)"; fi
if grep -v reloading /tmp/not-active 2>/dev/null; then fail "the unit left active/reloading"; fi
[[ $(systemctl show -P MainPID server-starter-example.service) == "$main" ]] || fail "MainPID changed"
[[ $(readlink /proc/$main/exe) == /usr/bin/start_server ]] || fail "not running the new file: $(readlink /proc/$main/exe)"
systemctl is-active -q server-starter-example.service || fail "not active after the upgrade"
[[ $(systemctl show -P NRestarts server-starter-example.service) == 0 ]] || fail "the unit was restarted"
second=$(curl -sf --max-time 30 http://127.0.0.1:8080/)
[[ $(field pid "$second") == "$worker" ]] || fail "the worker changed: $first / $second"
journal=$(journalctl -u server-starter-example.service --since "$since" --no-pager)
echo "$journal"
grep -qF "received USR2: upgrade in place" <<<"$journal" || fail "no upgrade in the journal"
grep -qF "upgraded from {old} to {new}" <<<"$journal" || fail "the new image did not say it runs"
notified=$(grep -F "Got notification message from PID $main" <<<"$journal") || fail "no notification logged"
grep -A1000 -F "RELOADING=1" <<<"$notified" | grep -qF "READY=1" \
  || fail "systemd did not get RELOADING=1 then READY=1: $notified"
systemd-analyze log-level info
systemctl reload server-starter-example.service
third=$(curl -sf --max-time 30 http://127.0.0.1:8080/)
[[ $third == *gen=2* ]] || fail "the new image does not reload: $third"
systemctl stop server-starter-example.service server-starter-example.socket
if pgrep -f test-worker.py; then fail "workers left behind"; fi
"#,
        new = new_version(),
        old = env!("CARGO_PKG_VERSION"),
    );
    let out = run_scenario_in(&tmp, &scenario);
    assert!(out.contains("SCENARIO-OK"));
}
