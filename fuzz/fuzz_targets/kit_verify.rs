//! Offline-kit verification. Mode 0: the input is the kit file, through
//! `sealkit::kit::verify` (signature frame, signature text, trusted comment). Mode 1: the
//! input is the kit's tar stream, compressed here and walked by the checks that run behind
//! the archive signature (`sealkit::kit::fuzz_walk`: the one archive reader with the kit's
//! caps, SHA256SUMS and its signature, the file list against the sums).
//!
//! Mode 1 used to sign each input so that `verify` would reach the walk; the Ed25519
//! signature and its verification, instrumented for coverage, held the target to ~130
//! executions/s. The signature path itself is mode 0's and the kit unit tests'.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sealkit::kit::{fuzz_walk, verify, KitLimits, VerifyOptions};
use std::sync::OnceLock;

fn scratch() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::Builder::new().tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).expect("temp dir"))
}

fn limits() -> KitLimits {
    KitLimits {
        max_output_bytes: 4 << 20,
        ..KitLimits::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let keys = &sealkit_fuzz::kit_key().trusted;
    if mode & 1 == 1 {
        let compressed = sealkit_fuzz::compress(rest);
        let _ = fuzz_walk(&compressed, keys, &limits());
        return;
    }
    let path = scratch().path().join("kit.tar.zst");
    if std::fs::write(&path, rest).is_err() {
        return;
    }
    let options = VerifyOptions {
        extract: None,
        limits: limits(),
    };
    let _ = verify(&path, keys, &options);
});
