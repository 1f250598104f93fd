//! start_server's log: one plain line per event on stderr, as the original prints them, or, when
//! stderr is the journal, native journald entries with a priority per level and the structured
//! fields (`GENERATION`, `WORKER_PID`) under the syslog identifier `start_server`.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;

/// Installs the global subscriber: journald when `journal` (and reachable), else stderr.
pub fn init(journal: bool) {
    let journald = journal
        .then(tracing_journald::layer)
        .and_then(Result::ok)
        .map(|layer| {
            layer
                .with_syslog_identifier("start_server".to_string())
                .with_field_prefix(None)
        });
    match journald {
        Some(layer) => {
            let subscriber = tracing_subscriber::registry().with(layer);
            let _ = tracing::subscriber::set_global_default(subscriber);
        }
        None => {
            let subscriber = tracing_subscriber::fmt()
                .event_format(PlainLines)
                .with_writer(std::io::stderr)
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

/// Only the message, the way operators' greps expect the original's lines.
struct PlainLines;

impl<S, N> FormatEvent<S, N> for PlainLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut message = MessageOnly(String::new());
        event.record(&mut message);
        writeln!(writer, "{}", message.0)
    }
}

struct MessageOnly(String);

impl Visit for MessageOnly {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        }
    }
}
