//! Mutual TLS (RFC 8705) over real TLS connections with certificates from `sealkit ca`:
//! certificate-bound tokens, `/fresh-auth`, the mismatch metric, trusted proxies.

use crate::harness::{jwt_claims, metric, Site};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sealkit::client::https::TlsTarget;
use sealkit::client::ProofKey;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::path::Path;

fn thumbprint_of_pem(path: &Path) -> String {
    let pem = std::fs::read(path).unwrap();
    let der = openssl::x509::X509::from_pem(&pem)
        .unwrap()
        .to_der()
        .unwrap();
    URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

fn target_with(site: &Site, cert: &str, key: &str) -> TlsTarget {
    TlsTarget::new(
        &site.demo.issuer,
        &site.demo.ca_file,
        Some((
            Path::new(site.demo.var(cert)),
            Path::new(site.demo.var(key)),
        )),
    )
    .unwrap()
}

/// `curl --cert` against the server: a certificate-bound token whose cnf is the
/// certificate's SHA-256, and introspection says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_with_a_client_certificate_gets_a_certificate_bound_token() {
    let site = Site::start().await;
    let output = std::process::Command::new("curl")
        .args(["-sS", "--fail-with-body", "--cacert"])
        .arg(&site.demo.ca_file)
        .args([
            "--cert",
            site.demo.var("SEALKIT_MTLS_CERT"),
            "--key",
            site.demo.var("SEALKIT_MTLS_KEY"),
        ])
        .args([
            "-d",
            "grant_type=client_credentials",
            "-d",
            "client_id=demo-mtls",
        ])
        .arg(site.token_url())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let body: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(body["token_type"], "Bearer");
    let token = body["access_token"].as_str().unwrap();
    let expected = thumbprint_of_pem(Path::new(site.demo.var("SEALKIT_MTLS_CERT")));
    assert_eq!(jwt_claims(token)["cnf"]["x5t#S256"], json!(expected));
    let info = site.introspect(&mut site.conn().await, token).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["cnf"]["x5t#S256"], json!(expected));
    // A resource server that saw another certificate: inactive, counted.
    let auth = site.auth("INTROSPECT");
    let mut conn = site.conn().await;
    let reply = conn
        .post_form(
            "/introspect",
            &[("token", token), ("cnf_x5t_s256", "not-the-thumbprint")],
            &[("authorization", &auth)],
        )
        .await
        .unwrap();
    assert_eq!(reply.json(), json!({"active": false}));
    assert_eq!(
        metric(
            &site.metrics().await,
            "authority_mtls_mismatch_total{reason=\"thumbprint-mismatch\"}"
        ),
        1.0
    );
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_auth_checks_the_sender_against_the_tokens_binding() {
    let site = Site::start().await;
    let mut right = target_with(&site, "SEALKIT_MTLS_CERT", "SEALKIT_MTLS_KEY")
        .connect()
        .await
        .unwrap();
    let mut other = target_with(&site, "SEALKIT_OTHER_CERT", "SEALKIT_OTHER_KEY")
        .connect()
        .await
        .unwrap();
    let mut none = site.conn().await;
    let reply = right
        .post_form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "demo-mtls"),
            ],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let token = reply.json()["access_token"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {token}");
    let mismatches = |exposition: &str, reason: &str| {
        metric(
            exposition,
            &format!("authority_mtls_mismatch_total{{reason=\"{reason}\"}}"),
        )
    };

    let before = site.metrics().await;
    let reply = other
        .post_form("/fresh-auth", &[], &[("authorization", &bearer)])
        .await
        .unwrap();
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["error"], "invalid_token");
    let after = site.metrics().await;
    assert_eq!(
        mismatches(&after, "thumbprint-mismatch") - mismatches(&before, "thumbprint-mismatch"),
        1.0
    );

    let reply = none
        .post_form("/fresh-auth", &[], &[("authorization", &bearer)])
        .await
        .unwrap();
    assert_eq!(reply.status, 401);
    assert_eq!(
        mismatches(&site.metrics().await, "missing-certificate")
            - mismatches(&after, "missing-certificate"),
        1.0
    );

    let reply = right
        .post_form("/fresh-auth", &[], &[("authorization", &bearer)])
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let fresh_until = reply.json()["fresh_until"].as_i64().unwrap();
    assert!(fresh_until >= site.clock.now() + 299 && fresh_until <= site.clock.now() + 301);

    // The high-assurance client without a certificate gets no token at all.
    let reply = none
        .post_form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "demo-mtls"),
            ],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["error"], "invalid_client");
    // ...and another valid certificate does not authenticate it either.
    let reply = other
        .post_form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "demo-mtls"),
            ],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 401);
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_auth_with_a_dpop_bound_token_needs_a_proof_by_its_key() {
    let site = Site::start().await;
    let mut conn = site.conn().await;
    let key = ProofKey::es256().unwrap();
    let token = site
        .token(&mut conn, "DPOP", &[&site.proof(&key, None)])
        .await
        .json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("{}/fresh-auth", site.demo.issuer);
    let dpop = format!("DPoP {token}");
    let proof = key.proof("POST", &url, None, Some(&token)).unwrap();
    let reply = conn
        .post_form(
            "/fresh-auth",
            &[],
            &[("authorization", &dpop), ("dpop", &proof)],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    // The same proof again is a replay.
    let reply = conn
        .post_form(
            "/fresh-auth",
            &[],
            &[("authorization", &dpop), ("dpop", &proof)],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["error"], "invalid_dpop_proof");
    // A proof by another key, a proof without ath, and the token as Bearer: refused.
    let other = ProofKey::es256().unwrap();
    let wrong_key = other.proof("POST", &url, None, Some(&token)).unwrap();
    let no_ath = key.proof("POST", &url, None, None).unwrap();
    for (authorization, proof) in [
        (dpop.as_str(), wrong_key.as_str()),
        (dpop.as_str(), no_ath.as_str()),
    ] {
        let reply = conn
            .post_form(
                "/fresh-auth",
                &[],
                &[("authorization", authorization), ("dpop", proof)],
            )
            .await
            .unwrap();
        assert_eq!(reply.status, 401, "{:?}", reply.body);
    }
    let bearer = format!("Bearer {token}");
    let reply = conn
        .post_form("/fresh-auth", &[], &[("authorization", &bearer)])
        .await
        .unwrap();
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["error"], "invalid_token");
    site.stop().await;
}

