//! Where built flows go. Every sink takes the responses of one record at a time, with the
//! builder's counters (metrics report decode errors and losses from them).

use std::io::{self, Write};

use hubble_api::observer::GetFlowsResponse;

use super::Counters;

/// A consumer of built flows (and lost events).
pub trait FlowSink {
    /// Takes the responses one record produced. `more`: another record is already waiting
    /// (a sink that writes may hold its buffer until the last one).
    fn take(
        &mut self,
        responses: &[GetFlowsResponse],
        counters: &Counters,
        more: bool,
    ) -> io::Result<()>;

    /// Called once when the pipeline stops.
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Prints every response as one JSON line, Go Hubble's exact `-o json` bytes (field order,
/// `Z` timestamps, HTML escaping); flushed when no record is waiting.
pub struct JsonLines<W: Write> {
    out: W,
    buf: Vec<u8>,
}

impl<W: Write> JsonLines<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            buf: Vec::with_capacity(4096),
        }
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write> FlowSink for JsonLines<W> {
    fn take(&mut self, responses: &[GetFlowsResponse], _: &Counters, more: bool) -> io::Result<()> {
        for r in responses {
            self.buf.clear();
            hubble::printer::json::write_get_flows_response(&mut self.buf, r)?;
            self.out.write_all(&self.buf)?;
        }
        if !more {
            self.out.flush()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
