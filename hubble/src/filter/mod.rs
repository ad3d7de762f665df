//! The FlowFilter engine: Hubble's whitelist / blacklist semantics over `flow::Flow`, compiled
//! once and matched without allocation; shared by the CLI, server, relay, TUI and exporter.
//!
//! A response passes iff (whitelist empty OR any whitelist filter matches) AND no blacklist
//! filter matches. Within one FlowFilter every set field must match; the values of one
//! repeated field are alternatives. Lost events and node status responses always pass.

mod cel;
mod compiled;
pub mod flags;
mod labels;
mod patterns;
mod prefilter;
mod regexes;

use hubble_api::flow::{Flow, FlowFilter};
use hubble_api::observer::GetFlowsResponse;
use hubble_api::observer::get_flows_response::ResponseTypes;

use crate::limits::{self, MAX_CEL_EXPRESSIONS, MAX_FILTERS};
use compiled::CompiledFilter;
use prefilter::LinePrefilter;
use regexes::RegexBudget;

/// Why a filter could not be compiled or a filter flag was rejected. Displays as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A FlowFilter field holds a value that cannot be used, e.g. a bad CIDR or regex.
    #[error("invalid {field} filter {value:?}: {reason}")]
    InvalidValue {
        /// Proto name of the FlowFilter field.
        field: &'static str,
        value: String,
        reason: String,
    },
    /// A FlowFilter field cannot be used in this combination or at all.
    #[error("invalid {field} filter: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// A CLI filter flag error (bad value, conflicting flags, trailing --not), worded like Hubble.
    #[error("{0}")]
    Flag(String),
    /// The filters ask for more than a request may (see [`crate::limits`]).
    #[error("{0}")]
    Limit(String),
}

/// A value as error messages show it: whole when short, else its start and its length (a
/// 100,000-character expression must not become a 100,000-character error line).
fn shown(value: &str) -> String {
    const SHOWN: usize = 64;
    if value.chars().count() <= 2 * SHOWN {
        return value.to_string();
    }
    let head: String = value.chars().take(SHOWN).collect();
    format!("{head}… ({} bytes)", value.len())
}

/// A compiled whitelist and blacklist.
#[derive(Debug, Clone)]
pub struct FlowFilters {
    whitelist: Vec<CompiledFilter>,
    blacklist: Vec<CompiledFilter>,
    prefilter: LinePrefilter,
}

impl Default for FlowFilters {
    /// Filters that let everything through.
    fn default() -> Self {
        FlowFilters {
            whitelist: Vec::new(),
            blacklist: Vec::new(),
            prefilter: LinePrefilter::build(&[]),
        }
    }
}

impl FlowFilters {
    /// Validates and compiles the filters of a GetFlowsRequest, within the caps of
    /// [`crate::limits`] (filters, CEL expressions, regular expressions).
    pub fn compile(
        whitelist: &[FlowFilter],
        blacklist: &[FlowFilter],
    ) -> Result<Self, FilterError> {
        let limit = |e: limits::LimitError| FilterError::Limit(e.to_string());
        limits::check(
            "filters (whitelist and blacklist)",
            whitelist.len() + blacklist.len(),
            MAX_FILTERS,
        )
        .map_err(limit)?;
        let cel: usize = whitelist
            .iter()
            .chain(blacklist)
            .flat_map(|f| &f.experimental)
            .map(|e| e.cel_expression.len())
            .sum();
        limits::check("CEL expressions", cel, MAX_CEL_EXPRESSIONS).map_err(limit)?;
        let mut regexes = RegexBudget::new();
        let mut compile_all = |list: &[FlowFilter]| {
            list.iter()
                .map(|f| CompiledFilter::compile(f, &mut regexes))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(FlowFilters {
            whitelist: compile_all(whitelist)?,
            blacklist: compile_all(blacklist)?,
            prefilter: LinePrefilter::build(whitelist),
        })
    }

    /// True when no filter is set, i.e. everything passes.
    pub fn is_empty(&self) -> bool {
        self.whitelist.is_empty() && self.blacklist.is_empty()
    }

    /// The flow-level decision.
    pub fn matches(&self, flow: &Flow) -> bool {
        (self.whitelist.is_empty() || self.whitelist.iter().any(|f| f.matches(flow)))
            && !self.blacklist.iter().any(|f| f.matches(flow))
    }

    /// The decision for a GetFlows response: flows are filtered, everything else passes.
    pub fn matches_response(&self, resp: &GetFlowsResponse) -> bool {
        match &resp.response_types {
            Some(ResponseTypes::Flow(flow)) => self.matches(flow),
            _ => true,
        }
    }

    /// Conservative pre-check on one raw JSON line (a GetFlowsResponse in Hubble's JSON form).
    /// Returns false only when no flow serialized as this line could pass the filters; lines
    /// holding lost events or node status always return true.
    pub fn line_may_match(&self, line: &[u8]) -> bool {
        self.prefilter.may_match(line)
    }
}

/// Parses FlowFilters written as JSON objects (proto JSON, as `hubble observe
/// --print-raw-filters` prints them) one after another, separated by whitespace and/or
/// commas: the form of `--allowlist` / `--denylist` values and of the exporter's
/// allowlist / denylist settings. The error is serde_json's message. Fields no FlowFilter
/// has are skipped, as Hubble skips them: [`flag_filter_warning`] names them.
pub fn parse_filter_list(s: &str) -> Result<Vec<FlowFilter>, String> {
    json_objects(s)
}

/// The fields of the FlowFilters in `s` (as [`parse_filter_list`] reads them) that no
/// FlowFilter has, as dotted paths: a misspelled field would otherwise go unnoticed while
/// its filter matches more than meant.
fn unknown_filter_fields(s: &str) -> Vec<String> {
    let values: Vec<serde_json::Value> = json_objects(s).unwrap_or_default();
    values
        .iter()
        .flat_map(|v| hubble_api::json::unknown_fields(".flow.FlowFilter", v))
        .collect()
}

/// The warning for `fields` of a FlowFilter no FlowFilter has, given in `what` (a flag
/// or setting), if any.
pub fn unknown_fields_warning(what: &str, fields: &[String]) -> Option<String> {
    if fields.is_empty() {
        return None;
    }
    let names: Vec<String> = fields.iter().map(|f| format!("{f:?}")).collect();
    Some(format!(
        "{what}: no FlowFilter field is named {}; ignored (field names as `hubble observe --print-raw-filters` prints them)",
        names.join(", ")
    ))
}

/// [`unknown_fields_warning`] for the filters given to flag `--{flag}` as `value`.
pub fn flag_filter_warning(flag: &str, value: &str) -> Option<String> {
    unknown_fields_warning(&format!("--{flag}"), &unknown_filter_fields(value))
}

/// JSON values one after another, separated by whitespace and/or commas.
fn json_objects<T: serde::de::DeserializeOwned>(s: &str) -> Result<Vec<T>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == ',');
        if rest.is_empty() {
            return Ok(out);
        }
        let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<T>();
        match stream.next() {
            Some(Ok(v)) => out.push(v),
            Some(Err(e)) => return Err(e.to_string()),
            None => return Ok(out),
        }
        rest = &rest[stream.byte_offset()..];
    }
}

#[cfg(test)]
mod tests;
