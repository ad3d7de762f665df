//! Ring entries: each response kept only as its protobuf encoding, with the flow's source and
//! destination endpoints shared between entries. A node sees few distinct endpoints, and
//! their labels, names and workloads are about half of a flow's bytes.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use hubble_api::observer::GetFlowsResponse;
use hubble_api::observer::get_flows_response::ResponseTypes;
use hubble_api::transcode::fields;
use pbjson_types::Timestamp;

/// Flow.source and Flow.destination.
const SOURCE: u32 = 8;
const DESTINATION: u32 = 9;

/// One stored response. Its encoding is `0x0a len(flow) A E B T` where the flow's payload is
/// `A E B`, `E` the encoded source and destination fields (shared) and `T` the response's
/// other fields; `own` holds `A B T`. Responses of another shape are kept whole in `own`.
pub struct Entry {
    own: Box<[u8]>,
    /// (len A, len A B) when the endpoints are apart.
    split: Option<(u32, u32)>,
    endpoints: [Option<Arc<[u8]>>; 2],
    /// The response's time.
    pub(crate) time: (i64, i32),
    /// The flow's own time, for flows.
    pub(crate) flow_time: Option<(i64, i32)>,
}

impl Entry {
    /// Encodes `resp`, sharing its endpoints through `interner`.
    pub fn new(resp: &GetFlowsResponse, interner: &Interner) -> Self {
        use prost::Message;
        let encoded = resp.encode_to_vec();
        let (own, split, endpoints) = match split(&encoded) {
            Some(s) => {
                let mut own = Vec::with_capacity(encoded.len() - s.endpoints.len());
                own.extend_from_slice(s.a);
                own.extend_from_slice(s.b);
                own.extend_from_slice(s.tail);
                let mut shared = [None, None];
                for (slot, raw) in shared.iter_mut().zip([s.source, s.destination]) {
                    *slot = raw.map(|r| interner.get(r));
                }
                let cut = s.a.len() as u32;
                let flow_end = cut + s.b.len() as u32;
                (own.into_boxed_slice(), Some((cut, flow_end)), shared)
            }
            None => (encoded.into_boxed_slice(), None, [None, None]),
        };
        Entry {
            own,
            split,
            endpoints,
            time: ts_key(resp.time.as_ref()),
            flow_time: match &resp.response_types {
                Some(ResponseTypes::Flow(f)) => Some(ts_key(f.time.as_ref())),
                _ => None,
            },
        }
    }

    /// The response encoded as protobuf (assembled for each call).
    pub fn encoded(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write_encoded(&mut out);
        Bytes::from(out)
    }

    /// Length of [`Entry::encoded`].
    pub fn encoded_len(&self) -> usize {
        match self.split {
            None => self.own.len(),
            Some((_, flow_end)) => {
                let flow_len = self.flow_len(flow_end as usize);
                self.own.len() - flow_end as usize + 1 + varint_len(flow_len as u64) + flow_len
            }
        }
    }

    fn flow_len(&self, flow_end: usize) -> usize {
        flow_end
            + self
                .endpoints
                .iter()
                .flatten()
                .map(|e| e.len())
                .sum::<usize>()
    }

    /// Writes the response's encoding into `out` piece by piece (no assembled copy).
    pub fn write_encoded(&self, out: &mut impl bytes::BufMut) {
        let Some((cut, flow_end)) = self.split else {
            out.put_slice(&self.own);
            return;
        };
        let (cut, flow_end) = (cut as usize, flow_end as usize);
        let mut head = [0u8; 11];
        head[0] = 0x0a;
        let mut n = 1;
        let mut v = self.flow_len(flow_end) as u64;
        while v >= 0x80 {
            head[n] = v as u8 | 0x80;
            v >>= 7;
            n += 1;
        }
        head[n] = v as u8;
        out.put_slice(&head[..=n]);
        out.put_slice(&self.own[..cut]);
        for e in self.endpoints.iter().flatten() {
            out.put_slice(e);
        }
        out.put_slice(&self.own[cut..]);
    }

    /// True when the entry holds a flow (not a lost event).
    pub fn is_flow(&self) -> bool {
        self.flow_time.is_some()
    }

    /// The response, decoded. Entries are our own encodings, so this cannot fail short of a
    /// bug; an empty response then stands in (and is logged).
    pub fn decode(&self) -> GetFlowsResponse {
        use prost::Message;
        GetFlowsResponse::decode(self.encoded()).unwrap_or_else(|e| {
            eprintln!("hubble-agent: observer ring entry does not decode: {e}");
            GetFlowsResponse::default()
        })
    }

    /// Bytes held by this entry alone (not counting shared endpoints).
    #[cfg(test)]
    fn own_len(&self) -> usize {
        self.own.len()
    }
}

