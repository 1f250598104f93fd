//! A real Prometheus server (Debian's `prometheus` package) scraping a target the test names,
//! and asking it through its HTTP API: whether the target is up, what a query answers.
//! It listens on a free loopback port and keeps its data in a temporary directory; it is killed
//! when dropped. Prometheus discovers a static target within about 5 s, then scrapes it every
//! second.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{TempDir, free_port, wait_until};

pub struct Prometheus {
    child: Child,
    /// `127.0.0.1:PORT` of its HTTP API.
    pub address: String,
    dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`HOST:PORT`, path `/metrics`) every second as job
    /// `server_starter`; returns once its API is ready.
    pub fn scraping(target: &str) -> Prometheus {
        let dir = TempDir::new();
        let config = dir.path("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  \
                 - job_name: server_starter\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let address = format!("127.0.0.1:{}", free_port());
        let log = fs::File::create(dir.path("prometheus.log")).expect("create the log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run prometheus ({e}): apt-get install prometheus"));
        let prometheus = Prometheus {
            child,
            address,
            dir,
        };
        wait_until("Prometheus to be ready", || {
            prometheus
                .get("/-/ready")
                .ok()
                .filter(|(status, _)| *status == 200)
        });
        prometheus
    }

    /// Waits until Prometheus has scraped the target successfully (health `up`).
    pub fn wait_up(&self) {
        let mut last = Value::Null;
        let found = super::wait_until_or(Duration::from_secs(60), || {
            let targets = self.api("/api/v1/targets").ok()?;
            let up = targets["data"]["activeTargets"]
                .as_array()?
                .iter()
                .any(|t| t["health"] == "up");
            last = targets;
            up.then_some(())
        });
        if found.is_none() {
            panic!(
                "Prometheus never scraped the target: {last}\nits log ends:\n{}",
                self.log_tail()
            );
        }
    }

    /// The result of an instant query (`data.result`, a vector of samples).
    pub fn query(&self, expression: &str) -> Vec<Value> {
        let path = format!("/api/v1/query?query={}", url_encode(expression));
        let answer = self
            .api(&path)
            .unwrap_or_else(|e| panic!("query {expression}: {e}"));
        assert_eq!(answer["status"], "success", "{answer}");
        answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `expression` answers a sample whose value is `value`; returns its labels.
    pub fn wait_for_value(&self, expression: &str, value: &str) -> Value {
        let mut last = Vec::new();
        let found = super::wait_until_or(Duration::from_secs(60), || {
            last = self.query(expression);
            last.iter()
                .find(|s| s["value"][1] == value)
                .map(|s| s["metric"].clone())
        });
        found.unwrap_or_else(|| panic!("{expression} never answered {value}: {last:?}"))
    }

    fn api(&self, path: &str) -> std::io::Result<Value> {
        let (status, body) = self.get(path)?;
        if status != 200 {
            return Err(std::io::Error::other(format!("HTTP {status}: {body}")));
        }
        serde_json::from_str(&body).map_err(std::io::Error::other)
    }

    /// One HTTP/1.0 GET to the API: status and body.
    fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect(&self.address)?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.address
        )?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = answer
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.path("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
