//! `sealkit guard` in front of the demo's echo upstream, over real TLS: what a resource
//! request must prove (RFC 9449 §7, RFC 8705 §3), what reaches the upstream, and what
//! survives the authority going away and a `kill -9` of the guard.

use crate::harness::{metric, Site};
use sealkit::client::https::{Connection, Reply, TlsTarget};
use sealkit::client::ProofKey;
use sealkit::guard::config::GuardSettings;
use sealkit::guard::{GuardOptions, RunningGuard};
use serde_json::Value;
use std::path::Path;

/// A demo site with its guard running in this process, in front of the echo upstream.
pub struct GuardSite {
    pub site: Site,
    pub guard: RunningGuard,
    pub target: TlsTarget,
    _echo: tokio::task::JoinHandle<()>,
}

impl GuardSite {
    pub async fn start() -> GuardSite {
        GuardSite::start_with(|_| {}).await
    }

    /// [`start`](Self::start) with the guard's settings edited first.
    pub async fn start_with(edit: impl FnOnce(&mut GuardSettings)) -> GuardSite {
        let mut site = Site::start().await;
        let echo = sealkit::guard::echo::bind_unix(&site.demo.dir.join("echo.sock")).unwrap();
        let echo = tokio::spawn(sealkit::guard::echo::serve_unix(echo));
        let mut settings = GuardSettings::load(&site.demo.guard_config).unwrap();
        edit(&mut settings);
        let listener = site.guard_listener.take().unwrap();
        let guard = sealkit::guard::start(
            settings,
            listener,
            GuardOptions {
                clock: site.clock.clone(),
                config_path: Some(site.demo.guard_config.clone()),
            },
        )
        .await
        .unwrap();
        let target = TlsTarget::new(
            &format!("https://127.0.0.1:{}", guard.addr.port()),
            &site.demo.ca_file,
            None,
        )
        .unwrap();
        GuardSite {
            site,
            guard,
            target,
            _echo: echo,
        }
    }

    pub fn resource_url(&self) -> String {
        self.site.demo.var("SEALKIT_RESOURCE_URL").to_string()
    }

    pub fn path_of(url: &str) -> String {
        url::Url::parse(url).unwrap().path().to_string()
    }

    /// A DPoP-bound token of the demo's DPoP client (scope as asked, all when `None`).
    pub async fn dpop_token(&self, key: &ProofKey, scope: Option<&str>) -> String {
        let mut conn = self.site.conn().await;
        let auth = self.site.auth("DPOP");
        let proof = self.site.proof(key, None);
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        let reply = conn
            .post_form(
                "/token",
                &form,
                &[("authorization", &auth), ("dpop", &proof)],
            )
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        reply.json()["access_token"].as_str().unwrap().to_string()
    }
}

/// Sends `method url` with these headers through `conn`.
pub async fn call(
    conn: &mut Connection,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut builder = http::Request::builder()
        .method(method)
        .uri(GuardSite::path_of(url));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    conn.send(
        builder
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
    )
    .await
    .unwrap()
}

fn dpop_headers<'a>(token: &'a str, proof: &'a str) -> [(&'static str, String); 2] {
    [
        ("authorization", format!("DPoP {token}")),
        ("dpop", proof.to_string()),
    ]
}

async fn call_dpop(
    conn: &mut Connection,
    method: &str,
    url: &str,
    token: &str,
    proof: &str,
) -> Reply {
    let headers = dpop_headers(token, proof);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    call(conn, method, url, &headers).await
}

fn challenge(reply: &Reply) -> String {
    reply
        .header("www-authenticate")
        .unwrap_or_default()
        .to_string()
}

