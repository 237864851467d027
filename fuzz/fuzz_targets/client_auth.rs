//! The server's own form parsing and client authentication (`server::fuzzing::client_auth`
//! → `Form::parse` and `authenticate_client`, RFC 6749 §2.3 and §3.2, RFC 8705 §2) against
//! the demo site's clients. Input: `mode body 0xff authorization 0xff certificate`.
//! Mode bit 0: send the `Authorization` field as a header; bit 1: a wrong `Content-Type`.
//! The certificate (DER, when not empty) is presented as a handshake certificate whose
//! chain verified, so the identity checks behind it are reached.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sealkit::mtls::{names, thumbprint, PeerCertificate};
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (body, rest) = sealkit_fuzz::split(rest);
    let (authorization, certificate) = sealkit_fuzz::split(rest);
    let content_type: &[u8] = if mode & 2 == 0 {
        b"application/x-www-form-urlencoded; charset=utf-8"
    } else {
        b"text/plain"
    };
    let peer = (!certificate.is_empty()).then(|| {
        let (san_uris, subject) = names(certificate);
        Arc::new(PeerCertificate {
            thumbprint: thumbprint(certificate),
            chain: Ok(()),
            san_uris,
            subject,
        })
    });
    let settings = &sealkit_fuzz::site().settings;
    let authenticated = sealkit::server::fuzzing::client_auth(
        settings,
        content_type,
        (mode & 1 == 1).then_some(authorization),
        body,
        peer,
    );
    if let Some(id) = authenticated {
        assert!(settings.clients.contains_key(&id), "authenticated an unregistered client");
    }
});
