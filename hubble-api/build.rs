//! Compiles proto/ with protox (no protoc), generates prost types and tonic services,
//! and protojson-compatible serde impls with pbjson.

use std::path::PathBuf;

#[path = "build/transcode.rs"]
mod transcode;

mod protojson {
    //! Generates `impl ProtoJson` for every message: a direct encoder that writes Go
    //! Hubble's JSON (protojson with proto names, declaration order, Go HTML escaping).

    use heck::{ToSnakeCase, ToUpperCamelCase};
    use prost_types::field_descriptor_proto::{Label, Type};
    use prost_types::{DescriptorProto, FileDescriptorProto, FileDescriptorSet};
    use std::fmt::Write;

    const KEYWORDS: &[&str] = &[
        "as", "break", "const", "continue", "else", "enum", "false", "fn", "for", "if", "impl",
        "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "static",
        "struct", "trait", "true", "type", "unsafe", "use", "where", "while", "abstract", "become",
        "box", "do", "final", "macro", "override", "priv", "typeof", "unsized", "virtual", "yield",
        "try", "async", "await", "dyn", "gen",
    ];

    /// prost's field / module name for a proto name.
    fn snake(name: &str) -> String {
        let s = name.to_snake_case();
        match s.as_str() {
            "self" | "super" | "crate" | "Self" => format!("{s}_"),
            k if KEYWORDS.contains(&k) => format!("r#{s}"),
            _ => s,
        }
    }

    /// prost's Rust path for a fully qualified proto type name (`.flow.Endpoint`).
    fn rust_path(files: &[FileDescriptorProto], type_name: &str) -> String {
        if let Some(wkt) = type_name.strip_prefix(".google.protobuf.") {
            return format!("::pbjson_types::{wkt}");
        }
        let pkg = files
            .iter()
            .filter_map(|f| f.package.as_deref())
            .filter(|p| type_name.starts_with(&format!(".{p}.")))
            .max_by_key(|p| p.len())
            .expect("type of a known package");
        let rest = &type_name[pkg.len() + 2..];
        let parts: Vec<&str> = rest.split('.').collect();
        let mut path = format!("crate::{}", pkg.replace('.', "::"));
        for parent in &parts[..parts.len() - 1] {
            write!(path, "::{}", snake(parent)).unwrap();
        }
        write!(path, "::{}", parts[parts.len() - 1].to_upper_camel_case()).unwrap();
        path
    }

    /// Code that writes value `v` (an expression of the field's Rust element type).
    fn value_code(files: &[FileDescriptorProto], ty: Type, type_name: &str, v: &str) -> String {
        match ty {
            Type::String => format!("crate::json::enc::string(out, {v});"),
            Type::Bool => format!("crate::json::enc::boolean(out, *{v});"),
            Type::Int32 | Type::Sint32 | Type::Sfixed32 => {
                format!("crate::json::enc::int(out, *{v} as i64);")
            }
            Type::Uint32 | Type::Fixed32 => format!("crate::json::enc::uint(out, *{v} as u64);"),
            Type::Int64 | Type::Sint64 | Type::Sfixed64 => {
                format!("crate::json::enc::quoted_int(out, *{v});")
            }
            Type::Uint64 | Type::Fixed64 => format!("crate::json::enc::quoted_uint(out, *{v});"),
            Type::Double => format!("crate::json::enc::float(out, *{v});"),
            Type::Float => format!("crate::json::enc::float(out, *{v} as f64);"),
            Type::Bytes => format!("crate::json::enc::bytes(out, {v});"),
            Type::Enum => format!(
                "crate::json::enc::enumeration(out, {}::try_from(*{v}).ok().map(|e| e.as_str_name()), *{v});",
                rust_path(files, type_name)
            ),
            Type::Message => match type_name {
                ".google.protobuf.Timestamp" => {
                    format!("crate::json::enc::timestamp(out, {v}.seconds, {v}.nanos)?;")
                }
                ".google.protobuf.BoolValue" => {
                    format!("crate::json::enc::boolean(out, {v}.value);")
                }
                ".google.protobuf.Int32Value" => {
                    format!("crate::json::enc::int(out, {v}.value as i64);")
                }
                ".google.protobuf.UInt32Value" => {
                    format!("crate::json::enc::uint(out, {v}.value as u64);")
                }
                ".google.protobuf.Int64Value" => {
                    format!("crate::json::enc::quoted_int(out, {v}.value);")
                }
                ".google.protobuf.UInt64Value" => {
                    format!("crate::json::enc::quoted_uint(out, {v}.value);")
                }
                ".google.protobuf.DoubleValue" => {
                    format!("crate::json::enc::float(out, {v}.value);")
                }
                ".google.protobuf.FloatValue" => {
                    format!("crate::json::enc::float(out, {v}.value as f64);")
                }
                ".google.protobuf.StringValue" => {
                    format!("crate::json::enc::string(out, &{v}.value);")
                }
                ".google.protobuf.BytesValue" => {
                    format!("crate::json::enc::bytes(out, &{v}.value);")
                }
                t if t.starts_with(".google.protobuf.") => {
                    format!("crate::json::enc::via_serde(out, {v})?;")
                }
                _ => format!("crate::json::ProtoJson::write_json({v}, out)?;"),
            },
            Type::Group => panic!("proto2 groups are not supported"),
        }
    }