/// The list, through the guard: a valid request passes with the identity headers
/// and without the credentials; a replay, a proof for another method or URL, a wrong
/// `ath`, another key, a bound token as Bearer, an unbound token → 401; a `read` token
/// writing → 403; spoofed identity headers never reach the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_admits_only_the_sender_of_a_bound_token() {
    let g = GuardSite::start().await;
    let url = g.resource_url();
    let key = ProofKey::es256().unwrap();
    let token = g.dpop_token(&key, None).await;
    let mut conn = g.target.connect().await.unwrap();

    // A valid request, with spoofed identity headers added by the client.
    let proof = key.proof("GET", &url, None, Some(&token)).unwrap();
    let headers = dpop_headers(&token, &proof);
    let mut all: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    all.extend([
        ("x-sealkit-client", "admin"),
        ("x-sealkit-scope", "everything"),
        ("x-forwarded-user", "root"),
        ("remote-user", "root"),
    ]);
    let reply = call(&mut conn, "GET", &url, &all).await;
    assert_eq!(reply.status, 200, "{:?} {}", reply.body, challenge(&reply));
    let echo = reply.json();
    let seen = &echo["headers"];
    assert_eq!(echo["path"], GuardSite::path_of(&url));
    assert_eq!(
        seen["x-sealkit-client"],
        g.site.demo.var("SEALKIT_DPOP_CLIENT_ID")
    );
    assert_eq!(seen["x-sealkit-tenant"], "dpop-required");
    assert_eq!(seen["x-sealkit-scope"], "read write");
    assert_eq!(seen["x-sealkit-token-type"], "DPoP");
    assert_eq!(seen["x-sealkit-cnf"], format!("jkt={}", key.thumbprint()));
    for gone in ["authorization", "dpop", "x-forwarded-user", "remote-user"] {
        assert!(
            seen.get(gone).is_none(),
            "{gone} reached the upstream: {seen}"
        );
    }

    // The same proof again: a replay.
    let reply = call_dpop(&mut conn, "GET", &url, &token, &proof).await;
    assert_eq!(reply.status, 401);
    assert!(
        challenge(&reply).starts_with("DPoP error=\"invalid_dpop_proof\""),
        "{}",
        challenge(&reply)
    );
    assert!(challenge(&reply).contains("algs=\""));

    // A proof for another method, another URL, with a wrong ath, by another key.
    let other_key = ProofKey::es256().unwrap();
    let other_url = url.replace("/api/echo", "/api/other");
    for (what, proof) in [
        (
            "another method",
            key.proof("POST", &url, None, Some(&token)).unwrap(),
        ),
        (
            "another URL",
            key.proof("GET", &other_url, None, Some(&token)).unwrap(),
        ),
        (
            "a wrong ath",
            key.proof("GET", &url, None, Some("another-token")).unwrap(),
        ),
        (
            "another key",
            other_key.proof("GET", &url, None, Some(&token)).unwrap(),
        ),
    ] {
        let reply = call_dpop(&mut conn, "GET", &url, &token, &proof).await;
        assert_eq!(reply.status, 401, "{what}: {:?}", reply.body);
        assert!(
            challenge(&reply).contains("error=\"invalid_dpop_proof\""),
            "{what}: {}",
            challenge(&reply)
        );
    }

    // The DPoP-bound token as Bearer (RFC 9449 §7.2).
    let bearer = format!("Bearer {token}");
    let reply = call(&mut conn, "GET", &url, &[("authorization", &bearer)]).await;
    assert_eq!(reply.status, 401);
    assert!(
        challenge(&reply).contains("error=\"invalid_token\""),
        "{}",
        challenge(&reply)
    );

    // An unbound token (the unconstrained tenant's Bearer token).
    let mut auth_conn = g.site.conn().await;
    let unbound = g.site.token(&mut auth_conn, "BEARER", &[]).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let reply = call(
        &mut conn,
        "GET",
        &url,
        &[("authorization", &format!("Bearer {unbound}"))],
    )
    .await;
    assert_eq!(reply.status, 401);
    assert!(challenge(&reply).contains("error=\"invalid_token\""));

    // Two proofs: a malformed request.
    let p1 = key.proof("GET", &url, None, Some(&token)).unwrap();
    let p2 = key.proof("GET", &url, None, Some(&token)).unwrap();
    let dpop = format!("DPoP {token}");
    let reply = call(
        &mut conn,
        "GET",
        &url,
        &[("authorization", &dpop), ("dpop", &p1), ("dpop", &p2)],
    )
    .await;
    assert_eq!(reply.status, 400);

    // A read-only token writing: 403 insufficient_scope.
    let read_only = g.dpop_token(&key, Some("read")).await;
    let proof = key.proof("POST", &url, None, Some(&read_only)).unwrap();
    let reply = call_dpop(&mut conn, "POST", &url, &read_only, &proof).await;
    assert_eq!(reply.status, 403, "{:?}", reply.body);
    assert!(
        challenge(&reply).contains("error=\"insufficient_scope\""),
        "{}",
        challenge(&reply)
    );
    // …and reading is fine.
    let proof = key.proof("GET", &url, None, Some(&read_only)).unwrap();
    assert_eq!(
        call_dpop(&mut conn, "GET", &url, &read_only, &proof)
            .await
            .status,
        200
    );

    // No token at all: a challenge without an error code.
    let reply = call(&mut conn, "GET", &url, &[]).await;
    assert_eq!(reply.status, 401);
    assert!(
        challenge(&reply).starts_with("DPoP algs="),
        "{}",
        challenge(&reply)
    );
}

