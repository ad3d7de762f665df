//! Per-CPU perf rings opened by hand, as Cilium's monitor does: `perf_event_open` with a
//! wakeup watermark (not a wakeup per sample), mmap, fd stored into the perf event array.
//!
//! aya 0.14 hard-codes a wakeup per sample, which makes the sending CPU pay for waking the
//! reader on every packet. Here the kernel wakes the reader only once `wakeup_bytes` are
//! queued; a flush timer drains quiet rings so few events still show up promptly.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU64, Ordering};

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_BPF_OUTPUT: u64 = 10;
const PERF_SAMPLE_RAW: u64 = 1 << 10;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
/// `attr.watermark`: bit 14 of the flag word.
const ATTR_FLAG_WATERMARK: u64 = 1 << 14;
/// `attr.disabled`.
const ATTR_FLAG_DISABLED: u64 = 1;
/// `_IO('$', 0)`.
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
/// `_IO('$', 1)`.
const PERF_EVENT_IOC_DISABLE: libc::c_ulong = 0x2401;

pub const PERF_RECORD_LOST: u32 = 2;
pub const PERF_RECORD_SAMPLE: u32 = 9;

/// Offsets of `data_head` / `data_tail` in `struct perf_event_mmap_page`.
const DATA_HEAD_OFFSET: usize = 1024;
const DATA_TAIL_OFFSET: usize = 1032;

const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;

/// `struct perf_event_attr` up to `PERF_ATTR_SIZE_VER0` (64 bytes), which every kernel takes.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup: u32,
    bp_type: u32,
    config1: u64,
}
const _: () = assert!(size_of::<PerfEventAttr>() == 64);

/// How the kernel wakes a reader of a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wakeup {
    /// After every `n` samples (aya's default is 1).
    Events(u32),
    /// Once this many bytes are queued (Cilium's choice).
    Watermark(u32),
}

/// One thing read from a ring. A sample's bytes may wrap around the ring's end: `tail` holds
/// the rest (usually empty).
#[derive(Debug)]
pub enum RingEvent<'a> {
    Sample { head: &'a [u8], tail: &'a [u8] },
    Lost { count: u64 },
}

/// One CPU's perf ring: the perf event fd and its mmap (metadata page + 2^n data pages).
pub struct PerfRing {
    fd: OwnedFd,
    base: NonNull<u8>,
    mmap_len: usize,
    page_size: usize,
    data_size: usize,
    cpu: u32,
}

// SAFETY: the mapping is owned by this value and only touched through `&mut self` (reads of
// the kernel-written head go through an atomic).
unsafe impl Send for PerfRing {}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as usize } else { 4096 }
}

