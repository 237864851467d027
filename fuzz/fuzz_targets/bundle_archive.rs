//! A bundle's `.tar.zst` through the safe archive reader and the manifest checks
//! (`sealkit::bundle::archive::walk`, check only). Mode 0: the input is the compressed
//! file. Mode 1: the input is the tar stream, compressed here, so the tar and manifest
//! logic is reached. Mode 2: the input is a trusted comment.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sealkit::bundle::archive::{walk, Sink};
use sealkit::bundle::{Limits, NoProgress, TrustedComment};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_output_bytes: 4 << 20,
        ratio_floor_bytes: 1 << 20,
        ..Limits::default()
    };
    match mode % 3 {
        0 => {
            let _ = walk(rest, rest.len() as u64, None, &limits, Sink::Discard, &NoProgress);
        }
        1 => {
            let compressed = sealkit_fuzz::compress(rest);
            let _ = walk(
                &compressed[..],
                compressed.len() as u64,
                None,
                &limits,
                Sink::Discard,
                &NoProgress,
            );
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(rest) {
                if let Ok(comment) = TrustedComment::parse(text) {
                    assert_eq!(comment.render(), text, "a parsed comment renders back");
                }
            }
        }
    }
});
