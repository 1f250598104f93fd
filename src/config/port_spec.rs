//! `--port` values: `PORT`, `HOST:PORT`, `[V6ADDR]:PORT`, each with an optional `u` before the
//! port for UDP and `=FD` after it, parsed the way Server::Starter 0.35 does.

use std::net::Ipv6Addr;
use std::os::fd::RawFd;

use crate::error::{Error, Result};

/// Where a `--port` socket binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A bare port: IPv4 `0.0.0.0` only, as the original does for compatibility.
    AnyV4,
    /// An IPv4 address or a host name (resolved, IPv4 preferred).
    Named(String),
    /// An IPv6 address (bound with `IPV6_V6ONLY`), checked here once for everyone.
    V6(Ipv6Addr),
}

/// One parsed `--port` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// The key the worker sees in `SERVER_STARTER_PORT` (`8080`, `host:8080`, `[::1]:8080`).
    pub key: String,
    /// Address to bind.
    pub host: Host,
    /// Port number (0 lets the kernel choose).
    pub port: u16,
    /// A datagram (UDP) socket instead of a listening stream socket.
    pub udp: bool,
    /// The fd the worker must find the socket at, when the operator chose one.
    pub fd: Option<RawFd>,
}

/// The largest fd Linux can give a process (`fs.nr_open`'s ceiling is 2^20 by default).
const MAX_FD: RawFd = (1 << 20) - 1;

const FORMS: &str = "expected PORT, HOST:PORT or [IPV6]:PORT, with an optional 'u' before PORT \
                     for UDP and '=FD' after it (e.g. 8080, 127.0.0.1:8080, [::1]:u53=5)";

impl PortSpec {
    /// Parses one `--port` value; the error quotes it and lists the accepted forms.
    pub fn parse(text: &str) -> Result<PortSpec> {
        let bad = |why: &str| Error::usage(format!("invalid --port value {text:?}: {why}"));
        let spec = text.trim();
        let (address, fd) = match spec.rsplit_once('=') {
            Some((address, fd)) => {
                let fd = fd.trim();
                let fd = digits(fd)
                    .and_then(|_| fd.parse::<RawFd>().ok())
                    .ok_or_else(|| bad("the part after '=' must be a file descriptor number"))?;
                if fd > MAX_FD {
                    return Err(bad(&format!(
                        "file descriptor numbers go up to {MAX_FD} (the kernel's limit)"
                    )));
                }
                (address.trim_end(), Some(fd))
            }
            None => (spec, None),
        };
        let (host, port) = if let Some(rest) = address.strip_prefix('[') {
            // The original takes brackets around any host, not only IPv6 addresses, and keys
            // the socket without them unless the host is an IPv6 address.
            let (inside, port) = rest
                .split_once(']')
                .ok_or_else(|| bad("missing ']' after the host"))?;
            let port = port
                .trim_start()
                .strip_prefix(':')
                .ok_or_else(|| bad("missing ':PORT' after ']'"))?;
            let inside = inside.trim();
            if inside.is_empty() {
                return Err(bad(&format!("empty host: {FORMS}")));
            }
            if inside.contains(':') {
                (Written::V6(inside), port)
            } else {
                (Written::Named(inside), port)
            }
        } else if let Some((host, port)) = address.rsplit_once(':') {
            let host = host.trim();
            if host.is_empty() {
                return Err(bad(&format!("empty host: {FORMS}")));
            }
            if host.contains(':') {
                (Written::V6(host), port)
            } else {
                (Written::Named(host), port)
            }
        } else {
            (Written::Any, address)
        };
        let port = port.trim();
        let (udp, number) = match port.strip_prefix('u') {
            Some(number) => (true, number),
            None => (false, port),
        };
        let port: u16 = match digits(number).map(|_| number.parse::<u32>()) {
            Some(Ok(n)) if n <= 65535 => n as u16,
            Some(_) => return Err(bad("port numbers go from 0 to 65535")),
            None => return Err(bad(FORMS)),
        };
        // The key keeps the address as written (the original does not normalize it).
        let (host, key) = match host {
            Written::Any => (Host::AnyV4, port.to_string()),
            Written::Named(name) => (Host::Named(name.to_string()), format!("{name}:{port}")),
            Written::V6(text) => {
                let addr = text
                    .parse::<Ipv6Addr>()
                    .map_err(|_| bad(&format!("{text:?} is not an IPv6 address")))?;
                (Host::V6(addr), format!("[{text}]:{port}"))
            }
        };
        Ok(PortSpec {
            key,
            host,
            port,
            udp,
            fd,
        })
    }
}

/// The host part as written, before it is checked.
enum Written<'a> {
    Any,
    Named(&'a str),
    V6(&'a str),
}

fn digits(s: &str) -> Option<&str> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> PortSpec {
        PortSpec::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn bare_port_is_ipv4_any() {
        let p = ok("8080");
        assert_eq!(
            (p.key.as_str(), &p.host, p.port, p.udp, p.fd),
            ("8080", &Host::AnyV4, 8080, false, None)
        );
        assert_eq!(ok(" 80 ").key, "80");
    }

    #[test]
    fn host_and_port() {
        let p = ok("127.0.0.1:8080");
        assert_eq!(p.key, "127.0.0.1:8080");
        assert_eq!(p.host, Host::Named("127.0.0.1".into()));
        let p = ok("localhost:80=5");
        assert_eq!((p.key.as_str(), p.fd), ("localhost:80", Some(5)));
    }

    #[test]
    fn ipv6_forms() {
        let p = ok("[::1]:8080");
        assert_eq!(
            (p.key.as_str(), &p.host),
            ("[::1]:8080", &Host::V6(Ipv6Addr::LOCALHOST))
        );
        // The original also takes an unbracketed IPv6 address and brackets it in the key.
        assert_eq!(ok("::1:8080").key, "[::1]:8080");
        assert_eq!(ok("[::]:u53=0").fd, Some(0));
    }

    #[test]
    fn brackets_around_any_host_as_the_original() {
        let p = ok("[127.0.0.1]:8080");
        assert_eq!(p.key, "127.0.0.1:8080");
        assert_eq!(p.host, Host::Named("127.0.0.1".into()));
        assert_eq!(ok("[ localhost ]:u53").key, "localhost:53");
        assert_eq!(ok("[ ::1 ]:80").key, "[::1]:80");
    }

    #[test]
    fn udp_and_fd() {
        let p = ok("u53");
        assert_eq!((p.key.as_str(), p.udp, p.port), ("53", true, 53));
        let p = ok("0.0.0.0:u5353=7");
        assert_eq!(
            (p.key.as_str(), p.udp, p.fd),
            ("0.0.0.0:5353", true, Some(7))
        );
        assert_eq!(ok("8080 = 0").fd, Some(0));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "abc",
            "80x",
            "65536",
            "99999999999",
            "host:",
            ":80",
            "[::1]80",
            "[::1:80",
            "80=",
            "80=x",
            "80=-1",
            "80=2147483647",
            "80=1048576",
            "[]:80",
            "[::zz]:80",
            "u",
            "uu80",
            "1.2.3.4:port",
        ] {
            let err = PortSpec::parse(bad).expect_err(bad).to_string();
            assert!(err.contains("invalid --port value"), "{bad}: {err}");
        }
    }
}
