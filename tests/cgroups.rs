//! The cgroup v2 subtree per generation (src/server/cgroup.rs, with the usage probe), on real
//! cgroups with real processes: in a cgroup this test makes under its own (as root, on any
//! cgroup2 hierarchy, hybrid too), and under a real systemd with and without `Delegate=yes`, as
//! root and as another user (the project's container harness).
//!
//! Moving itself into `supervisor` changes the cgroup of the whole process: each scenario runs
//! in a child, this test's binary run again for one test with `CGROUP_TEST_ROLE` set (the role),
//! so that the test harness itself stays where it is.

mod common;

// The modules are not part of start_server's command line yet: compiled here on their own, at
// the paths they have in start_server (`crate::server::...`).
#[allow(dead_code)]
#[path = "../src/server/cgroup/mod.rs"]
pub mod cgroup_module;
#[allow(dead_code)]
#[path = "../src/server/probe/usage.rs"]
pub mod usage_module;
mod server {
    pub use super::cgroup_module as cgroup;
    pub mod probe {
        pub use super::super::usage_module as usage;
    }
}

use std::ffi::CString;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use server::cgroup::{self, Cgroup, Delegation, Grant, Killed, Subtree};
use server::probe::usage::{self, MemorySource};

const ROLE: &str = "CGROUP_TEST_ROLE";
const SCRATCH: &str = "CGROUP_TEST_SCRATCH";

/// This test binary, run again for test `name` only, as the child of a role.
fn rerun(name: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("the test binary"));
    command.args([name, "--exact", "--nocapture", "--test-threads=1"]);
    command
}

/// Runs a role's child to its end; its status and output (kept in a file: the workers it leaves
/// behind when it fails must not hold a pipe open).
fn run_role(mut command: Command) -> (std::process::ExitStatus, String) {
    let tmp = TempDir::new();
    let log = fs::File::create(tmp.path("output")).unwrap();
    command.stdout(log.try_clone().unwrap()).stderr(log);
    let status = command.status().expect("run the test's child");
    (
        status,
        fs::read_to_string(tmp.path("output")).unwrap_or_default(),
    )
}

