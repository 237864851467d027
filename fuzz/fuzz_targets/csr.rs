//! PKCS#10 requests from workload hosts (`sealkit::ca::inspect_csr`, x509-parser). Mode 0:
//! the input is the PEM text. Mode 1: the input is DER, wrapped in PEM here.
#![no_main]
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let pem = if mode & 1 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            STANDARD.encode(rest)
        )
    };
    let _ = sealkit::ca::inspect_csr(&pem);
});
