//! Label-keyed counter and histogram families for the flow handlers: one hash lookup per
//! increment on a reused key, stale series expire after a TTL, a cap bounds the series count.

use std::collections::HashMap;
use std::fmt::Write as _;

use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelValue, LabelValueEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;

type Map<V> = HashMap<Box<str>, V, foldhash::fast::FixedState>;

/// Separates label values inside a series key (never part of a value: see [`KeyBuf::push`]).
const SEP: char = '\u{1}';

/// Whether the series of `key` (values of `labels`) names pod `ns/pod`: a `source` or
/// `destination` label of the pod context (`ns/pod`), or `labelsContext`'s
/// `source_pod`/`destination_pod` with the same side's namespace. What Cilium deletes when
/// the pod goes.
pub fn names_pod(labels: &[&str], key: &str, ns: &str, pod: &str) -> bool {
    let values: Vec<&str> = key.split(SEP).collect();
    let value = |name: &str| {
        labels
            .iter()
            .position(|l| *l == name)
            .and_then(|i| values.get(i).copied())
    };
    let full = format!("{ns}/{pod}");
    ["source", "destination"].iter().any(|side| {
        value(side) == Some(full.as_str())
            || (value(&format!("{side}_pod")) == Some(pod)
                && value(&format!("{side}_namespace")) == Some(ns))
    })
}

/// Builds the key of one series: label values in label-name order.
#[derive(Debug, Default)]
pub struct KeyBuf {
    buf: String,
    values: usize,
}

impl KeyBuf {
    pub fn clear(&mut self) {
        self.buf.clear();
        self.values = 0;
    }

    /// Appends one label value.
    pub fn push(&mut self, v: &str) {
        self.start();
        self.push_raw(v);
    }

    /// Starts a new label value, to be written piecewise with `push_raw` / `push_u64`.
    pub fn start(&mut self) {
        if self.values > 0 {
            self.buf.push(SEP);
        }
        self.values += 1;
    }

    /// Appends to the current label value.
    pub fn push_raw(&mut self, v: &str) {
        if v.contains(SEP) {
            self.buf
                .extend(v.chars().map(|c| if c == SEP { '?' } else { c }));
        } else {
            self.buf.push_str(v);
        }
    }

    /// Appends a number to the current label value.
    pub fn push_u64(&mut self, v: u64) {
        let mut b = itoa::Buffer::new();
        self.buf.push_str(b.format(v));
    }

    pub fn as_str(&self) -> &str {
        &self.buf
    }

    /// A mark to return to with [`KeyBuf::reset`].
    pub fn mark(&self) -> (usize, usize) {
        (self.buf.len(), self.values)
    }

    pub fn reset(&mut self, mark: (usize, usize)) {
        self.buf.truncate(mark.0);
        self.values = mark.1;
    }
}

/// Limits shared by every family of one registry.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Seconds without an update after which a series is removed (0: never).
    pub ttl_secs: u64,
    /// Most series one family holds; new label sets beyond it are counted and dropped.
    pub max_series: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            ttl_secs: 3600,
            max_series: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct CounterCell {
    value: u64,
    last_seen: u64,
}

/// A counter family (`CounterVec` in Go's client).
#[derive(Debug)]
pub struct CounterVec {
    /// Name without the `_total` suffix the encoder adds.
    pub name: &'static str,
    pub help: &'static str,
    pub labels: Vec<&'static str>,
    series: Map<CounterCell>,
    pub dropped: u64,
    pub expired: u64,
}

impl CounterVec {
    pub fn new(name: &'static str, help: &'static str, labels: Vec<&'static str>) -> Self {
        debug_assert!(name.ends_with("_total"));
        Self {
            name: name.strip_suffix("_total").unwrap_or(name),
            help,
            labels,
            series: Map::default(),
            dropped: 0,
            expired: 0,
        }
    }

    /// Adds `n` to the series of `key` (label values joined by [`KeyBuf`]).
    #[inline]
    pub fn inc_by(&mut self, key: &str, n: u64, now: u64, limits: &Limits) {
        if let Some(c) = self.series.get_mut(key) {
            c.value += n;
            c.last_seen = now;
            return;
        }
        if self.series.len() >= limits.max_series {
            self.dropped += 1;
            return;
        }
        self.series.insert(
            key.into(),
            CounterCell {
                value: n,
                last_seen: now,
            },
        );
    }

