//! The Prometheus text exposition format (version 0.0.4), written by hand.
//!
//! Why not a metrics crate: `prometheus-client` keeps labeled series in a
//! `Family` behind a lock and looks each one up by its label set when counted. The
//! gateway counts with atomics resolved when a snapshot is built, so all it needs
//! from a crate is this writer; it is small, and its output is checked by
//! `promtool check metrics` in the test suite (BENCHMARKS.md, "Request metrics").

use std::fmt::Write as _;

use super::metrics::HistogramReading;

/// A `/metrics` page being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// An empty page.
    pub fn new() -> Self {
        Self { out: String::with_capacity(8 * 1024) }
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines. Every sample of the family
    /// must follow before the next one starts.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.out, " {}", Value(value));
    }

    /// The `_bucket`, `_sum` and `_count` samples of one histogram series.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramReading) {
        for (le, n) in &h.buckets {
            let _ = write!(self.out, "{name}_bucket");
            self.labels(labels, Some(&Value(*le).to_string()));
            let _ = writeln!(self.out, " {n}");
        }
        let _ = write!(self.out, "{name}_bucket");
        self.labels(labels, Some("+Inf"));
        let _ = writeln!(self.out, " {}", h.count);
        let _ = write!(self.out, "{name}_sum");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {}", Value(h.sum));
        let _ = write!(self.out, "{name}_count");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {}", h.count);
    }

    /// The page.
    pub fn finish(self) -> String {
        self.out
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let mut first = true;
        for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
            if !first {
                self.out.push(',');
            }
            first = false;
            let _ = write!(self.out, "{k}=\"");
            for c in v.chars() {
                match c {
                    '\\' => self.out.push_str("\\\\"),
                    '"' => self.out.push_str("\\\""),
                    '\n' => self.out.push_str("\\n"),
                    c => self.out.push(c),
                }
            }
            self.out.push('"');
        }
        self.out.push('}');
    }
}

/// A sample value as Prometheus writes it: integers without a fraction, `+Inf`,
/// `-Inf` and `NaN` by name.
struct Value(f64);

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            v if v.is_nan() => f.write_str("NaN"),
            v if v == f64::INFINITY => f.write_str("+Inf"),
            v if v == f64::NEG_INFINITY => f.write_str("-Inf"),
            v => write!(f, "{v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_histograms_end_with_inf_sum_and_count() {
        let mut e = Exposition::new();
        e.family("x_total", "counter", "An x.\nTwo lines.");
        e.sample("x_total", &[("a", "q\"uo\\te\n")], 3.0);
        e.family("d_seconds", "histogram", "A d.");
        let h = HistogramReading { buckets: vec![(0.001, 1), (0.01, 2)], sum: 0.0125, count: 3 };
        e.histogram("d_seconds", &[("r", "x")], &h);
        assert_eq!(
            e.finish(),
            "# HELP x_total An x.\\nTwo lines.\n# TYPE x_total counter\n\
             x_total{a=\"q\\\"uo\\\\te\\n\"} 3\n\
             # HELP d_seconds A d.\n# TYPE d_seconds histogram\n\
             d_seconds_bucket{r=\"x\",le=\"0.001\"} 1\n\
             d_seconds_bucket{r=\"x\",le=\"0.01\"} 2\n\
             d_seconds_bucket{r=\"x\",le=\"+Inf\"} 3\n\
             d_seconds_sum{r=\"x\"} 0.0125\n\
             d_seconds_count{r=\"x\"} 3\n"
        );
    }
}
