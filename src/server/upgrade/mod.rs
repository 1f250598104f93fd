//! Upgrading start_server itself in place (SIGUSR2, `upgrade` on the control socket,
//! `--upgrade`): the binary now at the path start_server was started as is checked
//! ([`check`]), then executed by this very process, so the pid (systemd's MainPID, the pid
//! file's), the sockets, the workers' parent and their notification socket stay what they were,
//! and every worker runs on. What the next image needs goes to it in a memfd ([`state`]),
//! gathered from each part that survives the exec ([`handover`]).
//!
//! Signals stay blocked across `execve` (the mask survives it), so one sent meanwhile waits for
//! the new image's signalfd; a worker that exits meanwhile waits, a zombie, to be reaped by it.
//! Any failure before the exec leaves this image running ([`Refusal`]).

pub mod check;
pub mod handover;
pub mod image;
pub mod refusal;
pub mod state;
pub mod version;

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::time::Instant;

use tracing::{error, info, warn};

use crate::fs::owned::Owned;
use crate::server::notify::systemd::Notifier;
use crate::wire::upgrade_report;
use handover::Parts;
pub use image::Image;
pub use refusal::Refusal;
use version::version;

/// The upgrade as a part of the running start_server: the program it would execute, whether an
/// upgrade was asked for, and where its outcome is written.
#[derive(Debug)]
pub struct Upgrade {
    image: Image,
    /// `{PID_FILE}.upgrade`.
    report: Option<Owned>,
    asked: bool,
}

impl Upgrade {
    /// The upgrade of `image`, its outcome written beside `pid_file` if there is one.
    pub fn new(image: Image, pid_file: Option<&Path>) -> crate::error::Result<Upgrade> {
        let report = pid_file
            .map(|p| Owned::at(&upgrade_report::path(p), "--pid-file"))
            .transpose()?;
        Ok(Upgrade {
            image,
            report,
            asked: false,
        })
    }

    /// SIGUSR2 or `upgrade`: upgrade once the pending actions are done.
    pub fn ask(&mut self) {
        self.asked = true;
    }

    /// Whether an upgrade is due (asked for since the last one).
    pub fn take_asked(&mut self) -> bool {
        std::mem::take(&mut self.asked)
    }

    /// Writes the outcome beside the pid file: the version that runs, or why not.
    pub fn report(&mut self, outcome: &Result<String, String>) {
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

    /// Replaces this program with the binary at its path, if that binary passes the check,
    /// handing over `parts`; `serving` says what serves, for systemd. Returns only if the
    /// upgrade did not happen, with why (this image runs on as it was).
    pub fn run(&self, parts: &Parts<'_>, systemd: &Notifier, serving: &str) -> Refusal {
        let image = &self.image;
        info!(
            "upgrading start_server {} to {}",
            version(),
            image.binary.display()
        );
        let refusal = attempt(image, parts, systemd, serving);
        error!(
            "upgrade failed, start_server {} runs on: {refusal}",
            version()
        );
        refusal
    }
}

/// Check, state, exec; returns only if something failed.
fn attempt(image: &Image, parts: &Parts<'_>, systemd: &Notifier, serving: &str) -> Refusal {
    let new_version = match check::check(image) {
        Ok(version) => version,
        Err(refusal) => return refusal,
    };
    let state = match handover::collect(image, parts, Instant::now()) {
        Ok(state) => state,
        Err(refusal) => return refusal,
    };
    let memfd = match state::write(&state) {
        Ok(fd) => fd,
        Err(refusal) => return refusal,
    };
    let mut fds = state.fds();
    fds.push(memfd.as_raw_fd());
    if let Err(refusal) = state::set_cloexec(&fds, false) {
        let _ = state::set_cloexec(&fds, true);
        return refusal;
    }
    let announced = parts.supervisor.announced_ready();
    if announced {
        systemd.reloading(&format!("upgrading start_server to {new_version}"));
    }
    info!(
        "executing {} (start_server {new_version})",
        image.binary.display()
    );
    let refusal = exec(image, memfd.as_raw_fd());
    if let Err(e) = state::set_cloexec(&fds, true) {
        warn!("{e}");
    }
    if announced {
        systemd.ready(&format!(
            "upgrade failed ({refusal}); start_server {} runs on; {serving}",
            version()
        ));
    }
    refusal
}

/// Replaces this process's program with `image`'s binary, passing the state at `state_fd`.
/// Returns only if `execve` failed, with why.
fn exec(image: &Image, state_fd: std::os::fd::RawFd) -> Refusal {
    let c = |s: &std::ffi::OsStr| CString::new(s.as_bytes().to_vec());
    let Ok(binary) = c(image.binary.as_os_str()) else {
        return Refusal::NulByte("the binary's path");
    };
    let mut argv = Vec::with_capacity(image.argv.len() + 1);
    let mut args = image.argv.iter();
    argv.extend(args.next().map(|a| c(a)));
    argv.push(CString::new(format!("--upgrade-state={state_fd}")));
    argv.extend(args.map(|a| c(a)));
    let Ok(argv) = argv.into_iter().collect::<Result<Vec<_>, _>>() else {
        return Refusal::NulByte("the command line");
    };
    let env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut entry = k.into_vec();
            entry.push(b'=');
            entry.extend(v.into_vec());
            CString::new(entry).ok()
        })
        .collect();
    match nix::unistd::execve(&binary, &argv, &env) {
        Ok(never) => match never {},
        Err(error) => Refusal::Exec {
            binary: image.binary.clone(),
            error,
        },
    }
}
