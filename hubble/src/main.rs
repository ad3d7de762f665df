//! `hubble`: observe Hubble flows from a server or from files.

// Flows are many small strings; mimalloc makes their allocation and release cheap.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    no_transparent_huge_pages();
    hubble::cmd::run(std::env::args_os())
}

/// mimalloc asks for transparent huge pages: every first touch of a 2 MiB region then
/// zeroes all of it. For a CLI that streams through a few MiB that was ~5 % of a 200k-flow
/// run (kernel `clear_page_erms`) and doubled the peak RSS; ordinary pages are cheaper here.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes no memory we
    // hold; a failure (old kernel) just leaves huge pages on.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
