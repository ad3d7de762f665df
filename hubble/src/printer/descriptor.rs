//! `hubble reflect` output: each proto file descriptor as one line of Go's `encoding/json`
//! over the `descriptorpb` structs, which is what Hubble's CLI prints (not protojson):
//! snake_case keys in declaration order, absent fields and empty lists left out, enums and
//! 64-bit integers as plain numbers, bytes in base64, HTML-safe string escapes.
//!
//! Every field prost knows of descriptor.proto is written (each struct is taken apart
//! whole, so a field added to prost-types does not go unnoticed); fields newer than
//! prost-types' copy of descriptor.proto (editions, features) are not decoded.

use std::io::{self, Write};

use hubble_api::json::enc;
use prost_types::descriptor_proto::{ExtensionRange, ReservedRange};
use prost_types::enum_descriptor_proto::EnumReservedRange;
use prost_types::source_code_info::Location;
use prost_types::uninterpreted_option::NamePart;
use prost_types::{
    DescriptorProto, EnumDescriptorProto, EnumOptions, EnumValueDescriptorProto, EnumValueOptions,
    ExtensionRangeOptions, FieldDescriptorProto, FieldOptions, FileDescriptorProto, FileOptions,
    MessageOptions, MethodDescriptorProto, MethodOptions, OneofDescriptorProto, OneofOptions,
    ServiceDescriptorProto, ServiceOptions, SourceCodeInfo, UninterpretedOption,
};

/// Writes `f` as one JSON line.
pub fn write_file<W: Write + ?Sized>(w: &mut W, f: &FileDescriptorProto) -> io::Result<()> {
    let mut out = Vec::with_capacity(4096);
    file(&mut out, f);
    out.push(b'\n');
    w.write_all(&out)
}

/// One JSON object being written; keys come in the order they are given.
struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Obj { out, first: true }
    }

    fn key(&mut self, k: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        enc::string(self.out, k);
        self.out.push(b':');
    }

    fn string(&mut self, k: &str, v: &str) {
        self.key(k);
        enc::string(self.out, v);
    }

    fn opt_string(&mut self, k: &str, v: &Option<String>) {
        if let Some(v) = v {
            self.string(k, v);
        }
    }

    fn strings(&mut self, k: &str, v: &[String]) {
        self.list(k, v, |out, s| enc::string(out, s));
    }

    fn int(&mut self, k: &str, v: Option<impl Into<i64>>) {
        if let Some(v) = v {
            self.key(k);
            enc::int(self.out, v.into());
        }
    }

    fn ints(&mut self, k: &str, v: &[i32]) {
        self.list(k, v, |out, n| enc::int(out, (*n).into()));
    }

    fn uint(&mut self, k: &str, v: Option<u64>) {
        if let Some(v) = v {
            self.key(k);
            enc::uint(self.out, v);
        }
    }

    fn boolean(&mut self, k: &str, v: Option<bool>) {
        if let Some(v) = v {
            self.key(k);
            enc::boolean(self.out, v);
        }
    }

    fn float(&mut self, k: &str, v: Option<f64>) {
        if let Some(v) = v {
            self.key(k);
            go_float(self.out, v);
        }
    }

    /// A `[]byte`: left out when empty, as `omitempty` does.
    fn bytes(&mut self, k: &str, v: &Option<Vec<u8>>) {
        if let Some(v) = v.as_deref().filter(|b| !b.is_empty()) {
            self.key(k);
            enc::bytes(self.out, v);
        }
    }

    fn msg<T>(&mut self, k: &str, v: &Option<T>, write: fn(&mut Vec<u8>, &T)) {
        if let Some(v) = v {
            self.key(k);
            write(self.out, v);
        }
    }

    fn list<T>(&mut self, k: &str, v: &[T], write: impl Fn(&mut Vec<u8>, &T)) {
        if v.is_empty() {
            return;
        }
        self.key(k);
        self.out.push(b'[');
        for (i, item) in v.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            write(self.out, item);
        }
        self.out.push(b']');
    }

    fn end(self) {
        self.out.push(b'}');
    }
}