/// A certificate-bound token passes over its own certificate and is refused over another
/// one, moving `guard_mtls_mismatch_total{reason="thumbprint-mismatch"}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_bound_token_needs_its_certificate_at_the_resource() {
    let g = GuardSite::start().await;
    let demo = &g.site.demo;
    let with_cert = |cert: &str, key: &str, base: &str| {
        TlsTarget::new(
            base,
            &demo.ca_file,
            Some((Path::new(demo.var(cert)), Path::new(demo.var(key)))),
        )
        .unwrap()
    };
    let own_at_authority = with_cert("SEALKIT_MTLS_CERT", "SEALKIT_MTLS_KEY", &demo.issuer);
    let mut conn = own_at_authority.connect().await.unwrap();
    let reply = conn
        .post_form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", demo.var("SEALKIT_MTLS_CLIENT_ID")),
            ],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let token = reply.json()["access_token"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {token}");
    let guard_base = format!("https://127.0.0.1:{}", g.guard.addr.port());
    let url = g.resource_url();

    let own = with_cert("SEALKIT_MTLS_CERT", "SEALKIT_MTLS_KEY", &guard_base);
    let reply = call(
        &mut own.connect().await.unwrap(),
        "GET",
        &url,
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(reply.status, 200, "{:?} {}", reply.body, challenge(&reply));
    assert_eq!(reply.json()["headers"]["x-sealkit-token-type"], "Bearer");
    assert!(reply.json()["headers"]["x-sealkit-cnf"]
        .as_str()
        .unwrap()
        .starts_with("x5t#S256="));

    let series = "guard_mtls_mismatch_total{reason=\"thumbprint-mismatch\"}";
    let metrics = |g: &GuardSite| g.guard.guard.metrics.render();
    let before = metric(&metrics(&g), series);
    let other = with_cert("SEALKIT_OTHER_CERT", "SEALKIT_OTHER_KEY", &guard_base);
    let reply = call(
        &mut other.connect().await.unwrap(),
        "GET",
        &url,
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(reply.status, 401);
    assert!(challenge(&reply).contains("error=\"invalid_token\""));
    assert_eq!(metric(&metrics(&g), series), before + 1.0);
    // Without any certificate.
    let reply = call(
        &mut g.target.connect().await.unwrap(),
        "GET",
        &url,
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(reply.status, 401);
}

/// The nonce route answers `use_dpop_nonce` with a nonce, then 200 with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nonce_route_asks_for_a_resource_nonce() {
    let g = GuardSite::start().await;
    let url = g.site.demo.var("SEALKIT_RESOURCE_NONCE_URL").to_string();
    let key = ProofKey::es256().unwrap();
    let token = g.dpop_token(&key, None).await;
    let mut conn = g.target.connect().await.unwrap();
    let proof = key.proof("GET", &url, None, Some(&token)).unwrap();
    let reply = call_dpop(&mut conn, "GET", &url, &token, &proof).await;
    assert_eq!(reply.status, 401);
    assert!(
        challenge(&reply).starts_with("DPoP error=\"use_dpop_nonce\""),
        "{}",
        challenge(&reply)
    );
    let nonce = reply
        .header("dpop-nonce")
        .expect("a DPoP-Nonce")
        .to_string();
    let proof = key.proof("GET", &url, Some(&nonce), Some(&token)).unwrap();
    let reply = call_dpop(&mut conn, "GET", &url, &token, &proof).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
}

/// With the authority stopped, a guard restarted from its last known good keys still
/// verifies tokens (and still refuses forged ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_keeps_verifying_from_cached_keys_when_the_authority_is_down() {
    let g = GuardSite::start().await;
    let url = g.resource_url();
    let key = ProofKey::es256().unwrap();
    let token = g.dpop_token(&key, None).await;
    let GuardSite {
        site, guard, _echo, ..
    } = g;
    guard.shutdown().await.unwrap();
    let demo = site.demo.clone();
    let clock = site.clock.clone();
    let _files = site.stop_keeping_files().await; // the authority is gone

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let settings = GuardSettings::load(&demo.guard_config).unwrap();
    let guard = sealkit::guard::start(
        settings,
        listener,
        GuardOptions {
            clock,
            config_path: None,
        },
    )
    .await
    .unwrap();
    let target = TlsTarget::new(
        &format!("https://127.0.0.1:{}", guard.addr.port()),
        &demo.ca_file,
        None,
    )
    .unwrap();
    let mut conn = target.connect().await.unwrap();
    // htu names the configured external URL, whatever port this guard listens on.
    let proof = key.proof("GET", &url, None, Some(&token)).unwrap();
    let reply = call_dpop(&mut conn, "GET", &url, &token, &proof).await;
    assert_eq!(reply.status, 200, "{:?} {}", reply.body, challenge(&reply));
    let ready: Value = conn.get("/ready").await.unwrap().json();
    // The authority's current and next keys (keyset: next is published ahead of use).
    assert_eq!(ready["signingKeys"], 2, "{ready}");
    // A token with a flipped signature byte is still refused.
    let mut forged = token.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let proof = key.proof("GET", &url, None, Some(&forged)).unwrap();
    assert_eq!(
        call_dpop(&mut conn, "GET", &url, &forged, &proof)
            .await
            .status,
        401
    );
    guard.shutdown().await.unwrap();
}

/// `kill -9` of a guard process under load, restart on the same data directory, replay
/// every proof that got a 200: none is accepted (the restart fence), and fresh requests
/// with the nonce handed out succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_of_the_guard_no_proof_that_passed_is_accepted_again() {
    let mut site = Site::start().await;
    let echo = sealkit::guard::echo::bind_unix(&site.demo.dir.join("echo.sock")).unwrap();
    tokio::spawn(sealkit::guard::echo::serve_unix(echo));
    let port = site
        .guard_listener
        .take()
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let args = ["--config".as_ref(), site.demo.guard_config.as_os_str()];
    let mut child = crate::harness::spawn_listening("guard", &args);
    let target = TlsTarget::new(
        &format!("https://127.0.0.1:{port}"),
        &site.demo.ca_file,
        None,
    )
    .unwrap();
    let url = site.demo.var("SEALKIT_RESOURCE_URL").to_string();

    // Three clients, each with its own key and token, send requests until the kill.
    let mut clients = Vec::new();
    for _ in 0..3 {
        let key = ProofKey::es256().unwrap();
        let mut conn = site.conn().await;
        let proof = site.proof(&key, None);
        let token = site.token(&mut conn, "DPOP", &[&proof]).await.json()["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        clients.push((std::sync::Arc::new(key), token));
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for (key, token) in clients.clone() {
        let (target, url, stop) = (target.clone(), url.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut passed = Vec::new();
            let Ok(mut conn) = target.connect().await else {
                return passed;
            };
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let proof = key.proof("GET", &url, None, Some(&token)).unwrap();
                let headers = dpop_headers(&token, &proof);
                let headers: Vec<(&str, &str)> =
                    headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                let mut builder = http::Request::builder()
                    .method("GET")
                    .uri(GuardSite::path_of(&url));
                for (n, v) in &headers {
                    builder = builder.header(*n, *v);
                }
                match conn
                    .send(
                        builder
                            .body(http_body_util::Full::new(bytes::Bytes::new()))
                            .unwrap(),
                    )
                    .await
                {
                    Ok(reply) if reply.status == 200 => passed.push(proof),
                    Ok(_) => {}
                    Err(_) => break, // the guard died under us
                }
            }
            passed
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    child.kill().unwrap(); // SIGKILL, under load
    child.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut passed: Vec<(String, String)> = Vec::new();
    for (task, (_, token)) in load.into_iter().zip(&clients) {
        for proof in task.await.unwrap() {
            passed.push((token.clone(), proof));
        }
    }
    assert!(
        passed.len() >= 30,
        "only {} requests passed before the kill",
        passed.len()
    );

    let mut child = crate::harness::spawn_listening("guard", &args);
    let mut conn = target.connect().await.unwrap();
    let mut accepted = 0;
    let mut nonce = None;
    for (token, proof) in &passed {
        let reply = call_dpop(&mut conn, "GET", &url, token, proof).await;
        if reply.status == 200 {
            accepted += 1;
        }
        nonce = nonce.or(reply.header("dpop-nonce").map(str::to_string));
    }
    eprintln!(
        "replayed {} proofs that had passed before kill -9: {accepted} accepted",
        passed.len()
    );
    assert_eq!(accepted, 0);
    // A fresh proof with the nonce the restarted guard hands out passes.
    let (key, token) = &clients[0];
    let proof = key
        .proof("GET", &url, nonce.as_deref(), Some(token))
        .unwrap();
    let reply = call_dpop(&mut conn, "GET", &url, token, &proof).await;
    assert_eq!(reply.status, 200, "{:?} {}", reply.body, challenge(&reply));
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A revocation-sensitive route asks the authority (RFC 7662): a revoked token is refused
/// at once, and with the authority unreachable the route fails closed (503) while plain
/// routes keep working; an unreachable upstream is a 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspected_routes_see_revocations_and_fail_closed() {
    // The demo's guard.yaml plus introspection and a sensitive route (typed edits).
    let mut site = Site::start().await;
    let demo = site.demo.clone();
    let secret_file = demo.dir.join("guard-introspection.secret");
    std::fs::write(&secret_file, demo.var("SEALKIT_INTROSPECT_CLIENT_SECRET")).unwrap();
    let mut doc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&demo.guard_config).unwrap()).unwrap();
    doc["introspection"] = serde_yaml::from_str(&format!(
        "{{url: \"{}/introspect\", clientId: {}, clientSecretFile: {}, cacheTtl: 0s}}",
        demo.issuer,
        demo.var("SEALKIT_INTROSPECT_CLIENT_ID"),
        secret_file.display()
    ))
    .unwrap();
    doc["routes"].as_sequence_mut().unwrap().push(
        serde_yaml::from_str(
            "{prefix: /sensitive/, audience: \"https://api.demo.sealkit\", scopes: [read], accept: [dpop], introspect: true}",
        )
        .unwrap(),
    );
    std::fs::write(&demo.guard_config, serde_yaml::to_string(&doc).unwrap()).unwrap();
    let echo = sealkit::guard::echo::bind_unix(&demo.dir.join("echo.sock")).unwrap();
    let echo_task = tokio::spawn(sealkit::guard::echo::serve_unix(echo));
    let guard = sealkit::guard::start(
        GuardSettings::load(&demo.guard_config).unwrap(),
        site.guard_listener.take().unwrap(),
        GuardOptions::default(),
    )
    .await
    .unwrap();
    let target = TlsTarget::new(
        &format!("https://127.0.0.1:{}", guard.addr.port()),
        &demo.ca_file,
        None,
    )
    .unwrap();
    let g = GuardSite {
        site,
        guard,
        target,
        _echo: echo_task,
    };
    let sensitive = g.resource_url().replace("/api/echo", "/sensitive/echo");
    let plain = g.resource_url();
    let key = ProofKey::es256().unwrap();
    let token = g.dpop_token(&key, None).await;
    let mut conn = g.target.connect().await.unwrap();
    let proof = key.proof("GET", &sensitive, None, Some(&token)).unwrap();
    assert_eq!(
        call_dpop(&mut conn, "GET", &sensitive, &token, &proof)
            .await
            .status,
        200
    );

    // Revoked at the authority → refused at the sensitive route at once.
    let owner = g.site.auth("DPOP");
    let mut auth_conn = g.site.conn().await;
    let reply = auth_conn
        .post_form(
            "/revoke",
            &[("token", &token)],
            &[("authorization", &owner)],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    let proof = key.proof("GET", &sensitive, None, Some(&token)).unwrap();
    let reply = call_dpop(&mut conn, "GET", &sensitive, &token, &proof).await;
    assert_eq!(reply.status, 401, "{:?}", reply.body);
    assert!(challenge(&reply).contains("error=\"invalid_token\""));

    // The authority goes away: the sensitive route fails closed, the plain one still serves.
    let fresh = g.dpop_token(&key, None).await;
    let GuardSite {
        site,
        guard,
        target,
        _echo,
    } = g;
    let _files = site.stop_keeping_files().await;
    let mut conn = target.connect().await.unwrap();
    let proof = key.proof("GET", &sensitive, None, Some(&fresh)).unwrap();
    let reply = call_dpop(&mut conn, "GET", &sensitive, &fresh, &proof).await;
    assert_eq!(reply.status, 503, "{:?}", reply.body);
    assert!(reply.header("retry-after").is_some());
    let proof = key.proof("GET", &plain, None, Some(&fresh)).unwrap();
    assert_eq!(
        call_dpop(&mut conn, "GET", &plain, &fresh, &proof)
            .await
            .status,
        200
    );

    // The upstream goes away: 502, and the metric says why.
    _echo.abort();
    std::fs::remove_file(demo.dir.join("echo.sock")).unwrap();
    let proof = key.proof("GET", &plain, None, Some(&fresh)).unwrap();
    let reply = call_dpop(&mut conn, "GET", &plain, &fresh, &proof).await;
    assert_eq!(reply.status, 502, "{:?}", reply.body);
    // The client is told what failed, not where the upstream lives.
    assert_eq!(
        reply.json()["error_description"],
        "the upstream is unreachable"
    );
    assert!(
        !String::from_utf8_lossy(&reply.body).contains("echo.sock"),
        "{:?}",
        reply.body
    );
    assert_eq!(
        metric(
            &guard.guard.metrics.render(),
            "guard_upstream_errors_total{reason=\"unreachable\"}"
        ),
        1.0
    );
    guard.shutdown().await.unwrap();
}

/// The guard follows a rotation of the authority's signing keys: after two rotations the
/// signing key is one the guard never saw (it was made at the first rotation); the first
/// token under it makes the guard refetch `/jwks` and it is admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_follows_a_signing_key_rotation() {
    // No wait between the start's fetch and the refetch (a test must not sleep through
    // keys.minRefetch).
    let g = GuardSite::start_with(|s| s.keys.min_refetch = std::time::Duration::ZERO).await;
    let url = g.resource_url();
    let key = ProofKey::es256().unwrap();
    let mut conn = g.target.connect().await.unwrap();
    let token = g.dpop_token(&key, None).await;
    let proof = key.proof("GET", &url, None, Some(&token)).unwrap();
    assert_eq!(
        call_dpop(&mut conn, "GET", &url, &token, &proof)
            .await
            .status,
        200
    );

    let operator = sealkit::telemetry::audit::Operator::current();
    let authority = &g.site.server.authority;
    authority.rotate_keys(&operator).unwrap();
    let set = authority.rotate_keys(&operator).unwrap();
    let rotated = g.dpop_token(&key, None).await;
    use base64::Engine as _;
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(rotated.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], set.current.kid.as_str());
    let proof = key.proof("GET", &url, None, Some(&rotated)).unwrap();
    let reply = call_dpop(&mut conn, "GET", &url, &rotated, &proof).await;
    assert_eq!(reply.status, 200, "{:?} {}", reply.body, challenge(&reply));
    // The token of the first key still verifies at the guard (it is a previous key now).
    let proof = key.proof("GET", &url, None, Some(&token)).unwrap();
    assert_eq!(
        call_dpop(&mut conn, "GET", &url, &token, &proof)
            .await
            .status,
        200
    );
}

