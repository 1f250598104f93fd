//! `--reload-on-change`: an inotify fd in the event loop's `ppoll`. Each watched path's
//! directory is watched (the path itself for a directory), so that a file replaced by a rename
//! and Kubernetes' ConfigMap and Secret volumes (`..data`, a symbolic link renamed over the old
//! one) are seen as well as a file written in place. A burst of events is one reload, due
//! [`DEBOUNCE`] after the last of them.

use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::PollFlags;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use tracing::warn;

use crate::error::{Error, Result};
use crate::server::event::{Event, Source};

/// Quiet time after the last change before the reload.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// The name in a ConfigMap or Secret volume that is atomically swapped on update.
const KUBERNETES_DATA: &str = "..data";

/// One inotify watch.
#[derive(Debug)]
struct Watch {
    descriptor: WatchDescriptor,
    directory: PathBuf,
    /// For a watched file: its name in `directory`; `None` for a watched directory.
    name: Option<OsString>,
}

/// The inotify instance and what it watches.
#[derive(Debug)]
pub struct FileWatch {
    inotify: Inotify,
    watches: Vec<Watch>,
    /// When the reload is due, and the path that changed first.
    pending: Option<(Instant, PathBuf)>,
}

impl FileWatch {
    /// Watches every path (a file or a directory); a path whose directory does not exist is an
    /// error.
    pub fn new(paths: &[PathBuf]) -> Result<FileWatch> {
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .map_err(|e| Error::runtime(format!("--reload-on-change: inotify: {}", e.desc())))?;
        let flags = AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_ATTRIB
            | AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_MOVED_TO;
        let mut watches = Vec::new();
        for path in paths {
            let (directory, name) = if path.is_dir() {
                (path.clone(), None)
            } else {
                let directory = match path.parent() {
                    Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                (directory, path.file_name().map(OsString::from))
            };
            let descriptor = inotify.add_watch(&directory, flags).map_err(|e| {
                Error::usage(format!(
                    "--reload-on-change {}: cannot watch {}: {}",
                    path.display(),
                    directory.display(),
                    e.desc()
                ))
            })?;
            watches.push(Watch {
                descriptor,
                directory,
                name,
            });
        }
        Ok(FileWatch {
            inotify,
            watches,
            pending: None,
        })
    }

    /// Reads the pending events; a relevant one (re)starts the debounce.
    fn read_changes(&mut self, now: Instant) {
        loop {
            match self.inotify.read_events() {
                Ok(events) if events.is_empty() => return,
                Ok(events) => {
                    for event in events {
                        if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                            self.lost(&event.wd);
                            continue;
                        }
                        if let Some(path) = self.relevant(&event.wd, event.name.as_deref()) {
                            let first = self.pending.take().map_or(path, |(_, first)| first);
                            self.pending = Some((now + DEBOUNCE, first));
                        }
                    }
                }
                Err(Errno::EINTR) => {}
                // EAGAIN: all read.
                Err(_) => return,
            }
        }
    }

    /// The kernel dropped a watch (its directory was removed or unmounted): said once, since
    /// changes there are no longer seen.
    fn lost(&mut self, wd: &WatchDescriptor) {
        for watch in self.watches.iter().filter(|w| w.descriptor == *wd) {
            warn!(
                "--reload-on-change: {} is gone, changes there are no longer watched",
                watch.directory.display()
            );
        }
        self.watches.retain(|w| w.descriptor != *wd);
    }

    /// The path that changed, once the debounce has passed.
    fn due(&mut self, now: Instant) -> Option<PathBuf> {
        match &self.pending {
            Some((due, _)) if now >= *due => self.pending.take().map(|(_, path)| path),
            _ => None,
        }
    }

    /// The changed path, if an event on `name` in the directory of watch `wd` concerns a
    /// watched path.
    fn relevant(&self, wd: &WatchDescriptor, name: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
        self.watches
            .iter()
            .filter(|w| w.descriptor == *wd)
            .find_map(|w| match (&w.name, name) {
                (None, Some(name)) => Some(w.directory.join(name)),
                (None, None) => Some(w.directory.clone()),
                (Some(watched), Some(name)) if watched == name || name == KUBERNETES_DATA => {
                    Some(w.directory.join(name))
                }
                _ => None,
            })
    }
}

impl Source for FileWatch {
    fn interest(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        vec![(self.inotify.as_fd(), PollFlags::POLLIN)]
    }

    /// When the debounced reload is due, if one is.
    fn deadline(&self) -> Option<Instant> {
        self.pending.as_ref().map(|(due, _)| *due)
    }

    fn on_ready(
        &mut self,
        ready: &[PollFlags],
        now: Instant,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        if !ready.iter().all(PollFlags::is_empty) {
            self.read_changes(now);
        }
        events.extend(self.due(now).map(Event::Changed));
        Ok(())
    }
}
