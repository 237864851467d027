//! The sender-constraint core as clients meet it over real TLS: one `invalid_client`
//! answer, `/fresh-auth` nonces, the body deadline, `dpop.enabled: false`, discovery.

use crate::harness::{metric, Site};
use sealkit::client::https::TlsTarget;
use sealkit::client::ProofKey;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// Unknown client, registered mTLS client without a certificate, registered mTLS client
/// with another client's certificate: the same bytes; only the registered client without a
/// certificate moves `authority_mtls_mismatch_total{reason="missing-certificate"}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failed_client_authentication_gets_the_same_answer() {
    let site = Site::start().await;
    let series = "authority_mtls_mismatch_total{reason=\"missing-certificate\"}";
    let mtls_client = site.demo.var("SEALKIT_MTLS_CLIENT_ID").to_string();
    let request = |client_id: &str| {
        vec![
            ("grant_type".to_string(), "client_credentials".to_string()),
            ("client_id".to_string(), client_id.to_string()),
        ]
    };
    let post = |target: TlsTarget, form: Vec<(String, String)>| async move {
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut conn = target.connect().await.unwrap();
        conn.post_form("/token", &form, &[]).await.unwrap()
    };

    let before = metric(&site.metrics().await, series);
    let unknown = post(site.target.clone(), request("no-such-client")).await;
    assert_eq!(
        metric(&site.metrics().await, series),
        before,
        "an unknown client id moved the paging series"
    );
    let without_certificate = post(site.target.clone(), request(&mtls_client)).await;
    assert_eq!(metric(&site.metrics().await, series), before + 1.0);
    let other_certificate = post(
        target_with(&site, "SEALKIT_OTHER_CERT", "SEALKIT_OTHER_KEY"),
        request(&mtls_client),
    )
    .await;
    for reply in [&unknown, &without_certificate, &other_certificate] {
        assert_eq!(reply.status, 401);
        assert_eq!(reply.header("www-authenticate"), None);
    }
    assert_eq!(unknown.body, without_certificate.body);
    assert_eq!(unknown.body, other_certificate.body);
    assert_eq!(
        unknown.json(),
        serde_json::json!({"error": "invalid_client", "error_description": "client authentication failed"})
    );
    // The client with its own certificate still gets a token.
    let own = post(
        target_with(&site, "SEALKIT_MTLS_CERT", "SEALKIT_MTLS_KEY"),
        request(&mtls_client),
    )
    .await;
    assert_eq!(own.status, 200, "{:?}", own.body);
}

/// A nonce tenant's client at `/fresh-auth`: a valid proof without a nonce gets RFC 9449
/// §9's 401 + `WWW-Authenticate: DPoP error="use_dpop_nonce"` + `DPoP-Nonce`; the proof
/// with that nonce gets 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_auth_asks_a_nonce_tenant_for_a_nonce() {
    let site = Site::start().await;
    let mut conn = site.conn().await;
    let key = ProofKey::es256().unwrap();
    let first = site
        .token(&mut conn, "NONCE", &[&site.proof(&key, None)])
        .await;
    assert_eq!(first.json()["error"], "use_dpop_nonce");
    let nonce = first.header("dpop-nonce").unwrap().to_string();
    let reply = site
        .token(&mut conn, "NONCE", &[&site.proof(&key, Some(&nonce))])
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let token = reply.json()["access_token"].as_str().unwrap().to_string();

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
    assert_eq!(reply.status, 401, "{:?}", reply.body);
    assert_eq!(reply.json()["error"], "use_dpop_nonce");
    let challenge = reply.header("www-authenticate").unwrap();
    assert!(
        challenge.starts_with("DPoP error=\"use_dpop_nonce\"") && challenge.contains("algs=\""),
        "{challenge}"
    );
    let nonce = reply.header("dpop-nonce").expect("DPoP-Nonce").to_string();
    let proof = key.proof("POST", &url, Some(&nonce), Some(&token)).unwrap();
    let reply = conn
        .post_form(
            "/fresh-auth",
            &[],
            &[("authorization", &dpop), ("dpop", &proof)],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert!(
        reply.header("dpop-nonce").is_some(),
        "the next nonce is handed out"
    );
}

