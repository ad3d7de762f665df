//! Flow sources for the CLI: JSON lines (one GetFlowsResponse each, as `hubble observe -o json`
//! writes them) from a file or stdin, streamed in large blocks, never loaded whole.

use std::io::{self, Read};

use hubble_api::observer::GetFlowsResponse;

pub mod fastjson;

/// Longest line accepted; longer ones are reported and skipped so memory stays bounded.
pub const MAX_LINE: usize = 16 << 20;
const BLOCK: usize = 1 << 20;

/// Splits a byte stream into lines without copying them, reading `BLOCK` bytes at a time.
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    line_no: u64,
    /// Skipping the rest of an over-long line.
    discarding: bool,
}

/// One item from the reader.
pub enum Line<'a> {
    /// A complete line (without its newline), with its 1-based number.
    Data(u64, &'a [u8]),
    /// A line longer than [`MAX_LINE`]; its bytes were skipped.
    TooLong(u64),
}

impl<R: Read> LineReader<R> {
    pub fn new(inner: R) -> Self {
        LineReader {
            inner,
            buf: vec![0; BLOCK],
            start: 0,
            end: 0,
            eof: false,
            line_no: 0,
            discarding: false,
        }
    }

    /// The next line, or `None` at the end of the input.
    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        loop {
            if let Some(pos) = memchr::memchr(b'\n', &self.buf[self.start..self.end]) {
                let s = self.start;
                self.start += pos + 1;
                self.line_no += 1;
                if self.discarding {
                    self.discarding = false;
                    return Ok(Some(Line::TooLong(self.line_no)));
                }
                return Ok(Some(Line::Data(self.line_no, &self.buf[s..s + pos])));
            }
            if self.eof {
                if self.start < self.end || self.discarding {
                    let s = self.start;
                    self.start = self.end;
                    self.line_no += 1;
                    if self.discarding {
                        self.discarding = false;
                        return Ok(Some(Line::TooLong(self.line_no)));
                    }
                    return Ok(Some(Line::Data(self.line_no, &self.buf[s..self.end])));
                }
                return Ok(None);
            }
            self.fill()?;
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        // Move the partial line to the front, grow if the partial line fills the buffer.
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            if self.buf.len() >= MAX_LINE {
                // Drop what we have of this line and remember to skip to its end.
                self.discarding = true;
                self.end = 0;
            } else {
                self.buf.resize((self.buf.len() * 2).min(MAX_LINE), 0);
            }
        }
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// A run of complete lines handed to a worker thread.
pub struct Block {
    /// Number of the first line in `data` (1-based).
    pub first_line: u64,
    /// Whole lines; the last one may lack its newline at the end of the input.
    pub data: Vec<u8>,
    /// Set instead of data for a line longer than [`MAX_LINE`], which was skipped.
    pub too_long: Option<u64>,
    /// After [`Block::retain_lines`]: the number of each line left in `data`.
    pub line_numbers: Option<Vec<u64>>,
    /// Lines removed by [`Block::retain_lines`].
    pub dropped: u64,
}

impl Block {
    /// Keeps only the lines for which `keep` is true (moving them to the front of `data`),
    /// remembering their numbers.
    pub fn retain_lines(&mut self, mut keep: impl FnMut(&[u8]) -> bool) {
        let len = self.data.len();
        let body = if self.data.last() == Some(&b'\n') {
            len - 1
        } else {
            len
        };
        let mut numbers = Vec::new();
        let mut write = 0;
        let mut start = 0;
        let mut no = self.first_line;
        while start <= body && !(start == body && start == len) {
            let end = memchr::memchr(b'\n', &self.data[start..body]).map_or(body, |p| start + p);
            if keep(&self.data[start..end]) {
                self.data.copy_within(start..end, write);
                write += end - start;
                if write < self.data.len() {
                    self.data[write] = b'\n';
                } else {
                    // The last line had no newline and everything before it was kept.
                    self.data.push(b'\n');
                }
                write += 1;
                numbers.push(no);
            } else {
                self.dropped += 1;
            }
            no += 1;
            start = end + 1;
            if end == body {
                break;
            }
        }
        self.data.truncate(write);
        self.line_numbers = Some(numbers);
    }
}

/// Cuts a byte stream into blocks of whole lines of about `size` bytes each.
pub struct BlockReader<R> {
    inner: R,
    size: usize,
    carry: Vec<u8>,
    next_line: u64,
    eof: bool,
}

impl<R: Read> BlockReader<R> {
    pub fn new(inner: R, size: usize) -> Self {
        BlockReader {
            inner,
            size,
            carry: Vec::new(),
            next_line: 1,
            eof: false,
        }
    }

    /// The next block, or `None` at the end of the input.
    pub fn next_block(&mut self) -> io::Result<Option<Block>> {
        self.next_block_into(Vec::new())
    }

