//! What a running start_server and the commands that talk to it both read and write: the
//! control socket's JSON protocol ([`control`]), the pid file ([`pid_file`]), the status file and
//! its failure note ([`status_file`]), and the outcome of an upgrade ([`upgrade_report`]). The
//! server writes, the client modes read; neither imports the other, both import this.

pub mod control;
pub mod pid_file;
pub mod status_file;
pub mod upgrade_report;