/// A float64 as `encoding/json` writes it: shortest digits, exponent form below 1e-6 and
/// from 1e21 on (`1e-7`, `1e+21`). Go refuses NaN and infinities; they come out as null.
fn go_float(out: &mut Vec<u8>, v: f64) {
    if !v.is_finite() {
        out.extend_from_slice(b"null");
        return;
    }
    let abs = v.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let s = format!("{v:e}");
        match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => {
                let _ = write!(out, "{m}e+{e:0>2}");
            }
            _ => out.extend_from_slice(s.as_bytes()),
        }
    } else {
        let _ = write!(out, "{v}");
    }
}

fn file(out: &mut Vec<u8>, f: &FileDescriptorProto) {
    let FileDescriptorProto {
        name,
        package,
        dependency,
        public_dependency,
        weak_dependency,
        message_type,
        enum_type,
        service,
        extension,
        options,
        source_code_info,
        syntax,
    } = f;
    let mut o = Obj::new(out);
    o.opt_string("name", name);
    o.opt_string("package", package);
    o.strings("dependency", dependency);
    o.ints("public_dependency", public_dependency);
    o.ints("weak_dependency", weak_dependency);
    o.list("message_type", message_type, message);
    o.list("enum_type", enum_type, enumeration);
    o.list("service", service, service_desc);
    o.list("extension", extension, field);
    o.msg("options", options, file_options);
    o.msg("source_code_info", source_code_info, source_info);
    o.opt_string("syntax", syntax);
    o.end();
}

fn message(out: &mut Vec<u8>, m: &DescriptorProto) {
    let DescriptorProto {
        name,
        field: fields,
        extension,
        nested_type,
        enum_type,
        extension_range,
        oneof_decl,
        options,
        reserved_range,
        reserved_name,
    } = m;
    let mut o = Obj::new(out);
    o.opt_string("name", name);
    o.list("field", fields, field);
    o.list("extension", extension, field);
    o.list("nested_type", nested_type, message);
    o.list("enum_type", enum_type, enumeration);
    o.list("extension_range", extension_range, extension_range_desc);
    o.list("oneof_decl", oneof_decl, oneof);
    o.msg("options", options, message_options);
    o.list("reserved_range", reserved_range, reserved_range_desc);
    o.strings("reserved_name", reserved_name);
    o.end();
}

fn extension_range_desc(out: &mut Vec<u8>, r: &ExtensionRange) {
    let ExtensionRange {
        start,
        end,
        options,
    } = r;
    let mut o = Obj::new(out);
    o.int("start", *start);
    o.int("end", *end);
    o.msg("options", options, extension_range_options);
    o.end();
}

fn reserved_range_desc(out: &mut Vec<u8>, r: &ReservedRange) {
    let ReservedRange { start, end } = r;
    let mut o = Obj::new(out);
    o.int("start", *start);
    o.int("end", *end);
    o.end();
}

