//! JSON output that matches Go Hubble byte for byte: `encoding/json` over protojson with proto
//! names, i.e. compact, HTML-escaped (`<` `>` `&` U+2028 U+2029), timestamps ending in `Z`.
//!
//! Two things differ between the generated pbjson serde impls and Go's protojson, and are fixed
//! here: pbjson-types writes Timestamps as `...+00:00` (Go: `...Z`), and pbjson emits oneof
//! members after the other fields (Go: declaration order, so `flow` comes before `node_name`).

use std::io::{self, Write};

use hubble_api::observer::{GetFlowsResponse, get_flows_response::ResponseTypes};
use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter};

/// A serde_json formatter with Go `encoding/json` string escaping (HTML-safe) that also turns
/// the `+00:00` suffix of Timestamp values (keys `time`, `first`, `last`) into `Z`.
#[derive(Default)]
pub struct GoJsonFormatter {
    key: KeyBuf,
    in_key: bool,
    /// The value about to be written belongs to a timestamp key.
    ts_value: bool,
    /// Buffering the fragments of a timestamp string.
    buffering: bool,
    ts: Vec<u8>,
}

#[derive(Default)]
struct KeyBuf {
    bytes: [u8; 8],
    len: usize,
    overflow: bool,
}

impl KeyBuf {
    fn clear(&mut self) {
        self.len = 0;
        self.overflow = false;
    }
    fn push(&mut self, s: &[u8]) {
        if self.len + s.len() > self.bytes.len() {
            self.overflow = true;
        } else {
            self.bytes[self.len..self.len + s.len()].copy_from_slice(s);
            self.len += s.len();
        }
    }
    fn is_timestamp_key(&self) -> bool {
        !self.overflow && matches!(&self.bytes[..self.len], b"time" | b"first" | b"last")
    }
}

/// Writes `s` with Go's HTML-safe escaping of `<`, `>`, `&`, U+2028 and U+2029.
fn write_html_escaped<W: ?Sized + Write>(w: &mut W, s: &[u8]) -> io::Result<()> {
    let mut start = 0;
    let mut i = 0;
    while i < s.len() {
        let esc: &[u8] = match s[i] {
            b'<' => b"\\u003c",
            b'>' => b"\\u003e",
            b'&' => b"\\u0026",
            0xe2 if s.get(i + 1) == Some(&0x80) && s.get(i + 2) == Some(&0xa8) => b"\\u2028",
            0xe2 if s.get(i + 1) == Some(&0x80) && s.get(i + 2) == Some(&0xa9) => b"\\u2029",
            _ => {
                i += 1;
                continue;
            }
        };
        w.write_all(&s[start..i])?;
        w.write_all(esc)?;
        i += if esc[2] == b'2' { 3 } else { 1 };
        start = i;
    }
    w.write_all(&s[start..])
}

impl GoJsonFormatter {
    fn flush_ts<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.buffering = false;
        let res = w.write_all(&self.ts);
        self.ts.clear();
        res
    }
}

impl Formatter for GoJsonFormatter {
    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.in_key = true;
        self.ts_value = false;
        self.key.clear();
        if first { Ok(()) } else { w.write_all(b",") }
    }

    fn end_object_key<W: ?Sized + Write>(&mut self, _w: &mut W) -> io::Result<()> {
        self.in_key = false;
        self.ts_value = self.key.is_timestamp_key();
        Ok(())
    }

    fn end_object_value<W: ?Sized + Write>(&mut self, _w: &mut W) -> io::Result<()> {
        self.ts_value = false;
        Ok(())
    }

    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.ts_value = false;
        w.write_all(b"{")
    }

    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.ts_value = false;
        w.write_all(b"[")
    }

    fn begin_string<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        if self.ts_value && !self.in_key {
            self.buffering = true;
            self.ts.clear();
        }
        w.write_all(b"\"")
    }

    fn end_string<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        if self.buffering {
            self.buffering = false;
            self.ts_value = false;
            if let Some(stem) = self.ts.strip_suffix(b"+00:00") {
                w.write_all(stem)?;
                w.write_all(b"Z")?;
            } else {
                w.write_all(&self.ts)?;
            }
            self.ts.clear();
        }
        w.write_all(b"\"")
    }

    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        if self.in_key {
            self.key.push(fragment.as_bytes());
        }
        if self.buffering {
            self.ts.extend_from_slice(fragment.as_bytes());
            return Ok(());
        }
        write_html_escaped(w, fragment.as_bytes())
    }

    fn write_char_escape<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        escape: CharEscape,
    ) -> io::Result<()> {
        if self.buffering {
            self.flush_ts(w)?;
        }
        if self.in_key {
            self.key.overflow = true;
        }
        // Same escapes as Go's protojson: \" \\ \b \f \n \r \t, else \u00XX in lower-case hex.
        let s: &[u8] = match escape {
            CharEscape::Quote => b"\\\"",
            CharEscape::ReverseSolidus => b"\\\\",
            CharEscape::Solidus => b"\\/",
            CharEscape::Backspace => b"\\b",
            CharEscape::FormFeed => b"\\f",
            CharEscape::LineFeed => b"\\n",
            CharEscape::CarriageReturn => b"\\r",
            CharEscape::Tab => b"\\t",
            CharEscape::AsciiControl(byte) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let buf = [
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(byte >> 4) as usize],
                    HEX[(byte & 0xf) as usize],
                ];
                return w.write_all(&buf);
            }
        };
        w.write_all(s)
    }
}

