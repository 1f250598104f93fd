//! The running start_server: everything that touches the OS on the supervisor's behalf, one
//! folder per concern. [`serve`] builds the parts and runs the [`event_loop`], which waits on
//! every [`event`] source and feeds the [`crate::supervisor`] state machine, then carries out
//! what it answers through the parts: [`process`] (workers, signals, reaping, strays),
//! [`files`] (pid and status files), [`log`] (start_server's log and `--log-file`), [`notify`]
//! (systemd, and the workers' notifications), [`control`] (the control socket), [`file_watch`]
//! (`--reload-on-change`) and [`upgrade`] (replacing start_server itself in place).

pub mod cgroup;
pub mod control;
pub mod event;
pub mod event_loop;
pub mod file_watch;
pub mod files;
pub mod log;
pub mod metrics;
pub mod notify;
pub mod probe;
pub mod process;
pub mod serve;
pub mod upgrade;
