//! Compiles proto/ with protox (no protoc), generates prost types and tonic services,
//! and protojson-compatible serde impls with pbjson.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/flow/flow.proto",
        "proto/relay/relay.proto",
        "proto/observer/observer.proto",
        "proto/peer/peer.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let fds = protox::compile(protos, ["proto"])?;
    let descriptor_path = out.join("hubble_descriptor.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&fds))?;

    tonic_prost_build::configure()
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .compile_fds(fds)?;

    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .build(&[".flow", ".observer", ".peer", ".relay"])?;

    // Route numeric fields through our faster number decoder (see src/json.rs).
    for pkg in ["flow", "observer", "peer", "relay"] {
        let path = out.join(format!("{pkg}.serde.rs"));
        let code = std::fs::read_to_string(&path)?;
        let code = code.replace(
            "::pbjson::private::NumberDeserialize",
            "crate::json::NumberDeserialize",
        );
        std::fs::write(&path, code)?;
    }
    Ok(())
}
