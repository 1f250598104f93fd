//! What start_server sets up about itself before anything else, so that workers start clean.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, IntoRawFd};

/// Makes sure fds 0, 1 and 2 are open (on /dev/null if they were closed), so that no socket or
/// file of ours lands on a standard fd, and marks every other inherited fd close-on-exec, so
/// that a worker never sees what start_server's own caller leaked to it.
pub fn standard_fds_and_no_leaks() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries the fd.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0
            && let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null")
        {
            if null.as_raw_fd() == fd {
                // Opened right onto the gap: keep it (and clear the close-on-exec std sets).
                let fd = null.into_raw_fd();
                // SAFETY: clearing FD_CLOEXEC on our own fd.
                unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
            } else {
                // Nothing to report to yet (stderr may be the very fd missing): an fd left
                // closed is what start_server had before.
                let _ = crate::server::log::output::dup_onto_standard(&null, fd);
            }
        }
    }
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags (Linux 5.11+).
    let done = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    } == 0;
    if !done && let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        let fds: Vec<i32> = dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|fd| *fd >= 3)
            .collect();
        for fd in fds {
            // SAFETY: setting FD_CLOEXEC; a stale number (the dir's own fd) just fails.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
}
