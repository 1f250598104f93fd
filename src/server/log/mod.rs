//! start_server's own log ([`stderr`], or [`journal`] when stderr is the journal), what is lost
//! of it ([`loss`]), and where the output of start_server and its workers goes with `--log-file`
//! ([`output`]). Nothing here panics or waits: the supervisor goes on whatever happens to its log.

pub mod journal;
pub mod loss;
pub mod output;
pub mod stderr;

use tracing_subscriber::layer::SubscriberExt;

use journal::Journal;
use stderr::{PlainLines, Stderr};

/// Installs the global subscriber: journald when `journal` (and reachable), else stderr.
pub fn init(journal: bool) {
    match journal.then(Journal::open).and_then(Result::ok) {
        Some(layer) => {
            let subscriber = tracing_subscriber::registry().with(layer);
            let _ = tracing::subscriber::set_global_default(subscriber);
        }
        None => {
            let subscriber = tracing_subscriber::fmt()
                .event_format(PlainLines)
                .with_writer(Stderr)
                .finish();
            let _ = tracing::subscriber::set_global_default(subscriber);
        }
    }
}

/// systemd sets `JOURNAL_STREAM=DEV:INODE` for a service whose output goes to the journal; it
/// only applies while stderr is still that stream (not redirected by a wrapper).
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    match nix::sys::stat::fstat(std::io::stderr()) {
        Ok(stat) => dev.parse() == Ok(stat.st_dev) && ino.parse() == Ok(stat.st_ino),
        Err(_) => false,
    }
}

/// A plain line to stderr outside the subscriber (the final error).
pub fn print(text: &str) {
    stderr::write_line(format!("{text}\n").as_bytes());
}
