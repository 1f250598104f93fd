//! `--metrics-listen`: the listening socket, TCP or unix (made as the control socket is: mode
//! 0600, never in place of another process's or another user's socket), and its [`Endpoint`] as
//! an event source of the loop. A request ready to be answered is [`Event::Scrape`]: the loop
//! renders the metrics and calls [`MetricsListen::serve`]. The listening socket survives an
//! upgrade in place (a scrape meanwhile waits in its backlog); connections in progress do not.

use std::io::ErrorKind;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Instant;

use nix::poll::PollFlags;
use nix::sys::stat::{Mode, umask};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::http::{Endpoint, Interest, Limits};
use crate::config::listen_address::ListenAddress;
use crate::error::{Context, Error, Result};
use crate::fs::owned::Owned;
use crate::server::event::{Event, Source};
use crate::vocab::trust;

/// The metrics endpoint.
pub struct MetricsListen {
    endpoint: Endpoint,
    listener: RawFd,
    /// The unix socket's file, removed at exit if still ours.
    file: Option<Owned>,
    /// Descriptors found ready by the last wait.
    ready: Vec<RawFd>,
}

/// What an upgrade in place hands over.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetricsListenState {
    pub fd: RawFd,
    /// A unix socket's path and inode (to remove it at exit only if it is still that one).
    pub path: Option<String>,
    pub inode: u64,
}

impl MetricsListen {
    /// Binds `address`.
    pub fn bind(address: &ListenAddress) -> Result<MetricsListen> {
        let (listener, file): (OwnedFd, _) = match address {
            ListenAddress::Tcp(at) => {
                let listener = std::net::TcpListener::bind(at).context(|| {
                    format!("--metrics-listen {at}: cannot listen there: choose another address")
                })?;
                (listener.into(), None)
            }
            ListenAddress::Unix(path) => {
                let (listener, file) = bind_unix(path)?;
                (listener.into(), Some(file))
            }
        };
        match address {
            ListenAddress::Tcp(at) => info!("metrics at http://{at}/metrics"),
            ListenAddress::Unix(path) => {
                info!("metrics at {} (HTTP, GET /metrics)", path.display())
            }
        }
        MetricsListen::serving(listener, file)
    }

    fn serving(listener: OwnedFd, file: Option<Owned>) -> Result<MetricsListen> {
        let fd = listener.as_raw_fd();
        let endpoint = Endpoint::new(listener, Limits::default())
            .context(|| "cannot serve the metrics".to_string())?;
        Ok(MetricsListen {
            endpoint,
            listener: fd,
            file,
            ready: Vec::new(),
        })
    }

    /// For an upgrade in place.
    pub fn export(&self) -> MetricsListenState {
        let file = self.file.as_ref();
        MetricsListenState {
            fd: self.listener,
            path: file.map(|f| f.path().to_string_lossy().into_owned()),
            inode: file.and_then(Owned::current).map_or(0, |(_, inode)| inode),
        }
    }

    /// The endpoint an earlier image handed over.
    ///
    /// # Safety
    ///
    /// The state's fd must be the open listening socket, owned by nothing else.
    pub unsafe fn adopt(state: MetricsListenState) -> Result<MetricsListen> {
        // SAFETY: the caller promises the fd is open and ours alone.
        let listener = unsafe { OwnedFd::from_raw_fd(state.fd) };
        let file = match &state.path {
            Some(path) => {
                let mut file = Owned::at(Path::new(path), "--metrics-listen")?;
                if file
                    .current()
                    .is_some_and(|(_, inode)| inode == state.inode)
                {
                    file.made_current();
                }
                Some(file)
            }
            None => None,
        };
        MetricsListen::serving(listener, file)
    }

    /// Answers what is ready; `render` makes the metrics text when a request asks for it.
    pub fn serve(&mut self, render: &mut dyn FnMut() -> String) {
        for fd in std::mem::take(&mut self.ready) {
            self.endpoint.ready(fd, render);
        }
    }
}

impl Drop for MetricsListen {
    fn drop(&mut self) {
        if let Some(file) = &mut self.file {
            file.remove();
        }
    }
}

/// The listener while there is room, each connection as it wants; a wake-up only while a
/// connection is open (its deadline).
impl Source for MetricsListen {
    fn interest(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        self.endpoint
            .interests()
            .into_iter()
            .map(|(fd, interest)| {
                // SAFETY: the endpoint's own descriptors, open while it is.
                let fd = unsafe { BorrowedFd::borrow_raw(fd) };
                let flags = match interest {
                    Interest::Read => PollFlags::POLLIN,
                    Interest::Write => PollFlags::POLLOUT,
                };
                (fd, flags)
            })
            .collect()
    }

    fn deadline(&self) -> Option<Instant> {
        self.endpoint.deadline()
    }

    fn on_ready(
        &mut self,
        ready: &[PollFlags],
        now: Instant,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        self.ready = self
            .endpoint
            .interests()
            .into_iter()
            .zip(ready)
            .filter(|(_, flags)| !flags.is_empty())
            .map(|((fd, _), _)| fd)
            .collect();
        self.endpoint.expire(now);
        if !self.ready.is_empty() {
            events.push(Event::Scrape);
        }
        Ok(())
    }
}

/// A unix socket at `path`, mode 0600 from its creation; a stale one (nobody listening) of root
/// or start_server's user is replaced, anything else refused.
fn bind_unix(path: &Path) -> Result<(UnixListener, Owned)> {
    let shown = path.display();
    let mut file = Owned::at(path, "--metrics-listen")?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() || !trust::trusted_uid(meta.uid()) {
                return Err(Error::runtime(format!(
                    "--metrics-listen {shown}: a socket of uid {} is there, in use or not ours: \
                     remove it, or choose another path",
                    meta.uid()
                )));
            }
            warn!("removing stale metrics socket {shown}");
            std::fs::remove_file(path)
                .context(|| format!("failed to remove stale metrics socket {shown}"))?;
        }
        Ok(_) => {
            return Err(Error::runtime(format!(
                "--metrics-listen {shown}: it exists and is not a socket: remove it or choose \
                 another path"
            )));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(Error::runtime(format!("failed to inspect {shown}: {e}"))),
    }
    let saved = umask(Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    umask(saved);
    let listener = bound.context(|| format!("--metrics-listen {shown}: cannot listen there"))?;
    let meta = std::fs::symlink_metadata(path)
        .context(|| format!("failed to inspect metrics socket {shown}"))?;
    file.made(&meta);
    if !meta.file_type().is_socket() || meta.permissions().mode() & 0o777 != 0o600 {
        return Err(Error::runtime(format!(
            "--metrics-listen {shown}: the socket file was replaced after its creation: put it \
             in a directory only start_server's user can write to"
        )));
    }
    Ok((listener, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unix_endpoint_is_private_and_handed_over_with_its_file() {
        let dir = std::env::temp_dir().join(format!("ss-metrics-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.join("metrics.sock");
        let served = MetricsListen::bind(&ListenAddress::Unix(path.clone())).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let error = MetricsListen::bind(&ListenAddress::Unix(path.clone()))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("in use or not ours"), "{error}");
        let state = served.export();
        std::mem::forget(served);
        // SAFETY: the fd was the endpoint's, forgotten above.
        let adopted = unsafe { MetricsListen::adopt(state) }.unwrap();
        drop(adopted);
        assert!(!path.exists(), "removed at exit");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
