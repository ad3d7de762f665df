//! `hubble`: observe Hubble flows from a server or from files.

fn main() -> std::process::ExitCode {
    hubble::cmd::run(std::env::args_os())
}
