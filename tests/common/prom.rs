//! Reading `/metrics` as a scraper would: strict line-by-line checks of the Prometheus text format (every sample
//! of a declared family, no family declared twice, label syntax, float values), then `prometheus-parse` for values.

use prometheus_parse::{Scrape, Value};
use regex::Regex;
use std::collections::BTreeSet;

/// Parses the text format strictly; panics naming the first bad line.
pub fn parse(text: &str) -> Scrape {
    let sample = Regex::new(
        r#"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*\})? (-?[0-9.eE+-]+|[+-]Inf|NaN)$"#,
    )
    .unwrap();
    let kind = Regex::new(r"^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$").unwrap();
    let help = Regex::new(r"^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .*$").unwrap();
    let mut typed: BTreeSet<String> = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let at = || format!("/metrics line {}: `{line}`", i + 1);
        if line.is_empty() || help.is_match(line) {
            continue;
        }
        if let Some(c) = kind.captures(line) {
            assert!(typed.insert(c[1].to_string()), "{}: family declared twice", at());
            continue;
        }
        let c = sample.captures(line).unwrap_or_else(|| panic!("{}: not a sample, HELP or TYPE line", at()));
        let name = &c[1];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(typed.contains(family), "{}: sample of a family without a TYPE line", at());
        let value = &c[3];
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "{}: value is not a float",
            at()
        );
    }
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("prometheus-parse")
}

fn labels_match(s: &prometheus_parse::Sample, labels: &[(&str, &str)]) -> bool {
    labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
}

/// A counter's or gauge's value (or a histogram's `_count`/`_sum`), by name and the labels given.
pub fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape.samples.iter().filter(|s| s.metric == name && labels_match(s, labels)).find_map(|s| match s.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
        _ => None,
    })
}

/// How many observations a histogram holds (its `+Inf` bucket), by name and the labels given.
pub fn histogram_count(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape.samples.iter().filter(|s| s.metric == name && labels_match(s, labels)).find_map(|s| match &s.value {
        Value::Histogram(buckets) => buckets.iter().find(|b| b.less_than.is_infinite()).map(|b| b.count),
        _ => None,
    })
}

/// Whether the scrape declares a family (its HELP line).
pub fn documented(scrape: &Scrape, name: &str) -> bool {
    scrape.docs.contains_key(name)
}
