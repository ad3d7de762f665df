//! Elastic tabstops with the semantics of Go's `text/tabwriter` as Hubble configures it
//! (minwidth 2, tabwidth 0, padding 3, pad with spaces, no flags): same widths, same flushes.

use std::io::{self, Write};

#[derive(Clone, Copy, Default)]
struct Cell {
    /// Bytes of text.
    size: usize,
    /// Width in runes.
    width: usize,
}

/// Buffers tab-separated text and lays it out in aligned columns.
pub(crate) struct TabWriter {
    minwidth: usize,
    padding: usize,
    /// Text of all buffered cells.
    buf: Vec<u8>,
    /// Start of the not yet width-counted part of `buf`.
    pos: usize,
    /// The cell being filled.
    cell: Cell,
    /// Terminated cells of every buffered line, flat.
    cells: Vec<Cell>,
    /// Index into `cells` where each buffered line starts; the last line is open.
    lines: Vec<usize>,
    widths: Vec<usize>,
}

impl TabWriter {
    pub(crate) fn new(minwidth: usize, padding: usize) -> Self {
        TabWriter {
            minwidth,
            padding,
            buf: Vec::new(),
            pos: 0,
            cell: Cell::default(),
            cells: Vec::new(),
            lines: vec![0],
            widths: Vec::new(),
        }
    }

    fn line(&self, i: usize) -> &[Cell] {
        let end = self.lines.get(i + 1).copied().unwrap_or(self.cells.len());
        &self.cells[self.lines[i]..end]
    }

    fn update_width(&mut self) {
        self.cell.width += count_runes(&self.buf[self.pos..]);
        self.pos = self.buf.len();
    }

    /// Terminates the current cell; returns the number of cells in the current line.
    fn terminate_cell(&mut self) -> usize {
        self.cells.push(self.cell);
        self.cell = Cell::default();
        self.cells.len() - self.lines[self.lines.len() - 1]
    }

    /// Feeds bytes; complete blocks are laid out and written to `out`.
    pub(crate) fn write<W: Write + ?Sized>(&mut self, out: &mut W, data: &[u8]) -> io::Result<()> {
        let mut n = 0;
        for (i, &ch) in data.iter().enumerate() {
            if !matches!(ch, b'\t' | 0x0b | b'\n' | 0x0c) {
                continue;
            }
            self.buf.extend_from_slice(&data[n..i]);
            self.cell.size += i - n;
            self.update_width();
            n = i + 1;
            let ncells = self.terminate_cell();
            if ch == b'\n' || ch == 0x0c {
                self.lines.push(self.cells.len());
                if ch == 0x0c || ncells == 1 {
                    // A line with a single cell does not affect later columns: flush.
                    self.flush(out)?;
                }
            }
        }
        self.buf.extend_from_slice(&data[n..]);
        self.cell.size += data.len() - n;
        Ok(())
    }

    /// Lays out and writes everything buffered, including a trailing partial line.
    pub(crate) fn flush<W: Write + ?Sized>(&mut self, out: &mut W) -> io::Result<()> {
        if self.cell.size > 0 {
            self.update_width();
            self.terminate_cell();
        }
        let nlines = self.lines.len();
        self.format(out, 0, 0, nlines)?;
        self.buf.clear();
        self.pos = 0;
        self.cell = Cell::default();
        self.cells.clear();
        self.lines.clear();
        self.lines.push(0);
        self.widths.clear();
        Ok(())
    }

    fn format<W: Write + ?Sized>(
        &mut self,
        out: &mut W,
        pos0: usize,
        mut line0: usize,
        line1: usize,
    ) -> io::Result<usize> {
        let mut pos = pos0;
        let column = self.widths.len();
        let mut this = line0;
        while this < line1 {
            if column + 1 >= self.line(this).len() {
                this += 1;
                continue;
            }
            // A cell exists in this column: print the lines before the block, then size it.
            pos = self.write_lines(out, pos, line0, this)?;
            line0 = this;
            let mut width = self.minwidth;
            while this < line1 {
                let line = self.line(this);
                if column + 1 >= line.len() {
                    break;
                }
                width = width.max(line[column].width + self.padding);
                this += 1;
            }
            self.widths.push(width);
            pos = self.format(out, pos, line0, this)?;
            self.widths.pop();
            line0 = this;
        }
        self.write_lines(out, pos, line0, line1)
    }

    fn write_lines<W: Write + ?Sized>(
        &mut self,
        out: &mut W,
        pos0: usize,
        line0: usize,
        line1: usize,
    ) -> io::Result<usize> {
        let mut pos = pos0;
        for i in line0..line1 {
            let (start, end) = (
                self.lines[i],
                self.lines.get(i + 1).copied().unwrap_or(self.cells.len()),
            );
            for j in start..end {
                let c = self.cells[j];
                let col = j - start;
                if c.size > 0 {
                    out.write_all(&self.buf[pos..pos + c.size])?;
                    pos += c.size;
                }
                if let Some(&w) = self.widths.get(col) {
                    write_spaces(out, w.saturating_sub(c.width))?;
                }
            }
            if i + 1 == self.lines.len() {
                // The last buffered line has no newline: write the open cell's text.
                out.write_all(&self.buf[pos..pos + self.cell.size])?;
                pos += self.cell.size;
            } else {
                out.write_all(b"\n")?;
            }
        }
        Ok(pos)
    }
}

fn write_spaces<W: Write + ?Sized>(out: &mut W, mut n: usize) -> io::Result<()> {
    const SPACES: &[u8; 64] = &[b' '; 64];
    while n > 0 {
        let k = n.min(SPACES.len());
        out.write_all(&SPACES[..k])?;
        n -= k;
    }
    Ok(())
}

/// Runes as Go's `utf8.RuneCount` counts them (each invalid byte is one rune).
fn count_runes(b: &[u8]) -> usize {
    match std::str::from_utf8(b) {
        Ok(s) => s.chars().count(),
        Err(_) => String::from_utf8_lossy(b).chars().count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tab(input: &str) -> String {
        let mut tw = TabWriter::new(2, 3);
        let mut out = Vec::new();
        tw.write(&mut out, input.as_bytes()).unwrap();
        tw.flush(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn columns() {
        assert_eq!(
            tab("a\tbb\tc\naaaa\tb\tc\n"),
            "a      bb   c\naaaa   b    c\n"
        );
        assert_eq!(tab("\tx\n"), "   x\n");
        assert_eq!(tab("a\tb\x0bc\x0cd\te\n"), "a   b   c\nd   e\n");
        assert_eq!(tab("héé\tx\nh\ty\n"), "héé   x\nh     y\n");
        // A line without tabs ends the block: the columns after it are sized anew.
        assert_eq!(tab("a\tb\nplain\nlong\tb\n"), "a   b\nplain\nlong   b\n");
        assert_eq!(tab("a\tb\nno newline"), "a   b\nno newline");
    }
}
