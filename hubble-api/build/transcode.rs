//! Generates `transcode.rs`: for every message, a function that reads the message's protobuf
//! bytes and writes the JSON that prost decoding + the generated `ProtoJson` encoder would
//! (see src/transcode.rs for the runtime it calls and the rules).
//!
//! Each function makes one pass over the wire bytes noting, per declared field, how often it
//! occurs, its last value and where it first occurs, then writes the fields in declaration
//! order; repeated fields are read again from their first occurrence.

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorSet};
use std::fmt::Write;

/// `.flow.Flow.Inner` → `flow_Flow_Inner`.
fn fn_name(full: &str) -> String {
    full.trim_start_matches('.').replace('.', "_")
}

fn enum_fn(full: &str) -> String {
    format!("enum_{}", fn_name(full))
}

/// (conversion of the raw u64 `v` into the field's value, non-default test on `x`, code
/// writing `x`) for a scalar type.
fn scalar(ty: Type, type_name: &str) -> (&'static str, &'static str, String) {
    match ty {
        Type::Int32 => ("v as i32", "x != 0", "enc::int(out, x as i64);".into()),
        Type::Sint32 => (
            "{ let u = v as u32; ((u >> 1) as i32) ^ -((u & 1) as i32) }",
            "x != 0",
            "enc::int(out, x as i64);".into(),
        ),
        Type::Sfixed32 => (
            "v as u32 as i32",
            "x != 0",
            "enc::int(out, x as i64);".into(),
        ),
        Type::Uint32 | Type::Fixed32 => ("v as u32", "x != 0", "enc::uint(out, x as u64);".into()),
        Type::Int64 | Type::Sfixed64 => ("v as i64", "x != 0", "enc::quoted_int(out, x);".into()),
        Type::Sint64 => (
            "((v >> 1) as i64) ^ -((v & 1) as i64)",
            "x != 0",
            "enc::quoted_int(out, x);".into(),
        ),
        Type::Uint64 | Type::Fixed64 => ("v", "x != 0", "enc::quoted_uint(out, x);".into()),
        Type::Bool => ("v != 0", "x", "enc::boolean(out, x);".into()),
        Type::Double => (
            "f64::from_bits(v)",
            "x != 0.0",
            "enc::float(out, x);".into(),
        ),
        Type::Float => (
            "f32::from_bits(v as u32)",
            "x != 0.0",
            "enc::float(out, x as f64);".into(),
        ),
        Type::Enum => (
            "v as i32",
            "x != 0",
            format!("enc::enumeration(out, {}(x), x);", enum_fn(type_name)),
        ),
        _ => unreachable!("not a scalar: {ty:?}"),
    }
}

/// Code writing the length-delimited value `x` (a `&[u8]`) of a string, bytes or message
/// field, inside a function returning `Result`.
fn len_value(ty: Type, type_name: &str, memo: &Memo) -> String {
    match ty {
        Type::String => "string(out, x);".into(),
        Type::Bytes => "enc::bytes(out, x);".into(),
        Type::Message => match type_name {
            ".google.protobuf.Timestamp" => "timestamp(out, x)?;".into(),
            ".google.protobuf.BoolValue" => "enc::boolean(out, wrapper_varint(x)? != 0);".into(),
            ".google.protobuf.Int32Value" => {
                "enc::int(out, wrapper_varint(x)? as i32 as i64);".into()
            }
            ".google.protobuf.UInt32Value" => {
                "enc::uint(out, wrapper_varint(x)? as u32 as u64);".into()
            }
            ".google.protobuf.Int64Value" => {
                "enc::quoted_int(out, wrapper_varint(x)? as i64);".into()
            }
            ".google.protobuf.UInt64Value" => "enc::quoted_uint(out, wrapper_varint(x)?);".into(),
            ".google.protobuf.DoubleValue" => {
                "enc::float(out, f64::from_bits(wrapper_fixed::<8>(x)?));".into()
            }
            ".google.protobuf.FloatValue" => {
                "enc::float(out, f32::from_bits(wrapper_fixed::<4>(x)? as u32) as f64);".into()
            }
            ".google.protobuf.StringValue" => "string(out, wrapper_bytes(x, true)?);".into(),
            ".google.protobuf.BytesValue" => "enc::bytes(out, wrapper_bytes(x, false)?);".into(),
            t if t.starts_with(".google.protobuf.") => format!(
                "return Err(TranscodeError::Unsupported({:?}));",
                t.trim_start_matches('.')
            ),
            t => match memo.iter().position(|(name, _)| name == t) {
                Some(kind) => format!(
                    "memo(x, out, depth + 1, {kind}, {nest}, {f})?;",
                    nest = memo[kind].1,
                    f = fn_name(t)
                ),
                None => format!("{}(x, out, depth + 1)?;", fn_name(t)),
            },
        },
        _ => unreachable!("not length-delimited: {ty:?}"),
    }
}

