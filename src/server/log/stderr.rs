//! start_server's stderr: one plain line per event, as the original prints them. A line that
//! cannot be written now is dropped and counted ([`super::loss`]), never waited for; a line a
//! full pipe took only part of has its end written before anything else.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use super::loss::{deliver, lost_message};

/// Only the message, the way operators' greps expect the original's lines.
pub struct PlainLines;

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

/// How start_server reaches its stderr.
static SINK: Mutex<Sink> = Mutex::new(Sink {
    own: None,
    socket: false,
    fifo: false,
    tail: Vec::new(),
});

/// The longest end of a cut line kept to be written later.
const MAX_TAIL: usize = 64 * 1024;

/// fd 2, or start_server's own non-blocking open file description of it when it is a pipe.
struct Sink {
    own: Option<OwnedFd>,
    socket: bool,
    fifo: bool,
    /// The end of a line a full pipe cut short, written before the next one.
    tail: Vec<u8>,
}

impl Sink {
    /// Opens the pipe at fd 2 anew, non-blocking. With no reader the open fails (ENXIO): it is
    /// tried again at the next line, and meanwhile fd 2 fails with EPIPE without waiting.
    fn open_own(&mut self) {
        // SAFETY: open(2) of a NUL-terminated path; the new fd is ours.
        let fd = unsafe {
            libc::open(
                c"/proc/self/fd/2".as_ptr(),
                libc::O_WRONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if fd >= 0 {
            // SAFETY: a fresh descriptor nobody else owns.
            self.own = Some(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }

    fn fd(&self) -> RawFd {
        self.own.as_ref().map_or(2, AsRawFd::as_raw_fd)
    }

    /// Writes all of `bytes` now or reports failure; never waits for a reader. A line cut
    /// short by a full pipe keeps its tail, written before anything else: the next line never
    /// starts in the middle of this one.
    fn write(&mut self, bytes: &[u8]) -> bool {
        if !self.tail.is_empty() {
            let tail = std::mem::take(&mut self.tail);
            let (written, blocked) = self.write_some(&tail);
            if written < tail.len() {
                self.keep_tail(&tail[written..], blocked);
                return false;
            }
        }
        let (written, blocked) = self.write_some(bytes);
        if written == bytes.len() {
            return true;
        }
        if written > 0 {
            self.keep_tail(&bytes[written..], blocked);
        }
        // Cut short: the rest goes out first next time (the line counts as written).
        written > 0 && !self.tail.is_empty()
    }

    /// Keeps the unwritten end of a line, after a write that would have blocked; a reader that
    /// is gone or a full disk gets none. A tail too long to keep is replaced by a newline.
    fn keep_tail(&mut self, rest: &[u8], blocked: bool) {
        if !blocked {
            return;
        }
        self.tail = if rest.len() <= MAX_TAIL {
            rest.to_vec()
        } else {
            b"\n".to_vec()
        };
    }

    /// Writes as much of `bytes` as goes now: how much that was, and whether the rest would
    /// have blocked (rather than failed).
    fn write_some(&self, bytes: &[u8]) -> (usize, bool) {
        let mut written = 0;
        while written < bytes.len() {
            let rest = &bytes[written..];
            let (fd, ptr, len) = (self.fd(), rest.as_ptr().cast(), rest.len());
            // SAFETY: writing from a valid buffer to a descriptor; a closed fd only fails.
            let n = unsafe {
                if self.socket {
                    libc::send(fd, ptr, len, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
                } else {
                    libc::write(fd, ptr, len)
                }
            };
            if n > 0 {
                written += n as usize;
                continue;
            }
            match (n < 0).then(|| io::Error::last_os_error().kind()) {
                Some(io::ErrorKind::Interrupted) => {}
                Some(io::ErrorKind::WouldBlock) => return (written, true),
                _ => return (written, false),
            }
        }
        (written, false)
    }
}

/// Looks at what fd 2 is now: called once the sockets inherited from systemd are taken (a new
/// fd must not land on one of their numbers), and again after `--log-file` replaced fd 2. A pipe
/// gets a non-blocking open file description of its own, so a reader that stopped reading
/// cannot stop start_server while workers, which share fd 2's description, keep blocking
/// writes; a socket is written with `MSG_DONTWAIT`. A file or terminal is written as is: a new
/// description of a file would have its own offset.
pub fn attach_stderr() {
    let mut sink = SINK.lock().unwrap_or_else(|e| e.into_inner());
    sink.own = None;
    sink.socket = false;
    sink.fifo = false;
    sink.tail.clear();
    let Ok(stat) = nix::sys::stat::fstat(io::stderr()) else {
        return;
    };
    match stat.st_mode & libc::S_IFMT {
        libc::S_IFIFO => {
            sink.fifo = true;
            sink.open_own();
        }
        libc::S_IFSOCK => sink.socket = true,
        _ => {}
    }
}

/// Writes one line (with its newline) to stderr, or counts it as lost.
pub fn write_line(line: &[u8]) {
    let mut sink = SINK.lock().unwrap_or_else(|e| e.into_inner());
    if sink.fifo && sink.own.is_none() {
        sink.open_own();
    }
    deliver(
        |bytes| sink.write(bytes),
        line,
        |lost| format!("{}\n", lost_message(lost)).into_bytes(),
    );
}

/// The subscriber's writer: each event arrives as one `write` of a whole line.
pub struct Stderr;

impl io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        write_line(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Stderr;

    fn make_writer(&'a self) -> Stderr {
        Stderr
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// A two-page pipe whose write end is non-blocking, as start_server's own stderr is.
    fn small_pipe() -> (std::fs::File, Sink) {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        // SAFETY: fcntl on fds this test owns.
        unsafe {
            libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, 8192);
            libc::fcntl(read.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK);
            libc::fcntl(write.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK);
        }
        let sink = Sink {
            own: Some(write),
            socket: false,
            fifo: true,
            tail: Vec::new(),
        };
        (std::fs::File::from(read), sink)
    }

    fn drain(reader: &mut std::fs::File, into: &mut Vec<u8>) {
        let mut buffer = [0u8; 4096];
        while let Ok(n @ 1..) = reader.read(&mut buffer) {
            into.extend_from_slice(&buffer[..n]);
        }
    }

    #[test]
    fn a_line_cut_by_a_full_pipe_is_finished_before_the_next_one() {
        let (mut reader, mut sink) = small_pipe();
        let first = format!("{}\n", "a".repeat(100));
        // The kernel takes 10001 % 4096 bytes into the first page and a whole second page: the
        // line is cut with 4096 bytes to go.
        let long = format!("{}\n", "b".repeat(10000));
        assert!(sink.write(first.as_bytes()));
        assert!(sink.write(long.as_bytes()), "cut, its end kept");
        assert!(!sink.write(b"lost\n"), "no room until the end is out");
        let mut got = Vec::new();
        drain(&mut reader, &mut got);
        assert!(sink.write(b"after\n"));
        drain(&mut reader, &mut got);
        assert_eq!(
            String::from_utf8(got).unwrap(),
            format!("{first}{long}after\n")
        );
    }
}
