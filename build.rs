//! Compiles Sluice's own Release API (`proto/sluice/v1`) and Istio's certificate service (`proto/istio/v1/auth`)
//! without a system `protoc`, and embeds the Envoy API
//! descriptor set that `envoy-types` ships (for Envoy JSON in config dumps and golden tests).

use std::path::{Path, PathBuf};

const ENVOY_TYPES_VERSION: &str = "0.7.7";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/sluice/v1/release.proto", "proto/istio/v1/auth/ca.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;

    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = envoy_descriptor_set()?;
    std::fs::copy(&descriptors, out.join("envoy_types.bin"))?;
    println!("cargo:rerun-if-env-changed=SLUICE_ENVOY_DESCRIPTORS");
    Ok(())
}

/// `envoy-types` keeps its descriptor set at `src/generated/types.bin` but exports no constant for it, so find the
/// crate's sources: `SLUICE_ENVOY_DESCRIPTORS` if set, else the cargo registry, else `cargo metadata`.
fn envoy_descriptor_set() -> Result<PathBuf, Box<dyn std::error::Error>> {
    if let Ok(p) = std::env::var("SLUICE_ENVOY_DESCRIPTORS") {
        return Ok(PathBuf::from(p));
    }
    let rel = Path::new("src/generated/types.bin");
    let crate_dir = format!("envoy-types-{ENVOY_TYPES_VERSION}");
    let cargo_home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo"));
    if let Ok(registries) = std::fs::read_dir(cargo_home.join("registry/src")) {
        for reg in registries.flatten() {
            let candidate = reg.path().join(&crate_dir).join(rel);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let meta = std::process::Command::new(cargo).args(["metadata", "--format-version", "1", "--offline"]).output()?;
    let text = String::from_utf8_lossy(&meta.stdout);
    let needle = format!("{crate_dir}/Cargo.toml");
    if let Some(end) = text.find(&needle) {
        let start = text[..end].rfind('"').map(|i| i + 1).unwrap_or(0);
        let dir = Path::new(&text[start..end + crate_dir.len()]);
        let candidate = dir.join(rel);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(format!("cannot find {crate_dir}/{}; set SLUICE_ENVOY_DESCRIPTORS to its path", rel.display()).into())
}