/// Message types whose JSON is memoized per encoding (see `memo` in src/transcode.rs): the
/// ones that repeat from flow to flow and cost most to transcode.
const MEMOIZED: &[&str] = &[".flow.Endpoint", ".flow.Service"];

/// (full type name, how many levels of sub-messages it nests) of each memoized type; the
/// position is the type's `kind` for the runtime.
type Memo = Vec<(String, u32)>;

/// How many levels of sub-messages `full` nests below itself (0: none); panics on recursion.
fn nesting(
    types: &std::collections::HashMap<String, &DescriptorProto>,
    full: &str,
    seen: &mut Vec<String>,
) -> u32 {
    assert!(
        !seen.iter().any(|s| s == full),
        "memoized type {full} is recursive"
    );
    seen.push(full.to_string());
    let msg = types
        .get(full)
        .unwrap_or_else(|| panic!("unknown message {full}"));
    let mut deepest = 0;
    for f in &msg.field {
        let t = f.type_name();
        if f.r#type() == Type::Message && !t.starts_with(".google.protobuf.") {
            deepest = deepest.max(1 + nesting(types, t, seen));
        }
    }
    seen.pop();
    deepest
}

fn collect_types<'a>(
    types: &mut std::collections::HashMap<String, &'a DescriptorProto>,
    prefix: &str,
    msg: &'a DescriptorProto,
) {
    let full = format!("{prefix}.{}", msg.name());
    for nested in &msg.nested_type {
        collect_types(types, &full, nested);
    }
    types.insert(full, msg);
}

fn is_len(ty: Type) -> bool {
    matches!(ty, Type::String | Type::Bytes | Type::Message)
}

/// Bytes per value of a fixed-width type, 0 for varints.
fn width(ty: Type) -> usize {
    match ty {
        Type::Fixed64 | Type::Sfixed64 | Type::Double => 8,
        Type::Fixed32 | Type::Sfixed32 | Type::Float => 4,
        _ => 0,
    }
}

/// The runtime call that notes one occurrence of the field.
fn collect(f: &FieldDescriptorProto) -> String {
    let ty = f.r#type();
    if f.label() == Label::Repeated {
        match ty {
            Type::String => "rep_string(b, &mut p, wt, slot, tag)".into(),
            Type::Bytes | Type::Message => "rep_bytes(b, &mut p, wt, slot, tag)".into(),
            _ => match width(ty) {
                0 => "rep_varint(b, &mut p, wt, slot, tag)".into(),
                n => format!("rep_fixed::<{n}>(b, &mut p, wt, slot, tag)"),
            },
        }
    } else {
        match ty {
            Type::String => "one_string(b, &mut p, wt, slot)".into(),
            Type::Bytes => "one_bytes(b, &mut p, wt, slot)".into(),
            Type::Message => "one_message(b, &mut p, wt, slot)".into(),
            _ => match width(ty) {
                0 => "one_varint(b, &mut p, wt, slot)".into(),
                8 => "one_fixed64(b, &mut p, wt, slot)".into(),
                _ => "one_fixed32(b, &mut p, wt, slot)".into(),
            },
        }
    }
}

fn gen_enum(out: &mut String, prefix: &str, e: &EnumDescriptorProto) {
    let full = format!("{prefix}.{}", e.name());
    writeln!(
        out,
        "#[inline]\npub(crate) fn {}(v: i32) -> Option<&'static str> {{\n    match v {{",
        enum_fn(&full)
    )
    .unwrap();
    let mut seen = Vec::new();
    for v in &e.value {
        if seen.contains(&v.number()) {
            continue;
        }
        seen.push(v.number());
        writeln!(out, "        {} => Some({:?}),", v.number(), v.name()).unwrap();
    }
    writeln!(out, "        _ => None,\n    }}\n}}\n").unwrap();
}

