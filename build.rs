//! Build-time facts for `sealkit --version --verbose` (`src/build_info.rs`).
//!
//! `scripts/build-static.sh` sets `SEALKIT_BUILD_COMMIT` (the commit being built, with
//! `-dirty` when the tree had uncommitted changes),
//! `SOURCE_DATE_EPOCH` (that commit's time) and `SEALKIT_SBOM_SHA256` (the digest of the
//! CycloneDX SBOM it generated before compiling). A plain `cargo build` sets none of them and
//! the binary says `unknown` for each. A value that is set but malformed fails the build:
//! the script, not the binary, must be wrong. The target triple comes from Cargo.

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=SEALKIT_BUILD_TARGET={target}");

    passthrough("SEALKIT_BUILD_COMMIT", |v| {
        is_hex(v.strip_suffix("-dirty").unwrap_or(v), &[40, 64])
    });
    passthrough("SEALKIT_SBOM_SHA256", |v| is_hex(v, &[64]));
    passthrough("SOURCE_DATE_EPOCH", |v| {
        !v.is_empty() && v.len() <= 12 && v.bytes().all(|b| b.is_ascii_digit())
    });
}

/// Hands `name` from the build environment to the compiler (read with `option_env!`),
/// after checking its form; an unset or empty variable is passed as nothing.
fn passthrough(name: &str, valid: impl Fn(&str) -> bool) {
    println!("cargo:rerun-if-env-changed={name}");
    let value = env::var(name).unwrap_or_default();
    if value.is_empty() {
        return;
    }
    if !valid(&value) {
        panic!("{name}={value:?} is malformed (see build.rs)");
    }
    println!("cargo:rustc-env=SEALKIT_BUILT_{name}={value}");
}

fn is_hex(value: &str, lengths: &[usize]) -> bool {
    lengths.contains(&value.len())
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
