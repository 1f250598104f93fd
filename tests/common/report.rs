//! The report worker's side: where it writes what it was given, and reading that back.

use std::fs;
use std::path::PathBuf;

use super::{REPORT_WORKER, Server, TempDir, wait_until};

impl TempDir {
    /// Writes the report worker ([`REPORT_WORKER`]); it writes to `$REPORT`, which tests set to
    /// this directory's `report`.
    pub fn report_worker(&self) -> PathBuf {
        self.script("report.py", REPORT_WORKER)
    }

    /// The report worker's report, once written.
    pub fn wait_report(&self) -> String {
        wait_until("the worker's report", || {
            fs::read_to_string(self.path("report")).ok()
        })
    }
}

/// Starts start_server with the report worker and returns the parsed report once written.
pub fn report(tmp: &TempDir, options: &[String]) -> (Server, Report) {
    let worker = tmp.report_worker();
    let mut a: Vec<String> = options.to_vec();
    a.push("--".into());
    a.push(worker.display().to_string());
    let server = Server::start(&a, &[("REPORT", tmp.path("report").display().to_string())]);
    let text = tmp.wait_report();
    (server, Report::parse(&text))
}

/// The value of environment variable `name` in a raw report.
pub fn env_value(report: &str, name: &str) -> Option<String> {
    let needle = format!("\"{name}\": \"");
    let at = report.find(&needle)? + needle.len();
    Some(report[at..at + report[at..].find('"')?].to_string())
}

/// Just enough JSON reading for the report worker's output (no extra test dependency).
pub struct Report {
    pub text: String,
}

impl Report {
    pub fn parse(text: &str) -> Report {
        Report {
            text: text.to_string(),
        }
    }

    /// The value of `"key": "value"` (first occurrence after `after`).
    pub fn string(&self, after: &str, key: &str) -> Option<String> {
        let start = self.text.find(after)?;
        let rest = &self.text[start..];
        let needle = format!("\"{key}\": \"");
        let at = rest.find(&needle)? + needle.len();
        let end = rest[at..].find('"')?;
        Some(rest[at..at + end].replace("\\/", "/"))
    }

    pub fn env(&self, name: &str) -> Option<String> {
        self.string("\"env\"", name)
    }

    /// `"family"`/`"type"` of the socket with this key.
    pub fn socket(&self, key: &str, field: &str) -> Option<String> {
        self.string(&format!("\"{key}\": {{"), field)
    }

    pub fn pid(&self) -> i32 {
        let at = self.text.rfind("\"pid\": ").expect("pid") + 7;
        self.text[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|p| p.parse().ok())
            .expect("pid number")
    }
}
