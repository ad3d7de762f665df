//! `hubble-tui`: see `hubble-tui --help`.

use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    ExitCode::from(hubble_tui::run::main_with_args(
        std::env::args_os().collect(),
    ))
}
