//! A client loop: HTTP requests one after the other from a thread of its own, counting the
//! answered and the failed, until finished.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use super::http_get;

/// Requests in a loop until finished; counts the served and the failed ones.
pub struct Traffic {
    pub stop: Arc<AtomicBool>,
    pub failed: Arc<AtomicU32>,
    pub served: Arc<AtomicU32>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    pub fn start(addr: &str) -> Traffic {
        let (stop, failed, served) = Default::default();
        let (s, f, d): (Arc<AtomicBool>, Arc<AtomicU32>, Arc<AtomicU32>) =
            (Arc::clone(&stop), Arc::clone(&failed), Arc::clone(&served));
        let addr = addr.to_string();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match http_get(&addr) {
                    Ok(_) => d.fetch_add(1, Ordering::SeqCst),
                    Err(_) => f.fetch_add(1, Ordering::SeqCst),
                };
            }
        });
        Traffic {
            stop,
            failed,
            served,
            thread: Some(thread),
        }
    }

    /// (served, failed) once stopped.
    pub fn finish(mut self) -> (u32, u32) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        (
            self.served.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}
