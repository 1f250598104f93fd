//! The Prometheus text exposition format, version 0.0.4: per metric family a `# HELP` and a
//! `# TYPE` line, then its samples, `name{label="value",...} value`. Counters are named
//! `..._total`; a histogram's samples are `_bucket{le="..."}` (cumulative, ending with
//! `le="+Inf"`), `_sum` and `_count`.
//!
//! Names are the program's own constants: a name that breaks the format's rules is a bug, caught
//! by a debug assertion. Label values and help texts come from anywhere and are escaped.

use std::fmt::Write;

pub use crate::vocab::histogram::Histogram;

/// The `Content-Type` of this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (resets when the process restarts); the name ends with `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations counted into buckets.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Label names and values of one sample.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

/// Writes metric families one after the other.
#[derive(Debug, Default)]
pub struct Writer {
    text: String,
}

impl Writer {
    /// Nothing written yet.
    pub fn new() -> Writer {
        Writer::default()
    }

    /// A family's `# HELP` and `# TYPE` lines: call once per family, before its samples.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        debug_assert!(valid_metric_name(name), "bad metric name {name:?}");
        debug_assert!(
            kind != Kind::Counter || name.ends_with("_total"),
            "counter {name:?} without _total"
        );
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.as_str());
    }

    /// One sample.
    pub fn sample(&mut self, name: &str, labels: Labels<'_>, value: f64) {
        self.text.push_str(name);
        self.labels(labels, None);
        self.text.push(' ');
        self.text.push_str(&format_value(value));
        self.text.push('\n');
    }

    /// A family with samples, for counters and gauges.
    pub fn metric(&mut self, name: &str, kind: Kind, help: &str, samples: &[(Labels<'_>, f64)]) {
        self.family(name, kind, help);
        for (labels, value) in samples {
            self.sample(name, labels, *value);
        }
    }

    /// A histogram family with one histogram per label set.
    pub fn histogram(&mut self, name: &str, help: &str, histograms: &[(Labels<'_>, &Histogram)]) {
        self.family(name, Kind::Histogram, help);
        for (labels, histogram) in histograms {
            let bucket = format!("{name}_bucket");
            for (bound, cumulative) in histogram.cumulative() {
                self.text.push_str(&bucket);
                self.labels(labels, Some(&format_value(bound)));
                let _ = writeln!(self.text, " {cumulative}");
            }
            self.text.push_str(&bucket);
            self.labels(labels, Some("+Inf"));
            let _ = writeln!(self.text, " {}", histogram.count());
            self.sample(&format!("{name}_sum"), labels, histogram.sum());
            self.sample(&format!("{name}_count"), labels, histogram.count() as f64);
        }
    }

    fn labels(&mut self, labels: Labels<'_>, le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.text.push('{');
        let mut first = true;
        for (name, value) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
            debug_assert!(valid_label_name(name), "bad label name {name:?}");
            if !first {
                self.text.push(',');
            }
            first = false;
            let _ = write!(self.text, "{name}=\"{}\"", escape_label_value(value));
        }
        self.text.push('}');
    }

    /// The text.
    pub fn finish(self) -> String {
        self.text
    }
}

/// A sample value: integers without a fraction, `NaN`, `+Inf`, `-Inf`.
pub fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        // Rust prints the shortest text that reads back as the same f64, never an exponent.
        format!("{value}")
    }
}

/// `\` → `\\`, `"` → `\"`, newline → `\n`.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// `\` → `\\`, newline → `\n` (a help text may hold quotes).
pub fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__` (reserved).
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    !name.starts_with("__")
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(
            escape_label_value("a\\b\"c\nd"),
            "a\\\\b\\\"c\\nd".to_string()
        );
        assert_eq!(escape_help("say \"hi\"\\\nbye"), "say \"hi\"\\\\\\nbye");
        let mut w = Writer::new();
        w.metric(
            "x_info",
            Kind::Gauge,
            "Build \"info\".",
            &[(&[("version", "1.0\"\n\\")], 1.0)],
        );
        assert_eq!(
            w.finish(),
            "# HELP x_info Build \"info\".\n# TYPE x_info gauge\nx_info{version=\"1.0\\\"\\n\\\\\"} 1\n"
        );
    }

    #[test]
    fn values() {
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(-0.5), "-0.5");
        assert_eq!(format_value(1e21), "1000000000000000000000");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf() {
        let mut h = Histogram::new(&[0.1, 0.01, 1.0, f64::NAN, 1.0]);
        for v in [0.005, 0.05, 0.05, 0.5, 7.0] {
            h.observe(v);
        }
        let mut w = Writer::new();
        w.histogram("x_duration_seconds", "How long.", &[(&[("kind", "a")], &h)]);
        assert_eq!(
            w.finish(),
            "# HELP x_duration_seconds How long.\n\
             # TYPE x_duration_seconds histogram\n\
             x_duration_seconds_bucket{kind=\"a\",le=\"0.01\"} 1\n\
             x_duration_seconds_bucket{kind=\"a\",le=\"0.1\"} 3\n\
             x_duration_seconds_bucket{kind=\"a\",le=\"1\"} 4\n\
             x_duration_seconds_bucket{kind=\"a\",le=\"+Inf\"} 5\n\
             x_duration_seconds_sum{kind=\"a\"} 7.605\n\
             x_duration_seconds_count{kind=\"a\"} 5\n"
        );
        let round_trip: Histogram =
            serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
        assert_eq!(round_trip, h);
    }

    #[test]
    fn names() {
        assert!(valid_metric_name("server_starter_reloads_total"));
        assert!(valid_metric_name("a:b_c9"));
        assert!(!valid_metric_name("9a"));
        assert!(!valid_metric_name("a-b"));
        assert!(!valid_metric_name(""));
        assert!(valid_label_name("le"));
        assert!(!valid_label_name("__name"));
        assert!(!valid_label_name("a:b"));
    }
}