/// RFC 9440 `Client-Cert` (the leaf) and `Client-Cert-Chain` (the intermediates) of a
/// chain file, as a TLS-terminating proxy would forward them.
fn client_cert_headers(site: &Site, var: &str) -> (String, String) {
    let pem = std::fs::read(site.demo.var(var)).unwrap();
    let sequence = |cert: &openssl::x509::X509| {
        format!(
            ":{}:",
            base64::engine::general_purpose::STANDARD.encode(cert.to_der().unwrap())
        )
    };
    let chain = openssl::x509::X509::stack_from_pem(&pem).unwrap();
    let rest: Vec<String> = chain[1..].iter().map(sequence).collect();
    (sequence(&chain[0]), rest.join(", "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cert_header_counts_only_from_a_trusted_proxy() {
    // Not trusted: the header is ignored, the client has no certificate.
    let site = Site::start().await;
    let (leaf, chain) = client_cert_headers(&site, "SEALKIT_MTLS_CERT");
    let forwarded = [
        ("client-cert", leaf.as_str()),
        ("client-cert-chain", chain.as_str()),
    ];
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "demo-mtls"),
    ];
    let reply = site
        .conn()
        .await
        .post_form("/token", &form, &forwarded)
        .await
        .unwrap();
    assert_eq!(reply.status, 401, "{:?}", reply.body);
    site.stop().await;

    // 127.0.0.1 is a trusted proxy: the forwarded certificate authenticates and binds.
    let site = Site::start_with(|yaml| {
        *yaml = yaml.replace(
            "  clientCa: ca/root.crt\n",
            "  clientCa: ca/root.crt\n  trustedProxies: [\"127.0.0.1\"]\n",
        );
    })
    .await;
    let (leaf, chain) = client_cert_headers(&site, "SEALKIT_MTLS_CERT");
    let forwarded = [
        ("client-cert", leaf.as_str()),
        ("client-cert-chain", chain.as_str()),
    ];
    let reply = site
        .conn()
        .await
        .post_form("/token", &form, &forwarded)
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let expected = thumbprint_of_pem(Path::new(site.demo.var("SEALKIT_MTLS_CERT")));
    assert_eq!(
        jwt_claims(reply.json()["access_token"].as_str().unwrap())["cnf"]["x5t#S256"],
        json!(expected)
    );
    // The trusted proxy forwarding nothing: the certificate context is missing.
    let reply = site
        .conn()
        .await
        .post_form("/token", &form, &[])
        .await
        .unwrap();
    assert_eq!(reply.status, 401);
    assert_eq!(
        metric(
            &site.metrics().await,
            "authority_mtls_mismatch_total{reason=\"context-missing\"}"
        ),
        1.0
    );
    // A forged header (garbage) is not a certificate.
    let reply = site
        .conn()
        .await
        .post_form("/token", &form, &[("client-cert", ":AAAA:")])
        .await
        .unwrap();
    assert_eq!(reply.status, 401);
    site.stop().await;
}

/// A client certificate signed by the site's intermediate but already expired.
fn expired_client_certificate(demo: &sealkit::demo::DemoSite, out: &Path) {
    use openssl::asn1::{Asn1Integer, Asn1Time};
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::extension::{ExtendedKeyUsage, SubjectAlternativeName};
    use openssl::x509::{X509Builder, X509NameBuilder, X509};
    let ca = demo.dir.join("ca");
    let issuer = X509::from_pem(&std::fs::read(ca.join("intermediate.crt")).unwrap()).unwrap();
    let issuer_key =
        PKey::private_key_from_pem(&std::fs::read(ca.join("intermediate.key")).unwrap()).unwrap();
    let key = PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
    )
    .unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "demo-mtls").unwrap();
    let name = name.build();
    let mut builder = X509Builder::new().unwrap();
    builder.set_version(2).unwrap();
    let serial = BigNum::from_u32(0x5ea1_0001).unwrap();
    builder
        .set_serial_number(&Asn1Integer::from_bn(&serial).unwrap())
        .unwrap();
    builder.set_subject_name(&name).unwrap();
    builder.set_issuer_name(issuer.subject_name()).unwrap();
    builder.set_pubkey(&key).unwrap();
    let now = sealkit::clock::unix_now();
    builder
        .set_not_before(&Asn1Time::from_unix(now - 3 * 86_400).unwrap())
        .unwrap();
    builder
        .set_not_after(&Asn1Time::from_unix(now - 86_400).unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .uri("urn:sealkit:client:demo-mtls")
        .build(&builder.x509v3_context(Some(&issuer), None))
        .unwrap();
    builder.append_extension(san).unwrap();
    builder
        .append_extension(ExtendedKeyUsage::new().client_auth().build().unwrap())
        .unwrap();
    builder.sign(&issuer_key, MessageDigest::sha256()).unwrap();
    let cert = builder.build();
    let mut chain = cert.to_pem().unwrap();
    chain.extend(issuer.to_pem().unwrap());
    std::fs::write(out.join("expired.crt"), chain).unwrap();
    std::fs::write(
        out.join("expired.key"),
        key.private_key_to_pem_pkcs8().unwrap(),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_expired_client_certificates_are_refused() {
    use sealkit::ca::{RevocationReason, SiteCa};
    let site = Site::start_prepared(|demo, yaml| {
        let ca = SiteCa::open(&demo.dir.join("ca")).unwrap();
        let certs = demo.dir.join("certs");
        let revoked = ca
            .issue_client("demo-mtls", Some("high-assurance"), 30)
            .unwrap();
        revoked.write(&certs, "revoked").unwrap();
        ca.revoke(&revoked.serial_hex, RevocationReason::KeyCompromise)
            .unwrap();
        std::fs::write(demo.dir.join("ca/site.crl"), ca.crl_pem(7).unwrap()).unwrap();
        expired_client_certificate(demo, &certs);
        *yaml = yaml.replace(
            "  clientCa: ca/root.crt\n",
            "  clientCa: ca/root.crt\n  clientCrl: ca/site.crl\n",
        );
    })
    .await;
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "demo-mtls"),
    ];
    let certs = site.demo.dir.join("certs");
    for (name, expect) in [("demo-mtls", 200), ("revoked", 401), ("expired", 401)] {
        let target = TlsTarget::new(
            &site.demo.issuer,
            &site.demo.ca_file,
            Some((
                &certs.join(format!("{name}.crt")),
                &certs.join(format!("{name}.key")),
            )),
        )
        .unwrap();
        let reply = target
            .connect()
            .await
            .unwrap()
            .post_form("/token", &form, &[])
            .await
            .unwrap();
        assert_eq!(reply.status, expect, "{name}: {:?}", reply.body);
        if expect == 401 {
            assert_eq!(reply.json()["error"], "invalid_client", "{name}");
        }
    }
    site.stop().await;
}

