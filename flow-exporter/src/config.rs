//! Checking the exporter's settings before it starts: allow / deny lists in Hubble's JSON
//! FlowFilter form and field mask paths of `flow.Flow`; every error names the setting.

use hubble::filter::{FlowFilters, parse_filter_list};
use hubble_api::flow::FlowFilter;
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};

/// A setting that cannot be used. Displays as one line naming the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid --{flag} {value:?}: {reason}")]
    Filters {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("invalid --field-mask path {path:?}: {reason}")]
    FieldMask { path: String, reason: String },
    #[error("TLS: {0}")]
    Tls(String),
}

/// Parses an `--allowlist` / `--denylist` value (`{"verdict":["DROPPED"]},{…}`).
pub fn parse_filters(flag: &'static str, value: &str) -> Result<Vec<FlowFilter>, ConfigError> {
    let err = |reason: String| ConfigError::Filters {
        flag,
        value: value.to_string(),
        reason,
    };
    let list = parse_filter_list(value).map_err(err)?;
    // Compile each list alone so the error names the list holding the bad filter.
    FlowFilters::compile(&list, &[]).map_err(|e| err(e.to_string()))?;
    Ok(list)
}

/// Parses a field mask (paths separated by commas and/or whitespace) and checks that every
/// path names fields of `flow.Flow` by their proto names, as Hubble's fieldmask validation does.
pub fn parse_field_mask(value: &str) -> Result<Vec<String>, ConfigError> {
    let paths: Vec<String> = value
        .split(|c: char| c == ',' || c.is_ascii_whitespace())
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    if paths.is_empty() {
        return Ok(paths);
    }
    let set = FileDescriptorSet::decode(hubble_api::FILE_DESCRIPTOR_SET).map_err(|e| {
        ConfigError::FieldMask {
            path: value.to_string(),
            reason: format!("descriptors unreadable: {e}"),
        }
    })?;
    for p in &paths {
        check_path(&set, p).map_err(|reason| ConfigError::FieldMask {
            path: p.clone(),
            reason,
        })?;
    }
    Ok(paths)
}

fn find_message<'a>(set: &'a FileDescriptorSet, full_name: &str) -> Option<&'a DescriptorProto> {
    let full_name = full_name.trim_start_matches('.');
    set.file.iter().find_map(|f| {
        let pkg = f.package();
        let rest = if pkg.is_empty() {
            full_name
        } else {
            full_name.strip_prefix(pkg)?.strip_prefix('.')?
        };
        find_nested(&f.message_type, rest)
    })
}

fn find_nested<'a>(msgs: &'a [DescriptorProto], name: &str) -> Option<&'a DescriptorProto> {
    let (head, tail) = match name.split_once('.') {
        Some((h, t)) => (h, Some(t)),
        None => (name, None),
    };
    let m = msgs.iter().find(|m| m.name() == head)?;
    match tail {
        None => Some(m),
        Some(t) => find_nested(&m.nested_type, t),
    }
}

fn check_path(set: &FileDescriptorSet, path: &str) -> Result<(), String> {
    let mut msg = find_message(set, "flow.Flow").ok_or("flow.Flow not in the descriptors")?;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let field = msg
            .field
            .iter()
            .find(|f| f.name() == *part)
            .ok_or_else(|| format!("{} has no field {part:?}", msg.name()))?;
        if i + 1 == parts.len() {
            return Ok(());
        }
        if field.r#type() != Type::Message {
            return Err(format!("{part:?} has no subfields"));
        }
        if field.label() == Label::Repeated {
            return Err(format!(
                "{part:?} is repeated; only the whole field can be kept"
            ));
        }
        msg = find_message(set, field.type_name())
            .ok_or_else(|| format!("type {} of {part:?} unknown", field.type_name()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_masks() {
        assert_eq!(
            parse_field_mask("time, source.pod_name,IP.source  verdict").unwrap(),
            ["time", "source.pod_name", "IP.source", "verdict"]
        );
        assert!(parse_field_mask("").unwrap().is_empty());
        assert!(parse_field_mask("l4.TCP.flags.SYN").is_ok());
        assert!(parse_field_mask("source.labels").is_ok());
        let e = parse_field_mask("time,sauce.pod_name").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid --field-mask path \"sauce.pod_name\": Flow has no field \"sauce\""
        );
        assert!(parse_field_mask("time.seconds_x").is_err());
        assert!(parse_field_mask("verdict.x").is_err());
        assert!(parse_field_mask("source.pod").is_err());
    }

    #[test]
    fn filter_lists() {
        let l = parse_filters(
            "allowlist",
            r#"{"verdict":["DROPPED"]},{"source_pod":["kube-system/"]}"#,
        )
        .unwrap();
        assert_eq!(l.len(), 2);
        let w = hubble::filter::flag_filter_warning(
            "allowlist",
            r#"{"verdict":["DROPPED"]},{"source_pods":["a/"]}"#,
        );
        assert_eq!(
            w.as_deref(),
            Some(
                "--allowlist: no FlowFilter field is named \"source_pods\"; ignored (field names as `hubble observe --print-raw-filters` prints them)"
            )
        );
        assert_eq!(
            hubble::filter::flag_filter_warning("allowlist", r#"{"sourcePod":["a/"]}"#),
            None
        );
        let e = parse_filters("denylist", r#"{"verdict":["NOPE"]}"#).unwrap_err();
        assert!(e.to_string().starts_with("invalid --denylist "), "{e}");
        let e = parse_filters("allowlist", r#"{"source_ip":["not-an-ip"]}"#).unwrap_err();
        assert!(e.to_string().starts_with("invalid --allowlist "), "{e}");
        assert!(!e.to_string().contains('\n'));
    }
}