    #[inline]
    pub fn inc(&mut self, key: &str, now: u64, limits: &Limits) {
        self.inc_by(key, 1, now, limits)
    }

    /// The value of one series (tests).
    pub fn get(&self, key: &[&str]) -> Option<u64> {
        let k = key.join(&SEP.to_string());
        self.series.get(k.as_str()).map(|c| c.value)
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    pub fn expire(&mut self, now: u64, ttl: u64) {
        if ttl == 0 {
            return;
        }
        let before = self.series.len();
        self.series
            .retain(|_, c| now.saturating_sub(c.last_seen) < ttl);
        self.expired += (before - self.series.len()) as u64;
    }

    /// Removes the series naming pod `ns/pod` ([`names_pod`]).
    pub fn forget_pod(&mut self, ns: &str, pod: &str) {
        let labels = &self.labels;
        self.series.retain(|k, _| !names_pod(labels, k, ns, pod));
    }

    pub fn encode(&self, encoder: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        let mut m = encoder.encode_descriptor(self.name, self.help, None, MetricType::Counter)?;
        for (key, c) in sorted(&self.series) {
            let labels = label_set(&self.labels, key);
            m.encode_family(&labels)?
                .encode_counter::<NoLabelSet, u64, u64>(&c.value, None)?;
        }
        Ok(())
    }
}

/// Go client's `prometheus.DefBuckets`, which Hubble's HTTP duration histogram uses.
pub const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Clone)]
struct HistogramCell {
    /// Non-cumulative counts per bucket (the last is +Inf).
    counts: [u64; DEFAULT_BUCKETS.len() + 1],
    sum: f64,
    last_seen: u64,
}

/// A histogram family with [`DEFAULT_BUCKETS`].
#[derive(Debug)]
pub struct HistogramVec {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: Vec<&'static str>,
    series: Map<HistogramCell>,
    pub dropped: u64,
    pub expired: u64,
}

impl HistogramVec {
    pub fn new(name: &'static str, help: &'static str, labels: Vec<&'static str>) -> Self {
        Self {
            name,
            help,
            labels,
            series: Map::default(),
            dropped: 0,
            expired: 0,
        }
    }

    #[inline]
    pub fn observe(&mut self, key: &str, v: f64, now: u64, limits: &Limits) {
        let bucket = DEFAULT_BUCKETS
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(DEFAULT_BUCKETS.len());
        if let Some(c) = self.series.get_mut(key) {
            c.counts[bucket] += 1;
            c.sum += v;
            c.last_seen = now;
            return;
        }
        if self.series.len() >= limits.max_series {
            self.dropped += 1;
            return;
        }
        let mut counts = [0; DEFAULT_BUCKETS.len() + 1];
        counts[bucket] = 1;
        self.series.insert(
            key.into(),
            HistogramCell {
                counts,
                sum: v,
                last_seen: now,
            },
        );
    }

    /// (count, sum) of one series (tests).
    pub fn get(&self, key: &[&str]) -> Option<(u64, f64)> {
        let k = key.join(&SEP.to_string());
        self.series
            .get(k.as_str())
            .map(|c| (c.counts.iter().sum(), c.sum))
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    pub fn expire(&mut self, now: u64, ttl: u64) {
        if ttl == 0 {
            return;
        }
        let before = self.series.len();
        self.series
            .retain(|_, c| now.saturating_sub(c.last_seen) < ttl);
        self.expired += (before - self.series.len()) as u64;
    }

    /// Removes the series naming pod `ns/pod` ([`names_pod`]).
    pub fn forget_pod(&mut self, ns: &str, pod: &str) {
        let labels = &self.labels;
        self.series.retain(|k, _| !names_pod(labels, k, ns, pod));
    }

    pub fn encode(&self, encoder: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        let mut m = encoder.encode_descriptor(self.name, self.help, None, MetricType::Histogram)?;
        let mut buckets = Vec::with_capacity(DEFAULT_BUCKETS.len() + 1);
        for (key, c) in sorted(&self.series) {
            let labels = label_set(&self.labels, key);
            // prometheus-client takes per-bucket counts, writes them cumulated and f64::MAX as +Inf.
            buckets.clear();
            for (i, n) in c.counts.iter().enumerate() {
                let le = DEFAULT_BUCKETS.get(i).copied().unwrap_or(f64::MAX);
                buckets.push((le, *n));
            }
            let count = c.counts.iter().sum();
            m.encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(c.sum, count, &buckets, None)?;
        }
        Ok(())
    }
}

/// Series in key order: scrapes are stable and diffable.
fn sorted<V>(m: &Map<V>) -> Vec<(&str, &V)> {
    let mut v: Vec<(&str, &V)> = m.iter().map(|(k, v)| (&**k, v)).collect();
    v.sort_unstable_by(|a, b| a.0.cmp(b.0));
    v
}

fn label_set<'a>(names: &[&'static str], key: &'a str) -> Vec<(&'static str, Escaped<'a>)> {
    if names.is_empty() {
        return Vec::new();
    }
    names
        .iter()
        .copied()
        .zip(key.split(SEP).map(Escaped))
        .collect()
}