fn field(out: &mut Vec<u8>, f: &FieldDescriptorProto) {
    let FieldDescriptorProto {
        name,
        number,
        label,
        r#type,
        type_name,
        extendee,
        default_value,
        oneof_index,
        json_name,
        options,
        proto3_optional,
    } = f;
    let mut o = Obj::new(out);
    o.opt_string("name", name);
    o.int("number", *number);
    o.int("label", *label);
    o.int("type", *r#type);
    o.opt_string("type_name", type_name);
    o.opt_string("extendee", extendee);
    o.opt_string("default_value", default_value);
    o.int("oneof_index", *oneof_index);
    o.opt_string("json_name", json_name);
    o.msg("options", options, field_options);
    o.boolean("proto3_optional", *proto3_optional);
    o.end();
}

fn oneof(out: &mut Vec<u8>, d: &OneofDescriptorProto) {
    let OneofDescriptorProto { name, options } = d;
    let mut o = Obj::new(out);
    o.opt_string("name", name);
    o.msg("options", options, oneof_options);
    o.end();
}

fn enumeration(out: &mut Vec<u8>, e: &EnumDescriptorProto) {
    let EnumDescriptorProto {
        name,
        value,
        options,
        reserved_range,
        reserved_name,
    } = e;
    let mut o = Obj::new(out);
    o.opt_string("name", name);
    o.list("value", value, enum_value);
    o.msg("options", options, enum_options);
    o.list("reserved_range", reserved_range, enum_reserved_range);
    o.strings("reserved_name", reserved_name);
    o.end();
}

fn enum_reserved_range(out: &mut Vec<u8>, r: &EnumReservedRange) {
    let EnumReservedRange { start, end } = r;
    let mut o = Obj::new(out);
    o.int("start", *start);
    o.int("end", *end);
    o.end();
}

fn enum_value(out: &mut Vec<u8>, v: &EnumValueDescriptorProto) {
    let EnumValueDescriptorProto {
        name,
        number,
        options,
    } = v;
    let mut o = Obj::new(out);
    o.opt_string("name", name);
    o.int("number", *number);
    o.msg("options", options, enum_value_options);
    o.end();
}

fn service_desc(out: &mut Vec<u8>, s: &ServiceDescriptorProto) {
    let ServiceDescriptorProto {
        name,
        method,
        options,
    } = s;
    let mut o = Obj::new(out);
    o.opt_string("name", name);
    o.list("method", method, method_desc);
    o.msg("options", options, service_options);
    o.end();
}

fn method_desc(out: &mut Vec<u8>, m: &MethodDescriptorProto) {
    let MethodDescriptorProto {
        name,
        input_type,
        output_type,
        options,
        client_streaming,
        server_streaming,
    } = m;
    let mut o = Obj::new(out);
    o.opt_string("name", name);
    o.opt_string("input_type", input_type);
    o.opt_string("output_type", output_type);
    o.msg("options", options, method_options);
    o.boolean("client_streaming", *client_streaming);
    o.boolean("server_streaming", *server_streaming);
    o.end();
}

// java_generate_equals_and_hash is deprecated in descriptor.proto, and still printed.
#[allow(deprecated)]
fn file_options(out: &mut Vec<u8>, f: &FileOptions) {
    let FileOptions {
        java_package,
        java_outer_classname,
        java_multiple_files,
        java_generate_equals_and_hash,
        java_string_check_utf8,
        optimize_for,
        go_package,
        cc_generic_services,
        java_generic_services,
        py_generic_services,
        php_generic_services,
        deprecated,
        cc_enable_arenas,
        objc_class_prefix,
        csharp_namespace,
        swift_prefix,
        php_class_prefix,
        php_namespace,
        php_metadata_namespace,
        ruby_package,
        uninterpreted_option,
    } = f;
    let mut o = Obj::new(out);
    o.opt_string("java_package", java_package);
    o.opt_string("java_outer_classname", java_outer_classname);
    o.boolean("java_multiple_files", *java_multiple_files);
    o.boolean(
        "java_generate_equals_and_hash",
        *java_generate_equals_and_hash,
    );
    o.boolean("java_string_check_utf8", *java_string_check_utf8);
    o.int("optimize_for", *optimize_for);
    o.opt_string("go_package", go_package);
    o.boolean("cc_generic_services", *cc_generic_services);
    o.boolean("java_generic_services", *java_generic_services);
    o.boolean("py_generic_services", *py_generic_services);
    o.boolean("php_generic_services", *php_generic_services);
    o.boolean("deprecated", *deprecated);
    o.boolean("cc_enable_arenas", *cc_enable_arenas);
    o.opt_string("objc_class_prefix", objc_class_prefix);
    o.opt_string("csharp_namespace", csharp_namespace);
    o.opt_string("swift_prefix", swift_prefix);
    o.opt_string("php_class_prefix", php_class_prefix);
    o.opt_string("php_namespace", php_namespace);
    o.opt_string("php_metadata_namespace", php_metadata_namespace);
    o.opt_string("ruby_package", ruby_package);
    o.list("uninterpreted_option", uninterpreted_option, uninterpreted);
    o.end();
}

fn message_options(out: &mut Vec<u8>, m: &MessageOptions) {
    let MessageOptions {
        message_set_wire_format,
        no_standard_descriptor_accessor,
        deprecated,
        map_entry,
        uninterpreted_option,
    } = m;
    let mut o = Obj::new(out);
    o.boolean("message_set_wire_format", *message_set_wire_format);
    o.boolean(
        "no_standard_descriptor_accessor",
        *no_standard_descriptor_accessor,
    );
    o.boolean("deprecated", *deprecated);
    o.boolean("map_entry", *map_entry);
    o.list("uninterpreted_option", uninterpreted_option, uninterpreted);
    o.end();
}

fn field_options(out: &mut Vec<u8>, f: &FieldOptions) {
    let FieldOptions {
        ctype,
        packed,
        jstype,
        lazy,
        deprecated,
        weak,
        uninterpreted_option,
    } = f;
    let mut o = Obj::new(out);
    o.int("ctype", *ctype);
    o.boolean("packed", *packed);
    o.int("jstype", *jstype);
    o.boolean("lazy", *lazy);
    o.boolean("deprecated", *deprecated);
    o.boolean("weak", *weak);
    o.list("uninterpreted_option", uninterpreted_option, uninterpreted);
    o.end();
}

fn oneof_options(out: &mut Vec<u8>, x: &OneofOptions) {
    let OneofOptions {
        uninterpreted_option,
    } = x;
    let mut o = Obj::new(out);
    o.list("uninterpreted_option", uninterpreted_option, uninterpreted);
    o.end();
}

fn extension_range_options(out: &mut Vec<u8>, x: &ExtensionRangeOptions) {
    let ExtensionRangeOptions {
        uninterpreted_option,
    } = x;
    let mut o = Obj::new(out);
    o.list("uninterpreted_option", uninterpreted_option, uninterpreted);
    o.end();
}

fn enum_options(out: &mut Vec<u8>, x: &EnumOptions) {
    let EnumOptions {
        allow_alias,
        deprecated,
        uninterpreted_option,
    } = x;
    let mut o = Obj::new(out);
    o.boolean("allow_alias", *allow_alias);
    o.boolean("deprecated", *deprecated);
    o.list("uninterpreted_option", uninterpreted_option, uninterpreted);
    o.end();
}

fn enum_value_options(out: &mut Vec<u8>, x: &EnumValueOptions) {
    let EnumValueOptions {
        deprecated,
        uninterpreted_option,
    } = x;
    let mut o = Obj::new(out);
    o.boolean("deprecated", *deprecated);
    o.list("uninterpreted_option", uninterpreted_option, uninterpreted);
    o.end();
}

fn service_options(out: &mut Vec<u8>, x: &ServiceOptions) {
    let ServiceOptions {
        deprecated,
        uninterpreted_option,
    } = x;
    let mut o = Obj::new(out);
    o.boolean("deprecated", *deprecated);
    o.list("uninterpreted_option", uninterpreted_option, uninterpreted);
    o.end();
}

fn method_options(out: &mut Vec<u8>, x: &MethodOptions) {
    let MethodOptions {
        deprecated,
        idempotency_level,
        uninterpreted_option,
    } = x;
    let mut o = Obj::new(out);
    o.boolean("deprecated", *deprecated);
    o.int("idempotency_level", *idempotency_level);
    o.list("uninterpreted_option", uninterpreted_option, uninterpreted);
    o.end();
}

fn uninterpreted(out: &mut Vec<u8>, u: &UninterpretedOption) {
    let UninterpretedOption {
        name,
        identifier_value,
        positive_int_value,
        negative_int_value,
        double_value,
        string_value,
        aggregate_value,
    } = u;
    let mut o = Obj::new(out);
    o.list("name", name, name_part);
    o.opt_string("identifier_value", identifier_value);
    o.uint("positive_int_value", *positive_int_value);
    o.int("negative_int_value", *negative_int_value);
    o.float("double_value", *double_value);
    o.bytes("string_value", string_value);
    o.opt_string("aggregate_value", aggregate_value);
    o.end();
}

/// NamePart's fields are required: always present.
fn name_part(out: &mut Vec<u8>, n: &NamePart) {
    let NamePart {
        name_part,
        is_extension,
    } = n;
    let mut o = Obj::new(out);
    o.string("name_part", name_part);
    o.boolean("is_extension", Some(*is_extension));
    o.end();
}

fn source_info(out: &mut Vec<u8>, s: &SourceCodeInfo) {
    let SourceCodeInfo { location } = s;
    let mut o = Obj::new(out);
    o.list("location", location, source_location);
    o.end();
}

fn source_location(out: &mut Vec<u8>, l: &Location) {
    let Location {
        path,
        span,
        leading_comments,
        trailing_comments,
        leading_detached_comments,
    } = l;
    let mut o = Obj::new(out);
    o.ints("path", path);
    o.ints("span", span);
    o.opt_string("leading_comments", leading_comments);
    o.opt_string("trailing_comments", trailing_comments);
    o.strings("leading_detached_comments", leading_detached_comments);
    o.end();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(f: &FileDescriptorProto) -> String {
        let mut out = Vec::new();
        write_file(&mut out, f).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn go_encoding_json_of_a_descriptor() {
        let f = FileDescriptorProto {
            name: Some("peer/peer.proto".into()),
            package: Some("peer".into()),
            message_type: vec![DescriptorProto {
                name: Some("ChangeNotification".into()),
                field: vec![FieldDescriptorProto {
                    name: Some("tls".into()),
                    number: Some(4),
                    label: Some(1),
                    r#type: Some(11),
                    type_name: Some(".peer.TLS".into()),
                    json_name: Some("tls".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            service: vec![ServiceDescriptorProto {
                name: Some("Peer".into()),
                method: vec![MethodDescriptorProto {
                    name: Some("Notify".into()),
                    input_type: Some(".peer.NotifyRequest".into()),
                    output_type: Some(".peer.ChangeNotification".into()),
                    options: Some(MethodOptions::default()),
                    server_streaming: Some(true),
                    ..Default::default()
                }],
                options: None,
            }],
            options: Some(FileOptions {
                go_package: Some("github.com/cilium/cilium/api/v1/peer".into()),
                ..Default::default()
            }),
            syntax: Some("proto3".into()),
            ..Default::default()
        };
        assert_eq!(
            line(&f),
            concat!(
                r#"{"name":"peer/peer.proto","package":"peer","message_type":[{"name":"ChangeNotification","#,
                r#""field":[{"name":"tls","number":4,"label":1,"type":11,"type_name":".peer.TLS","json_name":"tls"}]}],"#,
                r#""service":[{"name":"Peer","method":[{"name":"Notify","input_type":".peer.NotifyRequest","#,
                r#""output_type":".peer.ChangeNotification","options":{},"server_streaming":true}]}],"#,
                r#""options":{"go_package":"github.com/cilium/cilium/api/v1/peer"},"syntax":"proto3"}"#,
                "\n"
            )
        );
    }

    #[test]
    fn escapes_numbers_and_bytes_as_go() {
        let f = FileDescriptorProto {
            name: Some("a<b>&\u{2028}.proto".into()),
            public_dependency: vec![0, -1],
            options: Some(FileOptions {
                uninterpreted_option: vec![UninterpretedOption {
                    name: vec![NamePart {
                        name_part: "x".into(),
                        is_extension: false,
                    }],
                    positive_int_value: Some(u64::MAX),
                    double_value: Some(1e21),
                    string_value: Some(b"hi!".to_vec()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            line(&f),
            concat!(
                r#"{"name":"a\u003cb\u003e\u0026\u2028.proto","public_dependency":[0,-1],"#,
                r#""options":{"uninterpreted_option":[{"name":[{"name_part":"x","is_extension":false}],"#,
                r#""positive_int_value":18446744073709551615,"double_value":1e+21,"string_value":"aGkh"}]}}"#,
                "\n"
            )
        );
        let float = |v: f64| {
            let mut out = Vec::new();
            go_float(&mut out, v);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(float(0.5), "0.5");
        assert_eq!(float(1e-7), "1e-7");
        assert_eq!(float(-2.5e-10), "-2.5e-10");
        assert_eq!(float(123456789.0), "123456789");
        assert_eq!(float(0.0), "0");
    }
}
