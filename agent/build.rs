//! Compiles the C datapath in ../ebpf with clang (-target bpf) into OUT_DIR, where
//! src/datapath embeds it with include_bytes!, and our containerd API subset
//! (proto/containerd, compiled with protox: no protoc) into tonic clients for
//! src/sources/containerd, and our CRI subset (proto/cri) into a RuntimeService client
//! that only the root tests use (src/cri_testing), and our etcd v3 subset (proto/etcd) into
//! the KV, Watch and Lease clients of src/kvstore.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const PROGRAMS: &[&str] = &["lxc"];

fn main() {
    compile_containerd_protos();
    compile_cri_protos();
    compile_etcd_protos();
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let ebpf = manifest.join("../ebpf");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    let arch_inc = match arch.as_str() {
        "x86_64" => "/usr/include/x86_64-linux-gnu",
        "aarch64" => "/usr/include/aarch64-linux-gnu",
        other => panic!("unsupported target arch for the eBPF build: {other}"),
    };

    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-changed={}", ebpf.join("include").display());
    for entry in std::fs::read_dir(ebpf.join("include")).expect("ebpf/include") {
        println!(
            "cargo:rerun-if-changed={}",
            entry.expect("dir entry").path().display()
        );
    }

    let clang = find_clang().unwrap_or_else(|| {
        panic!(
            "no clang found to build the eBPF datapath: install clang and libbpf-dev \
             (apt-get install -y clang libbpf-dev) or set CLANG=/path/to/clang"
        )
    });

    for prog in PROGRAMS {
        let src = ebpf.join(format!("{prog}.bpf.c"));
        println!("cargo:rerun-if-changed={}", src.display());
        let obj = out.join(format!("{prog}.bpf.o"));
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-I{arch_inc}"))
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .status()
            .unwrap_or_else(|e| panic!("running {clang}: {e}"));
        assert!(status.success(), "clang failed on {}", src.display());
    }
}

fn find_clang() -> Option<String> {
    let mut candidates = Vec::new();
    if let Ok(c) = env::var("CLANG") {
        candidates.push(c);
    }
    candidates.push("clang".into());
    for v in (14..=21).rev() {
        candidates.push(format!("clang-{v}"));
    }
    candidates.into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

/// The containerd API subset the containerd source uses: prost types and tonic clients.
fn compile_containerd_protos() {
    let protos = [
        "proto/containerd/types.proto",
        "proto/containerd/containers.proto",
        "proto/containerd/tasks.proto",
        "proto/containerd/namespaces.proto",
        "proto/containerd/events.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto/containerd"]).expect("compiling proto/containerd");
    tonic_prost_build::configure()
        .build_server(false)
        .skip_protoc_run()
        .compile_fds(fds)
        .expect("generating the containerd clients");
}

/// Our CRI subset (`runtime.v1`): the RuntimeService client the root tests make pods with,
/// as the kubelet does. Not used by the agent itself.
fn compile_cri_protos() {
    let proto = "proto/cri/api.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto/cri"]).expect("compiling proto/cri");
    tonic_prost_build::configure()
        .build_server(false)
        .skip_protoc_run()
        .compile_fds(fds)
        .expect("generating the CRI client");
}

/// Our etcd v3 subset (`etcdserverpb` KV, Watch, Lease and `mvccpb`): the kvstore's clients.
fn compile_etcd_protos() {
    let protos = ["proto/etcd/kv.proto", "proto/etcd/rpc.proto"];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto/etcd"]).expect("compiling proto/etcd");
    tonic_prost_build::configure()
        .build_server(false)
        .skip_protoc_run()
        .compile_fds(fds)
        .expect("generating the etcd clients");
}
