//! Recordings of raw perf samples: what `hubble-agent record` writes and `replay` reads.
//! Format (little endian): magic `HLREC001`, u32 length + JSON `NodeState`, then records
//! `u8 kind (1 sample, 2 lost) | u32 cpu | u64 unix ns | u32 len + bytes (sample) or u64 count (lost)`.
//! An L7 capture is stored as a sample of CPU 0 whose first byte is its message type
//! (`MSG_L7_CAPTURE`, which no monitor event uses), and read back as [`RawRecord::L7`];
//! captures the L7 ring buffer lost are a lost record of CPU [`L7_LOST_CPU`], read back as
//! [`RawRecord::L7Lost`].

use std::io::{self, Read, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::model::NodeState;
use crate::monitor::abi::MSG_L7_CAPTURE;

pub const MAGIC: &[u8; 8] = b"HLREC001";
const KIND_SAMPLE: u8 = 1;
const KIND_LOST: u8 = 2;
/// The CPU of a stored [`RawRecord::L7Lost`] (no CPU has it).
pub const L7_LOST_CPU: u32 = u32::MAX;
/// Upper bound on one sample (a perf sample is far smaller); guards against garbage lengths.
const MAX_SAMPLE: u32 = 1 << 20;
const MAX_STATE: u32 = 64 << 20;

/// One thing the datapath's readers hand over: a monitor event from a perf ring, an L7
/// capture from the L7 ring buffer, samples a perf ring lost, or captures the L7 ring
/// buffer lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawRecord {
    Sample {
        cpu: u32,
        time: SystemTime,
        data: Vec<u8>,
    },
    L7 {
        time: SystemTime,
        data: Vec<u8>,
    },
    Lost {
        cpu: u32,
        time: SystemTime,
        count: u64,
    },
    /// L7 captures the datapath could not queue (its ring buffer was full), counted by the
    /// datapath over all CPUs since the previous one.
    L7Lost {
        time: SystemTime,
        count: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("not a hubble-agent recording (bad magic)")]
    BadMagic,
    #[error("recording is corrupt: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Writes a recording.
pub struct Writer<W: Write> {
    out: W,
}

impl<W: Write> Writer<W> {
    pub fn new(mut out: W, state: &NodeState) -> Result<Self, RecordError> {
        let json = serde_json::to_vec(state).map_err(io::Error::other)?;
        out.write_all(MAGIC)?;
        out.write_all(&(json.len() as u32).to_le_bytes())?;
        out.write_all(&json)?;
        Ok(Self { out })
    }

    pub fn write(&mut self, r: &RawRecord) -> Result<(), RecordError> {
        match r {
            RawRecord::Sample { cpu, time, data } => self.sample(*cpu, *time, data)?,
            RawRecord::L7 { time, data } => self.sample(0, *time, data)?,
            RawRecord::Lost { cpu, time, count } => self.lost(*cpu, *time, *count)?,
            RawRecord::L7Lost { time, count } => self.lost(L7_LOST_CPU, *time, *count)?,
        }
        Ok(())
    }

    fn lost(&mut self, cpu: u32, time: SystemTime, count: u64) -> Result<(), RecordError> {
        self.out.write_all(&[KIND_LOST])?;
        self.out.write_all(&cpu.to_le_bytes())?;
        self.out.write_all(&nanos(time).to_le_bytes())?;
        self.out.write_all(&count.to_le_bytes())?;
        Ok(())
    }

    fn sample(&mut self, cpu: u32, time: SystemTime, data: &[u8]) -> Result<(), RecordError> {
        self.out.write_all(&[KIND_SAMPLE])?;
        self.out.write_all(&cpu.to_le_bytes())?;
        self.out.write_all(&nanos(time).to_le_bytes())?;
        self.out.write_all(&(data.len() as u32).to_le_bytes())?;
        self.out.write_all(data)?;
        Ok(())
    }

    pub fn finish(mut self) -> Result<W, RecordError> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Reads a recording: the node state, then records one by one.
pub struct Reader<R: Read> {
    input: R,
    pub state: NodeState,
}

fn read_exact_or_eof<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<bool, RecordError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(RecordError::Corrupt("truncated record".into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

impl<R: Read> Reader<R> {
    pub fn new(mut input: R) -> Result<Self, RecordError> {
        let mut magic = [0u8; 8];
        if !read_exact_or_eof(&mut input, &mut magic)? || &magic != MAGIC {
            return Err(RecordError::BadMagic);
        }
        let mut len = [0u8; 4];
        if !read_exact_or_eof(&mut input, &mut len)? {
            return Err(RecordError::Corrupt("no state".into()));
        }
        let len = u32::from_le_bytes(len);
        if len > MAX_STATE {
            return Err(RecordError::Corrupt(format!("state of {len} bytes")));
        }
        let mut json = vec![0u8; len as usize];
        if !read_exact_or_eof(&mut input, &mut json)? {
            return Err(RecordError::Corrupt("no state".into()));
        }
        let state = serde_json::from_slice(&json)
            .map_err(|e| RecordError::Corrupt(format!("state: {e}")))?;
        Ok(Self { input, state })
    }

    /// The next record, or None at the end.
    pub fn next_record(&mut self) -> Result<Option<RawRecord>, RecordError> {
        let mut head = [0u8; 13];
        if !read_exact_or_eof(&mut self.input, &mut head)? {
            return Ok(None);
        }
        let cpu = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
        let mut t = [0u8; 8];
        t.copy_from_slice(&head[5..13]);
        let time = UNIX_EPOCH + Duration::from_nanos(u64::from_le_bytes(t));
        let mut n = [0u8; 8];
        match head[0] {
            KIND_SAMPLE => {
                if !read_exact_or_eof(&mut self.input, &mut n[..4])? {
                    return Err(RecordError::Corrupt("truncated sample".into()));
                }
                let len = u32::from_le_bytes([n[0], n[1], n[2], n[3]]);
                if len > MAX_SAMPLE {
                    return Err(RecordError::Corrupt(format!("sample of {len} bytes")));
                }
                let mut data = vec![0u8; len as usize];
                if len > 0 && !read_exact_or_eof(&mut self.input, &mut data)? {
                    return Err(RecordError::Corrupt("truncated sample".into()));
                }
                if data.first() == Some(&MSG_L7_CAPTURE) {
                    return Ok(Some(RawRecord::L7 { time, data }));
                }
                Ok(Some(RawRecord::Sample { cpu, time, data }))
            }
            KIND_LOST => {
                if !read_exact_or_eof(&mut self.input, &mut n)? {
                    return Err(RecordError::Corrupt("truncated lost record".into()));
                }
                let count = u64::from_le_bytes(n);
                if cpu == L7_LOST_CPU {
                    return Ok(Some(RawRecord::L7Lost { time, count }));
                }
                Ok(Some(RawRecord::Lost { cpu, time, count }))
            }
            k => Err(RecordError::Corrupt(format!("record kind {k}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn state() -> NodeState {
        NodeState {
            cluster: "default".into(),
            node: "n".into(),
            host_ips: vec![],
            remote_node_ips: vec![],
            endpoints: vec![],
            services: vec![],
            identities: BTreeMap::new(),
            policy_rules: Vec::new(),
            index: Default::default(),
        }
    }

    #[test]
    fn roundtrip_and_truncation() {
        let t = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_000_000_123);
        let recs = vec![
            RawRecord::Sample {
                cpu: 1,
                time: t,
                data: vec![4, 0, 1, 2],
            },
            RawRecord::Lost {
                cpu: 0,
                time: t,
                count: 7,
            },
            RawRecord::L7Lost { time: t, count: 3 },
        ];
        let mut w = Writer::new(Vec::new(), &state()).unwrap();
        for r in &recs {
            w.write(r).unwrap();
        }
        let bytes = w.finish().unwrap();
        let mut r = Reader::new(&bytes[..]).unwrap();
        assert_eq!(r.state, state());
        assert_eq!(r.next_record().unwrap(), Some(recs[0].clone()));
        assert_eq!(r.next_record().unwrap(), Some(recs[1].clone()));
        assert_eq!(r.next_record().unwrap(), Some(recs[2].clone()));
        assert_eq!(r.next_record().unwrap(), None);
        for n in 0..bytes.len() {
            if let Ok(mut r) = Reader::new(&bytes[..n]) {
                while let Ok(Some(_)) = r.next_record() {}
            }
        }
        assert!(matches!(
            Reader::new(&b"garbage!"[..]),
            Err(RecordError::BadMagic)
        ));
    }
}
