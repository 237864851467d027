//! Writes the seed corpora (`fuzz/seeds/<target>/`) from the same machinery the tests use:
//! a real DPoP proof, a demo site's configuration and client certificate, a packed and
//! signed bundle of `bundles/example-site`, a kit built by `kit::build`, a CSR made by
//! rcgen, a token record. `cargo run --bin seeds -- <dir>` (run by `scripts/fuzz.sh`).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::path::{Path, PathBuf};

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir).expect("seed dir");
    std::fs::write(dir.join(name), bytes).expect("seed");
}

fn with_mode(mode: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![mode];
    out.extend_from_slice(bytes);
    out
}

fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).expect("PEM body")
}

fn decompress_after(bytes: &[u8], skip: usize) -> Vec<u8> {
    zstd::decode_all(&bytes[skip..]).expect("zstd")
}

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).expect("usage: seeds DIR"));
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let site = sealkit_fuzz::site();
    let tmp = tempfile::tempdir().expect("temp dir");

    // DPoP proofs.
    let key = sealkit::client::ProofKey::es256().expect("key");
    let url = "https://127.0.0.1:8443/token";
    let proof = key.proof_at("POST", url, None, None, 1_800_000_000).expect("proof");
    write(&out, "dpop_proof", "proof", &with_mode(0, proof.as_bytes()));
    let nonce = key.proof_at("POST", url, Some("n-1"), Some("an-access-token"), 1_800_000_000).expect("proof");
    write(&out, "dpop_proof", "proof-nonce-ath", &with_mode(2, nonce.as_bytes()));
    let header = serde_json::json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": sealkit_fuzz::dpop_key().public_jwk});
    let claims = serde_json::json!({"jti": "j-1", "htm": "POST", "htu": url, "iat": 1_800_000_000});
    let ath = serde_json::json!({"jti": "j-2", "htm": "POST", "htu": url, "iat": 1_800_000_000,
        "ath": sealkit::dpop::access_token_hash("an-access-token"), "nonce": "n-1"});
    for (name, mode, claims) in [("signed", 1u8, claims), ("signed-ath", 3u8, ath)] {
        let mut bytes = vec![mode];
        bytes.extend_from_slice(header.to_string().as_bytes());
        bytes.push(0xff);
        bytes.extend_from_slice(claims.to_string().as_bytes());
        write(&out, "dpop_proof", name, &bytes);
    }

    // Client certificates and headers.
    let cert_path = std::fs::read_dir(site.dir.join("certs"))
        .expect("certs")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "crt"))
        .expect("a client certificate");
    let chain_pem = std::fs::read_to_string(&cert_path).expect("cert");
    let blocks: Vec<Vec<u8>> = chain_pem
        .split_inclusive("-----END CERTIFICATE-----")
        .filter(|b| b.contains("BEGIN"))
        .map(pem_der)
        .collect();
    let leaf = &blocks[0];
    write(&out, "client_cert_header", "header", format!(":{}:", STANDARD.encode(leaf)).as_bytes());
    let chain_header: Vec<String> = blocks.iter().map(|d| format!(":{}:", STANDARD.encode(d))).collect();
    write(&out, "client_cert_header", "chain", chain_header.join(", ").as_bytes());
    write(&out, "client_cert_header", "der", leaf);
    write(&out, "client_cert_header", "dn", b"CN=caf\\C3\\A9,O=a=b\\, Inc+UID=7");
    // client_auth: mode, body 0xff Authorization 0xff certificate DER.
    let form = b"\x00grant_type=client_credentials&client_id=demo-dpop&client_secret=s3cret".to_vec();
    write(&out, "client_auth", "secret", &form);
    let mut basic = b"\x01grant_type=client_credentials\xffBasic ".to_vec();
    basic.extend_from_slice(STANDARD.encode("demo-dpop:s3cret").as_bytes());
    write(&out, "client_auth", "basic", &basic);
    let mut certificate = b"\x00grant_type=client_credentials&client_id=demo-mtls\xff\xff".to_vec();
    certificate.extend_from_slice(leaf);
    write(&out, "client_auth", "certificate", &certificate);

    // Configuration.
    write(&out, "config", "demo.yaml", &std::fs::read(&site.config).expect("config"));
    write(&out, "config", "example-site.yaml", &std::fs::read(repo.join("bundles/example-site/authority.yaml")).expect("example"));

    // A bundle of the example site, packed and signed as `bundle pack` + `sign` do.
    let bundle = tmp.path().join("example.bundle.tar.zst");
    let options = sealkit::bundle::PackOptions::new("example-site", 1, 1_793_880_000, 1_796_472_000);
    sealkit::bundle::pack(&repo.join("bundles/example-site"), &bundle, &options, &sealkit::bundle::NoProgress).expect("pack");
    let bytes = std::fs::read(&bundle).expect("bundle");
    write(&out, "bundle_archive", "bundle", &with_mode(0, &bytes));
    write(&out, "bundle_archive", "tar", &with_mode(1, &decompress_after(&bytes, 0)));
    let summary_comment = "sealkit-bundle format=1 site=example-site version=1 created=2026-11-05T12:00:00Z expires=2026-12-05T12:00:00Z manifest=sha256:".to_string() + &"ab".repeat(32);
    write(&out, "bundle_archive", "comment", &with_mode(2, summary_comment.as_bytes()));

    // A kit, built as `kit build` does.
    let kit_dir = tmp.path().join("kit");
    std::fs::create_dir_all(&kit_dir).expect("kit dir");
    std::fs::write(kit_dir.join("README.md"), "kit\n").expect("readme");
    let binary = tmp.path().join("sealkit");
    std::fs::write(&binary, "#!/bin/sh\n").expect("binary");
    let sbom = tmp.path().join("sealkit.cdx.json");
    std::fs::write(&sbom, r#"{"bomFormat": "CycloneDX", "specVersion": "1.5", "components": []}"#)
        .expect("sbom");
    let kit = tmp.path().join("kit.tar.zst");
    let build = sealkit::kit::BuildOptions {
        binary,
        sbom,
        kit_dir,
        bundles: Vec::new(),
        trusted_keys: Vec::new(),
        ca_cert: None,
        tls_dir: None,
        drill_dir: None,
        runbooks: None,
        created: 1_793_880_000,
        layout: sealkit::kit::Layout::Archive { level: 3 },
    };
    sealkit::kit::build(&kit, &build, &sealkit_fuzz::kit_key().secret).expect("kit");
    let bytes = std::fs::read(&kit).expect("kit bytes");
    write(&out, "kit_verify", "kit", &with_mode(0, &bytes));
    let frame = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    write(&out, "kit_verify", "tar", &with_mode(1, &decompress_after(&bytes, 8 + frame)));

    // CSRs.
    let mut params = rcgen::CertificateParams::new(vec!["api.site.internal".to_string()]).expect("params");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    let key = rcgen::KeyPair::generate().expect("key");
    let csr = params.serialize_request(&key).expect("csr");
    let pem = csr.pem().expect("pem");
    write(&out, "csr", "pem", &with_mode(0, pem.as_bytes()));
    write(&out, "csr", "der", &with_mode(1, csr.der()));

    // A token record.
    let record = serde_json::json!({"clientId": "demo-dpop", "tenant": "high-assurance", "scope": "read",
        "audience": ["https://api.example"], "iat": 1_800_000_000, "exp": 1_800_000_300, "jti": "t-1",
        "tokenType": "DPoP", "cnfJkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I", "senderCertificate": "x5t", "revoked": false});
    write(&out, "token_record", "record-json", &with_mode(1, record.to_string().as_bytes()));
    let typed: sealkit::store::TokenRecord = serde_json::from_value(record.clone()).expect("record");
    let stored = sealkit::store::sled_store::encode_record(&typed).expect("encodes");
    write(&out, "token_record", "record-sled", &with_mode(0, &stored));
    let mut legacy = stored[..8].to_vec(); // the expiry prefix, then the JSON of earlier versions
    legacy.extend_from_slice(record.to_string().as_bytes());
    write(&out, "token_record", "record-sled-json", &with_mode(0, &legacy));
    let batch = sealkit::store::token_batches::encode(&[([1; 32], stored.clone()), ([2; 32], legacy)]);
    write(&out, "token_record", "record-batch", &with_mode(2, &batch));
    println!("seeds written to {}", out.display());
}
