//! Printers for `hubble observe agent-events`, `hubble observe debug-events` and
//! `hubble status`, following Go Hubble v1.19.4's printer (quirks included).

use std::io::{self, Write};

use hubble_api::flow::{
    AgentEvent, AgentEventType, DebugEvent, DebugEventType, Endpoint, agent_event::Notification,
};
use hubble_api::observer::{GetAgentEventsResponse, GetDebugEventsResponse, ServerStatusResponse};
use hubble_api::pbjson_types::{Int32Value, UInt32Value};

use super::fields::{push_enum, push_int, push_str};
use super::{OutputFormat, Printer, TimeFormat, time};
use hubble_api::json::ProtoJson;

impl<W: Write> Printer<W> {
    fn push_node_prefix(&mut self, node: &str) {
        if self.opts.node_name {
            push_str(&mut self.scratch, " [");
            push_str(&mut self.scratch, node);
            self.scratch.push(b']');
        }
    }

    fn write_json_line<T: ProtoJson>(&mut self, v: &T) -> io::Result<()> {
        self.scratch.clear();
        let res = v
            .write_json(&mut self.scratch)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
            .and_then(|()| {
                self.scratch.push(b'\n');
                self.out.write_all(&self.scratch)
            });
        self.scratch.clear();
        res
    }

