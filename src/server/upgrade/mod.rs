//! Upgrading start_server itself in place (SIGUSR2, `upgrade` on the control socket,
//! `--upgrade`): start_server's own file ([`image`]) is checked ([`check`], a child the event
//! loop waits for), then executed by this very process, so the pid (systemd's MainPID, the pid
//! file's), the sockets, the workers' parent and their notification socket stay what they were,
//! and every worker runs on. What the next image needs goes to it in a sealed memfd
//! ([`state`]), gathered from each part that survives the exec ([`handover`]); with it goes a
//! way back: this image's own file, which the next one executes again if it cannot take over
//! ([`rollback`]).
//!
//! Signals stay blocked across `execve` (the mask survives it), so one sent meanwhile waits for
//! the new image's signalfd; a worker that exits meanwhile waits, a zombie, to be reaped by it.
//! Any failure before the exec leaves this image running ([`Refusal`]).

pub mod check;
pub mod handover;
pub mod image;
pub mod refusal;
pub mod rollback;
pub mod state;
pub mod version;

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::time::Instant;

use nix::poll::PollFlags;
use tracing::{error, info, warn};

use crate::error::Result;
use crate::fs::owned::Owned;
use crate::server::event::{Event, Source};
use crate::server::notify::systemd::Notifier;
use crate::vocab::{ExitStatus, Pid};
use crate::wire::upgrade_report;
use check::{Check, Passed};
use handover::Parts;
pub use image::Image;
pub use refusal::Refusal;
use version::version;

/// Where an upgrade is.
#[derive(Debug, Default)]
enum Phase {
    #[default]
    Idle,
    /// Asked for: the check starts at the loop's next round.
    Asked,
    /// The new binary is being checked.
    Checking(Check),
    /// It passed: executed once no action is pending.
    Checked(Passed),
}

/// The upgrade as a part of the running start_server: the program it executes, where it is,
/// and where its outcome is written.
#[derive(Debug)]
pub struct Upgrade {
    image: Image,
    /// `{PID_FILE}.upgrade`.
    report: Option<Owned>,
    phase: Phase,
}

impl Upgrade {
    /// The upgrade of `image`, its outcome written beside `pid_file` if there is one.
    pub fn new(image: Image, pid_file: Option<&Path>) -> Result<Upgrade> {
        let report = pid_file
            .map(|p| Owned::at(&upgrade_report::path(p), "--pid-file"))
            .transpose()?;
        Ok(Upgrade {
            image,
            report,
            phase: Phase::Idle,
        })
    }

    /// SIGUSR2 or `upgrade`: check and execute the binary (one already under way goes on).
    pub fn ask(&mut self) {
        if matches!(self.phase, Phase::Idle) {
            self.phase = Phase::Asked;
        }
    }

    /// A stop: an upgrade under way is given up (its check killed); returns whether there was
    /// one.
    pub fn cancel(&mut self) -> bool {
        match std::mem::take(&mut self.phase) {
            Phase::Idle => false,
            Phase::Checking(check) => {
                check.kill();
                true
            }
            Phase::Asked | Phase::Checked(_) => true,
        }
    }

    /// The check's process, while one runs.
    pub fn check_pid(&self) -> Option<Pid> {
        match &self.phase {
            Phase::Checking(check) => Some(check.pid()),
            _ => None,
        }
    }

    /// The check's process exited.
    pub fn check_exited(&mut self, status: ExitStatus) {
        if let Phase::Checking(check) = &mut self.phase {
            check.exited(status);
        }
    }

    /// Starts the check if an upgrade was asked for; why not, if it cannot start.
    pub fn start_check(&mut self, now: Instant) -> Option<Refusal> {
        if !matches!(self.phase, Phase::Asked) {
            return None;
        }
        info!(
            "upgrading start_server {} to {}: checking it",
            version(),
            self.image.binary.display()
        );
        let started = self
            .image
            .open()
            .and_then(|binary| Check::start(&self.image, binary, now));
        match started {
            Ok(check) => {
                self.phase = Phase::Checking(check);
                None
            }
            Err(refusal) => {
                self.phase = Phase::Idle;
                Some(refusal)
            }
        }
    }

    /// After [`Event::UpgradeChecked`]: why the check failed, if it did (else the binary waits
    /// to be executed).
    pub fn checked(&mut self) -> Option<Refusal> {
        let Phase::Checking(check) = std::mem::take(&mut self.phase) else {
            return None;
        };
        match check.verdict() {
            Ok(passed) => {
                self.phase = Phase::Checked(passed);
                None
            }
            Err(refusal) => Some(refusal),
        }
    }

    /// Whether the binary passed its check and waits to be executed.
    pub fn due(&self) -> bool {
        matches!(self.phase, Phase::Checked(_))
    }

    /// Replaces this program with the checked binary, handing over `parts`; `serving` says
    /// what serves, for systemd. Returns only if the upgrade did not happen, with why (this
    /// image runs on as it was).
    pub fn execute(&mut self, parts: &Parts<'_>, systemd: &Notifier, serving: &str) -> Refusal {
        let Phase::Checked(passed) = std::mem::take(&mut self.phase) else {
            return Refusal::State("no checked binary to execute".to_string());
        };
        let state = match handover::collect(&self.image, parts, Instant::now()) {
            Ok(state) => state,
            Err(refusal) => return refusal,
        };
        let announced = parts.supervisor.announced_ready();
        if announced {
            systemd.reloading(&format!("upgrading start_server to {}", passed.version));
        }
        info!(
            "executing {} (start_server {})",
            self.image.binary.display(),
            passed.version
        );
        let refusal = exec(&self.image, &passed, &state);
        if announced {
            systemd.ready(&format!(
                "upgrade failed ({refusal}); start_server {} runs on; {serving}",
                version()
            ));
        }
        refusal
    }