fn gen_message(out: &mut String, prefix: &str, msg: &DescriptorProto, memo: &Memo) {
    let full = format!("{prefix}.{}", msg.name());
    for nested in &msg.nested_type {
        if nested.options.as_ref().is_some_and(|o| o.map_entry()) {
            panic!("map fields are not supported by the transcoder generator ({full})");
        }
        gen_message(out, &full, nested, memo);
    }
    for e in &msg.enum_type {
        gen_enum(out, &full, e);
    }
    let n = msg.field.len();
    let oneofs = msg.oneof_decl.len();
    writeln!(
        out,
        "pub(crate) fn {}(b: &[u8], out: &mut Vec<u8>, depth: u32) -> Result<()> {{",
        fn_name(&full)
    )
    .unwrap();
    writeln!(
        out,
        "    if depth > MAX_DEPTH {{ return Err(TranscodeError::Unsupported(\"nesting too deep\")); }}
    let mut s = [Slot::EMPTY; {n}];
    let mut oneof = [0u32; {oneofs}];
    let mut p = 0usize;
    while p < b.len() {{
        let tag = p;
        let (num, wt) = key(b, &mut p)?;
        match num {{"
    )
    .unwrap();
    for (i, f) in msg.field.iter().enumerate() {
        if f.r#type() == Type::Group {
            panic!("proto2 groups are not supported ({full}.{})", f.name());
        }
        if f.proto3_optional() {
            panic!(
                "proto3 optional fields are not supported by the transcoder ({full}.{})",
                f.name()
            );
        }
        let count_oneof = match f.oneof_index {
            Some(k) => format!("oneof[{k}] += 1; "),
            None => String::new(),
        };
        writeln!(
            out,
            "            {} => {{ {count_oneof}let slot = &mut s[{i}]; {}?; }}",
            f.number(),
            collect(f)
        )
        .unwrap();
    }
    writeln!(
        out,
        "            _ => skip(b, &mut p, wt)?,
        }}
        let _ = tag;
    }}
    if oneof.iter().any(|&k| k > 1) {{
        return Err(TranscodeError::Unsupported(\"a oneof occurs twice\"));
    }}
    out.push(b'{{');
    let mut first = true;"
    )
    .unwrap();
    for (i, f) in msg.field.iter().enumerate() {
        let ty = f.r#type();
        let tn = f.type_name();
        let key = format!(
            "enc::comma_key(out, &mut first, b{:?});",
            format!(",\"{}\":", f.name())
        );
        let slot = format!("s[{i}]");
        if f.label() == Label::Repeated {
            let body = if is_len(ty) {
                format!(
                    "each_len(b, &{slot}, {num}, |x| {{ comma(out, &mut e); {} Ok(()) }})?;",
                    len_value(ty, tn, memo),
                    num = f.number()
                )
            } else {
                let (conv, _, write) = scalar(ty, tn);
                format!(
                    "each_scalar(b, &{slot}, {num}, {w}, |v| {{ comma(out, &mut e); let x = {conv}; {write} Ok(()) }})?;",
                    num = f.number(),
                    w = width(ty)
                )
            };
            writeln!(
                out,
                "    if {slot}.n > 0 {{ {key} out.push(b'['); let mut e = true; {body} out.push(b']'); }}"
            )
            .unwrap();
        } else if is_len(ty) {
            let present = if f.oneof_index.is_some() || ty == Type::Message {
                format!("{slot}.n > 0")
            } else {
                "!x.is_empty()".into()
            };
            writeln!(
                out,
                "    {{ let x = {slot}.slice(b); if {present} {{ {key} {} }} }}",
                len_value(ty, tn, memo)
            )
            .unwrap();
        } else {
            let (conv, non_default, write) = scalar(ty, tn);
            let present = if f.oneof_index.is_some() {
                format!("{slot}.n > 0")
            } else {
                non_default.into()
            };
            writeln!(
                out,
                "    {{ let v = {slot}.v; let x = {conv}; if {present} {{ {key} {write} }} }}"
            )
            .unwrap();
        }
    }
    writeln!(out, "    out.push(b'}}');\n    Ok(())\n}}\n").unwrap();
}

/// `(message, field) => number` arms of `field_number` for `msg` and its nested messages.
fn number_arms(out: &mut String, prefix: &str, msg: &DescriptorProto) {
    let full = format!("{prefix}.{}", msg.name());
    for f in &msg.field {
        writeln!(
            out,
            "        ({:?}, {:?}) => Some({}),",
            full.trim_start_matches('.'),
            f.name(),
            f.number()
        )
        .unwrap();
    }
    for nested in &msg.nested_type {
        number_arms(out, &full, nested);
    }
}

pub fn generate(fds: &FileDescriptorSet) -> String {
    let mut out =
        String::from("// @generated by hubble-api/build/transcode.rs from the .proto files.\n\n");
    out.push_str(
        "/// The number of field `field` (proto name) of message `message` (`flow.Endpoint`).\n\
         pub fn field_number(message: &str, field: &str) -> Option<u32> {\n    match (message, field) {\n",
    );
    for file in fds
        .file
        .iter()
        .filter(|f| !f.package().starts_with("google."))
    {
        for msg in &file.message_type {
            number_arms(&mut out, &format!(".{}", file.package()), msg);
        }
    }
    out.push_str("        _ => None,\n    }\n}\n\n");
    let mut types = std::collections::HashMap::new();
    for file in &fds.file {
        for msg in &file.message_type {
            collect_types(&mut types, &format!(".{}", file.package()), msg);
        }
    }
    let memo: Memo = MEMOIZED
        .iter()
        .map(|t| (t.to_string(), nesting(&types, t, &mut Vec::new())))
        .collect();
    for file in &fds.file {
        let pkg = file.package();
        if pkg.starts_with("google.") {
            continue;
        }
        let prefix = format!(".{pkg}");
        for e in &file.enum_type {
            gen_enum(&mut out, &prefix, e);
        }
        for msg in &file.message_type {
            gen_message(&mut out, &prefix, msg, &memo);
        }
    }
    out
}