/// `metrics.public` is the authority's setting: the guard's configuration refuses it with
/// the key path and the guard's own rule.
#[test]
fn the_guard_refuses_metrics_public() {
    let dir = tempfile::tempdir().unwrap();
    let demo =
        sealkit::demo::prepare(&dir.path().join("site"), "127.0.0.1:1".parse().unwrap()).unwrap();
    let mut yaml = std::fs::read_to_string(&demo.guard_config).unwrap();
    assert!(!yaml.contains("metrics:"), "the demo guard.yaml changed");
    yaml.push_str("metrics:\n  public: true\n");
    std::fs::write(&demo.guard_config, yaml).unwrap();
    let error = GuardSettings::load(&demo.guard_config).unwrap_err();
    let said = format!("{error:#}");
    assert!(
        said.contains("metrics.public") && said.contains("unless metrics.listen is set"),
        "{said}"
    );
}

/// The guard keeps its connection to a Unix-socket upstream open from one request to the
/// next (before, it opened one per request), and opens a new one once the upstream has
/// closed it, as a restarted upstream does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_reuses_its_upstream_connection_and_reconnects_after_a_restart() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let g = GuardSite::start().await;
    // In place of the demo's echo: the same answers, counting the connections accepted and
    // keeping each connection's task so that the "restart" can close them.
    g._echo.abort();
    let accepted = Arc::new(AtomicUsize::new(0));
    let connections: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
    let listener = sealkit::guard::echo::bind_unix(&g.site.demo.dir.join("echo.sock")).unwrap();
    let upstream = {
        let (accepted, connections) = (accepted.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                connections.lock().unwrap().push(tokio::spawn(async move {
                    let service = hyper::service::service_fn(|request| async move {
                        Ok::<_, std::convert::Infallible>(
                            sealkit::guard::echo::answer(request).await,
                        )
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                }));
            }
        })
    };

    let url = g.resource_url();
    let key = ProofKey::es256().unwrap();
    let token = g.dpop_token(&key, None).await;
    let mut conn = g.target.connect().await.unwrap();
    for round in 0..5 {
        let proof = key.proof("GET", &url, None, Some(&token)).unwrap();
        let reply = call_dpop(&mut conn, "GET", &url, &token, &proof).await;
        assert_eq!(reply.status, 200, "request {round}: {:?}", reply.body);
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "five requests one after the other took one upstream connection each"
    );

    // The upstream restarts: every connection it had is closed.
    for connection in connections.lock().unwrap().drain(..) {
        connection.abort();
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for round in 0..3 {
        let proof = key.proof("GET", &url, None, Some(&token)).unwrap();
        let reply = call_dpop(&mut conn, "GET", &url, &token, &proof).await;
        assert_eq!(
            reply.status, 200,
            "request {round} after the restart: {:?}",
            reply.body
        );
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    upstream.abort();
}