    /// [`Self::next_block`], filling `spare` (a recycled block buffer) instead of a new one.
    pub fn next_block_into(&mut self, spare: Vec<u8>) -> io::Result<Option<Block>> {
        let mut buf = spare;
        buf.clear();
        buf.extend_from_slice(&self.carry);
        self.carry.clear();
        loop {
            // Fill up to the block size (or more when one line is longer).
            let want = self.size.max(buf.len() + self.size / 4);
            while !self.eof && buf.len() < want {
                // read_to_end reads into the spare capacity without zeroing it first (a
                // resize would memset every block).
                let need = want - buf.len();
                buf.reserve(need);
                let n = (&mut self.inner).take(need as u64).read_to_end(&mut buf)?;
                if n < need {
                    self.eof = true;
                }
            }
            if buf.is_empty() {
                return Ok(None);
            }
            let cut = match memchr::memrchr(b'\n', &buf) {
                Some(pos) => pos + 1,
                None if self.eof => buf.len(),
                None if buf.len() >= MAX_LINE => {
                    let line = self.next_line;
                    self.skip_rest_of_line()?;
                    self.next_line += 1;
                    return Ok(Some(Block {
                        first_line: line,
                        data: Vec::new(),
                        too_long: Some(line),
                        line_numbers: None,
                        dropped: 0,
                    }));
                }
                None => continue,
            };
            self.carry.extend_from_slice(&buf[cut..]);
            buf.truncate(cut);
            let first_line = self.next_line;
            let mut lines = memchr::memchr_iter(b'\n', &buf).count() as u64;
            if buf.last() != Some(&b'\n') {
                lines += 1;
            }
            self.next_line += lines;
            return Ok(Some(Block {
                first_line,
                data: buf,
                too_long: None,
                line_numbers: None,
                dropped: 0,
            }));
        }
    }

    fn skip_rest_of_line(&mut self) -> io::Result<()> {
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            let n = match self.inner.read(&mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if let Some(pos) = memchr::memchr(b'\n', &chunk[..n]) {
                self.carry = chunk[pos + 1..n].to_vec();
                return Ok(());
            }
        }
    }
}

/// Why one line could not be turned into a response.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("line {0}: line longer than {MAX_LINE} bytes, skipped")]
    TooLong(u64),
    #[error("line {line}, column {}: invalid flow JSON: {}", err.column(), json_reason(err))]
    Json { line: u64, err: serde_json::Error },
}

