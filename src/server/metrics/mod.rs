//! Metrics in the Prometheus text exposition format (version 0.0.4): [`families`] says what
//! start_server exports, [`exposition`] writes it, [`counters`] keeps the server's own counts
//! across upgrades, and [`listen`] serves `GET /metrics` ([`http`]) from the event loop, without
//! threads or an async runtime.

pub mod counters;
pub mod exposition;
pub mod families;
pub mod http;
pub mod listen;