/// A label value escaped as the text format requires (`\\`, `\"`, `\n`): prometheus-client
/// writes values verbatim, and values here come from the network (DNS names, HTTP methods).
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        let s = self.0;
        if !s.contains(['\\', '"', '\n']) {
            return encoder.write_str(s);
        }
        for c in s.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_series_expire_and_cap() {
        let limits = Limits {
            ttl_secs: 10,
            max_series: 2,
        };
        let mut c = CounterVec::new("x_total", "h", vec!["a", "b"]);
        let mut k = KeyBuf::default();
        k.push("1");
        k.push("2");
        c.inc(k.as_str(), 100, &limits);
        c.inc(k.as_str(), 105, &limits);
        k.clear();
        k.push("");
        k.push("3");
        c.inc(k.as_str(), 101, &limits);
        k.clear();
        k.push("over");
        k.push("cap");
        c.inc(k.as_str(), 101, &limits);
        assert_eq!(c.get(&["1", "2"]), Some(2));
        assert_eq!(c.get(&["", "3"]), Some(1));
        assert_eq!(c.get(&["over", "cap"]), None);
        assert_eq!(c.dropped, 1);
        c.expire(112, limits.ttl_secs);
        assert_eq!(c.get(&["1", "2"]), Some(2));
        assert_eq!(c.get(&["", "3"]), None);
        assert_eq!(c.expired, 1);
        c.expire(200, 0);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn separator_in_a_value_cannot_forge_a_label() {
        let mut k = KeyBuf::default();
        k.push("a\u{1}b");
        k.push("c");
        assert_eq!(k.as_str().split(SEP).count(), 2);
    }

    #[test]
    fn histogram_buckets_are_cumulative_in_text() {
        let limits = Limits::default();
        let mut h = HistogramVec::new("d_seconds", "help", vec!["m"]);
        h.observe("GET", 0.003, 1, &limits);
        h.observe("GET", 0.2, 1, &limits);
        h.observe("GET", 30.0, 1, &limits);
        let mut reg = prometheus_client::registry::Registry::default();
        reg.register_collector(Box::new(Hist(std::sync::Mutex::new(h))));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(
            out.contains("d_seconds_bucket{le=\"0.005\",m=\"GET\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("d_seconds_bucket{le=\"0.1\",m=\"GET\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("d_seconds_bucket{le=\"0.25\",m=\"GET\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("d_seconds_bucket{le=\"10.0\",m=\"GET\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("d_seconds_bucket{le=\"+Inf\",m=\"GET\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("d_seconds_count{m=\"GET\"} 3\n"), "{out}");
    }

    #[derive(Debug)]
    struct Hist(std::sync::Mutex<HistogramVec>);
    impl prometheus_client::collector::Collector for Hist {
        fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
            self.0.lock().unwrap().encode(&mut e)
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let limits = Limits::default();
        let mut c = CounterVec::new("e_total", "h", vec!["q"]);
        c.inc("a\"b\\c\nd", 1, &limits);
        let mut reg = prometheus_client::registry::Registry::default();
        reg.register_collector(Box::new(Ctr(std::sync::Mutex::new(c))));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(out.contains(r#"e_total{q="a\"b\\c\nd"} 1"#), "{out}");
    }

    #[derive(Debug)]
    struct Ctr(std::sync::Mutex<CounterVec>);
    impl prometheus_client::collector::Collector for Ctr {
        fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
            self.0.lock().unwrap().encode(&mut e)
        }
    }
}