/// serde_json's message without its own " at line 1 column N" suffix.
fn json_reason(err: &serde_json::Error) -> String {
    let s = err.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Every response of a whole (small) JSON-lines file, for tools and tests: blank lines are
/// skipped, the first malformed line is the error. `hubble observe` streams instead.
pub fn read_responses(path: &std::path::Path) -> anyhow::Result<Vec<GetFlowsResponse>> {
    use anyhow::Context;
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.split(|b| *b == b'\n').enumerate() {
        if let Some(r) = parse_line(i as u64 + 1, line)
            .with_context(|| format!("{}:{}", path.display(), i + 1))?
        {
            out.push(r);
        }
    }
    Ok(out)
}

/// Parses one JSON line into a response. Blank lines yield `Ok(None)`.
pub fn parse_line(line_no: u64, line: &[u8]) -> Result<Option<GetFlowsResponse>, LineError> {
    let trimmed = line.trim_ascii();
    if trimmed.is_empty() {
        return Ok(None);
    }
    // Validating UTF-8 once for the whole line is much cheaper than serde_json doing it
    // string by string.
    // The lean front end takes the common case; serde_json decides everything else and
    // words the errors.
    let result = match std::str::from_utf8(trimmed) {
        Ok(text) => match fastjson::from_str(text) {
            Some(resp) => Ok(resp),
            None => serde_json::from_str(text),
        },
        Err(_) => serde_json::from_slice(trimmed),
    };
    result
        .map(Some)
        .map_err(|err| LineError::Json { line: line_no, err })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(data: &[u8]) -> Vec<(u64, Vec<u8>)> {
        let mut r = LineReader::new(data);
        let mut out = vec![];
        while let Some(l) = r.next_line().unwrap() {
            match l {
                Line::Data(n, b) => out.push((n, b.to_vec())),
                Line::TooLong(n) => out.push((n, b"<too long>".to_vec())),
            }
        }
        out
    }

    #[test]
    fn splits_lines_with_and_without_trailing_newline() {
        assert_eq!(
            collect(b"a\nbb\n\nccc"),
            vec![
                (1, b"a".to_vec()),
                (2, b"bb".to_vec()),
                (3, b"".to_vec()),
                (4, b"ccc".to_vec())
            ]
        );
        assert_eq!(collect(b"a\n"), vec![(1, b"a".to_vec())]);
        assert!(collect(b"").is_empty());
    }

    #[test]
    fn lines_across_block_boundaries() {
        let mut data = Vec::new();
        for i in 0..5000 {
            data.extend_from_slice(format!("{}\n", "x".repeat(i % 700)).as_bytes());
        }
        let lines = collect(&data);
        assert_eq!(lines.len(), 5000);
        for (i, (n, l)) in lines.iter().enumerate() {
            assert_eq!(*n as usize, i + 1);
            assert_eq!(l.len(), i % 700);
        }
    }

    #[test]
    fn long_line_grows_buffer() {
        let long = "y".repeat(3 * BLOCK + 17);
        let data = format!("{long}\nshort\n");
        let lines = collect(data.as_bytes());
        assert_eq!(lines[0].1.len(), long.len());
        assert_eq!(lines[1].1, b"short");
    }

    #[test]
    fn blocks_hold_whole_lines_and_count_them() {
        let mut data = Vec::new();
        for i in 0..3000 {
            data.extend_from_slice(format!("{}\n", "z".repeat(i % 300)).as_bytes());
        }
        data.extend_from_slice(b"last-without-newline");
        let mut r = BlockReader::new(&data[..], 4096);
        let mut lines = Vec::new();
        let mut expect_next = 1;
        while let Some(b) = r.next_block().unwrap() {
            assert_eq!(b.first_line, expect_next);
            let n = b.data.split(|c| *c == b'\n').filter(|_| true).count() as u64;
            let n = if b.data.last() == Some(&b'\n') {
                n - 1
            } else {
                n
            };
            expect_next += n;
            lines.extend(
                b.data
                    .split(|c| *c == b'\n')
                    .take(n as usize)
                    .map(|l| l.to_vec()),
            );
        }
        assert_eq!(lines.len(), 3001);
        assert_eq!(lines[299].len(), 299);
        assert_eq!(lines[3000], b"last-without-newline");
    }

    /// Hands out at most 7 bytes per read, with an `Interrupted` between reads, as a slow
    /// pipe might.
    struct Trickle<'a> {
        data: &'a [u8],
        interrupt: bool,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.interrupt = !self.interrupt;
            if self.interrupt {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = buf.len().min(7).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn blocks_from_a_trickling_reader() {
        let mut data = Vec::new();
        for i in 0..500 {
            data.extend_from_slice(format!("line {i} {}\n", "q".repeat(i % 50)).as_bytes());
        }
        let mut r = BlockReader::new(
            Trickle {
                data: &data,
                interrupt: false,
            },
            1000,
        );
        let mut got = Vec::new();
        let mut spare = Vec::new();
        while let Some(b) = r.next_block_into(std::mem::take(&mut spare)).unwrap() {
            assert_eq!(b.data.last(), Some(&b'\n'), "blocks end with whole lines");
            got.extend_from_slice(&b.data);
            spare = b.data;
        }
        assert_eq!(got, data);
    }

    #[test]
    fn retain_lines_keeps_numbers() {
        for (data, want) in [
            (&b"a1\nb2\na3\nb4\n"[..], vec![(1, "a1"), (3, "a3")]),
            (&b"a1\nb2\na3"[..], vec![(1, "a1"), (3, "a3")]),
            (&b"b1\n\na3\n"[..], vec![(3, "a3")]),
            (&b"b1"[..], vec![]),
            (&b"a1\na3"[..], vec![(1, "a1"), (2, "a3")]),
        ] {
            let mut b = Block {
                first_line: 1,
                data: data.to_vec(),
                too_long: None,
                line_numbers: None,
                dropped: 0,
            };
            b.retain_lines(|l| l.first() == Some(&b'a'));
            let kept: Vec<(u64, String)> = b
                .data
                .split(|c| *c == b'\n')
                .filter(|l| !l.is_empty())
                .zip(b.line_numbers.clone().unwrap())
                .map(|(l, n)| (n, String::from_utf8(l.to_vec()).unwrap()))
                .collect();
            let want: Vec<(u64, String)> =
                want.into_iter().map(|(n, l)| (n, l.to_string())).collect();
            assert_eq!(kept, want, "{:?}", String::from_utf8_lossy(data));
            let total =
                data.split(|c| *c == b'\n').count() as u64 - u64::from(data.last() == Some(&b'\n'));
            assert_eq!(b.dropped + b.line_numbers.unwrap().len() as u64, total);
        }
    }

    #[test]
    fn parse_reports_line_number() {
        let e = parse_line(7, b"{\"flow\": ").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("line 7, column 8: invalid flow JSON: EOF while parsing a value"),
            "{e}"
        );
        assert!(parse_line(1, b"   ").unwrap().is_none());
        let ok = parse_line(2, br#"{"flow":{"verdict":"DROPPED"},"node_name":"n1"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(ok.node_name, "n1");
    }
}