impl PerfRing {
    /// Opens the BPF-output perf event of `cpu` with `pages` data pages (a power of two).
    pub fn open(cpu: u32, pages: usize, wakeup: Wakeup) -> io::Result<Self> {
        if !pages.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("perf ring of {pages} pages: must be a power of two"),
            ));
        }
        let page_size = page_size();
        let data_size = pages * page_size;
        let mut attr = PerfEventAttr {
            type_: PERF_TYPE_SOFTWARE,
            size: size_of::<PerfEventAttr>() as u32,
            config: PERF_COUNT_SW_BPF_OUTPUT,
            sample_period: 1,
            sample_type: PERF_SAMPLE_RAW,
            flags: ATTR_FLAG_DISABLED,
            ..Default::default()
        };
        match wakeup {
            Wakeup::Events(n) => attr.wakeup = n.max(1),
            Wakeup::Watermark(b) => {
                attr.flags |= ATTR_FLAG_WATERMARK;
                // The kernel caps it at the ring size; keep at least one record's worth.
                attr.wakeup = b.clamp(1, data_size as u32);
            }
        }
        // SAFETY: attr is a valid, fully initialised perf_event_attr of the size it states.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &attr as *const PerfEventAttr,
                -1 as libc::pid_t,
                cpu as libc::c_int,
                -1 as libc::c_int,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the syscall returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        let mmap_len = page_size + data_size;
        // SAFETY: a fresh shared mapping of the perf fd; checked below.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                mmap_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ring = Self {
            fd,
            base: NonNull::new(p.cast()).ok_or_else(io::Error::last_os_error)?,
            mmap_len,
            page_size,
            data_size,
            cpu,
        };
        // SAFETY: ioctl on our perf fd.
        if unsafe { libc::ioctl(ring.fd.as_raw_fd(), PERF_EVENT_IOC_ENABLE as _, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ring)
    }

    pub fn cpu(&self) -> u32 {
        self.cpu
    }

    fn head_ptr(&self) -> &AtomicU64 {
        // SAFETY: data_head is an aligned u64 inside the metadata page, which lives as long
        // as self; the kernel writes it concurrently, so it is only read atomically.
        unsafe { &*self.base.as_ptr().add(DATA_HEAD_OFFSET).cast::<AtomicU64>() }
    }

    fn tail_ptr(&self) -> &AtomicU64 {
        // SAFETY: as head_ptr; data_tail is written by us and read by the kernel.
        unsafe { &*self.base.as_ptr().add(DATA_TAIL_OFFSET).cast::<AtomicU64>() }
    }

    /// True when records are waiting.
    pub fn readable(&self) -> bool {
        self.head_ptr().load(Ordering::Acquire) != self.tail_ptr().load(Ordering::Relaxed)
    }

    fn data(&self) -> *const u8 {
        // SAFETY: the data pages follow the metadata page inside the mapping.
        unsafe { self.base.as_ptr().add(self.page_size) }
    }

    /// Hands every queued record to `f`, then frees their space. Returns the number of records.
    pub fn drain(&mut self, f: impl FnMut(RingEvent<'_>)) -> usize {
        // Acquire pairs with the kernel's store of data_head after writing the records.
        let head = self.head_ptr().load(Ordering::Acquire);
        let tail = self.tail_ptr().load(Ordering::Relaxed);
        // SAFETY: the data area lies inside the mapping; the kernel does not write the part
        // between data_tail and data_head, the only part read, until data_tail moves.
        let data = unsafe { std::slice::from_raw_parts(self.data(), self.data_size) };
        let (tail, n) = parse_records(data, tail, head, f);
        // Release: our reads of the records happen before the kernel may reuse their space.
        self.tail_ptr().store(tail, Ordering::Release);
        n
    }
}

fn u64_at(data: &[u8], off: usize) -> u64 {
    let off = off % data.len();
    let mut b = [0u8; 8];
    // Records are 8-byte aligned and the ring size is a multiple of 8: no field wraps.
    if let Some(s) = data.get(off..off + 8) {
        b.copy_from_slice(s);
    }
    u64::from_ne_bytes(b)
}

