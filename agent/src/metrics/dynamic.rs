//! Cilium's dynamic metrics file (`--hubble-dynamic-metrics-config-path`): which handlers run,
//! with which context options and include/exclude filters, re-read every second and applied
//! without a restart.
//!
//! A file is applied whole or not at all: any problem (YAML, an unknown metric, a bad option
//! or filter, a metric listed twice) is one line on stderr and the metrics in force keep
//! running. As in Cilium, the context options of a metric, once in force, cannot change until
//! a restart (its series' label set would change), even after the metric was removed.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hubble::filter::FlowFilters;
use hubble_api::flow::FlowFilter;
use serde::Deserialize;

use super::Metrics;
use super::handlers::Handler;
use super::spec::{self, HandlerSpec};

/// How often the file is read.
pub const POLL: Duration = Duration::from_secs(1);
/// Largest file read.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// A metric's options, `(name, value)`, as [`HandlerSpec`] holds them.
type Options = Vec<(String, String)>;

/// The file: `metrics:` and nothing else.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DynamicMetricsConfig {
    metrics: Option<Vec<MetricConfig>>,
}

/// One metric: Cilium's `MetricConfig`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricConfig {
    name: Option<String>,
    #[serde(rename = "contextOptions")]
    context_options: Option<Vec<ContextOptionConfig>>,
    #[serde(rename = "includeFilters")]
    include_filters: Option<Vec<FlowFilter>>,
    #[serde(rename = "excludeFilters")]
    exclude_filters: Option<Vec<FlowFilter>>,
}

/// One option of a metric: `{name: sourceContext, values: [pod, ip]}`, `{name: query}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContextOptionConfig {
    name: String,
    values: Option<Vec<String>>,
}

impl ContextOptionConfig {
    /// The option as the `--metrics` form writes it: alternatives joined by `|`, the labels
    /// of `labelsContext` by `,`.
    fn as_option(&self) -> (String, String) {
        let sep = if self.name.eq_ignore_ascii_case("labelsContext") {
            ","
        } else {
            "|"
        };
        let values = self.values.as_deref().unwrap_or_default().join(sep);
        (self.name.clone(), values)
    }
}

/// The dynamic metrics file and what was last done with it.
#[derive(Debug)]
pub struct ConfigFile {
    path: PathBuf,
    /// The options each metric was ever put in force with (Cilium's `cfgStore`).
    options_in_force: HashMap<String, Options>,
    /// The bytes of the version in force.
    applied: Option<Vec<u8>>,
    /// The bytes of the last version refused (not read again until they change).
    refused: Option<Vec<u8>>,
    /// The last problem reported, so it is reported once.
    reported: Option<String>,
}

impl ConfigFile {
    /// The file at `path` (nothing read yet).
    pub fn new(path: &Path) -> Self {
        ConfigFile {
            path: path.to_path_buf(),
            options_in_force: HashMap::new(),
            applied: None,
            refused: None,
            reported: None,
        }
    }

    /// Reads the file: `Ok(Some(handlers))` when it changed and is valid (they are the
    /// metrics it puts in force), `Ok(None)` when there is nothing new to do, `Err(line)`
    /// for a problem not reported before.
    pub fn poll(&mut self) -> Result<Option<Vec<Handler>>, String> {
        let bytes = match read_bounded(&self.path) {
            Ok(b) => b,
            Err(e) => return self.report(format!("cannot read it: {e}")),
        };
        if self.applied.as_ref() == Some(&bytes) {
            self.refused = None;
            self.reported = None;
            return Ok(None);
        }
        if self.refused.as_ref() == Some(&bytes) {
            return Ok(None);
        }
        match self.build(&bytes) {
            Ok(handlers) => {
                for h in &handlers {
                    self.options_in_force
                        .insert(h.name.clone(), h.spec.options.clone());
                }
                self.applied = Some(bytes);
                self.refused = None;
                self.reported = None;
                Ok(Some(handlers))
            }
            Err(e) => {
                self.refused = Some(bytes);
                self.report(e)
            }
        }
    }

    /// One poll applied to `metrics`, reported on stderr: the metrics now in force, or the
    /// problem (once) while the metrics in force keep running.
    pub fn reload(&mut self, metrics: &Metrics) {
        let shown = self.path.display().to_string();
        match self.poll() {
            Ok(Some(handlers)) => {
                let names: Vec<String> = handlers.iter().map(|h| h.name.clone()).collect();
                metrics.lock().reconfigure(handlers);
                eprintln!(
                    "hubble-agent: metrics from {shown}: {}",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                );
            }
            Ok(None) => {}
            Err(e) => eprintln!(
                "hubble-agent: --hubble-dynamic-metrics-config-path {shown}: {e} (keeping the metrics in force)"
            ),
        }
    }

    fn report(&mut self, e: String) -> Result<Option<Vec<Handler>>, String> {
        if self.reported.as_ref() == Some(&e) {
            return Ok(None);
        }
        self.reported = Some(e.clone());
        Err(e)
    }

    /// The handlers of a file's text, filters set; or the first problem, in one line.
    fn build(&self, bytes: &[u8]) -> Result<Vec<Handler>, String> {
        let entries = parse(bytes)?;
        let mut specs: Vec<HandlerSpec> = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            let name = e
                .name
                .as_deref()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| format!("metrics[{i}] has no name"))?;
            if specs.iter().any(|s| s.name == name) {
                return Err(format!("metric '{name}' is listed twice"));
            }
            spec::check_known(name)?;
            let options: Options = e
                .context_options
                .iter()
                .flatten()
                .map(ContextOptionConfig::as_option)
                .collect();
            if let Some(before) = self.options_in_force.get(name)
                && *before != options
            {
                return Err(format!(
                    "metric '{name}': its contextOptions cannot change while the agent runs (they make the label set of its series); restart the agent to change them"
                ));
            }
            specs.push(HandlerSpec {
                name: name.to_string(),
                options,
            });
        }
        spec::check_conflicts(&specs)?;
        let mut handlers = Vec::with_capacity(specs.len());
        for (s, e) in specs.iter().zip(&entries) {
            let mut h = Handler::new(s)?;
            let none = Vec::new();
            let filters = FlowFilters::compile(
                e.include_filters.as_ref().unwrap_or(&none),
                e.exclude_filters.as_ref().unwrap_or(&none),
            )
            .map_err(|err| format!("metric '{}': {err}", s.name))?;
            h.set_filters(filters);
            handlers.push(h);
        }
        Ok(handlers)
    }
}

/// The entries of a file's text (an empty file has none).
fn parse(bytes: &[u8]) -> Result<Vec<MetricConfig>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let cfg: DynamicMetricsConfig =
        serde_yaml::from_str(text).map_err(|e| one_line(&e.to_string()))?;
    Ok(cfg.metrics.unwrap_or_default())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    Ok(buf)
}

/// Follows the file every [`POLL`], applying each valid change to `metrics`.
pub async fn watch(mut file: ConfigFile, metrics: Metrics) {
    let mut ticker = tokio::time::interval(POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let m = metrics.clone();
        file = match tokio::task::spawn_blocking(move || {
            file.reload(&m);
            file
        })
        .await
        {
            Ok(f) => f,
            Err(_) => return,
        };
    }
}