    /// Prints one agent event (`hubble observe agent-events`).
    pub fn write_agent_event(&mut self, r: &GetAgentEventsResponse) -> io::Result<()> {
        let Some(e) = r.agent_event.as_ref() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not an agent event",
            ));
        };
        self.scratch.clear();
        let tf = self.opts.time_format;
        match self.opts.format {
            OutputFormat::Json | OutputFormat::JsonPb => return self.write_json_line(r),
            OutputFormat::Compact => {
                time::push_timestamp(&mut self.scratch, tf, r.time.as_ref());
                self.push_node_prefix(&r.node_name);
                push_str(&mut self.scratch, ": ");
                push_agent_event_type(&mut self.scratch, e);
                push_str(&mut self.scratch, " (");
                push_agent_event_details(&mut self.scratch, e, tf);
                push_str(&mut self.scratch, ")\n");
            }
            OutputFormat::Dict => {
                // Go prints this separator without a newline; kept for byte equality.
                if self.line != 0 {
                    push_str(&mut self.scratch, super::DICT_SEPARATOR);
                }
                push_str(&mut self.scratch, "  TIMESTAMP: ");
                time::push_timestamp(&mut self.scratch, tf, r.time.as_ref());
                self.scratch.push(b'\n');
                if self.opts.node_name {
                    push_str(&mut self.scratch, "       NODE: ");
                    push_str(&mut self.scratch, &r.node_name);
                    self.scratch.push(b'\n');
                }
                push_str(&mut self.scratch, "       TYPE: ");
                push_agent_event_type(&mut self.scratch, e);
                push_str(&mut self.scratch, "\n    DETAILS: ");
                push_agent_event_details(&mut self.scratch, e, tf);
                self.scratch.push(b'\n');
            }
            OutputFormat::Table => {
                if self.line == 0 {
                    push_str(&mut self.scratch, "TIMESTAMP\t");
                    if self.opts.node_name {
                        push_str(&mut self.scratch, "NODE\t");
                    }
                    push_str(&mut self.scratch, "TYPE\tDETAILS\n");
                }
                time::push_timestamp(&mut self.scratch, tf, r.time.as_ref());
                self.scratch.push(b'\t');
                if self.opts.node_name {
                    push_str(&mut self.scratch, &r.node_name);
                    self.scratch.push(b'\t');
                }
                push_agent_event_type(&mut self.scratch, e);
                self.scratch.push(b'\t');
                push_agent_event_details(&mut self.scratch, e, tf);
                self.scratch.push(b'\n');
            }
        }
        self.emit()?;
        self.line += 1;
        Ok(())
    }

    /// Prints one debug event (`hubble observe debug-events`).
    pub fn write_debug_event(&mut self, r: &GetDebugEventsResponse) -> io::Result<()> {
        let Some(e) = r.debug_event.as_ref() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a debug event",
            ));
        };
        self.scratch.clear();
        let tf = self.opts.time_format;
        let b = &mut self.scratch;
        match self.opts.format {
            OutputFormat::Json | OutputFormat::JsonPb => return self.write_json_line(r),
            OutputFormat::Compact => {
                time::push_timestamp(b, tf, r.time.as_ref());
                self.push_node_prefix(&r.node_name);
                let b = &mut self.scratch;
                push_str(b, ": ");
                push_endpoint_short(b, e.source.as_ref());
                b.push(b' ');
                push_debug_event_type(b, e);
                push_str(b, " MARK: ");
                push_hex_u32(b, e.hash.as_ref());
                push_str(b, " CPU: ");
                push_cpu(b, e.cpu.as_ref());
                push_str(b, " (");
                push_str(b, &e.message);
                push_str(b, ")\n");
            }
            OutputFormat::Dict => {
                // Go prints this separator without a newline; kept for byte equality.
                if self.line != 0 {
                    push_str(b, super::DICT_SEPARATOR);
                }
                push_str(b, "  TIMESTAMP: ");
                time::push_timestamp(b, tf, r.time.as_ref());
                b.push(b'\n');
                if self.opts.node_name {
                    push_str(b, "       NODE: ");
                    push_str(b, &r.node_name);
                    b.push(b'\n');
                }
                push_str(b, "       TYPE: ");
                push_debug_event_type(b, e);
                push_str(b, "\n       FROM: ");
                push_endpoint_short(b, e.source.as_ref());
                push_str(b, "\n       MARK: ");
                push_hex_u32(b, e.hash.as_ref());
                push_str(b, "\n        CPU: ");
                push_cpu(b, e.cpu.as_ref());
                push_str(b, "\n    MESSAGE: ");
                push_str(b, &e.message);
                b.push(b'\n');
            }
            OutputFormat::Table => {
                if self.line == 0 {
                    push_str(b, "TIMESTAMP\t");
                    if self.opts.node_name {
                        push_str(b, "NODE\t");
                    }
                    push_str(b, "FROM\t\tTYPE\tCPU/MARK\tMESSAGE\n");
                }
                time::push_timestamp(b, tf, r.time.as_ref());
                b.push(b'\t');
                if self.opts.node_name {
                    push_str(b, &r.node_name);
                    b.push(b'\t');
                }
                push_endpoint_short(b, e.source.as_ref());
                push_str(b, "\t\t");
                push_debug_event_type(b, e);
                b.push(b'\t');
                push_cpu(b, e.cpu.as_ref());
                b.push(b' ');
                push_hex_u32(b, e.hash.as_ref());
                b.push(b'\t');
                push_str(b, &e.message);
                b.push(b'\n');
            }
        }
        self.emit()?;
        self.line += 1;
        Ok(())
    }

    /// Prints a ServerStatusResponse (`hubble status` after its health check line).
    pub fn write_server_status(&mut self, res: &ServerStatusResponse) -> io::Result<()> {
        let connected = res.num_connected_nodes.as_ref().map(|v| v.value);
        let unavailable = res.num_unavailable_nodes.as_ref().map(|v| v.value);
        let na = |v: Option<u32>| v.map_or_else(|| "N/A".to_string(), |n| n.to_string());
        let mut flows_per_sec = if res.flows_rate > 0.0 {
            format!("{:.2}", res.flows_rate)
        } else {
            "N/A".to_string()
        };
        self.scratch.clear();
        let b = &mut self.scratch;
        match self.opts.format {
            OutputFormat::Json | OutputFormat::JsonPb => return self.write_json_line(res),
            OutputFormat::Table => {
                push_str(
                    b,
                    "NUM FLOWS\tMAX FLOWS\tSEEN FLOWS\tFLOWS PER SECOND\tUPTIME\tNUM CONNECTED NODES\tNUM UNAVAILABLE NODES\tVERSION\n",
                );
                let row = [
                    uint64_grouping(res.num_flows),
                    uint64_grouping(res.max_flows),
                    uint64_grouping(res.seen_flows),
                    flows_per_sec,
                    format_duration_ns(res.uptime_ns),
                    na(connected),
                    na(unavailable),
                ];
                for c in &row {
                    push_str(b, c);
                    b.push(b'\t');
                }
                push_str(b, &res.version);
                b.push(b'\n');
            }
            OutputFormat::Dict => {
                for (k, v) in [
                    ("          NUM FLOWS: ", uint64_grouping(res.num_flows)),
                    ("          MAX FLOWS: ", uint64_grouping(res.max_flows)),
                    ("         SEEN FLOWS: ", uint64_grouping(res.seen_flows)),
                    ("   FLOWS PER SECOND: ", flows_per_sec),
                    ("             UPTIME: ", format_duration_ns(res.uptime_ns)),
                    ("NUM CONNECTED NODES: ", na(connected)),
                    (" NUM UNAVAIL. NODES: ", na(unavailable)),
                    ("            VERSION: ", res.version.clone()),
                ] {
                    push_str(b, k);
                    push_str(b, &v);
                    b.push(b'\n');
                }
            }
            OutputFormat::Compact => {
                push_str(b, "Current/Max Flows: ");
                push_str(b, &uint64_grouping(res.num_flows));
                b.push(b'/');
                push_str(b, &uint64_grouping(res.max_flows));
                if res.max_flows > 0 {
                    let pct = res.num_flows as f64 / res.max_flows as f64 * 100.0;
                    push_str(b, &format!(" ({pct:.2}%)"));
                }
                b.push(b'\n');
                // Go's time.Duration(ns).Seconds() (int64 nanoseconds).
                let d = res.uptime_ns as i64;
                let uptime_secs = (d / 1_000_000_000) as f64 + (d % 1_000_000_000) as f64 / 1e9;
                if flows_per_sec == "N/A" && uptime_secs > 0.0 {
                    flows_per_sec = format!("{:.2}", res.seen_flows as f64 / uptime_secs);
                }
                push_str(b, "Flows/s: ");
                push_str(b, &flows_per_sec);
                b.push(b'\n');
                if let Some(c) = connected {
                    push_str(b, "Connected Nodes: ");
                    push_int(b, c);
                    if let Some(u) = unavailable {
                        b.push(b'/');
                        push_int(b, u.wrapping_add(c));
                    }
                    b.push(b'\n');
                }
                if let Some(u) = unavailable.filter(|&u| u > 0) {
                    push_str(b, "Unavailable Nodes: ");
                    push_int(b, u);
                    b.push(b'\n');
                    if !res.unavailable_nodes.is_empty() {
                        let mut names = res.unavailable_nodes.clone();
                        names.sort();
                        if u as usize > names.len() {
                            names.push(format!("and {} more...", u as usize - names.len()));
                        }
                        for n in &names {
                            push_str(b, "  - ");
                            push_str(b, n);
                            b.push(b'\n');
                        }
                    }
                }
            }
        }
        // Like Go: through the terminal escaper, and the tabwriter for tables (laid out on finish).
        self.emit()
    }
}

