//! The runtime: everything that touches the OS on the supervisor's behalf. [`serve`] sets
//! start_server up (pid file, log, sockets in place, daemon) and runs [`event_loop`], which feeds
//! the [`crate::supervisor`] state machine with signals, child exits and notifications and
//! carries out the actions it answers: [`spawn`] forks and execs workers, [`status_file`] and
//! [`notify`] report, [`strays`] deals with what dead workers leave behind.

pub mod control_socket;
pub mod event_loop;
pub mod file_watch;
pub mod files;
pub mod hygiene;
pub mod journal;
pub mod logging;
pub mod notify;
pub mod output;
pub mod pid_file;
pub mod serve;
pub mod signals;
pub mod spawn;
pub mod status_file;
pub mod status_report;
pub mod strays;
pub mod upgrade;
pub mod worker_notify;
