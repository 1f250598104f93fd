//! The test workers, in one place: each script is a file beside this one (`workers/*.py`), so it
//! reads as the program it is; tests write them into a [`super::TempDir`] with `script`.

/// An HTTP worker: serves every TCP socket of SERVER_STARTER_PORT, answering
/// `pid=PID gen=GEN`; sends READY=1 to NOTIFY_SOCKET when $SEND_READY is set; on SIGTERM (or the signal in $STOP_SIGNAL) it finishes the request at hand,
/// appends the signal's name to $SIGNAL_LOG if set, and exits.
pub const HTTP_WORKER: &str = include_str!("workers/http_worker.py");

/// A worker that writes what it was given (env, fds, signal state, cwd) to $REPORT, then sleeps.
pub const REPORT_WORKER: &str = include_str!("workers/report_worker.py");

/// A stand-in journald on /run/systemd/journal/socket (in a mount namespace of its own) that
/// starts start_server with stderr as its "journal stream", stops reading when the file `stall`
/// appears (and fills its queue up, as a stuck journald's is), and reads again, appending the
/// entries' fields to `journal`, once `drain` appears.
pub const STALLING_JOURNAL: &str = include_str!("workers/stalling_journal.py");
