//! Label-keyed counter and histogram families for the flow handlers: one hash lookup per
//! increment on a reused key, stale series expire after a TTL, a cap bounds the series count;
//! and their OpenMetrics text, exemplars included.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

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

/// Name of the exemplar label, as Cilium's HTTP handler sets it.
pub const EXEMPLAR_LABEL: &str = "traceID";
/// Most characters of an exemplar's label names and values together (OpenMetrics).
const EXEMPLAR_MAX_CHARS: usize = 128;

/// The latest exemplar of a counter series or of one histogram bucket, as Go's client keeps
/// it: a trace ID, the value counted or observed, and when.
#[derive(Debug, Clone)]
struct Exemplar {
    trace_id: String,
    value: f64,
    /// Seconds since the Unix epoch.
    at: f64,
}

impl Exemplar {
    /// Makes `slot` hold `trace_id` and `value` (reusing its allocation); a trace ID too long
    /// for OpenMetrics leaves it as it was.
    fn record(slot: &mut Option<Box<Exemplar>>, trace_id: &str, value: f64) {
        if EXEMPLAR_LABEL.len() + trace_id.chars().count() > EXEMPLAR_MAX_CHARS {
            return;
        }
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        match slot {
            Some(e) => {
                e.trace_id.clear();
                e.trace_id.push_str(trace_id);
                e.value = value;
                e.at = at;
            }
            None => {
                *slot = Some(Box::new(Exemplar {
                    trace_id: trace_id.to_string(),
                    value,
                    at,
                }))
            }
        }
    }

    /// ` # {traceID="…"} value timestamp`, after a sample's value.
    fn write(&self, out: &mut String) {
        out.push_str(" # {");
        out.push_str(EXEMPLAR_LABEL);
        out.push_str("=\"");
        escape_into(out, &self.trace_id);
        let _ = write!(out, "\"}} {:?} {:.3}", self.value, self.at);
    }
}

#[derive(Debug)]
struct CounterCell {
    value: u64,
    last_seen: u64,
    exemplar: Option<Box<Exemplar>>,
}

/// A counter family (`CounterVec` in Go's client).
#[derive(Debug)]
pub struct CounterVec {
    /// Name without the `_total` suffix of its samples (the OpenMetrics family name).
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
        self.add(key, n, now, limits, None)
    }

    #[inline]
    pub fn inc(&mut self, key: &str, now: u64, limits: &Limits) {
        self.add(key, 1, now, limits, None)
    }

    /// Adds one to the series of `key` and makes `trace_id` its exemplar.
    pub fn inc_with_exemplar(&mut self, key: &str, now: u64, limits: &Limits, trace_id: &str) {
        self.add(key, 1, now, limits, Some(trace_id))
    }

    #[inline]
    fn add(&mut self, key: &str, n: u64, now: u64, limits: &Limits, trace_id: Option<&str>) {
        if let Some(c) = self.series.get_mut(key) {
            c.value += n;
            c.last_seen = now;
            if let Some(t) = trace_id {
                Exemplar::record(&mut c.exemplar, t, n as f64);
            }
            return;
        }
        if self.series.len() >= limits.max_series {
            self.dropped += 1;
            return;
        }
        let mut cell = CounterCell {
            value: n,
            last_seen: now,
            exemplar: None,
        };
        if let Some(t) = trace_id {
            Exemplar::record(&mut cell.exemplar, t, n as f64);
        }
        self.series.insert(key.into(), cell);
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

    /// The family in OpenMetrics text: `name_total{labels} value [exemplar]` per series.
    pub fn write(&self, out: &mut String) {
        write_header(out, self.name, self.help, "counter");
        for (key, c) in sorted(&self.series) {
            out.push_str(self.name);
            out.push_str("_total");
            write_labels(out, &self.labels, key, None);
            out.push(' ');
            out.push_str(itoa::Buffer::new().format(c.value));
            if let Some(e) = &c.exemplar {
                e.write(out);
            }
            out.push('\n');
        }
    }
}

/// Go client's `prometheus.DefBuckets`, which Hubble's HTTP duration histogram uses.
pub const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets of a series: [`DEFAULT_BUCKETS`] and +Inf.
const BUCKETS: usize = DEFAULT_BUCKETS.len() + 1;

