//! Generates the Rust messages and ttrpc stubs of `protos/kapsel/**.proto` into OUT_DIR with
//! ttrpc-codegen's pure-Rust parser (no protoc).

use std::path::{Path, PathBuf};

const PROTOS: &[&str] = &[
    "protos/kapsel/types/descriptor.proto",
    "protos/kapsel/services/images/v1/images.proto",
    "protos/kapsel/services/content/v1/content.proto",
    "protos/kapsel/services/transfer/v1/transfer.proto",
    "protos/kapsel/services/snapshots/v1/snapshots.proto",
    "protos/kapsel/services/events/v1/events.proto",
    "protos/kapsel/services/system/v1/system.proto",
    "protos/kapsel/services/containers/v1/containers.proto",
    "protos/kapsel/services/volumes/v1/volumes.proto",
];

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("kapsel");
    std::fs::create_dir_all(&out).expect("create OUT_DIR/kapsel");
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    ttrpc_codegen::Codegen::new()
        .inputs(PROTOS)
        .include("protos")
        .rust_protobuf()
        .rust_protobuf_customize(
            ttrpc_codegen::ProtobufCustomize::default()
                .gen_mod_rs(false)
                .generate_accessors(true),
        )
        .customize(ttrpc_codegen::Customize {
            async_all: false,
            ..Default::default()
        })
        .out_dir(&out)
        .run()
        .expect("generate kapsel protos");
    strip_inner_attributes(&out);
}

/// `include!` cannot take files with inner attributes (`#![...]`) or inner doc comments.
fn strip_inner_attributes(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("read OUT_DIR/kapsel") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("read generated file");
            let kept: Vec<&str> = text
                .lines()
                .filter(|l| !l.starts_with("#!") && !l.starts_with("//!"))
                .collect();
            std::fs::write(&path, kept.join("\n")).expect("write generated file");
        }
    }
}
