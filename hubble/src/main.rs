//! `hubble`: observe Hubble flows from a server or from files.

// Flows are many small strings; mimalloc makes their allocation and release cheap.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    hubble::cmd::run(std::env::args_os())
}
