//! The one blocking call: `ppoll` on every source's fds, with the timeout of the earliest
//! deadline (none while idle: no wake-up at all).

use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::time::TimeSpec;

use crate::error::{Context, Result};
use crate::server::event::{Event, Source};

/// Sleeps until one of `sources` has something, or the earliest of their deadlines and
/// `deadline` passes; then lets each source turn what happened into events.
pub fn wait(sources: &mut [&mut dyn Source], deadline: Option<Instant>) -> Result<Vec<Event>> {
    let deadline = sources
        .iter()
        .filter_map(|s| s.deadline())
        .chain(deadline)
        .min();
    let timeout = deadline.map(|d| TimeSpec::from(d.saturating_duration_since(Instant::now())));
    let mut spans = Vec::with_capacity(sources.len());
    let ready: Vec<PollFlags> = {
        let mut fds = Vec::new();
        for source in sources.iter() {
            let start = fds.len();
            fds.extend(
                source
                    .interest()
                    .into_iter()
                    .map(|(fd, flags)| PollFd::new(fd, flags)),
            );
            spans.push(start..fds.len());
        }
        match ppoll(&mut fds, timeout, None) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e).context(|| "ppoll failed".to_string()),
        }
        fds.iter()
            .map(|fd| fd.revents().unwrap_or(PollFlags::empty()))
            .collect()
    };
    let now = Instant::now();
    let mut events = Vec::new();
    for (source, span) in sources.iter_mut().zip(spans) {
        source.on_ready(&ready[span], now, &mut events)?;
    }
    Ok(events)
}