fn push_agent_event_type(b: &mut Vec<u8>, e: &AgentEvent) {
    push_enum(
        b,
        AgentEventType::try_from(e.r#type)
            .ok()
            .map(|t| t.as_str_name()),
        e.r#type,
    );
}

fn push_debug_event_type(b: &mut Vec<u8>, e: &DebugEvent) {
    push_enum(
        b,
        DebugEventType::try_from(e.r#type)
            .ok()
            .map(|t| t.as_str_name()),
        e.r#type,
    );
}

fn push_labels(b: &mut Vec<u8>, labels: &[String]) {
    b.push(b'[');
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        push_str(b, l);
    }
    b.push(b']');
}

/// Go's `net.JoinHostPort(ip, port)`.
fn push_host_port(b: &mut Vec<u8>, ip: &str, port: u32) {
    if ip.contains(':') {
        b.push(b'[');
        push_str(b, ip);
        b.push(b']');
    } else {
        push_str(b, ip);
    }
    b.push(b':');
    push_int(b, port);
}

/// The DETAILS of an agent event (Hubble's `getAgentEventDetails`).
#[allow(deprecated)] // service notifications are deprecated but still printed.
fn push_agent_event_details(b: &mut Vec<u8>, e: &AgentEvent, tf: TimeFormat) {
    use AgentEventType as T;
    let t = AgentEventType::try_from(e.r#type).ok();
    match (t, &e.notification) {
        (Some(T::AgentEventUnknown), Some(Notification::Unknown(u))) => {
            push_str(b, "type: ");
            push_str(b, &u.r#type);
            push_str(b, ", notification: ");
            push_str(b, &u.notification);
        }
        (Some(T::AgentStarted), Some(Notification::AgentStart(a))) => {
            push_str(b, "start time: ");
            time::push_timestamp(b, tf, a.time.as_ref());
        }
        (Some(T::PolicyUpdated | T::PolicyDeleted), Some(Notification::PolicyUpdate(p))) => {
            push_str(b, "labels: ");
            push_labels(b, &p.labels);
            push_str(b, ", revision: ");
            push_int(b, p.revision);
            push_str(b, ", count: ");
            push_int(b, p.rule_count);
        }
        (
            Some(T::EndpointRegenerateSuccess | T::EndpointRegenerateFailure),
            Some(Notification::EndpointRegenerate(r)),
        ) => {
            push_str(b, "id: ");
            push_int(b, r.id);
            push_str(b, ", labels: ");
            push_labels(b, &r.labels);
            if !r.error.is_empty() {
                push_str(b, ", error: ");
                push_str(b, &r.error);
            }
        }
        (Some(T::EndpointCreated | T::EndpointDeleted), Some(Notification::EndpointUpdate(ep))) => {
            push_str(b, "id: ");
            push_int(b, ep.id);
            if !ep.namespace.is_empty() {
                push_str(b, ", namespace: ");
                push_str(b, &ep.namespace);
            }
            if !ep.pod_name.is_empty() {
                push_str(b, ", pod name: ");
                push_str(b, &ep.pod_name);
            }
        }
        (Some(T::IpcacheUpserted | T::IpcacheDeleted), Some(Notification::IpcacheUpdate(i))) => {
            push_str(b, "cidr: ");
            push_str(b, &i.cidr);
            push_str(b, ", identity: ");
            push_int(b, i.identity);
            if let Some(old) = &i.old_identity {
                push_str(b, ", old identity: ");
                push_int(b, old.value);
            }
            if !i.host_ip.is_empty() {
                push_str(b, ", host ip: ");
                push_str(b, &i.host_ip);
            }
            if !i.old_host_ip.is_empty() {
                push_str(b, ", old host ip: ");
                push_str(b, &i.old_host_ip);
            }
            push_str(b, ", encrypt key: ");
            push_int(b, i.encrypt_key);
        }
        (Some(T::ServiceUpserted), Some(Notification::ServiceUpsert(s))) => {
            push_str(b, "id: ");
            push_int(b, s.id);
            if let Some(fe) = &s.frontend_address {
                push_str(b, ", frontend: ");
                push_host_port(b, &fe.ip, fe.port);
            }
            if !s.backend_addresses.is_empty() {
                push_str(b, ", backends: [");
                for (n, a) in s.backend_addresses.iter().enumerate() {
                    if n > 0 {
                        b.push(b',');
                    }
                    push_host_port(b, &a.ip, a.port);
                }
                b.push(b']');
            }
            for (k, v) in [
                (", type: ", &s.r#type),
                (", traffic policy: ", &s.traffic_policy),
                (", namespace: ", &s.namespace),
                (", name: ", &s.name),
            ] {
                if !v.is_empty() {
                    push_str(b, k);
                    push_str(b, v);
                }
            }
        }
        (Some(T::ServiceDeleted), Some(Notification::ServiceDelete(s))) => {
            push_str(b, "id: ");
            push_int(b, s.id);
        }
        _ => push_str(b, "UNKNOWN"),
    }
}

/// `ns/pod (ID: n)`, `reserved:x (ID: n)` or `ID: n`; `N/A` without an endpoint.
fn push_endpoint_short(b: &mut Vec<u8>, ep: Option<&Endpoint>) {
    let Some(ep) = ep else {
        push_str(b, "N/A");
        return;
    };
    let id = |b: &mut Vec<u8>| {
        push_str(b, "ID: ");
        push_int(b, ep.id);
    };
    if !ep.namespace.is_empty() && !ep.pod_name.is_empty() {
        push_str(b, &ep.namespace);
        b.push(b'/');
        push_str(b, &ep.pod_name);
        push_str(b, " (");
        id(b);
        b.push(b')');
    } else if let [l] = ep.labels.as_slice()
        && l.starts_with("reserved:")
    {
        push_str(b, l);
        push_str(b, " (");
        id(b);
        b.push(b')');
    } else {
        id(b);
    }
}

fn push_hex_u32(b: &mut Vec<u8>, v: Option<&UInt32Value>) {
    match v {
        None => push_str(b, "N/A"),
        Some(v) => push_str(b, &format!("0x{:x}", v.value)),
    }
}

fn push_cpu(b: &mut Vec<u8>, v: Option<&Int32Value>) {
    match v {
        None => push_str(b, "N/A"),
        Some(v) => push_str(b, &format!("{:02}", v.value)),
    }
}

/// `1,234,567` (Hubble's `uint64Grouping`).
fn uint64_grouping(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Go's `time.Duration(ns).String()` (`1h2m3.5s`, `1.5ms`, `0s`), or `<n>ns` past MaxInt64.
pub(crate) fn format_duration_ns(ns: u64) -> String {
    if ns > i64::MAX as u64 {
        return format!("{ns}ns");
    }
    if ns == 0 {
        return "0s".to_string();
    }
    /// `v` with `prec` fraction digits, trailing zeros (and a bare dot) removed.
    fn frac(v: u64, prec: u32) -> String {
        let unit = 10u64.pow(prec);
        let (int, mut f) = (v / unit, v % unit);
        if f == 0 {
            return int.to_string();
        }
        let mut digits = prec as usize;
        while f.is_multiple_of(10) {
            f /= 10;
            digits -= 1;
        }
        format!("{int}.{f:0digits$}")
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", frac(ns, 3));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", frac(ns, 6));
    }
    let secs_total = ns / 1_000_000_000;
    let sub = ns % 1_000_000_000;
    let (h, m, s) = (secs_total / 3600, secs_total / 60 % 60, secs_total % 60);
    let secs = frac(s * 1_000_000_000 + sub, 9);
    match (h, m) {
        (0, 0) => format!("{secs}s"),
        (0, m) => format!("{m}m{secs}s"),
        (h, m) => format!("{h}h{m}m{secs}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_and_durations() {
        assert_eq!(uint64_grouping(0), "0");
        assert_eq!(uint64_grouping(999), "999");
        assert_eq!(uint64_grouping(4095), "4,095");
        assert_eq!(uint64_grouping(1_234_567), "1,234,567");
        assert_eq!(format_duration_ns(0), "0s");
        assert_eq!(format_duration_ns(999), "999ns");
        assert_eq!(format_duration_ns(1_500), "1.5µs");
        assert_eq!(format_duration_ns(1_500_000), "1.5ms");
        assert_eq!(format_duration_ns(3_000_000_000), "3s");
        assert_eq!(format_duration_ns(61_500_000_000), "1m1.5s");
        assert_eq!(format_duration_ns(3_723_000_000_001), "1h2m3.000000001s");
        assert_eq!(format_duration_ns(7_200_000_000_000), "2h0m0s");
        assert_eq!(format_duration_ns(u64::MAX), "18446744073709551615ns");
    }
}