/// Walks the records of a ring's data area from `tail` to `head` (free-running byte
/// counters, taken modulo the area's size). Returns the new tail and the records handed out.
pub fn parse_records(
    data: &[u8],
    mut tail: u64,
    head: u64,
    mut f: impl FnMut(RingEvent<'_>),
) -> (u64, usize) {
    let size = data.len();
    if size == 0 || !size.is_multiple_of(8) {
        return (head, 0);
    }
    let mut n = 0;
    while tail < head {
        let start = (tail % size as u64) as usize;
        // perf_event_header: u32 type, u16 misc, u16 size.
        let h = u64_at(data, start);
        let typ = h as u32;
        let len = (h >> 48) as u16 as u64;
        if len < 8 || !len.is_multiple_of(8) || tail + len > head {
            // Corrupt ring: skip everything that is there.
            return (head, n);
        }
        match typ {
            PERF_RECORD_SAMPLE => {
                // u32 size, then the raw bytes.
                let raw_len = u64_at(data, start + 8) as u32 as usize;
                let raw_len = raw_len.min((len as usize).saturating_sub(12));
                let from = (start + 12) % size;
                let (a, b) = if from + raw_len > size {
                    (&data[from..], &data[..from + raw_len - size])
                } else {
                    (&data[from..from + raw_len], &[][..])
                };
                f(RingEvent::Sample { head: a, tail: b });
                n += 1;
            }
            PERF_RECORD_LOST => {
                // u64 id, u64 lost.
                f(RingEvent::Lost {
                    count: u64_at(data, start + 16),
                });
                n += 1;
            }
            _ => {}
        }
        tail += len;
    }
    (tail, n)
}

impl AsFd for PerfRing {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for PerfRing {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for PerfRing {
    fn drop(&mut self) {
        // SAFETY: our fd and our mapping, unmapped once.
        unsafe {
            libc::ioctl(self.fd.as_raw_fd(), PERF_EVENT_IOC_DISABLE as _, 0);
            libc::munmap(self.base.as_ptr().cast(), self.mmap_len);
        }
    }
}

/// `bpf(BPF_MAP_UPDATE_ELEM)`: stores `ring`'s fd at index `cpu` of a perf event array.
pub fn store_in_map(map: impl AsFd, cpu: u32, ring: &PerfRing) -> io::Result<()> {
    #[repr(C)]
    struct UpdateAttr {
        map_fd: u32,
        pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let key = cpu;
    let value = ring.as_raw_fd() as u32;
    let attr = UpdateAttr {
        map_fd: map.as_fd().as_raw_fd() as u32,
        pad: 0,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        flags: 0, // BPF_ANY
    };
    // SAFETY: attr points at live key/value buffers of the map's key and value sizes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_ELEM,
            &attr as *const UpdateAttr,
            size_of::<UpdateAttr>() as u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(ring: &mut [u8], at: u64, bytes: &[u8]) {
        let n = ring.len();
        for (i, b) in bytes.iter().enumerate() {
            ring[(at as usize + i) % n] = *b;
        }
    }

    fn sample(raw: &[u8]) -> Vec<u8> {
        let len = (8 + 4 + raw.len()).next_multiple_of(8);
        let mut r = Vec::new();
        r.extend_from_slice(&PERF_RECORD_SAMPLE.to_ne_bytes());
        r.extend_from_slice(&0u16.to_ne_bytes());
        r.extend_from_slice(&(len as u16).to_ne_bytes());
        r.extend_from_slice(&(raw.len() as u32).to_ne_bytes());
        r.extend_from_slice(raw);
        r.resize(len, 0);
        r
    }

    fn lost(count: u64) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(&PERF_RECORD_LOST.to_ne_bytes());
        r.extend_from_slice(&0u16.to_ne_bytes());
        r.extend_from_slice(&24u16.to_ne_bytes());
        r.extend_from_slice(&7u64.to_ne_bytes());
        r.extend_from_slice(&count.to_ne_bytes());
        r
    }

    /// Samples that wrap around the end, lost records, and counters past the ring size.
    #[test]
    fn records_wrap_around_the_ring() {
        let mut ring = vec![0u8; 96];
        let mut head = 80u64 + 96 * 3; // counters are free running
        let tail = head;
        let a: Vec<u8> = (1..=20).collect();
        for rec in [sample(&a), lost(5), sample(b"xyz")] {
            put(&mut ring, head, &rec);
            head += rec.len() as u64;
        }
        let mut got = Vec::new();
        let (t, n) = parse_records(&ring, tail, head, |e| match e {
            RingEvent::Sample { head, tail } => {
                got.push(format!("S{:?}", [head, tail].concat()));
            }
            RingEvent::Lost { count } => got.push(format!("L{count}")),
        });
        assert_eq!((t, n), (head, 3));
        assert_eq!(
            got,
            vec![
                format!("S{a:?}"),
                "L5".to_string(),
                format!("S{:?}", b"xyz")
            ]
        );
    }

    #[test]
    fn corrupt_headers_end_the_walk() {
        let ring = vec![0u8; 64];
        assert_eq!(
            parse_records(&ring, 0, 32, |_| panic!("no record")),
            (32, 0)
        );
        let mut ring = vec![0u8; 64];
        let mut rec = sample(b"abcdefgh");
        rec[6] = 12; // size 12: not a multiple of 8
        put(&mut ring, 0, &rec);
        assert_eq!(
            parse_records(&ring, 0, 24, |_| panic!("no record")),
            (24, 0)
        );
    }
}
