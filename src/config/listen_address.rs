//! `--metrics-listen`'s value: an IP address and port, or a unix socket path.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// Where the metrics are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddress {
    /// `127.0.0.1:9100`, `[::1]:9100`.
    Tcp(SocketAddr),
    /// A unix stream socket's path (it holds a `/`).
    Unix(PathBuf),
}

impl ListenAddress {
    /// Parses `--metrics-listen`'s value.
    pub fn parse(text: &str) -> Result<ListenAddress> {
        if text.contains('/') {
            return Ok(ListenAddress::Unix(PathBuf::from(text)));
        }
        text.parse().map(ListenAddress::Tcp).map_err(|_| {
            Error::usage(format!(
                "--metrics-listen {text}: not an address: give IP:PORT (127.0.0.1:9100, \
                 [::1]:9100) or a unix socket path (./metrics.sock)"
            ))
        })
    }
}

impl std::fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddress::Tcp(address) => write!(f, "{address}"),
            ListenAddress::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_paths() {
        assert_eq!(
            ListenAddress::parse("127.0.0.1:9100").unwrap(),
            ListenAddress::Tcp("127.0.0.1:9100".parse().unwrap())
        );
        assert_eq!(
            ListenAddress::parse("[::1]:9100").unwrap().to_string(),
            "[::1]:9100"
        );
        assert_eq!(
            ListenAddress::parse("/run/app/metrics.sock").unwrap(),
            ListenAddress::Unix("/run/app/metrics.sock".into())
        );
        let error = ListenAddress::parse("localhost:9100")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("--metrics-listen localhost:9100: not an address"),
            "{error}"
        );
        assert!(ListenAddress::parse("9100").is_err());
    }
}
