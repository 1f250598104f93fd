//! Moving from Perl's start_server, as docs/MIGRATING.md tells it, under a real systemd (the
//! harness's Debian trixie container, where Debian's libserver-starter-perl and Starlet are
//! installed): units and a deploy script written for the Perl start_server run unchanged, first
//! with it, then with this one once the .deb is installed (it diverts Perl's to
//! /usr/bin/start_server.perl), and back again both ways the guide gives. Needs cargo-deb
//! (`packaging/build-packages.sh`), root, systemd-nspawn and debootstrap.

mod common;

use std::fs;
use std::process::Command;

use common::*;

/// A Perl-era unit as people wrote them: Type=simple (said or not), start_server binding the
/// port itself with pid and status files, and a reload that is a plain SIGHUP.
const SIMPLE_UNIT: &str = "[Unit]
Description=myapp
After=network.target

[Service]
Type=simple
ExecStart=/usr/bin/start_server --port=127.0.0.1:8081 --pid-file=/run/myapp.pid --status-file=/run/myapp.status -- plackup -s Starlet --max-workers=2 -E deployment /srv/myapp/app.psgi
ExecReload=/bin/kill -HUP $MAINPID
Restart=always

[Install]
WantedBy=multi-user.target
";

/// The other kind: start_server daemonizes (Type=forking, PIDFile=), reloads with `--restart`
/// and stops with `--stop`.
const FORKING_UNIT: &str = "[Unit]
Description=myapp (daemonized)
After=network.target

[Service]
Type=forking
PIDFile=/run/myapp-daemon.pid
ExecStart=/usr/bin/start_server --daemonize --log-file=/var/log/myapp-daemon.log --port=127.0.0.1:8082 --pid-file=/run/myapp-daemon.pid --status-file=/run/myapp-daemon.status -- plackup -s Starlet --max-workers=2 -E deployment /srv/myapp/app.psgi
ExecReload=/usr/bin/start_server --restart --pid-file=/run/myapp-daemon.pid --status-file=/run/myapp-daemon.status
ExecStop=/usr/bin/start_server --stop --pid-file=/run/myapp-daemon.pid

[Install]
WantedBy=multi-user.target
";

/// A deploy script of the Perl era: the new release in place, then a graceful restart.
const DEPLOY_SCRIPT: &str = "#!/bin/sh
# deploy-myapp: put the new release in place, then restart gracefully.
set -e
touch /srv/myapp/app.psgi
exec start_server --restart --pid-file=/run/myapp.pid --status-file=/run/myapp.status
";

/// Shell functions of the scenario: `serves PORT` (the answer, once there is one), `status_file
/// UNIT` (its --status-file), `runs UNIT` (which start_server: `perl` or `ours`), `reloads UNIT
/// PORT HOW...` (runs HOW, then checks that a newer generation serves, that a request in flight
/// was finished by the old one, and that the old one exited).
const HELPERS: &str = r#"
# (A unit's start may be over before its start_server listens. A failure is said on stderr: the
# output is taken by $(...).)
serves() {
  for _ in $(seq 300); do curl -sf --max-time 30 "http://127.0.0.1:$1/" && return 0; sleep 0.1; done
  fail "nothing answers on port $1" >&2
}
status_file() { systemctl show -P ExecStart "$1" | sed -n 's/.*--status-file=\([^ ]*\).*/\1/p'; }
runs() {
  local main
  main=$(systemctl show -P MainPID "$1")
  case $(readlink "/proc/$main/exe") in
    /usr/bin/perl*) echo perl ;;
    /usr/bin/start_server) echo ours ;;
    *) echo "other: $(readlink "/proc/$main/exe")" ;;
  esac
}
reloads() {
  local unit=$1 port=$2 before file old after slow
  shift 2
  before=$(serves "$port")
  file=$(status_file "$unit")
  wait_for "[[ \$(wc -l 2>/dev/null < $file) == 1 ]]"
  old=$(cut -d: -f2 "$file")
  rm -f /run/slow-begun
  curl -sf --max-time 60 "http://127.0.0.1:$port/slow?/run/slow-begun" > /run/slow-answer &
  slow=$!
  wait_for '[ -e /run/slow-begun ]'
  "$@" || fail "$unit: $* failed"
  # Until the old generation has seen its signal, either may take a new connection.
  wait_for "after=\$(curl -sf --max-time 30 http://127.0.0.1:$port/) && [[ \$(field gen \"\$after\") -gt $(field gen "$before") ]]"
  wait "$slow" || fail "$unit: the request in flight during the reload was cut off"
  [[ $(field gen "$(cat /run/slow-answer)") == $(field gen "$before") ]] || fail "$unit: slow answer $(cat /run/slow-answer)"
  wait_for "! kill -0 $old 2>/dev/null"
  wait_for "[[ \$(wc -l < $file) == 1 ]]"
  echo "$unit ($(runs "$unit")): $* took generation $(field gen "$before") to $(field gen "$after")"
}
"#;

