//! The way back from an upgrade that fails after the exec. The image that upgrades opens its own
//! file (`/proc/self/exe`, the old inode even if a package replaced the path) and names it on the
//! next image's command line with a second fd of the sealed state
//! (`--upgrade-rollback=EXE:STATE`; a wrapper that replaces the `--upgrade-state` fd does not
//! reach this one). If the next image
//! cannot read or take over the state, or panics before its loop runs, it executes that file
//! again with the same state and `--upgrade-rolled-back=WHY`: the old image resumes as before and
//! reports the upgrade as rolled back. It does so without running a destructor (which would close
//! the sockets or remove the pid file it is handing back): it executes from where it failed.
//!
//! What no code can catch (a crash before `main`, a segfault) is the one case left: systemd's
//! `Restart=` with the fd store brings start_server back without refusing a connection.

use std::os::fd::{OwnedFd, RawFd};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::borrowed;
use super::image::Image;

/// This process's own file, for the next image's way back (left open across the exec).
pub fn own_file() -> std::io::Result<OwnedFd> {
    Ok(nix::fcntl::open(
        "/proc/self/exe",
        OFlag::O_PATH | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

/// The way back an upgrading image left: its file and the state it handed over.
#[derive(Debug, Clone, Copy)]
pub struct WayBack {
    exe: RawFd,
    state: RawFd,
}

impl WayBack {
    /// The way back named on the command line (`EXE:STATE`): the old image's file and the state.
    pub fn parse(value: &str) -> Option<WayBack> {
        let (exe, state) = value.split_once(':')?;
        let (exe, state) = (exe.parse().ok()?, state.parse().ok()?);
        (exe >= 0 && state >= 0).then_some(WayBack { exe, state })
    }

    /// After a take-over: the way back is not needed (its file and state fd are closed).
    fn close(self) {
        let _ = nix::unistd::close(self.exe);
        let _ = nix::unistd::close(self.state);
    }

    /// Until [`WayBack::disarm`], a panic goes back instead of ending start_server (the hook
    /// runs before unwinding, and before the abort of a release build).
    pub fn arm(self) {
        std::panic::set_hook(Box::new(move |info| {
            let why = match info.payload().downcast_ref::<&str>() {
                Some(text) => (*text).to_string(),
                None => info
                    .payload()
                    .downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| "a panic".to_string()),
            };
            self.go_back(&format!("it panicked: {why}"));
        }));
    }

    /// The loop runs: no way back needed any more (its fds are closed).
    pub fn disarm(self) {
        let _ = std::panic::take_hook();
        self.close();
    }

    /// Executes the old image again with its state, saying `why` the new one could not take
    /// over. Returns only if that failed too: then nothing is left to do but exit (the workers
    /// are orphaned, with their sockets).
    pub fn go_back(&self, why: &str) -> ! {
        tracing::error!("the new program cannot take over ({why}): rolling back");
        let _ = nix::unistd::lseek(borrowed(self.state), 0, nix::unistd::Whence::SeekSet);
        let image = Image::current();
        let why = why.replace('\0', " ");
        let refusal = super::execute(
            &image,
            borrowed(self.exe),
            &[
                Some(format!("--upgrade-state={}", self.state)),
                Some(format!("--upgrade-rolled-back={why}")),
            ],
        );
        tracing::error!(
            "rolling back failed: {refusal}; the workers are left without start_server"
        );
        std::process::exit(1)
    }
}
