//! start_server's own journald client (the native protocol): entries are sent without ever
//! waiting, so a journald that is stalled or gone costs lines, counted as lost, never the
//! supervisor's progress.

use std::fmt;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

const SOCKET: &str = "/run/systemd/journal/socket";

/// A tracing layer writing one journal entry per event: `MESSAGE`, `PRIORITY` by level,
/// `SYSLOG_IDENTIFIER=start_server`, the code location, and the event's fields in upper case
/// (`GENERATION`, `WORKER_PID`).
pub struct Journal {
    /// Made at the first entry: at start-up, a new fd could take the number of a socket
    /// inherited from systemd that is not taken yet.
    socket: Mutex<Option<UnixDatagram>>,
}

impl Journal {
    /// A journal client, if journald takes datagrams (an empty one, which it ignores, is the
    /// probe).
    pub fn open() -> io::Result<Journal> {
        connect()?.send_to(&[], SOCKET)?;
        Ok(Journal {
            socket: Mutex::new(None),
        })
    }

    fn send(&self, entry: &[u8]) -> bool {
        let mut socket = self.socket.lock().unwrap_or_else(|e| e.into_inner());
        if socket.is_none() {
            *socket = connect().ok();
        }
        socket
            .as_ref()
            .is_some_and(|s| s.send_to(entry, SOCKET).is_ok())
    }
}

/// A non-blocking, close-on-exec datagram socket.
fn connect() -> io::Result<UnixDatagram> {
    let socket = UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

impl<S: Subscriber> Layer<S> for Journal {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut entry = Vec::with_capacity(256);
        put(&mut entry, "PRIORITY", priority(meta.level()).as_bytes());
        put(&mut entry, "SYSLOG_IDENTIFIER", b"start_server");
        if let Some(file) = meta.file() {
            put(&mut entry, "CODE_FILE", file.as_bytes());
        }
        if let Some(line) = meta.line() {
            put(&mut entry, "CODE_LINE", line.to_string().as_bytes());
        }
        put(&mut entry, "TARGET", meta.target().as_bytes());
        event.record(&mut Fields(&mut entry));
        super::loss::deliver(|bytes| self.send(bytes), &entry, lost_entry);
    }
}

/// The entry that reports `lost` dropped lines, as a warning.
fn lost_entry(lost: u64) -> Vec<u8> {
    let mut entry = Vec::with_capacity(128);
    put(&mut entry, "PRIORITY", priority(&Level::WARN).as_bytes());
    put(&mut entry, "SYSLOG_IDENTIFIER", b"start_server");
    let message = super::loss::lost_message(lost);
    put(&mut entry, "MESSAGE", message.as_bytes());
    entry
}

/// syslog priorities: error 3, warning 4, notice 5 (info), informational 6, debug 7.
fn priority(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "3",
        Level::WARN => "4",
        Level::INFO => "5",
        Level::DEBUG => "6",
        Level::TRACE => "7",
    }
}

/// `NAME=VALUE\n`, or, for a value with a newline, `NAME\n`, its length (64-bit little endian),
/// the value and `\n`.
fn put(entry: &mut Vec<u8>, name: &str, value: &[u8]) {
    entry.extend_from_slice(name.as_bytes());
    if value.contains(&b'\n') {
        entry.push(b'\n');
        entry.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        entry.push(b'=');
    }
    entry.extend_from_slice(value);
    entry.push(b'\n');
}

/// journald's field names: upper-case letters, digits and `_`, not starting with `_`.
fn field_name(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| if c == '.' { '_' } else { c })
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    name.trim_start_matches('_').to_string()
}

struct Fields<'a>(&'a mut Vec<u8>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, value.as_bytes());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record(field, format!("{value:?}").as_bytes());
    }
}

impl Fields<'_> {
    fn record(&mut self, field: &Field, value: &[u8]) {
        let name = match field.name() {
            "message" => "MESSAGE".to_string(),
            other => field_name(other),
        };
        if !name.is_empty() {
            put(self.0, &name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_plain_or_length_prefixed() {
        let mut entry = Vec::new();
        put(&mut entry, "MESSAGE", b"one line");
        put(&mut entry, "MESSAGE", b"two\nlines");
        let mut want = b"MESSAGE=one line\nMESSAGE\n".to_vec();
        want.extend_from_slice(&9u64.to_le_bytes());
        want.extend_from_slice(b"two\nlines\n");
        assert_eq!(entry, want);
    }

    #[test]
    fn field_names_follow_journald_rules() {
        assert_eq!(field_name("worker_pid"), "WORKER_PID");
        assert_eq!(field_name("_a.b-c"), "A_BC");
    }
}
