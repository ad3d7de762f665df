//! The compact and dict printers do no heap allocation per flow once warmed up (a counting
//! global allocator checks it over the demo flows).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use hubble::printer::{OutputFormat, Printer, PrinterOptions};
use hubble_api::observer::GetFlowsResponse;

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Writes into a fixed buffer, like a pipe, without allocating.
struct Fixed {
    buf: Box<[u8]>,
    len: usize,
}

impl std::io::Write for Fixed {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.len + b.len() > self.buf.len() {
            self.len = 0;
        }
        self.buf[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn compact_and_dict_do_not_allocate_per_flow() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/flows/demo.jsonl");
    let flows: Vec<GetFlowsResponse> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &GetFlowsResponse| r.response_types.is_some())
        .collect();
    assert!(
        ALLOCS.load(Ordering::Relaxed) > 0,
        "the counting allocator is not in use"
    );
    for (format, color) in [
        (OutputFormat::Compact, false),
        (OutputFormat::Compact, true),
        (OutputFormat::Dict, false),
        (OutputFormat::Json, false),
    ] {
        let opts = PrinterOptions {
            format,
            color,
            node_name: true,
            ..Default::default()
        };
        let out = Fixed {
            buf: vec![0; 1 << 16].into_boxed_slice(),
            len: 0,
        };
        let mut p = Printer::new(out, opts).with_stderr(std::io::sink());
        for f in &flows {
            p.write_response(f).unwrap(); // warm-up: the scratch buffer grows
        }
        let before = ALLOCS.load(Ordering::Relaxed);
        for _ in 0..3 {
            for f in &flows {
                p.write_response(f).unwrap();
            }
        }
        let n = ALLOCS.load(Ordering::Relaxed) - before;
        assert_eq!(n, 0, "{format} (color {color}): {n} allocations");
    }
}