/// Where an encoded response's endpoints are.
struct Split<'a> {
    a: &'a [u8],
    endpoints: &'a [u8],
    source: Option<&'a [u8]>,
    destination: Option<&'a [u8]>,
    b: &'a [u8],
    tail: &'a [u8],
}

/// Finds `A E B T` in an encoded response: the flow is its first field, holding each
/// endpoint at most once, source right before destination when both are there.
fn split(encoded: &[u8]) -> Option<Split<'_>> {
    let mut top = fields(encoded);
    let flow = top.next()?.ok()?;
    if flow.number != 1 || flow.wire_type != 2 {
        return None;
    }
    let tail = &encoded[flow.raw.len()..];
    let payload = flow.payload;
    let base = payload.as_ptr() as usize;
    let (mut source, mut destination) = (None, None);
    let (mut start, mut end) = (usize::MAX, 0);
    for f in fields(payload) {
        let f = f.ok()?;
        let slot = match f.number {
            SOURCE => &mut source,
            DESTINATION => &mut destination,
            _ => continue,
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(f.raw);
        let at = f.raw.as_ptr() as usize - base;
        if start != usize::MAX && at != end {
            return None;
        }
        start = start.min(at);
        end = at + f.raw.len();
    }
    if start == usize::MAX {
        return None;
    }
    Some(Split {
        a: &payload[..start],
        endpoints: &payload[start..end],
        source,
        destination,
        b: &payload[end..],
        tail,
    })
}

/// The endpoints shared by ring entries: one copy of each distinct encoding.
#[derive(Default)]
pub struct Interner {
    set: Mutex<HashSet<Arc<[u8]>>>,
}

impl Interner {
    /// The shared copy of `raw`.
    pub fn get(&self, raw: &[u8]) -> Arc<[u8]> {
        let mut set = self.set.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(a) = set.get(raw) {
            return a.clone();
        }
        let a: Arc<[u8]> = Arc::from(raw);
        set.insert(a.clone());
        a
    }

    /// Forgets endpoints no entry holds any more.
    pub fn prune(&self) {
        let mut set = self.set.lock().unwrap_or_else(PoisonError::into_inner);
        set.retain(|a| Arc::strong_count(a) > 1);
    }

    /// Distinct endpoints held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

pub(crate) fn ts_key(t: Option<&Timestamp>) -> (i64, i32) {
    t.map_or((0, 0), |t| (t.seconds, t.nanos))
}

/// Bytes of `v` as a protobuf varint.
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn corpus() -> Vec<GetFlowsResponse> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/flows/demo.jsonl");
        hubble::source::read_responses(std::path::Path::new(path)).unwrap()
    }

    #[test]
    fn entries_give_back_the_exact_encoding_and_share_endpoints() {
        let interner = Interner::default();
        let responses = corpus();
        let entries: Vec<Entry> = responses.iter().map(|r| Entry::new(r, &interner)).collect();
        let (mut whole, mut own) = (0, 0);
        for (r, e) in responses.iter().zip(&entries) {
            let want = r.encode_to_vec();
            assert_eq!(e.encoded().to_vec(), want);
            assert_eq!(e.encoded_len(), want.len());
            assert_eq!(&e.decode(), r);
            whole += want.len();
            own += e.own_len();
        }
        assert!(entries.iter().any(|e| e.split.is_some()));
        assert!(
            entries.iter().any(|e| e.split.is_none()),
            "lost events are whole"
        );
        assert!(interner.len() < responses.len(), "endpoints are shared");
        assert!(
            own * 10 < whole * 7,
            "{own} of {whole} bytes kept per entry"
        );
        drop(entries);
        interner.prune();
        assert_eq!(interner.len(), 0);
    }

    #[test]
    fn odd_shapes_are_kept_whole() {
        use hubble_api::transcode::put_len_field;
        let interner = Interner::default();
        // Source and destination apart, then twice the same endpoint: both kept whole.
        let mut flow = Vec::new();
        put_len_field(&mut flow, SOURCE, b"");
        put_len_field(&mut flow, 5, b"");
        put_len_field(&mut flow, DESTINATION, b"");
        let mut twice = Vec::new();
        put_len_field(&mut twice, SOURCE, b"");
        put_len_field(&mut twice, SOURCE, b"");
        for f in [flow, twice] {
            let mut r = Vec::new();
            put_len_field(&mut r, 1, &f);
            assert!(split(&r).is_none());
        }
        // Only a destination: shared.
        let r = GetFlowsResponse {
            response_types: Some(ResponseTypes::Flow(hubble_api::flow::Flow {
                destination: Some(Default::default()),
                node_name: "n".into(),
                ..Default::default()
            })),
            node_name: "n".into(),
            ..Default::default()
        };
        let e = Entry::new(&r, &interner);
        assert!(e.split.is_some());
        assert_eq!(e.encoded().to_vec(), r.encode_to_vec());
    }
}
