//! Metrics in the Prometheus text exposition format (version 0.0.4): [`exposition`] writes them,
//! [`http`] serves them at `GET /metrics` from the event loop, without threads or an async
//! runtime.

pub mod exposition;
pub mod http;