/// `dpop-and-mtls`: both proofs are required, and the token is bound to both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_and_mtls_binds_the_token_to_the_key_and_the_certificate() {
    let site = Site::start_with(|yaml| {
        *yaml = yaml.replace(
            "  - id: high-assurance\n    senderConstraint: mtls\n",
            "  - id: high-assurance\n    senderConstraint: dpop-and-mtls\n",
        );
    })
    .await;
    let mut conn = target_with(&site, "SEALKIT_MTLS_CERT", "SEALKIT_MTLS_KEY")
        .connect()
        .await
        .unwrap();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "demo-mtls"),
    ];
    // The certificate alone is not enough.
    let reply = conn.post_form("/token", &form, &[]).await.unwrap();
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"], "use_dpop_nonce");
    // Certificate and proof: bound to both.
    let key = ProofKey::es256().unwrap();
    let reply = conn
        .post_form("/token", &form, &[("dpop", &site.proof(&key, None))])
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.json()["token_type"], "DPoP");
    let claims = jwt_claims(reply.json()["access_token"].as_str().unwrap());
    assert_eq!(claims["cnf"]["jkt"], json!(key.thumbprint()));
    assert_eq!(
        claims["cnf"]["x5t#S256"],
        json!(thumbprint_of_pem(Path::new(
            site.demo.var("SEALKIT_MTLS_CERT")
        )))
    );
    // A proof without the certificate: refused too.
    let reply = site
        .conn()
        .await
        .post_form("/token", &form, &[("dpop", &site.proof(&key, None))])
        .await
        .unwrap();
    assert_eq!(reply.status, 401);
    site.stop().await;
}
