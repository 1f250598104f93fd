//! A worker for tests/pid1.rs, built static by that test (std only, no crates): it leaves an
//! orphan behind (spawns a child that spawns a grandchild and exits), says so on stderr
//! (`orphaning_worker: left orphan PID`), then waits to be signalled. With `IGNORE_TERM` set it
//! ignores SIGTERM (the orphan does not), so that only SIGKILL stops it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

unsafe extern "C" {
    fn signal(signum: i32, handler: usize) -> usize;
}

const SIGTERM: i32 = 15;
const SIG_IGN: usize = 1;

fn main() {
    let me = std::env::args().next().unwrap_or_default();
    match std::env::args().nth(1).as_deref() {
        Some("orphan") => {}
        Some("middle") => {
            // (No Stdio::null: the root has no /dev/null.)
            let orphan = Command::new(&me)
                .arg("orphan")
                .spawn()
                .expect("spawn the orphan");
            println!("{}", orphan.id());
            return;
        }
        _ => {
            let mut middle = Command::new(&me)
                .arg("middle")
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn the middle process");
            let mut line = String::new();
            BufReader::new(middle.stdout.take().expect("pipe"))
                .read_line(&mut line)
                .expect("read the orphan's pid");
            middle.wait().expect("wait for the middle process");
            if std::env::var_os("IGNORE_TERM").is_some() {
                // SAFETY: setting a signal's disposition to SIG_IGN.
                unsafe { signal(SIGTERM, SIG_IGN) };
            }
            eprintln!("orphaning_worker: left orphan {}", line.trim());
        }
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
