//! Form parsing and client authentication from their public pieces: an
//! `application/x-www-form-urlencoded` body (RFC 6749 §3.2: each parameter once), a
//! `client_id`/`client_secret` checked against the demo site's registered secret hashes,
//! and a client certificate (input after 0xff) matched against every registered
//! certificate identity. The server's own `Form::parse` and `authenticate_client` are in a
//! private module (`server::request`); see docs/fuzzing.md for what to expose.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sealkit::config::ClientAuth;
use sealkit::mtls::{names, thumbprint, PeerCertificate};
use std::collections::HashMap;

fuzz_target!(|data: &[u8]| {
    let (body, certificate) = sealkit_fuzz::split(data);
    let mut fields: HashMap<String, String> = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(body) {
        if fields.insert(name.into_owned(), value.into_owned()).is_some() {
            return; // a repeated parameter is refused
        }
    }
    let settings = &sealkit_fuzz::site().settings;
    if let (Some(id), Some(secret)) = (fields.get("client_id"), fields.get("client_secret")) {
        if let Some(client) = settings.clients.get(id) {
            if let ClientAuth::Secret(hash) = &client.auth {
                let _ = hash.matches(secret);
            }
        }
    }
    if !certificate.is_empty() {
        let (san_uris, subject) = names(certificate);
        let peer = PeerCertificate {
            thumbprint: thumbprint(certificate),
            chain: Ok(()),
            san_uris,
            subject,
        };
        for client in settings.clients.values() {
            if let ClientAuth::Certificate(identity) = &client.auth {
                let _ = identity.matches(&peer);
            }
        }
    }
});
