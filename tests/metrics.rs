//! Metrics (src/server/metrics): the exposition start_server will serve passes `promtool check
//! metrics` (Debian's `prometheus` package), the HTTP endpoint answers over TCP and unix sockets
//! from a poll loop, and a real Prometheus server scrapes it and answers queries about it. The
//! endpoint here is served by this test; [`Prometheus::scraping`] takes any address, such as
//! start_server's `--metrics-listen`.

mod common;

// Not part of start_server's command line yet: compiled here on its own.
#[allow(dead_code)]
#[path = "../src/server/metrics/mod.rs"]
mod metrics;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use metrics::exposition::{Histogram, Kind, Writer};
use metrics::http::{Endpoint, Interest, Limits};

/// The families start_server is to export, with label values that need escaping; `reloads` is
/// the number of successful reloads.
fn sample_metrics(reloads: u64) -> String {
    let mut w = Writer::new();
    w.metric(
        "server_starter_info",
        Kind::Gauge,
        "start_server's version, as a label; the value is 1.",
        &[(&[("version", "0.1.0")], 1.0)],
    );
    w.metric(
        "server_starter_generation",
        Kind::Gauge,
        "The current generation.",
        &[(&[], 3.0 + reloads as f64)],
    );
    w.metric(
        "server_starter_workers",
        Kind::Gauge,
        "Workers by state.",
        &[
            (&[("state", "running")], 4.0),
            (&[("state", "retiring")], 4.0),
        ],
    );
    w.metric(
        "server_starter_reloads_total",
        Kind::Counter,
        "Reloads by result.",
        &[
            (&[("result", "ok")], reloads as f64),
            (&[("result", "failed")], 1.0),
            (&[("result", "rolled_back")], 0.0),
        ],
    );
    let mut durations = Histogram::new(&[0.001, 0.01, 0.1, 1.0, 10.0, 60.0]);
    for seconds in [0.0027, 0.004, 1.5] {
        durations.observe(seconds);
    }
    w.histogram(
        "server_starter_reload_duration_seconds",
        "Time from a reload's start to its new generation serving.",
        &[(&[], &durations)],
    );
    w.metric(
        "server_starter_worker_exits_total",
        Kind::Counter,
        "Worker exits by reason.",
        &[
            (&[("reason", "retired")], 12.0),
            (&[("reason", "signal \"KILL\"\nthen \\ more")], 1.0),
        ],
    );
    w.metric(
        "server_starter_generation_cpu_seconds_total",
        Kind::Counter,
        "CPU time used by each generation's processes.",
        &[
            (&[("generation", "2")], 12.5),
            (&[("generation", "3")], 0.25),
        ],
    );
    w.metric(
        "server_starter_generation_memory_bytes",
        Kind::Gauge,
        "Memory of each generation (memory.current, else the sum of PSS: see source).",
        &[
            (&[("generation", "2"), ("source", "cgroup")], 50331648.0),
            (&[("generation", "3"), ("source", "cgroup")], 48234496.0),
        ],
    );
    w.metric(
        "server_starter_generation_connections",
        Kind::Gauge,
        "Connections accepted from start_server's sockets that each generation holds.",
        &[
            (&[("generation", "2")], 12.0),
            (&[("generation", "3")], 0.0),
        ],
    );
    w.metric(
        "server_starter_log_lines_dropped_total",
        Kind::Counter,
        "Lines of workers' output dropped because the log command fell behind.",
        &[(&[], 0.0)],
    );
    w.finish()
}

#[test]
fn exposition_passes_promtool() {
    let text = sample_metrics(2);
    assert!(
        text.contains(
            "server_starter_worker_exits_total{reason=\"signal \\\"KILL\\\"\\nthen \\\\ more\"} 1\n"
        ),
        "{text}"
    );
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run promtool ({e}): apt-get install prometheus"));
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Exit 0 and nothing said: neither an error nor a lint problem.
    assert!(
        output.status.success() && said.trim().is_empty(),
        "promtool: {:?} {said}\n{text}",
        output.status
    );
}

