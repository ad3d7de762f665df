//! Colours (fatih/color's SGR sequences) and the terminal escaper Hubble runs over every
//! compact/dict/table record: ESC becomes `^[` and CR `\r`, except our own colour sequences.

use std::io::{self, Write};

pub(crate) const RED: &[u8] = b"\x1b[31m";
pub(crate) const GREEN: &[u8] = b"\x1b[32m";
pub(crate) const YELLOW: &[u8] = b"\x1b[33m";
pub(crate) const BLUE: &[u8] = b"\x1b[34m";
pub(crate) const MAGENTA: &[u8] = b"\x1b[35m";
pub(crate) const CYAN: &[u8] = b"\x1b[36m";
pub(crate) const RESET: &[u8] = b"\x1b[0m";

/// The sequences the escaper lets through when colours are on (Hubble's `colorer.sequences`).
const ALLOWED: [&[u8]; 7] = [RED, GREEN, YELLOW, BLUE, MAGENTA, CYAN, RESET];

/// Writes `s` to `out`, neutralising terminal control characters as Hubble does: with colours
/// on, an ESC that starts one of the colour sequences is kept; any other ESC is `^[`; CR is `\r`.
pub(crate) fn write_escaped<W: Write + ?Sized>(
    out: &mut W,
    s: &[u8],
    color: bool,
) -> io::Result<()> {
    let mut start = 0;
    let mut i = 0;
    while let Some(off) = memchr::memchr2(0x1b, b'\r', &s[i..]) {
        let pos = i + off;
        if s[pos] == 0x1b {
            if let Some(seq) = ALLOWED
                .iter()
                .find(|seq| color && s[pos..].starts_with(seq))
            {
                i = pos + seq.len();
                continue;
            }
            out.write_all(&s[start..pos])?;
            out.write_all(b"^[")?;
        } else {
            out.write_all(&s[start..pos])?;
            out.write_all(b"\\r")?;
        }
        start = pos + 1;
        i = start;
    }
    out.write_all(&s[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(s: &str, color: bool) -> String {
        let mut out = Vec::new();
        write_escaped(&mut out, s.as_bytes(), color).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes() {
        assert_eq!(esc("plain", false), "plain");
        assert_eq!(esc("a\x1b[31mb\rc\x1b", false), "a^[[31mb\\rc^[");
        assert_eq!(
            esc("a\x1b[31mb\x1b[0m\x1b[1m", true),
            "a\x1b[31mb\x1b[0m^[[1m"
        );
        assert_eq!(esc("\r\r", true), "\\r\\r");
    }
}
