//! The RFC 9440 headers a trusted proxy forwards (`Client-Cert`, `Client-Cert-Chain`), the
//! certificate names read from what they carry, and RFC 4514 names as an operator writes
//! them (`sealkit::dn`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use sealkit::dn::DistinguishedName;
use sealkit::mtls::{names, parse_client_cert_chain_header, parse_client_cert_header, thumbprint};

fuzz_target!(|data: &[u8]| {
    if let Some(der) = parse_client_cert_header(data) {
        let _ = thumbprint(&der);
        let (_, subject) = names(&der);
        // Display and parse agree: the escaper's output parses back to the same name.
        let shown = subject.to_string();
        if !subject.is_empty() {
            if let Ok(again) = DistinguishedName::parse(&shown) {
                assert_eq!(again, subject, "{shown}");
            }
        }
    }
    if let Some(chain) = parse_client_cert_chain_header(data) {
        for der in chain {
            let _ = names(&der);
        }
    }
    // Raw DER too (what a TLS connection hands over).
    let _ = names(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(name) = DistinguishedName::parse(text) {
            let shown = name.to_string();
            let again = DistinguishedName::parse(&shown).expect("a displayed name parses");
            assert_eq!(again, name, "{text:?} -> {shown:?}");
        }
    }
});
