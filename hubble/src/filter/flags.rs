//! Hubble's `observe` filter flags (`--from-pod`, `--verdict`, `--not`, …) for clap, and their
//! translation, in command-line order, into whitelist and blacklist FlowFilters.