#[test]
fn perl_era_units_and_deploy_script_run_unchanged_and_the_way_back_works() {
    let tmp = TempDir::new();
    let built = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/build-packages.sh"
    ))
    .args(["--only", "deb", "--binary", bin(), "--out"])
    .arg(tmp.path("deb"))
    .args(["--maintainer", "Package Tests <package-tests@example.org>"])
    .output()
    .expect("run packaging/build-packages.sh");
    assert!(built.status.success(), "{built:?}");
    let deb = fs::read_dir(tmp.path("deb"))
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("the .deb");
    fs::copy(&deb, tmp.path("server-starter.deb")).unwrap();
    fs::write(tmp.path("app.psgi"), PSGI_SLOW_APP).unwrap();
    fs::write(tmp.path("myapp.service"), SIMPLE_UNIT).unwrap();
    fs::write(tmp.path("myapp-daemon.service"), FORKING_UNIT).unwrap();
    tmp.script("deploy-myapp", DEPLOY_SCRIPT);
    let output = run_in_systemd(
        &tmp,
        &format!(
            r#"{HELPERS}
mkdir -p /srv/myapp
install -m 644 /src/app.psgi /srv/myapp/app.psgi
install -m 644 /src/myapp.service /src/myapp-daemon.service /etc/systemd/system/
install -m 755 /src/deploy-myapp /usr/local/bin/deploy-myapp
systemctl daemon-reload

# Before: Perl's start_server (Debian's libserver-starter-perl) runs them.
head -1 /usr/bin/start_server | grep -q perl || fail "/usr/bin/start_server is not Perl's"
systemctl start myapp myapp-daemon
# (Type=simple: the start is over once the process is forked, maybe before it runs the program.)
wait_for '[[ $(runs myapp) == perl && $(runs myapp-daemon) == perl ]]'
serves 8081 >/dev/null; serves 8082 >/dev/null
reloads myapp 8081 systemctl reload myapp
reloads myapp 8081 deploy-myapp
reloads myapp-daemon 8082 systemctl reload myapp-daemon

# Install: Perl's start_server is diverted; what runs keeps running until restarted.
dpkg -i /src/server-starter.deb
head -1 /usr/bin/start_server.perl | grep -q perl || fail "Perl's start_server was not diverted"
/usr/bin/start_server --version | grep -q '^start_server ' || fail "ours is not /usr/bin/start_server"
[[ $(runs myapp) == perl ]] || fail "the installation restarted myapp"
reloads myapp 8081 systemctl reload myapp
systemctl restart myapp myapp-daemon
# myapp-daemon's ExecStop= ran ours, against Perl's start_server.
systemctl show -P ExecStop myapp-daemon | grep -qF 'status=0/0' \
  || fail "our --stop did not stop Perl's start_server: $(systemctl show -P ExecStop myapp-daemon)"
wait_for '[[ $(runs myapp) == ours && $(runs myapp-daemon) == ours ]]'

# The same units and script, unchanged.
reloads myapp 8081 systemctl reload myapp
reloads myapp 8081 deploy-myapp
reloads myapp-daemon 8082 systemctl reload myapp-daemon
reloads myapp-daemon 8082 systemctl kill --kill-whom=main -s HUP myapp-daemon
journalctl -u myapp --no-pager | grep -F "old worker" | grep -F "died, status:0 (exit code 0)" \
  || fail "the old generations did not exit by themselves"
# The control socket is there (beside the pid file) without a change.
start_server --status --pid-file=/run/myapp.pid | grep -F "healthy (generation" || fail "no status"
# The guide's next step: Type=notify, and a reload that waits for the outcome and tells it.
mkdir -p /etc/systemd/system/myapp.service.d
printf '[Service]\nType=notify\nExecReload=\nExecReload=/usr/bin/start_server --reload --pid-file=/run/myapp.pid\n' \
  > /etc/systemd/system/myapp.service.d/notify.conf
systemctl daemon-reload
systemctl restart myapp
systemctl is-active -q myapp || fail "Type=notify: not active once started"
reloads myapp 8081 systemctl reload myapp
cp /srv/myapp/app.psgi /srv/myapp/app.psgi.good
echo 'die "a broken release\n";' > /srv/myapp/app.psgi
if systemctl reload myapp; then fail "a reload to a release that does not start reported success"; fi
serves 8081 >/dev/null
mv /srv/myapp/app.psgi.good /srv/myapp/app.psgi
echo "Type=notify: systemctl reload waited, and said so when it failed"
rm /etc/systemd/system/myapp.service.d/notify.conf
systemctl daemon-reload
systemctl restart myapp

systemctl stop myapp-daemon
[ ! -e /run/myapp-daemon.pid ] || fail "the pid file is left behind"
if pgrep -f 'myapp-daemon'; then fail "processes of myapp-daemon left behind"; fi
[[ $(systemctl show -P Result myapp-daemon) == success ]] || fail "myapp-daemon did not stop cleanly"

# Back, one unit: ExecStart= at start_server.perl (a drop-in); the script, now ours, drives it.
mkdir -p /etc/systemd/system/myapp.service.d
perl_start=$(sed -n 's|^ExecStart=/usr/bin/start_server |ExecStart=/usr/bin/start_server.perl |p' /etc/systemd/system/myapp.service)
printf '[Service]\nExecStart=\n%s\n' "$perl_start" > /etc/systemd/system/myapp.service.d/perl.conf
cat /etc/systemd/system/myapp.service.d/perl.conf
systemctl daemon-reload
systemctl restart myapp || fail "myapp does not start with start_server.perl: $(journalctl -u myapp -n 30 --no-pager)"
wait_for '[[ $(runs myapp) == perl ]]'
reloads myapp 8081 systemctl reload myapp
reloads myapp 8081 deploy-myapp

# Back, all of it: remove the package; /usr/bin/start_server is Perl's again.
rm -r /etc/systemd/system/myapp.service.d
dpkg -r server-starter
head -1 /usr/bin/start_server | grep -q perl || fail "Perl's start_server was not given back"
systemctl daemon-reload
systemctl restart myapp
wait_for '[[ $(runs myapp) == perl ]]'
reloads myapp 8081 deploy-myapp
systemctl stop myapp
if pgrep -f plackup; then fail "workers left behind"; fi
"#
        ),
    );
    eprintln!("{output}");
    for line in [
        "myapp (perl): systemctl reload myapp took",
        "myapp (perl): deploy-myapp took",
        "myapp-daemon (perl): systemctl reload myapp-daemon took",
        "myapp (ours): systemctl reload myapp took",
        "myapp (ours): deploy-myapp took",
        "myapp-daemon (ours): systemctl reload myapp-daemon took",
        "myapp-daemon (ours): systemctl kill --kill-whom=main -s HUP myapp-daemon took",
        "Type=notify: systemctl reload waited, and said so when it failed",
    ] {
        assert!(output.contains(line), "no {line:?} in:\n{output}");
    }
}