    /// Logs why the upgrade did not happen and writes it beside the pid file.
    pub fn refused(&mut self, why: &str) {
        error!("upgrade failed, start_server {} runs on: {why}", version());
        self.report(&Err(why.to_string()));
    }

    /// Writes the outcome beside the pid file: the version that runs, or why not.
    pub fn report(&mut self, outcome: &std::result::Result<String, String>) {
        let Some(file) = &mut self.report else {
            return;
        };
        let stamp = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() * 1_000_000 + t.tv_nsec() / 1000)
            .unwrap_or_default();
        let text = upgrade_report::format(stamp, outcome);
        match crate::fs::guarded::replace(file.path(), text.as_bytes()) {
            Ok(meta) => file.made(&meta),
            Err(e) => error!("{e}"),
        }
    }

    /// At exit: the outcome file goes with the pid file (if start_server wrote it).
    pub fn remove_report(&mut self) {
        if let Some(report) = &mut self.report {
            report.remove();
        }
    }
}

/// The check under way is a source of the loop.
impl Source for Upgrade {
    fn interest(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        match &self.phase {
            Phase::Checking(check) => check.interest(),
            _ => Vec::new(),
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Checking(check) => check.deadline(),
            _ => None,
        }
    }

    fn on_ready(
        &mut self,
        ready: &[PollFlags],
        now: Instant,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        match &mut self.phase {
            Phase::Checking(check) => check.on_ready(ready, now, events),
            _ => Ok(()),
        }
    }
}

/// start_server's environment, for the programs an upgrade runs.
fn environment() -> Vec<CString> {
    std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut entry = k.into_vec();
            entry.push(b'=');
            entry.extend(v.into_vec());
            CString::new(entry).ok()
        })
        .collect()
}

/// Replaces this process's program with the checked binary, passing the state in a sealed
/// memfd and, if the binary takes it, this image's own file as the way back. Returns only if
/// that failed, with why.
fn exec(image: &Image, passed: &Passed, state: &state::State) -> Refusal {
    let memfd = match state::write(state) {
        Ok(fd) => fd,
        Err(refusal) => return refusal,
    };
    // The way back: this image's file and a second fd of the state, which nothing the next
    // image's command line does to the first reaches.
    let way_back: Option<(OwnedFd, OwnedFd)> = if passed.rollback {
        match rollback::own_file().and_then(|exe| Ok((exe, memfd.try_clone()?))) {
            Ok(fds) => Some(fds),
            Err(e) => {
                warn!("no way back for this upgrade: {e}");
                None
            }
        }
    } else {
        warn!(
            "start_server {} cannot roll back an upgrade that fails after the exec",
            passed.version
        );
        None
    };
    let mut fds = state.fds();
    fds.push(memfd.as_raw_fd());
    if let Some((exe, state)) = &way_back {
        fds.extend([exe.as_raw_fd(), state.as_raw_fd()]);
    }
    if passed.binary.script {
        fds.push(passed.binary.fd.as_raw_fd());
    }
    if let Err(refusal) = state::set_cloexec(&fds, false) {
        let _ = state::set_cloexec(&fds, true);
        return refusal;
    }
    let refusal = execute(
        image,
        passed.binary.fd.as_fd(),
        &[
            Some(format!("--upgrade-state={}", memfd.as_raw_fd())),
            way_back.as_ref().map(|(exe, state)| {
                format!(
                    "--upgrade-rollback={}:{}",
                    exe.as_raw_fd(),
                    state.as_raw_fd()
                )
            }),
        ],
    );
    if let Err(e) = state::set_cloexec(&fds, true) {
        warn!("{e}");
    }
    refusal
}

/// Executes the file at `binary` with `image`'s command line, `added` options right after
/// `argv[0]`. Returns only if `execveat` failed.
fn execute(image: &Image, binary: BorrowedFd<'_>, added: &[Option<String>]) -> Refusal {
    let c = |s: &[u8]| CString::new(s.to_vec());
    let mut argv = Vec::with_capacity(image.argv.len() + added.len());
    let mut args = image.argv.iter();
    argv.extend(args.next().map(|a| c(a.as_bytes())));
    argv.extend(added.iter().flatten().map(|a| c(a.as_bytes())));
    argv.extend(args.map(|a| c(a.as_bytes())));
    let Ok(argv) = argv.into_iter().collect::<std::result::Result<Vec<_>, _>>() else {
        return Refusal::NulByte("the command line");
    };
    match nix::unistd::execveat(
        binary,
        c"",
        &argv,
        &environment(),
        nix::fcntl::AtFlags::AT_EMPTY_PATH,
    ) {
        Ok(never) => match never {},
        Err(error) => Refusal::Exec {
            binary: image.binary.clone(),
            error,
        },
    }
}

/// The fd of `raw`, borrowed (for an fd named on the command line).
fn borrowed(raw: RawFd) -> BorrowedFd<'static> {
    // SAFETY: used only for fds this process holds for its whole remaining life (the way back
    // and the state, named on its command line).
    unsafe { BorrowedFd::borrow_raw(raw) }
}
