//! The files start_server writes: its pid file ([`pid_file`], locked for its life), the status
//! file and its failure note ([`status_file`]), made and removed with the care of `crate::fs`.

pub mod pid_file;
pub mod status_file;