    /// The condition under which a singular proto3 scalar is written (not its default).
    fn non_default(ty: Type, v: &str) -> String {
        match ty {
            Type::String | Type::Bytes => format!("!{v}.is_empty()"),
            Type::Bool => v.to_string(),
            Type::Double | Type::Float => format!("{v} != 0.0"),
            _ => format!("{v} != 0"),
        }
    }

    fn gen_message(
        files: &[FileDescriptorProto],
        out: &mut String,
        pkg: &str,
        parents: &[String],
        msg: &DescriptorProto,
    ) {
        let name = msg.name();
        let mut path = format!("crate::{}", pkg.replace('.', "::"));
        for p in parents {
            write!(path, "::{}", snake(p)).unwrap();
        }
        let module = {
            let mut m = path.clone();
            write!(m, "::{}", snake(name)).unwrap();
            m
        };
        write!(path, "::{}", name.to_upper_camel_case()).unwrap();
        writeln!(out, "impl crate::json::ProtoJson for {path} {{").unwrap();
        writeln!(
            out,
            "    #[allow(unused_variables, unused_mut)]
    fn write_json(&self, out: &mut Vec<u8>) -> Result<(), crate::json::JsonError> {{"
        )
        .unwrap();
        writeln!(
            out,
            "        out.push(b'{{');
        let mut first = true;"
        )
        .unwrap();
        for field in &msg.field {
            let fname = field.name();
            let ty = field.r#type();
            let tn = field.type_name();
            let key = format!("crate::json::enc::key(out, &mut first, {fname:?});");
            let repeated = field.label() == Label::Repeated;
            let oneof = field.oneof_index.filter(|_| !field.proto3_optional());
            if let Some(idx) = oneof {
                let oneof_name = msg.oneof_decl[idx as usize].name();
                let variant = fname.to_upper_camel_case();
                let enum_path = format!("{module}::{}", oneof_name.to_upper_camel_case());
                writeln!(
                    out,
                    "        if let Some({enum_path}::{variant}(v)) = &self.{} {{ {key} {} }}",
                    snake(oneof_name),
                    value_code(files, ty, tn, "v")
                )
                .unwrap();
                continue;
            }
            let f = format!("self.{}", snake(fname));
            if repeated {
                writeln!(
                    out,
                    "        if !{f}.is_empty() {{ {key} out.push(b'['); for (i, v) in {f}.iter().enumerate() {{ if i > 0 {{ out.push(b','); }} {} }} out.push(b']'); }}",
                    value_code(files, ty, tn, "v")
                )
                .unwrap();
            } else if ty == Type::Message || field.proto3_optional() {
                writeln!(
                    out,
                    "        if let Some(v) = &{f} {{ {key} {} }}",
                    value_code(files, ty, tn, "v")
                )
                .unwrap();
            } else {
                writeln!(
                    out,
                    "        if {} {{ let v = &{f}; {key} {} }}",
                    non_default(ty, &f),
                    value_code(files, ty, tn, "v")
                )
                .unwrap();
            }
        }
        writeln!(
            out,
            "        out.push(b'}}');
        Ok(())
    }}
}}
"
        )
        .unwrap();
        let mut nested_parents = parents.to_vec();
        nested_parents.push(name.to_string());
        for nested in &msg.nested_type {
            if nested.options.as_ref().is_some_and(|o| o.map_entry()) {
                panic!("map fields are not supported by the protojson generator");
            }
            gen_message(files, out, pkg, &nested_parents, nested);
        }
    }

    pub fn generate(fds: &FileDescriptorSet) -> String {
        let mut out = String::from(
            "// @generated by hubble-api/build.rs from the .proto files.

",
        );
        for file in &fds.file {
            let pkg = file.package();
            if pkg.starts_with("google.") {
                continue;
            }
            for msg in &file.message_type {
                gen_message(&fds.file, &mut out, pkg, &[], msg);
            }
        }
        out
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/flow/flow.proto",
        "proto/relay/relay.proto",
        "proto/observer/observer.proto",
        "proto/peer/peer.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let fds = protox::compile(protos, ["proto"])?;
    std::fs::write(out.join("protojson.rs"), protojson::generate(&fds))?;
    std::fs::write(out.join("transcode.rs"), transcode::generate(&fds))?;
    println!("cargo:rerun-if-changed=build/transcode.rs");
    let descriptor_path = out.join("hubble_descriptor.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&fds))?;

    tonic_prost_build::configure()
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .compile_fds(fds.clone())?;

    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .build(&[".flow", ".observer", ".peer", ".relay"])?;

    // Post-process the generated deserializers:
    // - numeric fields go through our faster number decoder (see src/json.rs);
    // - skipped unknown fields are recorded (json::take_unknown_fields_seen);
    // - fields can be skipped on demand (json::mask), so readers that print only part of a
    //   flow need not build the rest.
    let mut masks = String::new();
    let mut n_masks = 0usize;
    for file in fds
        .file
        .iter()
        .filter(|f| !f.package().starts_with("google."))
    {
        let pkg = file.package();
        let path = out.join(format!("{pkg}.serde.rs"));
        let code = std::fs::read_to_string(&path)?;
        let code = code
            .replace(
                "::pbjson::private::NumberDeserialize",
                "crate::json::NumberDeserialize",
            )
            .replace(
                "let _ = map_.next_value::<serde::de::IgnoredAny>()?;",
                "crate::json::note_unknown_field(); let _ = map_.next_value::<serde::de::IgnoredAny>()?;",
            );
        let code = open_enums(&code);
        let code = inject_masks(&code, file, &mut masks, &mut n_masks);
        std::fs::write(&path, code)?;
    }
    std::fs::write(
        out.join("serde_masks.rs"),
        format!(
            "/// Number of maskable messages.\npub const N_MESSAGES: usize = {n_masks};\n\
             /// (message, [(proto field name, bit)]) per maskable message, by index.\n\
             pub const MESSAGES: &[(&str, &[(&str, u32)])] = &[\n{masks}];\n"
        ),
    )?;
    Ok(())
}

/// Adds `if crate::json::mask::skip(MSG, BIT) { skip the value; continue }` at the top of every
/// field arm of the generated `visit_map` of each top-level message, and records the
/// message's field bits in `masks`.
fn inject_masks(
    code: &str,
    file: &prost_types::FileDescriptorProto,
    masks: &mut String,
    n_masks: &mut usize,
) -> String {
    use heck::ToUpperCamelCase;
    use std::fmt::Write;
    let mut out = String::with_capacity(code.len() + code.len() / 4);
    // (message index, variant -> bit) of the impl being read
    let mut current: Option<(usize, Vec<String>)> = None;
    let mut in_enum = false;
    let mut variants: Vec<String> = Vec::new();
    let mut pending_msg: Option<&prost_types::DescriptorProto> = None;
    for line in code.lines() {
        let t = line.trim();
        if let Some(rest) = t
            .strip_prefix("impl<'de> serde::Deserialize<'de> for ")
            .filter(|r| !r.starts_with("GeneratedField"))
        {
            let name = rest.trim_end_matches(" {");
            pending_msg = if name.contains("::") {
                None
            } else {
                file.message_type
                    .iter()
                    .find(|m| m.name().to_upper_camel_case() == name)
            };
            current = None;
        } else if t == "enum GeneratedField {" {
            in_enum = true;
            variants.clear();
        } else if in_enum {
            if t == "}" {
                in_enum = false;
                if let Some(msg) = pending_msg.take() {
                    let bits: Vec<(String, u32)> = msg
                        .field
                        .iter()
                        .filter_map(|f| {
                            let v = f.name().to_upper_camel_case();
                            variants
                                .iter()
                                .position(|x| *x == v)
                                .map(|b| (f.name().to_string(), b as u32))
                        })
                        .collect();
                    if variants.len() <= 64 && bits.len() == msg.field.len() {
                        let idx = *n_masks;
                        *n_masks += 1;
                        let list: Vec<String> =
                            bits.iter().map(|(n, b)| format!("({n:?}, {b})")).collect();
                        writeln!(
                            masks,
                            "    ({:?}, &[{}]),",
                            format!("{}.{}", file.package(), msg.name()),
                            list.join(", ")
                        )
                        .unwrap();
                        current = Some((idx, variants.clone()));
                    }
                }
            } else {
                variants.push(t.trim_end_matches(',').to_string());
            }
        }
        out.push_str(line);
        out.push('\n');
        let arm = t
            .strip_prefix("GeneratedField::")
            .and_then(|r| r.strip_suffix(" => {"))
            .filter(|v| *v != "__SkipField__");
        if let (Some((idx, vars)), Some(v)) = (&current, arm)
            && let Some(bit) = vars.iter().position(|x| x == v)
        {
            writeln!(
                out,
                "if crate::json::mask::skip({idx}, {bit}) {{ let _ = map_.next_value::<serde::de::IgnoredAny>()?; continue; }}"
            )
            .unwrap();
        }
    }
    out
}

/// Singular enum fields accept unknown numbers: `map_.next_value::<E>()? as i32` becomes
/// `map_.next_value::<crate::json::OpenEnum<E>>()?.0`.
fn open_enums(code: &str) -> String {
    const START: &str = "map_.next_value::<";
    const END: &str = ">()? as i32";
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(i) = rest.find(START) {
        let after = &rest[i + START.len()..];
        let ty_len = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(after.len());
        let ty = &after[..ty_len];
        if !ty.is_empty() && after[ty_len..].starts_with(END) {
            out.push_str(&rest[..i]);
            out.push_str(&format!(
                "map_.next_value::<crate::json::OpenEnum<{ty}>>()?.0"
            ));
            rest = &after[ty_len + END.len()..];
        } else {
            out.push_str(&rest[..i + START.len()]);
            rest = after;
        }
    }
    out.push_str(rest);
    out
}
