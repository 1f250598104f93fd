//! The test workers, in one place: each script is a file beside this one (`workers/*.py`), so it
//! reads as the program it is; tests write them into a [`super::TempDir`] with `script`.

/// An HTTP worker: serves every TCP socket of SERVER_STARTER_PORT, answering
/// `pid=PID gen=GEN`; sends READY=1 (and STATUS=$STATUS_TEXT) to NOTIFY_SOCKET when $SEND_READY is set; on SIGTERM (or the signal in $STOP_SIGNAL) it finishes the request at hand,
/// appends the signal's name to $SIGNAL_LOG if set, and exits; with $EXIT_AFTER (seconds), it
/// exits with status 1 that long after it started, between two requests.
pub const HTTP_WORKER: &str = include_str!("workers/http_worker.py");

/// A worker that writes what it was given (env, fds, signal state, cwd) to $REPORT, then sleeps.
pub const REPORT_WORKER: &str = include_str!("workers/report_worker.py");

/// A worker that does nothing but live (until start_server stops it).
pub const SLEEPER: &str = "#!/bin/sh\nexec sleep 600\n";

/// A stand-in journald on /run/systemd/journal/socket (in a mount namespace of its own) that
/// starts start_server with stderr as its "journal stream", stops reading when the file `stall`
/// appears (and fills its queue up, as a stuck journald's is), and reads again, appending the
/// entries' fields to `journal`, once `drain` appears.
pub const STALLING_JOURNAL: &str = include_str!("workers/stalling_journal.py");

/// A worker written for systemd socket activation only (LISTEN_PID must be its own pid, one
/// socket named `127.0.0.1_$PORT`) that answers as [`HTTP_WORKER`] does.
pub const SYSTEMD_STYLE_WORKER: &str = include_str!("workers/systemd_style_worker.py");

/// An ASGI app answering as [`HTTP_WORKER`] does, for uvicorn (`asgi_app:app`).
pub const ASGI_APP: &str = include_str!("workers/asgi_app.py");

/// A PSGI app answering as [`HTTP_WORKER`] does, for the Perl servers.
pub const PSGI_APP: &str = include_str!("workers/app.psgi");

/// [`PSGI_APP`] with a slow request (`/slow?FILE`: creates FILE, answers 5 seconds later), to
/// tell a graceful stop of the Perl servers from an abrupt one.
pub const PSGI_SLOW_APP: &str = include_str!("workers/slow_app.psgi");

impl super::TempDir {
    /// Writes [`PSGI_APP`] as `app.psgi`; returns its path.
    pub fn psgi_app(&self) -> String {
        let app = self.path("app.psgi");
        std::fs::write(&app, PSGI_APP).expect("write the PSGI app");
        app.display().to_string()
    }
}

/// Starlet (two workers) serving `app`.
pub fn starlet(app: &str) -> Vec<String> {
    super::args(&[
        "plackup",
        "-s",
        "Starlet",
        "--max-workers=2",
        "-E",
        "deployment",
        app,
    ])
}

/// Starman (two workers) serving `app`.
pub fn starman(app: &str) -> Vec<String> {
    super::args(&["starman", "--workers=2", app])
}

/// A worker that holds connections: accepts on SERVER_STARTER_PORT's first socket, says
/// `hello` and keeps each connection until its client closes it; sends READY=1. On SIGTERM it
/// stops accepting, and exits once its connections are closed and the file $RELEASE exists.
pub const HOLDING_WORKER: &str = include_str!("workers/holding_worker.py");
