//! `POST /token` with DPoP over real TLS: the "must show" list for the core.

use crate::harness::{jwt_claims, metric, Site};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sealkit::client::ProofKey;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_and_eddsa_proofs_get_tokens_bound_to_their_key() {
    let site = Site::start().await;
    let mut conn = site.conn().await;
    for key in [ProofKey::es256().unwrap(), ProofKey::ed25519().unwrap()] {
        let reply = site
            .token(&mut conn, "DPOP", &[&site.proof(&key, None)])
            .await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        let body = reply.json();
        assert_eq!(body["token_type"], "DPoP");
        let claims = jwt_claims(body["access_token"].as_str().unwrap());
        assert_eq!(claims["cnf"]["jkt"], json!(key.thumbprint()));
        assert_eq!(claims["iss"], json!(site.demo.issuer));
        assert_eq!(claims["client_id"], "demo-dpop");
        assert_eq!(claims["tenant"], "dpop-required");
        assert_eq!(claims["aud"], json!(["https://api.demo.sealkit"]));
        assert_eq!(claims["scope"], "read write");
    }
    site.stop().await;
}

/// Every malformed or hostile proof is refused with 400 invalid_dpop_proof, and the server
/// keeps serving on the same connection afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_proofs_are_refused_and_the_server_keeps_serving() {
    let site = Site::start_with(|yaml| {
        // RS256 allowed, so "RS256 header on an EC key" reaches the key/alg check.
        *yaml = yaml.replace(
            "allowedAlgorithms: [ES256, EdDSA]",
            "allowedAlgorithms: [ES256, EdDSA, RS256]",
        );
    })
    .await;
    let key = ProofKey::es256().unwrap();
    let url = site.token_url();
    let now = sealkit::clock::unix_now();
    let claims = |jti: &str| json!({"jti": jti, "htm": "POST", "htu": url, "iat": now});
    let with = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims(&sealkit::secret::generate());
        edit(&mut c);
        key.sign(&c).unwrap()
    };
    let header_edit = |edit: &dyn Fn(&mut serde_json::Value)| {
        key.sign_with_header(&claims(&sealkit::secret::generate()), |h| edit(h))
            .unwrap()
    };
    let unsigned = |alg: &str| {
        let header = json!({"typ": "dpop+jwt", "alg": alg, "jwk": key.public_jwk()});
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims("x").to_string())
        )
    };
    let hs256 = {
        use josekit::jws::JwsSigner;
        let header = json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": key.public_jwk()});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims("hs").to_string())
        );
        let signer = josekit::jws::HS256
            .signer_from_bytes(key.public_jwk().to_string().as_bytes())
            .unwrap();
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(signer.sign(input.as_bytes()).unwrap())
        )
    };
    let cases: Vec<(&str, String)> = vec![
        ("alg none", unsigned("none")),
        ("HS256 with the public key as secret", hs256),
        (
            "RS256 header on an EC key",
            header_edit(&|h| h["alg"] = json!("RS256")),
        ),
        (
            "private key in jwk",
            header_edit(&|h| h["jwk"] = key.private_jwk()),
        ),
        (
            "oct jwk",
            header_edit(&|h| h["jwk"] = json!({"kty": "oct", "k": "c2VjcmV0"})),
        ),
        ("wrong typ", header_edit(&|h| h["typ"] = json!("JWT"))),
        (
            "missing typ",
            header_edit(&|h| {
                h.as_object_mut().unwrap().remove("typ");
            }),
        ),
        ("wrong htm", with(&|c| c["htm"] = json!("GET"))),
        (
            "htu of another path",
            with(&|c| c["htu"] = json!(url.replace("/token", "/introspect"))),
        ),
        (
            "htu of another host",
            with(&|c| c["htu"] = json!(url.replace("127.0.0.1", "evil.example"))),
        ),
        ("iat 10 min old", with(&|c| c["iat"] = json!(now - 600))),
        ("iat 10 min ahead", with(&|c| c["iat"] = json!(now + 600))),
        (
            "missing jti",
            with(&|c| {
                c.as_object_mut().unwrap().remove("jti");
            }),
        ),
        ("garbage", "not.a.jwt".to_string()),
        ("binary garbage", "\u{1}\u{2}".to_string()),
    ];
    let mut conn = site.conn().await;
    for (name, proof) in &cases {
        let reply = if proof.chars().all(|c| c.is_ascii_graphic()) {
            site.token(&mut conn, "DPOP", &[proof]).await
        } else {
            // Not representable as a header value on our side: send raw bytes as garbage.
            site.token(&mut conn, "DPOP", &["@@@@"]).await
        };
        assert_eq!(reply.status, 400, "{name}: {:?}", reply.body);
        assert_eq!(reply.json()["error"], "invalid_dpop_proof", "{name}");
    }
    // Two DPoP headers.
    let proof = site.proof(&key, None);
    let reply = site.token(&mut conn, "DPOP", &[&proof, &proof]).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"], "invalid_dpop_proof");
    // A 64 KiB header: refused at the HTTP layer (431), the server survives.
    let huge = "A".repeat(64 * 1024);
    let mut big_conn = site.conn().await;
    let auth = site.auth("DPOP");
    let form = [("grant_type", "client_credentials")];
    match big_conn
        .post_form(
            "/token",
            &form,
            &[("authorization", &auth), ("dpop", &huge)],
        )
        .await
    {
        Ok(reply) => assert_eq!(reply.status, 431),
        // The server may answer 431 and close while the client is still writing the
        // header; the client then sees the reset instead of the answer. Either way: refused.
        Err(e) => assert!(
            e.to_string().contains("connection") || e.to_string().contains("reset"),
            "{e}"
        ),
    }
    // And afterwards a valid request still succeeds, on the old and on a new connection.
    let reply = site
        .token(&mut conn, "DPOP", &[&site.proof(&key, None)])
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let reply = site
        .token(&mut site.conn().await, "DPOP", &[&site.proof(&key, None)])
        .await;
    assert_eq!(reply.status, 200);
    let exposition = site.metrics().await;
    assert!(
        metric(
            &exposition,
            "authority_dpop_requests_total{result=\"rejected\"}"
        ) >= cases.len() as f64 + 1.0
    );
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_proof_is_refused_with_401() {
    let site = Site::start().await;
    let mut conn = site.conn().await;
    let key = ProofKey::es256().unwrap();
    let proof = site.proof(&key, None);
    assert_eq!(site.token(&mut conn, "DPOP", &[&proof]).await.status, 200);
    let replay = site.token(&mut conn, "DPOP", &[&proof]).await;
    assert_eq!(replay.status, 401);
    assert_eq!(replay.json()["error"], "invalid_dpop_proof");
    assert_eq!(
        replay.header("www-authenticate"),
        Some("DPoP error=\"invalid_dpop_proof\", algs=\"ES256 EdDSA\"")
    );
    assert_eq!(
        metric(&site.metrics().await, "authority_dpop_replay_total"),
        1.0
    );
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_proof_sent_20_times_concurrently_yields_exactly_one_token() {
    let site = std::sync::Arc::new(Site::start().await);
    let key = ProofKey::es256().unwrap();
    let proof = site.proof(&key, None);
    let mut connections = Vec::new();
    for _ in 0..20 {
        connections.push(site.conn().await);
    }
    let mut tasks = Vec::new();
    for mut conn in connections {
        let site = site.clone();
        let proof = proof.clone();
        tasks.push(tokio::spawn(async move {
            site.token(&mut conn, "DPOP", &[&proof])
                .await
                .status
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        19,
        "{statuses:?}"
    );
    let exposition = site.metrics().await;
    assert_eq!(
        metric(
            &exposition,
            "authority_tokens_issued_total{tenant=\"dpop-required\",token_type=\"DPoP\"}"
        ),
        1.0
    );
    std::sync::Arc::into_inner(site).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonce_round_trip() {
    let site = Site::start().await;
    let mut conn = site.conn().await;
    let key = ProofKey::ed25519().unwrap();
    // No nonce in the proof.
    let first = site
        .token(&mut conn, "NONCE", &[&site.proof(&key, None)])
        .await;
    assert_eq!(first.status, 400);
    assert_eq!(first.json()["error"], "use_dpop_nonce");
    let nonce = first
        .header("dpop-nonce")
        .expect("a DPoP-Nonce header")
        .to_string();
    // A nonce the server never minted.
    let wrong = site
        .token(
            &mut conn,
            "NONCE",
            &[&site.proof(&key, Some("made-up-nonce"))],
        )
        .await;
    assert_eq!(wrong.status, 400);
    assert_eq!(wrong.json()["error"], "use_dpop_nonce");
    assert!(wrong.header("dpop-nonce").is_some());
    // Retry with the server's nonce.
    let ok = site
        .token(&mut conn, "NONCE", &[&site.proof(&key, Some(&nonce))])
        .await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert_eq!(ok.json()["token_type"], "DPoP");
    assert!(
        ok.header("dpop-nonce").is_some(),
        "successful responses carry the current nonce"
    );
    assert_eq!(
        metric(&site.metrics().await, "authority_dpop_nonce_miss_total"),
        2.0
    );
    // Expired: move the clock past the nonce TTL (5m).
    site.clock.advance(301);
    let stale = site
        .token(&mut conn, "NONCE", &[&site.proof_at(&key, Some(&nonce))])
        .await;
    assert_eq!(stale.status, 400);
    assert_eq!(stale.json()["error"], "use_dpop_nonce");
    let fresh = stale.header("dpop-nonce").unwrap().to_string();
    assert_ne!(fresh, nonce);
    let ok = site
        .token(&mut conn, "NONCE", &[&site.proof_at(&key, Some(&fresh))])
        .await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_decides_what_a_request_must_prove() {
    let site = Site::start().await;
    let mut conn = site.conn().await;
    // DPoP tenant without a proof: the plan's 400 use_dpop_nonce with a nonce.
    let reply = site.token(&mut conn, "DPOP", &[]).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"], "use_dpop_nonce");
    assert!(reply.header("dpop-nonce").is_some());
    // Unconstrained tenant: Bearer without a proof, DPoP-bound with one.
    let reply = site.token(&mut conn, "BEARER", &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["token_type"], "Bearer");
    assert!(jwt_claims(reply.json()["access_token"].as_str().unwrap())
        .get("cnf")
        .is_none());
    let key = ProofKey::es256().unwrap();
    let reply = site
        .token(&mut conn, "BEARER", &[&site.proof(&key, None)])
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["token_type"], "DPoP");
    // A bad secret is 401 invalid_client with a Basic challenge.
    let auth = sealkit::client::https::basic_auth("demo-dpop", "wrong");
    let reply = conn
        .post_form(
            "/token",
            &[("grant_type", "client_credentials")],
            &[("authorization", &auth)],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["error"], "invalid_client");
    assert!(reply
        .header("www-authenticate")
        .unwrap()
        .starts_with("Basic"));
    // client_secret_post works too, and an unregistered scope is refused.
    let id = site.demo.var("SEALKIT_BEARER_CLIENT_ID").to_string();
    let secret = site.demo.var("SEALKIT_BEARER_CLIENT_SECRET").to_string();
    let reply = conn
        .post_form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &id),
                ("client_secret", &secret),
                ("scope", "read"),
            ],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["scope"], "read");
    let reply = conn
        .post_form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &id),
                ("client_secret", &secret),
                ("scope", "admin"),
            ],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(reply.json()["error"], "invalid_scope");
    let reply = conn
        .post_form(
            "/token",
            &[
                ("grant_type", "password"),
                ("client_id", &id),
                ("client_secret", &secret),
            ],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(reply.json()["error"], "unsupported_grant_type");
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_and_jwks_describe_the_authority() {
    let site = Site::start().await;
    let mut conn = site.conn().await;
    let meta = conn
        .get("/.well-known/oauth-authorization-server")
        .await
        .unwrap()
        .json();
    assert_eq!(meta["issuer"], json!(site.demo.issuer));
    assert_eq!(meta["token_endpoint"], json!(site.token_url()));
    assert_eq!(
        meta["dpop_signing_alg_values_supported"],
        json!(["ES256", "EdDSA", "Ed25519"])
    );
    let jwks = conn.get("/jwks").await.unwrap().json();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "EC");
    assert!(
        key.get("d").is_none(),
        "the JWKS must never carry the private key"
    );
    // A token verifies against the published key.
    let token = site.token(&mut conn, "BEARER", &[]).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let jwk = josekit::jwk::Jwk::from_map(key.as_object().unwrap().clone()).unwrap();
    let verifier = josekit::jws::ES256.verifier_from_jwk(&jwk).unwrap();
    let (_, header) = josekit::jwt::decode_with_verifier(&token, &verifier).unwrap();
    assert_eq!(header.token_type(), Some("at+jwt"));
    site.stop().await;
}
