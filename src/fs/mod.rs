//! Care with the file system, for files start_server creates as root in directories other users
//! may share: opening without following a link another user could have planted ([`guarded`]),
//! replacing a file atomically, and removing only the very file start_server made ([`owned`]).

pub mod guarded;
pub mod owned;