#[derive(Debug, Clone)]
struct HistogramCell {
    /// Non-cumulative counts per bucket (the last is +Inf).
    counts: [u64; BUCKETS],
    sum: f64,
    last_seen: u64,
    /// The latest exemplar of each bucket, once one was recorded.
    exemplars: Option<Box<[Option<Box<Exemplar>>; BUCKETS]>>,
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
        self.add(key, v, now, limits, None)
    }

    /// Observes `v` and makes `trace_id` the exemplar of the bucket `v` falls in.
    pub fn observe_with_exemplar(
        &mut self,
        key: &str,
        v: f64,
        now: u64,
        limits: &Limits,
        trace_id: &str,
    ) {
        self.add(key, v, now, limits, Some(trace_id))
    }

    #[inline]
    fn add(&mut self, key: &str, v: f64, now: u64, limits: &Limits, trace_id: Option<&str>) {
        let bucket = DEFAULT_BUCKETS
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(DEFAULT_BUCKETS.len());
        let record = |c: &mut HistogramCell| {
            if let Some(t) = trace_id {
                let slots = c.exemplars.get_or_insert_with(Default::default);
                Exemplar::record(&mut slots[bucket], t, v);
            }
        };
        if let Some(c) = self.series.get_mut(key) {
            c.counts[bucket] += 1;
            c.sum += v;
            c.last_seen = now;
            record(c);
            return;
        }
        if self.series.len() >= limits.max_series {
            self.dropped += 1;
            return;
        }
        let mut counts = [0; BUCKETS];
        counts[bucket] = 1;
        let mut cell = HistogramCell {
            counts,
            sum: v,
            last_seen: now,
            exemplars: None,
        };
        record(&mut cell);
        self.series.insert(key.into(), cell);
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

    /// The family in OpenMetrics text: cumulative `_bucket` samples (`le` last, each with its
    /// bucket's exemplar), then `_sum` and `_count`, per series.
    pub fn write(&self, out: &mut String) {
        write_header(out, self.name, self.help, "histogram");
        for (key, c) in sorted(&self.series) {
            let mut cumulative = 0;
            for (i, n) in c.counts.iter().enumerate() {
                cumulative += n;
                let le = match DEFAULT_BUCKETS.get(i) {
                    Some(b) => format!("{b:?}"),
                    None => "+Inf".to_string(),
                };
                out.push_str(self.name);
                out.push_str("_bucket");
                write_labels(out, &self.labels, key, Some(("le", &le)));
                out.push(' ');
                out.push_str(itoa::Buffer::new().format(cumulative));
                if let Some(e) = c.exemplars.as_ref().and_then(|x| x[i].as_ref()) {
                    e.write(out);
                }
                out.push('\n');
            }
            out.push_str(self.name);
            out.push_str("_sum");
            write_labels(out, &self.labels, key, None);
            let _ = writeln!(out, " {:?}", c.sum);
            out.push_str(self.name);
            out.push_str("_count");
            write_labels(out, &self.labels, key, None);
            out.push(' ');
            out.push_str(itoa::Buffer::new().format(cumulative));
            out.push('\n');
        }
    }
}

/// Series in key order: scrapes are stable and diffable.
fn sorted<V>(m: &Map<V>) -> Vec<(&str, &V)> {
    let mut v: Vec<(&str, &V)> = m.iter().map(|(k, v)| (&**k, v)).collect();
    v.sort_unstable_by(|a, b| a.0.cmp(b.0));
    v
}

/// `# HELP` and `# TYPE` of a family.
pub fn write_header(out: &mut String, name: &str, help: &str, kind: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    escape_into(out, help);
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind);
    out.push('\n');
}

/// `{name="value",…}` from the label names and a series key, then `extra` (a histogram's
/// `le`); nothing when there are no labels.
fn write_labels(out: &mut String, names: &[&str], key: &str, extra: Option<(&str, &str)>) {
    if names.is_empty() && extra.is_none() {
        return;
    }
    out.push('{');
    let values = key.split(SEP);
    let pairs = names.iter().copied().zip(values).chain(extra);
    for (i, (n, v)) in pairs.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(n);
        out.push_str("=\"");
        escape_into(out, v);
        out.push('"');
    }
    out.push('}');
}

