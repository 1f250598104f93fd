//! The sockets start_server binds itself, kept in systemd's file descriptor store (with
//! `FileDescriptorStoreMax=`), so that a restart or a crash of start_server finds them there and
//! no connection is refused meanwhile; and the stored ones no option wants any more, removed.

use std::os::fd::AsFd;

use tracing::info;

use crate::server::notify::systemd::Notifier;
use crate::sockets::{Listener, Origin};

/// Removes names no option matches any more from systemd's file descriptor store, and waits
/// until systemd has closed its copies: a bind to an overlapping address must not meet them.
pub fn retire(notifier: &Notifier, stale: &[(String, String)]) {
    for (key, name) in stale {
        info!(
            "removing {name} (socket {key}) from systemd's file descriptor store: no option \
             matches it any more"
        );
        notifier.remove_fd(name);
    }
    if !stale.is_empty() {
        notifier.barrier();
    }
}

/// Keeps the sockets bound here in the store (those taken from it are there already).
pub fn keep(notifier: &Notifier, listeners: &[Listener]) {
    for listener in listeners {
        match &listener.origin {
            Origin::Stored(name) => {
                info!(
                    "using socket {} from systemd's file descriptor store ({name})",
                    listener.key
                );
            }
            Origin::Bound(name) if notifier.fd_store() => {
                if notifier.store_fd(name, listener.fd.as_fd()) {
                    info!(
                        "socket {} kept in systemd's file descriptor store as {name}",
                        listener.key
                    );
                }
            }
            Origin::Bound(_) | Origin::Unit => {}
        }
    }
}
