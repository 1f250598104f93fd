//! The files start_server writes: its pid file ([`pid_file`], locked for its life), the status
//! file and its failure note ([`status_file`]), all created without following a link another
//! user could have planted ([`guarded`]).

pub mod guarded;
pub mod pid_file;
pub mod status_file;
