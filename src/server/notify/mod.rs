//! Notifications both ways: start_server tells systemd how it is doing ([`systemd`], with its
//! watchdog and file descriptor store, [`fd_store`]), and workers tell start_server they are
//! ready on the notification socket it gives them ([`workers`]).

pub mod fd_store;
pub mod systemd;
pub mod workers;