/// A cgroup made for one test below the test's own (as the project runs its tests: as root),
/// killed and removed when dropped.
struct Scratch {
    cgroup: Cgroup,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        let facts = cgroup::gather();
        let (Some(path), Some(dir)) = (facts.path, facts.mount) else {
            panic!("this test needs a cgroup2 hierarchy (Linux with cgroup v2 or hybrid mounts)")
        };
        let parent = Delegation::at(dir, path).cgroup();
        let cgroup = parent
            .child(&format!("ss-test-{}-{name}", std::process::id()))
            .unwrap_or_else(|e| {
                panic!("this test makes a cgroup below its own, which needs root: {e}")
            });
        Scratch { cgroup }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for _ in 0..500 {
            let _ = self.cgroup.kill();
            if self.cgroup.remove().is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Starts `argv` in `cgroup`: with `clone3(CLONE_INTO_CGROUP)` when `clone3`, else fork and
/// the child's write to `cgroup.procs`. Returns its pid once it exec'd (as start_server's spawn
/// does: a close-on-exec pipe closes).
fn spawn_in(cgroup: &Cgroup, clone3: bool, argv: &[&str]) -> i32 {
    let argv: Vec<CString> = argv.iter().map(|a| CString::new(*a).unwrap()).collect();
    let mut pointers: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    pointers.push(std::ptr::null());
    let dir = cgroup.dir_fd().expect("open the cgroup's directory");
    let procs = cgroup.procs_fd().expect("open the cgroup's cgroup.procs");
    let mut exec_pipe = [0; 2];
    // SAFETY: pipe2 fills the two ints.
    let piped = unsafe { libc::pipe2(exec_pipe.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(piped, 0);
    let pid = if clone3 {
        // SAFETY: the child only execs or _exits (async-signal-safe), on data prepared above.
        unsafe { cgroup::fork_into(dir.as_raw_fd()) }
            .unwrap_or_else(|e| panic!("clone3(CLONE_INTO_CGROUP) into {}: {e}", cgroup.path()))
    } else {
        // SAFETY: as above.
        unsafe { libc::fork() }
    };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: in the child: write, execv and _exit only.
        unsafe {
            if !clone3 && cgroup::join(procs.as_raw_fd()).is_err() {
                libc::_exit(121);
            }
            libc::execv(pointers[0], pointers.as_ptr());
            libc::_exit(122)
        }
    }
    let mut byte = [0u8; 1];
    // SAFETY: closing our copy of the write end, then reading one byte into a valid buffer:
    // end of file once the child exec'd or exited.
    unsafe {
        libc::close(exec_pipe[1]);
        libc::read(exec_pipe[0], byte.as_mut_ptr().cast(), 1);
        libc::close(exec_pipe[0]);
    }
    pid
}

fn reap(pid: i32) {
    // SAFETY: waitpid on our own child, no pointers but a null status.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
}

fn sorted(mut pids: Vec<i32>) -> Vec<i32> {
    pids.sort_unstable();
    pids
}

/// The scenario every role runs once start_server's cgroup may be managed: set-up, a worker per
/// generation and per slot started in place, a helper that escapes its session and environment
/// still counted, CPU and memory, then every generation killed and removed.
fn exercise(delegation: &Delegation) {
    let subtree = Subtree::set_up(delegation).expect("set up the subtree");
    let me = std::process::id() as i32;
    assert_eq!(
        cgroup::cgroup_of(me).as_deref(),
        Some(format!("{}/supervisor", delegation.path.trim_end_matches('/')).as_str()),
        "start_server moves itself into a leaf"
    );
    assert!(
        subtree.root().pids_here().unwrap().is_empty(),
        "no process is left in the delegated cgroup"
    );
    println!("controllers enabled: {:?}", subtree.controllers());
    // Exec'd again (an upgrade in place), start_server finds the same subtree from its leaf.
    let again = cgroup::gather();
    assert_eq!(again.path.as_deref(), Some(delegation.path.as_str()));
    assert_eq!(again.mount.as_deref(), Some(delegation.dir.as_path()));

    // Generation 1, one copy, created in place by clone3; it starts a helper that leaves its
    // session and environment behind and ignores SIGTERM.
    let gen1 = subtree.generation(1, false).unwrap();
    let worker = spawn_in(
        &gen1,
        true,
        &[
            "/bin/sh",
            "-c",
            "setsid sh -c 'trap \"\" TERM; exec env -i sleep 1000' </dev/null & exec sleep 1000",
        ],
    );
    let members = wait_until("generation 1's worker and its helper", || {
        let pids = gen1.pids().ok()?;
        let env_less = pids.iter().any(|p| {
            fs::read(format!("/proc/{p}/environ")).is_ok_and(|e| e.is_empty())
                && fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c == "sleep\n")
        });
        (pids.len() == 2 && env_less).then_some(pids)
    });
    assert!(members.contains(&worker));
    for pid in &members {
        assert_eq!(cgroup::cgroup_of(*pid).as_deref(), Some(gen1.path()));
    }
    assert_eq!(
        gen1.path(),
        format!("{}/gen-1", delegation.path.trim_end_matches('/'))
    );

    // Generation 2, two copies, each joining its slot between fork and exec.
    let gen2 = subtree.generation(2, true).unwrap();
    let slots: Vec<Cgroup> = (0..2).map(|k| subtree.slot(2, k).unwrap()).collect();
    let copies: Vec<i32> = slots
        .iter()
        .map(|slot| spawn_in(slot, false, &["/bin/sleep", "1000"]))
        .collect();
    for (slot, pid) in slots.iter().zip(&copies) {
        assert_eq!(slot.pids_here().unwrap(), vec![*pid]);
        assert_eq!(cgroup::cgroup_of(*pid).as_deref(), Some(slot.path()));
    }
    assert_eq!(sorted(gen2.pids().unwrap()), sorted(copies.clone()));
    assert!(gen2.populated().unwrap());
    // An inner node that passes controllers on takes no process: clone3 says EBUSY there (the
    // caller then falls back to fork and join, which fails the same way). Without controllers
    // the kernel does not enforce it.
    let direct = {
        let dir = gen2.dir_fd().unwrap();
        // SAFETY: the child, if any, _exits at once.
        match unsafe { cgroup::fork_into(dir.as_raw_fd()) } {
            // SAFETY: in the child: _exit only.
            Ok(0) => unsafe { libc::_exit(0) },
            Ok(pid) => {
                reap(pid);
                None
            }
            Err(e) => e.raw_os_error(),
        }
    };
    if subtree.controllers().is_empty() {
        assert_eq!(direct, None);
    } else {
        assert_eq!(
            direct,
            Some(libc::EBUSY),
            "a generation with slots is an inner node"
        );
    }

    // Generation 3: a worker that burns CPU.
    let gen3 = subtree.generation(3, false).unwrap();
    let burner = spawn_in(&gen3, true, &["/bin/sh", "-c", "while :; do :; done"]);
    let used = wait_until("the burner's CPU time in cpu.stat", || {
        let stats = gen3.stats().ok()?;
        (stats.cpu_usec > 300_000).then_some(stats)
    });
    assert_eq!(used.processes, 1);
    let from_cgroup = usage::of_cgroup(&gen3).unwrap();
    assert!(from_cgroup.cpu_seconds > 0.3, "{from_cgroup:?}");
    assert!(from_cgroup.memory_bytes > 0, "{from_cgroup:?}");
    let memory = subtree.controllers().iter().any(|c| c == "memory");
    assert_eq!(
        from_cgroup.memory_source,
        if memory {
            MemorySource::Cgroup
        } else {
            MemorySource::Pss
        }
    );
    assert_eq!(used.memory_bytes.is_some(), memory);
    let from_proc = usage::of_processes(&[burner]);
    assert!(from_proc.cpu_seconds > 0.2, "{from_proc:?}");
    assert_eq!(from_proc.processes, 1);
    println!("generation 3: cgroup {from_cgroup:?}, /proc {from_proc:?}");

    // Generation 1 ends with cgroup.kill: the helper that escaped goes too.
    assert_eq!(
        gen1.kill().unwrap(),
        Killed::Kernel,
        "cgroup.kill (Linux 5.14+)"
    );
    reap(worker);
    wait_until("generation 1 empty", || {
        (!gen1.populated().ok()?).then_some(())
    });
    for pid in &members {
        wait_until("the helper gone", || {
            (!Path::new(&format!("/proc/{pid}")).exists()
                || fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z")))
            .then_some(())
        });
    }
    gen1.remove().unwrap();
    assert!(!gen1.dir().exists());

    // Generation 2 ends the way kernels before 5.14 need: SIGKILL until none is left.
    let mut signalled = 0;
    wait_until("generation 2 killed by signals", || {
        signalled += gen2.kill_by_signal().ok()?;
        (!gen2.populated().ok()?).then_some(())
    });
    assert!(signalled >= 2);
    for pid in copies {
        reap(pid);
    }
    // Removing it removes its slots first.
    gen2.remove().unwrap();
    assert!(!gen2.dir().exists());

    gen3.kill().unwrap();
    reap(burner);
    wait_until("generation 3 empty", || {
        (!gen3.populated().ok()?).then_some(())
    });
    assert!(gen3.remove().is_ok());
    assert!(subtree.generations().unwrap().is_empty());

    // An upgrade in place: the next image adopts the subtree from its directory and path.
    let adopted = Subtree::adopt(
        subtree.root().dir().to_path_buf(),
        subtree.root().path().to_string(),
    )
    .unwrap();
    assert_eq!(adopted.controllers(), subtree.controllers());
    let gen4 = adopted.generation(4, false).unwrap();
    assert_eq!(adopted.generations().unwrap(), vec![(4, gen4.clone())]);
    gen4.remove().unwrap();
    println!("CGROUP-SCENARIO-OK");
}

/// The roles, run in a child (see the module's comment).
fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

#[test]
fn generations_in_a_cgroup_the_test_makes() {
    if let Some(role) = role() {
        let scratch: PathBuf = std::env::var_os(SCRATCH).unwrap().into();
        let path = std::env::var(format!("{SCRATCH}_PATH")).unwrap();
        assert_eq!(role, "scratch");
        // The test's child moves itself into the cgroup made for it: "any writable cgroup2
        // directory it runs in".
        fs::write(scratch.join("cgroup.procs"), "0").unwrap();
        let facts = cgroup::gather();
        assert_eq!(facts.path.as_deref(), Some(path.as_str()));
        assert_eq!(facts.mount.as_deref(), Some(scratch.as_path()));
        assert!(!facts.hierarchy_root);
        assert!(facts.not_writable.is_none(), "{facts:?}");
        // Outside systemd a writable cgroup of its own is enough; under systemd, it is not.
        match cgroup::detect() {
            Ok(found) => {
                assert!(!facts.systemd);
                assert_eq!(found.grant, Grant::Writable);
                assert_eq!(found.dir, scratch);
            }
            Err(why) => {
                assert!(facts.systemd, "{why}");
                assert!(why.contains("Delegate=yes"), "{why}");
            }
        }
        exercise(&Delegation::at(scratch, path));
        return;
    }
    let scratch = Scratch::new("host");
    let mut child = rerun("generations_in_a_cgroup_the_test_makes");
    child
        .env(ROLE, "scratch")
        .env(SCRATCH, scratch.cgroup.dir())
        .env(format!("{SCRATCH}_PATH"), scratch.cgroup.path());
    let (status, text) = run_role(child);
    assert!(
        status.success() && text.contains("CGROUP-SCENARIO-OK"),
        "the child failed ({status:?}):\n{text}"
    );
    // What the child left: its supervisor cgroup, with no process left in it.
    assert!(scratch.cgroup.pids().unwrap().is_empty());
    assert_eq!(
        scratch
            .cgroup
            .children()
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect::<Vec<_>>(),
        vec!["supervisor".to_string()]
    );
}

#[test]
fn another_user_cannot_manage_a_cgroup_it_cannot_write() {
    if role().is_some() {
        let why = cgroup::detect().expect_err("a cgroup it cannot write to is refused");
        println!("\nREFUSED: {why}");
        return;
    }
    let scratch = Scratch::new("nobody");
    let procs = scratch.cgroup.procs_fd().unwrap();
    let fd = procs.as_raw_fd();
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "another_user_cannot_manage_a_cgroup_it_cannot_write",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, "nobody");
    // SAFETY: the closure only writes to a descriptor opened before (async-signal-safe).
    unsafe {
        command.pre_exec(move || cgroup::join(fd).map_err(std::io::Error::from_raw_os_error));
    }
    let (status, text) = run_role(command);
    assert!(status.success(), "{text}");
    let why = text
        .lines()
        .find_map(|l| l.strip_prefix("REFUSED: "))
        .unwrap_or_else(|| panic!("no refusal in:\n{text}"));
    let path = scratch.cgroup.path();
    let expected = [
        format!("its cgroup {path} cannot be written to ("),
        format!("its cgroup {path} is systemd's: set Delegate=yes"),
    ];
    assert!(
        expected.iter().any(|e| why.starts_with(e.as_str())),
        "{why}"
    );
    if why.contains("cannot be written to") {
        assert!(why.contains("Permission denied"), "{why}");
    }
}

#[test]
fn under_systemd_delegate_yes_gives_a_subtree() {
    if let Some(role) = role() {
        match role.as_str() {
            "delegated" => {
                let delegation = cgroup::detect().unwrap_or_else(|why| panic!("refused: {why}"));
                assert_eq!(delegation.grant, Grant::Systemd);
                // SAFETY: getuid has no preconditions.
                let uid = unsafe { libc::getuid() };
                println!("\nuid {uid} delegated {}", delegation.path);
                exercise(&delegation);
            }
            "not-delegated" => {
                let why = cgroup::detect().expect_err("refused without Delegate=yes");
                println!("\nREFUSED: {why}");
            }
            other => panic!("unknown role {other}"),
        }
        return;
    }
    let tmp = TempDir::new();
    fs::copy(std::env::current_exe().unwrap(), tmp.path("cgroups-test")).unwrap();
    let test = "under_systemd_delegate_yes_gives_a_subtree";
    let run = format!("/src/cgroups-test {test} --exact --nocapture --test-threads=1");
    let output = run_in_systemd(
        &tmp,
        &format!(
            r#"
uname -r
out=$(systemd-run --wait --pipe --quiet -p Delegate=yes -E {ROLE}=delegated {run} 2>&1) || fail "as root: $out"
echo "$out"
[[ $out == *CGROUP-SCENARIO-OK* ]] || fail "as root: $out"
unit=$(systemd-run --wait --pipe -p Delegate=yes -p User=nobody -E {ROLE}=delegated {run} 2>&1) || fail "as nobody: $unit"
echo "$unit"
[[ $unit == *"uid 65534 delegated"*CGROUP-SCENARIO-OK* ]] || fail "as nobody: $unit"
# DelegateSubgroup= starts it in a leaf of the delegated cgroup: the parent is managed.
for sub in supervisor main; do
  out=$(systemd-run --wait --pipe --quiet -p Delegate=yes -p DelegateSubgroup=$sub -E {ROLE}=delegated {run} 2>&1) || fail "DelegateSubgroup=$sub: $out"
  [[ $out == *"delegated /system.slice/run-"*".service"$'\n'*CGROUP-SCENARIO-OK* ]] || fail "DelegateSubgroup=$sub: $out"
done
out=$(systemd-run --wait --pipe --quiet -E {ROLE}=not-delegated {run} 2>&1) || fail "no Delegate: $out"
echo "$out"
[[ $out == *"REFUSED: its cgroup /system.slice/run-"*".service is systemd's: set Delegate=yes in the unit to give each generation a cgroup"* ]] || fail "no Delegate: $out"
"#
        ),
    );
    assert!(output.contains("controllers enabled:"), "{output}");
    println!("{output}");
}

/// The checks of `exercise` on a cgroup path, not a process: a path that is not a cgroup is an
/// error naming it.
#[test]
fn errors_name_the_cgroup() {
    let missing =
        Delegation::at(PathBuf::from("/nonexistent/cgroup"), "/nonexistent".into()).cgroup();
    let error = missing.pids().unwrap_err().to_string();
    assert!(
        error.contains("/nonexistent/cgroup/cgroup.procs"),
        "{error}"
    );
    let error = missing.child("x").unwrap_err().to_string();
    assert!(
        error.starts_with("cannot create cgroup /nonexistent/cgroup/x"),
        "{error}"
    );
}
