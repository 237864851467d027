//! Offline-kit verification (`sealkit::kit::verify`, no extraction). Mode 0: the input is
//! the kit file. Mode 1: the input is the kit's tar stream; it is compressed and signed
//! here (signature frame in front, as `kit build` writes it) so the walk behind the
//! signature is reached.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sealkit::bundle::signing::{secret_key_id, sign_data};
use sealkit::kit::{archive_comment, verify, KitLimits, VerifyOptions, SIGNATURE_FRAME_MAGIC};
use std::sync::OnceLock;

fn scratch() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::Builder::new().tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).expect("temp dir"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let key = sealkit_fuzz::kit_key();
        let compressed = sealkit_fuzz::compress(rest);
        let comment = archive_comment("2026-11-05T12:00:00Z", &"0".repeat(64));
        let untrusted = format!("sealkit offline kit signed by {}", secret_key_id(&key.secret));
        let Ok(signature) = sign_data(&key.secret, &compressed[..], &comment, &untrusted) else {
            return;
        };
        let mut out = SIGNATURE_FRAME_MAGIC.to_le_bytes().to_vec();
        out.extend_from_slice(&(signature.len() as u32).to_le_bytes());
        out.extend_from_slice(signature.as_bytes());
        out.extend_from_slice(&compressed);
        out
    };
    let path = scratch().path().join("kit.tar.zst");
    if std::fs::write(&path, &bytes).is_err() {
        return;
    }
    let options = VerifyOptions {
        extract: None,
        limits: KitLimits {
            max_output_bytes: 4 << 20,
            ..KitLimits::default()
        },
    };
    let _ = verify(&path, &sealkit_fuzz::kit_key().trusted, &options);
});