/// An [`Endpoint`] served by a thread of its own with a poll loop, as start_server's event loop
/// will; stops when dropped.
struct Served {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Served {
    fn start(listener: OwnedFd, limits: Limits, reloads: Arc<AtomicU64>) -> Served {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut endpoint = Endpoint::new(listener, limits).expect("endpoint");
            let mut render = || sample_metrics(reloads.load(Ordering::SeqCst));
            while !stopping.load(Ordering::SeqCst) {
                let interests = endpoint.interests();
                let mut fds: Vec<libc::pollfd> = interests
                    .iter()
                    .map(|&(fd, interest)| libc::pollfd {
                        fd,
                        events: match interest {
                            Interest::Read => libc::POLLIN,
                            Interest::Write => libc::POLLOUT,
                        },
                        revents: 0,
                    })
                    .collect();
                // The endpoint's deadline, but at most 50 ms (to see `stop`).
                let timeout = endpoint
                    .deadline()
                    .map_or(50, |d| {
                        d.saturating_duration_since(Instant::now()).as_millis() as i32
                    })
                    .clamp(0, 50);
                // SAFETY: the pollfd array is valid for its length.
                let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
                if n > 0 {
                    for pollfd in fds.iter().filter(|p| p.revents != 0) {
                        endpoint.ready(pollfd.fd, &mut render);
                    }
                }
                endpoint.expire(Instant::now());
            }
        });
        Served {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sends `request` and reads the whole answer (the endpoint closes after it).
fn exchange(mut stream: impl Read + Write, request: &[u8]) -> String {
    stream.write_all(request).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

fn tcp(address: &str) -> TcpStream {
    let stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

#[test]
fn http_endpoint_over_tcp_and_unix() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let reloads = Arc::new(AtomicU64::new(5));
    let _served = Served::start(listener.into(), Limits::default(), Arc::clone(&reloads));

    let answer = exchange(tcp(&address), b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"));
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "{head}"
    );
    assert_eq!(body, sample_metrics(5));
    reloads.store(6, Ordering::SeqCst);
    let answer = exchange(tcp(&address), b"GET /metrics?x=y HTTP/1.0\r\n\r\n");
    assert!(answer.contains("server_starter_reloads_total{result=\"ok\"} 6\n"));

    for (request, status) in [
        (&b"GET / HTTP/1.1\r\n\r\n"[..], "404 Not Found"),
        (b"GET /metrics/x HTTP/1.1\r\n\r\n", "404 Not Found"),
        (b"HEAD /metrics HTTP/1.1\r\n\r\n", "405 Method Not Allowed"),
        (
            b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nab",
            "405 Method Not Allowed",
        ),
        (b"\x00\xff garbage\r\n\r\n", "400 Bad Request"),
    ] {
        let answer = exchange(tcp(&address), request);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{request:?}: {answer}"
        );
    }
    // A request head past the limit (8 KiB) is refused before it ends.
    let mut stream = tcp(&address);
    let long = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n", "a".repeat(9000));
    let _ = stream.write_all(long.as_bytes());
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");

    // Over a unix socket (`--metrics-listen=/path`).
    let tmp = TempDir::new();
    let path = tmp.path("metrics.sock");
    let unix = UnixListener::bind(&path).unwrap();
    let _served_unix = Served::start(unix.into(), Limits::default(), Arc::clone(&reloads));
    let answer = exchange(
        UnixStream::connect(&path).unwrap(),
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with(&sample_metrics(6)));
}

#[test]
fn idle_connections_are_bounded_and_time_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let limits = Limits {
        connections: 2,
        timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let _served = Served::start(listener.into(), limits, Arc::new(AtomicU64::new(0)));
    // Two connections that never send a request take both places; they are closed at their
    // deadline, and the one waiting in the backlog is then served.
    let mut idle: Vec<TcpStream> = (0..2).map(|_| tcp(&address)).collect();
    let waiting = tcp(&address);
    let answer = exchange(waiting, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    for stream in &mut idle {
        let mut rest = Vec::new();
        // Closed by the endpoint without an answer.
        assert_eq!(stream.read_to_end(&mut rest).unwrap_or(0), 0);
    }
}

#[test]
fn prometheus_scrapes_the_endpoint_and_answers_queries() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let reloads = Arc::new(AtomicU64::new(0));
    let _served = Served::start(listener.into(), Limits::default(), Arc::clone(&reloads));

    let prometheus = Prometheus::scraping(&address);
    prometheus.wait_up();
    let up = prometheus.wait_for_value("up{job=\"server_starter\"}", "1");
    assert_eq!(up["instance"], address.as_str());
    prometheus.wait_for_value("server_starter_reloads_total{result=\"ok\"}", "0");
    // A reload: the counter Prometheus sees goes up.
    reloads.store(1, Ordering::SeqCst);
    let labels = prometheus.wait_for_value("server_starter_reloads_total{result=\"ok\"}", "1");
    assert_eq!(labels["job"], "server_starter");
    prometheus.wait_for_value("server_starter_generation", "4");
    prometheus.wait_for_value("server_starter_reload_duration_seconds_count", "3");
    prometheus.wait_for_value(
        "server_starter_reload_duration_seconds_bucket{le=\"0.01\"}",
        "2",
    );
    let escaped = prometheus.query("server_starter_worker_exits_total{reason=~\"(?s)signal.*\"}");
    assert_eq!(
        escaped[0]["metric"]["reason"], "signal \"KILL\"\nthen \\ more",
        "{escaped:?}"
    );
}