fn to_io(e: serde_json::Error) -> io::Error {
    io::Error::other(e)
}

/// Serializes any value with Go's encoding (no trailing newline).
pub fn write_go_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> io::Result<()> {
    let mut ser = serde_json::Serializer::with_formatter(out, GoJsonFormatter::default());
    value.serialize(&mut ser).map_err(to_io)
}

/// Appends a GetFlowsResponse the way Go Hubble's `-o jsonpb` prints it (with the newline).
/// Uses the encoder generated from the .proto files; `write_get_flows_response_serde` is the same through
/// the generated serde impls.
pub fn write_get_flows_response(out: &mut Vec<u8>, resp: &GetFlowsResponse) -> io::Result<()> {
    super::protojson::write_get_flows_response(out, resp)
}

/// [`write_get_flows_response`] through the pbjson serde impls (the reference, slower).
pub fn write_get_flows_response_serde(
    out: &mut Vec<u8>,
    resp: &GetFlowsResponse,
) -> io::Result<()> {
    out.push(b'{');
    let mut first = true;
    let mut field = |out: &mut Vec<u8>, name: &[u8]| {
        if !first {
            out.push(b',');
        }
        first = false;
        out.push(b'"');
        out.extend_from_slice(name);
        out.extend_from_slice(b"\":");
    };
    match &resp.response_types {
        Some(ResponseTypes::Flow(f)) => {
            field(out, b"flow");
            write_go_json(out, f)?;
        }
        Some(ResponseTypes::NodeStatus(s)) => {
            field(out, b"node_status");
            write_go_json(out, s)?;
        }
        Some(ResponseTypes::LostEvents(l)) => {
            field(out, b"lost_events");
            write_go_json(out, l)?;
        }
        None => {}
    }
    if !resp.node_name.is_empty() {
        field(out, b"node_name");
        write_go_json(out, resp.node_name.as_str())?;
    }
    if let Some(t) = &resp.time {
        field(out, b"time");
        // A bare Timestamp has no key for the formatter to recognise: fix its suffix here.
        let start = out.len();
        write_go_json(out, t)?;
        if out[start..].ends_with(b"+00:00\"") {
            let n = out.len();
            out.truncate(n - 7);
            out.extend_from_slice(b"Z\"");
        }
    }
    out.extend_from_slice(b"}\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubble_api::flow::{Flow, LostEvent};
    use hubble_api::pbjson_types::{BoolValue, Int32Value, Timestamp};

    #[test]
    #[allow(deprecated)] // Flow.Summary
    fn html_escaping_and_timestamps() {
        let resp = GetFlowsResponse {
            node_name: "a<b>&c\u{2028}\u{2029}\x1b\"".into(),
            time: Some(Timestamp {
                seconds: 1_692_619_938,
                nanos: 510_000_000,
            }),
            response_types: Some(ResponseTypes::Flow(Flow {
                time: Some(Timestamp {
                    seconds: 1_692_619_938,
                    nanos: 0,
                }),
                is_reply: Some(BoolValue { value: false }),
                socket_cookie: 42,
                summary: "+00:00".into(),
                ..Default::default()
            })),
        };
        let mut out = Vec::new();
        write_get_flows_response_serde(&mut out, &resp).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"flow\":{\"time\":\"2023-08-21T12:12:18Z\",\"is_reply\":false,\"socket_cookie\":\"42\",\
             \"Summary\":\"+00:00\"},\"node_name\":\"a\\u003cb\\u003e\\u0026c\\u2028\\u2029\\u001b\\\"\",\
             \"time\":\"2023-08-21T12:12:18.510Z\"}\n"
        );
    }

    #[test]
    fn lost_event_timestamps() {
        let resp = GetFlowsResponse {
            response_types: Some(ResponseTypes::LostEvents(LostEvent {
                source: 1,
                num_events_lost: 3,
                cpu: Some(Int32Value { value: 0 }),
                first: Some(Timestamp {
                    seconds: 0,
                    nanos: 1000,
                }),
                last: Some(Timestamp {
                    seconds: 1,
                    nanos: 123_456_789,
                }),
            })),
            ..Default::default()
        };
        let mut out = Vec::new();
        write_get_flows_response_serde(&mut out, &resp).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"lost_events\":{\"source\":\"PERF_EVENT_RING_BUFFER\",\"num_events_lost\":\"3\",\"cpu\":0,\
             \"first\":\"1970-01-01T00:00:00.000001Z\",\"last\":\"1970-01-01T00:00:01.123456789Z\"}}\n"
        );
    }
}