/// Appends `s` escaped as the text formats require (`\\`, `\"`, `\n`): values come from the
/// network (DNS names, HTTP methods, trace IDs).
pub fn escape_into(out: &mut String, s: &str) {
    if !s.contains(['\\', '"', '\n']) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
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
    fn histogram_text_is_cumulative_with_le_last() {
        let limits = Limits::default();
        let mut h = HistogramVec::new("d_seconds", "help", vec!["m"]);
        h.observe("GET", 0.003, 1, &limits);
        h.observe("GET", 0.2, 1, &limits);
        h.observe("GET", 30.0, 1, &limits);
        let mut out = String::new();
        h.write(&mut out);
        let want = "\
# HELP d_seconds help
# TYPE d_seconds histogram
d_seconds_bucket{m=\"GET\",le=\"0.005\"} 1
d_seconds_bucket{m=\"GET\",le=\"0.01\"} 1
d_seconds_bucket{m=\"GET\",le=\"0.025\"} 1
d_seconds_bucket{m=\"GET\",le=\"0.05\"} 1
d_seconds_bucket{m=\"GET\",le=\"0.1\"} 1
d_seconds_bucket{m=\"GET\",le=\"0.25\"} 2
d_seconds_bucket{m=\"GET\",le=\"0.5\"} 2
d_seconds_bucket{m=\"GET\",le=\"1.0\"} 2
d_seconds_bucket{m=\"GET\",le=\"2.5\"} 2
d_seconds_bucket{m=\"GET\",le=\"5.0\"} 2
d_seconds_bucket{m=\"GET\",le=\"10.0\"} 2
d_seconds_bucket{m=\"GET\",le=\"+Inf\"} 3
d_seconds_sum{m=\"GET\"} 30.203
d_seconds_count{m=\"GET\"} 3
";
        assert_eq!(out, want);
    }

    #[test]
    fn exemplars_follow_their_sample() {
        let limits = Limits::default();
        let mut c = CounterVec::new("r_total", "h", vec![]);
        c.inc("", 1, &limits);
        let mut out = String::new();
        c.write(&mut out);
        assert!(out.ends_with("\nr_total 1\n"), "{out}");
        c.inc_with_exemplar("", 1, &limits, "4bf92f3577b34da6a3ce929d0e0e4736");
        c.inc_with_exemplar("", 1, &limits, "0af7651916cd43dd8448eb211c80319c");
        out.clear();
        c.write(&mut out);
        let line = out.lines().last().unwrap();
        let (sample, ts) = line.rsplit_once(' ').unwrap();
        assert_eq!(
            sample,
            "r_total 3 # {traceID=\"0af7651916cd43dd8448eb211c80319c\"} 1.0"
        );
        let ts: f64 = ts.parse().unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!((now - ts).abs() < 60.0, "{ts} vs {now}");
        // Each histogram bucket keeps its own latest exemplar; a trace ID longer than
        // OpenMetrics allows is not recorded.
        let mut h = HistogramVec::new("d_seconds", "help", vec![]);
        h.observe_with_exemplar("", 0.003, 1, &limits, "aaaa");
        h.observe_with_exemplar("", 0.2, 1, &limits, "bbbb");
        h.observe_with_exemplar("", 0.21, 1, &limits, &"c".repeat(200));
        h.observe("", 0.004, 1, &limits);
        out.clear();
        h.write(&mut out);
        let with: Vec<&str> = out.lines().filter(|l| l.contains(" # {")).collect();
        assert_eq!(with.len(), 2, "{out}");
        assert!(
            with[0].starts_with("d_seconds_bucket{le=\"0.005\"} 2 # {traceID=\"aaaa\"} 0.003 "),
            "{out}"
        );
        assert!(
            with[1].starts_with("d_seconds_bucket{le=\"0.25\"} 4 # {traceID=\"bbbb\"} 0.2 "),
            "{out}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let limits = Limits::default();
        let mut c = CounterVec::new("e_total", "h", vec!["q"]);
        c.inc("a\"b\\c\nd", 1, &limits);
        c.inc_with_exemplar("x", 1, &limits, "t\"");
        let mut out = String::new();
        c.write(&mut out);
        assert!(out.contains(r#"e_total{q="a\"b\\c\nd"} 1"#), "{out}");
        assert!(
            out.contains(r#"e_total{q="x"} 1 # {traceID="t\""} 1.0 "#),
            "{out}"
        );
    }
}
