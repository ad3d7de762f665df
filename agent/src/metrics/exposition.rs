//! The two text expositions a scraper may get: OpenMetrics, which `prometheus_client`
//! writes, and the Prometheus text format 0.0.4 derived from it, which Cilium serves unless
//! `--enable-hubble-open-metrics` is on and the scraper's Accept header asks for OpenMetrics
//! (Go's promhttp negotiation).
//!
//! What differs between them for our metrics: a counter's family is named without `_total`
//! in OpenMetrics and with it in the Prometheus format (HELP and TYPE name the samples);
//! OpenMetrics has `# UNIT`, `_created` samples, exemplars, the `info` type (a gauge named
//! `…_info` in the Prometheus format), escapes `"` in HELP, and ends with `# EOF`.

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    PrometheusText,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS,
            Format::PrometheusText => PROMETHEUS_TEXT,
        }
    }
}

/// The format a scraper gets: OpenMetrics when it is enabled and the Accept header names
/// `application/openmetrics-text` with a quality above that of every text/plain or
/// wildcard entry; the Prometheus text format otherwise.
pub fn negotiate(accept: Option<&str>, open_metrics: bool) -> Format {
    let Some(accept) = accept.filter(|_| open_metrics) else {
        return Format::PrometheusText;
    };
    let (mut om, mut other) = (0.0f32, 0.0f32);
    for item in accept.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.strip_prefix("q="))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        if media == "application/openmetrics-text" {
            om = om.max(q);
        } else {
            other = other.max(q);
        }
    }
    if om > 0.0 && om >= other {
        Format::OpenMetrics
    } else {
        Format::PrometheusText
    }
}

/// One family's header as OpenMetrics gave it.
#[derive(Default)]
struct Family {
    name: String,
    kind: String,
    help: Option<String>,
}

impl Family {
    /// The family name in the Prometheus format.
    fn prom_name(&self) -> String {
        match self.kind.as_str() {
            "counter" => format!("{}_total", self.name),
            "info" => format!("{}_info", self.name),
            _ => self.name.clone(),
        }
    }

    fn prom_type(&self) -> &str {
        match self.kind.as_str() {
            "counter" | "gauge" | "histogram" | "summary" => &self.kind,
            "info" | "stateset" => "gauge",
            _ => "untyped",
        }
    }

    /// Whether sample `name` is an OpenMetrics-only `_created` series of this family.
    fn is_created(&self, name: &str) -> bool {
        matches!(self.kind.as_str(), "counter" | "histogram" | "summary")
            && name.strip_suffix("_created") == Some(self.name.as_str())
    }
}

/// The Prometheus text format of an OpenMetrics exposition.
pub fn to_prometheus_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut fam = Family::default();
    let mut header_done = true;
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut w = rest.splitn(3, ' ');
            let (what, name, text) = (
                w.next().unwrap_or_default(),
                w.next().unwrap_or_default(),
                w.next().unwrap_or_default(),
            );
            match what {
                "HELP" => {
                    if name != fam.name {
                        fam = Family::default();
                    }
                    fam.name = name.to_string();
                    fam.help = Some(text.replace("\\\"", "\""));
                    header_done = false;
                }
                "TYPE" => {
                    if name != fam.name {
                        fam = Family::default();
                        fam.name = name.to_string();
                    }
                    fam.kind = text.to_string();
                    let prom = fam.prom_name();
                    if let Some(h) = &fam.help {
                        out.push_str(&format!("# HELP {prom} {h}\n"));
                    }
                    out.push_str(&format!("# TYPE {prom} {}\n", fam.prom_type()));
                    header_done = true;
                }
                // UNIT and EOF have no Prometheus counterpart.
                _ => {}
            }
            continue;
        }
        if !header_done || line.is_empty() {
            continue;
        }
        let sample = without_exemplar(line);
        let name_end = sample.find(['{', ' ']).unwrap_or(sample.len());
        if fam.is_created(&sample[..name_end]) {
            continue;
        }
        out.push_str(sample);
        out.push('\n');
    }
    out
}

/// A sample line without its exemplar (` # {…} value [timestamp]` after the value).
fn without_exemplar(line: &str) -> &str {
    // Skip the label set, whose quoted values may hold anything.
    let mut in_quotes = false;
    let mut escaped = false;
    let mut depth = 0;
    let mut after_labels = 0;
    for (i, c) in line.char_indices() {
        if in_quotes {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_quotes = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_quotes = true,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    after_labels = i + 1;
                    break;
                }
            }
            ' ' if depth == 0 => break,
            _ => {}
        }
    }
    match line[after_labels..].find(" # ") {
        Some(at) => &line[..after_labels + at],
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OM: &str = "\
# HELP hubble_flows_processed Total number of flows processed
# TYPE hubble_flows_processed counter
hubble_flows_processed_total{type=\"L3_L4\",verdict=\"FORWARDED\"} 7
hubble_flows_processed_created{type=\"L3_L4\",verdict=\"FORWARDED\"} 1700000000.0
# HELP hubble_http_request_duration_seconds Quantiles of HTTP request duration in \\\"seconds\\\"
# TYPE hubble_http_request_duration_seconds histogram
# UNIT hubble_http_request_duration_seconds seconds
hubble_http_request_duration_seconds_bucket{le=\"0.005\"} 1 # {traceID=\"abc # {x}\"} 0.001 1700000000.1
hubble_http_request_duration_seconds_sum 0.001
hubble_http_request_duration_seconds_count 1
# HELP hubble_build Build information
# TYPE hubble_build info
hubble_build_info{version=\"a # b\"} 1
# HELP hubble_agent_observer_ring_flows Flows held in the observer ring
# TYPE hubble_agent_observer_ring_flows gauge
hubble_agent_observer_ring_flows 3
# EOF
";

    #[test]
    fn openmetrics_becomes_prometheus_text() {
        assert_eq!(
            to_prometheus_text(OM),
            "\
# HELP hubble_flows_processed_total Total number of flows processed
# TYPE hubble_flows_processed_total counter
hubble_flows_processed_total{type=\"L3_L4\",verdict=\"FORWARDED\"} 7
# HELP hubble_http_request_duration_seconds Quantiles of HTTP request duration in \"seconds\"
# TYPE hubble_http_request_duration_seconds histogram
hubble_http_request_duration_seconds_bucket{le=\"0.005\"} 1
hubble_http_request_duration_seconds_sum 0.001
hubble_http_request_duration_seconds_count 1
# HELP hubble_build_info Build information
# TYPE hubble_build_info gauge
hubble_build_info{version=\"a # b\"} 1
# HELP hubble_agent_observer_ring_flows Flows held in the observer ring
# TYPE hubble_agent_observer_ring_flows gauge
hubble_agent_observer_ring_flows 3
"
        );
    }

    #[test]
    fn openmetrics_only_when_enabled_and_asked_for() {
        // Prometheus 2.x's default Accept header.
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(negotiate(Some(prom), true), Format::OpenMetrics);
        assert_eq!(negotiate(Some(prom), false), Format::PrometheusText);
        assert_eq!(negotiate(None, true), Format::PrometheusText);
        assert_eq!(negotiate(Some("*/*"), true), Format::PrometheusText);
        assert_eq!(
            negotiate(Some("text/plain;version=0.0.4"), true),
            Format::PrometheusText
        );
        assert_eq!(
            negotiate(
                Some("text/plain;q=0.9, application/openmetrics-text;q=0.2"),
                true
            ),
            Format::PrometheusText
        );
    }
}
