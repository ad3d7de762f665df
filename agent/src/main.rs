//! `hubble-agent`: the node agent binary.

fn main() {}