/// A client that sends its headers and then one body byte per second is cut off at
/// `limits.bodyReadTimeout` (408, connection closed), while other clients keep getting
/// tokens meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_dribbling_its_body_is_cut_off_at_the_deadline() {
    let site = Site::start_with(|yaml| {
        let mut doc: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        doc["limits"] = serde_yaml::from_str("bodyReadTimeout: 2s").unwrap();
        *yaml = serde_yaml::to_string(&doc).unwrap();
    })
    .await;
    let mut roots = rustls::RootCertStore::empty();
    for cert in sealkit::tls::load_certificates(Path::new(&site.demo.ca_file)).unwrap() {
        roots.add(cert).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(sealkit::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let addr = site.server.addr;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let host = url::Url::parse(&site.demo.issuer)
        .unwrap()
        .host_str()
        .unwrap()
        .to_string();
    let name = rustls::pki_types::ServerName::try_from(host.clone()).unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let body = "grant_type=client_credentials&client_id=x&client_secret=yyyyyyyyyyyy";
    tls.write_all(
        format!(
            "POST /token HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n",
            body.len(),
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let slow = tokio::spawn(async move {
        let mut answer = Vec::new();
        for byte in body.bytes() {
            if tls.write_all(&[byte]).await.is_err() {
                break;
            }
            let mut buf = [0u8; 4096];
            match tokio::time::timeout(Duration::from_secs(1), tls.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        // Whatever is left until the server closes.
        let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
        (answer, started.elapsed())
    });
    // Meanwhile, others get tokens.
    let mut conn = site.conn().await;
    let mut served = 0;
    while !slow.is_finished() && started.elapsed() < Duration::from_secs(20) {
        let reply = site.token(&mut conn, "BEARER", &[]).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (answer, elapsed) = slow.await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(8),
        "cut off after {elapsed:?}"
    );
    assert!(served >= 5, "only {served} tokens were issued meanwhile");
}

/// `dpop.enabled: false`: a proof is ignored (a Bearer token, no `cnf`), and the metadata
/// advertises no DPoP; the OpenID discovery path is not served (no ID tokens here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_disabled_ignores_proofs_and_advertises_none() {
    let site = Site::start_with(|yaml| {
        let mut doc: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        doc["security"]["senderConstraints"]["dpop"]["enabled"] = false.into();
        // Tenants that need DPoP cannot exist without it: keep only the others.
        let keep = ["unconstrained", "high-assurance"];
        let tenants = doc["tenants"].as_sequence_mut().unwrap();
        tenants.retain(|t| keep.contains(&t["id"].as_str().unwrap()));
        let clients = doc["clients"].as_sequence_mut().unwrap();
        clients.retain(|c| keep.contains(&c["tenant"].as_str().unwrap()));
        assert!(!clients.is_empty());
        *yaml = serde_yaml::to_string(&doc).unwrap();
    })
    .await;
    let mut conn = site.conn().await;
    let key = ProofKey::es256().unwrap();
    let reply = site
        .token(&mut conn, "BEARER", &[&site.proof(&key, None)])
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.json()["token_type"], "Bearer");
    let claims = crate::harness::jwt_claims(reply.json()["access_token"].as_str().unwrap());
    assert!(claims.get("cnf").is_none(), "{claims}");
    let meta = conn
        .get("/.well-known/oauth-authorization-server")
        .await
        .unwrap()
        .json();
    assert!(
        meta.get("dpop_signing_alg_values_supported").is_none(),
        "{meta}"
    );
    assert_eq!(meta["issuer"], site.demo.issuer);
    assert_eq!(
        conn.get("/.well-known/openid-configuration")
            .await
            .unwrap()
            .status,
        404
    );
}
