//! systemd's file descriptor store under a real systemd (PID 1 of a throw-away container,
//! systemd 257, booted by `tests/systemd-container/run-in-systemd`): a unit whose start_server
//! binds its `--port` itself loses no connection through `systemctl restart` or a `kill -9` of
//! start_server with `FileDescriptorStoreMax=`, and the same unit without it refuses some.

mod common;

use std::fs;

use common::*;

/// A client that connects and asks back to back until the file `$3` exists, keeping its counts
/// in `$2` as `ok refused reset other` (rewritten after each request).
const CLIENT_LOOP: &str = r#"import errno, os, socket, sys
port, out, stop = int(sys.argv[1]), sys.argv[2], sys.argv[3]
counts = {"ok": 0, "refused": 0, "reset": 0, "other": 0}
while not os.path.exists(stop):
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
    counts[kind] += 1
    with open(out + ".tmp", "w") as f:
        f.write("%(ok)d %(refused)d %(reset)d %(other)d\n" % counts)
    os.rename(out + ".tmp", out)
"#;

/// Installs the binary, the worker, the client and two units alike but for the store:
/// `with-store` (port 8080, `FileDescriptorStoreMax=`) and `without-store` (port 8081); defines
/// `disturb UNIT PORT restart|kill` which runs the client through that event and prints its
/// counts.
const SETUP: &str = r#"install -m 755 /src/start_server /usr/bin/start_server
install -m 755 /src/worker.py /usr/local/bin/myapp
install -m 644 /src/client.py /usr/local/lib/client.py
unit() {
  cat > /etc/systemd/system/$1.service <<EOF
[Service]
Type=notify
ExecStart=/usr/bin/start_server --port=127.0.0.1:$2 --interval=0.5 -- /usr/local/bin/myapp
Restart=always
RestartSec=500ms
$3
EOF
}
unit with-store 8080 'FileDescriptorStoreMax=4'
unit without-store 8081 ''
systemctl daemon-reload
systemctl start with-store without-store
ok_count() { cut -d' ' -f1 /run/counts 2>/dev/null || echo 0; }
disturb() {
  local unit=$1 port=$2 how=$3 old
  rm -f /run/counts /run/stop
  python3 /usr/local/lib/client.py "$port" /run/counts /run/stop &
  local client=$!
  wait_for '[ "$(ok_count)" -ge 50 ]'
  old=$(systemctl show -P MainPID "$unit")
  case $how in
    restart) systemctl restart "$unit" ;;
    kill) kill -9 "$old" ;;
  esac
  wait_for "[ \"\$(systemctl show -P MainPID $unit)\" != $old ] && [ \"\$(systemctl show -P MainPID $unit)\" != 0 ] && systemctl is-active -q $unit"
  local before
  before=$(ok_count)
  wait_for "[ \$(ok_count) -ge $((before + 200)) ]"
  touch /run/stop
  wait "$client"
  echo "$unit $how: $(cat /run/counts)"
}
"#;

#[test]
fn the_fd_store_saves_every_connection_through_restart_and_kill_and_without_it_some_are_refused() {
    let tmp = TempDir::new();
    fs::copy(bin(), tmp.path("start_server")).expect("copy the binary");
    tmp.script("worker.py", HTTP_WORKER);
    fs::write(tmp.path("client.py"), CLIENT_LOOP).unwrap();
    let output = run_in_systemd(
        &tmp,
        &format!(
            r#"{SETUP}
[ "$(systemctl show -P NFileDescriptorStore with-store)" = 1 ] || fail "the socket is not in the store"
[ "$(systemctl show -P NFileDescriptorStore without-store)" = 0 ] || fail "a store without FileDescriptorStoreMax="
disturb with-store 8080 restart
disturb with-store 8080 kill
disturb without-store 8081 restart
disturb without-store 8081 kill
journalctl -u with-store --no-pager | grep -q 'using socket 127.0.0.1:8080 from systemd.s file descriptor store' \
  || fail "the stored socket was not taken back"
[ "$(systemctl show -P NFileDescriptorStore with-store)" = 1 ] || fail "the store holds other than one socket"
"#
        ),
    );
    let counts = |label: &str| -> [u64; 4] {
        let line = output
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{label}: ")))
            .unwrap_or_else(|| panic!("no counts for {label} in:\n{output}"));
        let numbers: Vec<u64> = line.split(' ').map(|n| n.parse().unwrap()).collect();
        numbers.try_into().unwrap()
    };
    for line in output.lines().filter(|l| l.contains("-store ")) {
        eprintln!("{line}");
    }
    for event in ["restart", "kill"] {
        let [ok, refused, reset, other] = counts(&format!("with-store {event}"));
        assert!(ok >= 250, "with the store, {event}: {ok} answers");
        assert_eq!(
            (refused, reset, other),
            (0, 0, 0),
            "with the store, {event}: no connection may fail\n{output}"
        );
        let [_, refused, _, _] = counts(&format!("without-store {event}"));
        assert!(
            refused > 0,
            "without the store, {event} refuses connections (else this test proves nothing)\n{output}"
        );
    }
}
