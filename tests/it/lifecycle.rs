//! Token lifecycle over real TLS: introspection, revocation, bypass drills.

use crate::harness::{jwt_claims, metric, Site};
use sealkit::client::ProofKey;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_reports_binding_and_revocation() {
    let site = Site::start().await;
    let mut conn = site.conn().await;
    let key = ProofKey::es256().unwrap();
    let reply = site
        .token(&mut conn, "DPOP", &[&site.proof(&key, None)])
        .await;
    let token = reply.json()["access_token"].as_str().unwrap().to_string();

    let info = site.introspect(&mut conn, &token).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["token_type"], "DPoP");
    assert_eq!(info["cnf"]["jkt"], json!(key.thumbprint()));
    assert_eq!(info["client_id"], "demo-dpop");
    assert_eq!(info["tenant"], "dpop-required");
    assert_eq!(info["iss"], json!(site.demo.issuer));
    assert_eq!(info["exp"], jwt_claims(&token)["exp"]);

    // Tampered signature: inactive, and nothing else is said.
    let mut tampered = token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(
        site.introspect(&mut conn, &tampered).await,
        json!({"active": false})
    );
    assert_eq!(
        site.introspect(&mut conn, "garbage").await,
        json!({"active": false})
    );

    // Only the owner can revoke; another client's attempt changes nothing but still gets 200.
    let other = site.auth("BEARER");
    let reply = conn
        .post_form(
            "/revoke",
            &[("token", &token)],
            &[("authorization", &other)],
        )
        .await
        .unwrap();
    // RFC 7009 §2.1: another client's revocation is refused and changes nothing.
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"], "unauthorized_client");
    assert_eq!(site.introspect(&mut conn, &token).await["active"], true);
    let owner = site.auth("DPOP");
    let reply = conn
        .post_form(
            "/revoke",
            &[("token", &token)],
            &[("authorization", &owner)],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(
        site.introspect(&mut conn, &token).await,
        json!({"active": false})
    );
    // Revoking an unknown token is 200 too.
    let reply = conn
        .post_form(
            "/revoke",
            &[("token", "unknown")],
            &[("authorization", &owner)],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200);

    // Expired: past the 5-minute lifetime.
    let fresh = site.token(&mut conn, "BEARER", &[]).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        site.introspect(&mut conn, &fresh).await["token_type"],
        "Bearer"
    );
    site.clock.advance(301);
    assert_eq!(
        site.introspect(&mut conn, &fresh).await,
        json!({"active": false})
    );

    // A client not registered for introspection is refused.
    let reply = conn
        .post_form(
            "/introspect",
            &[("token", &fresh)],
            &[("authorization", &owner)],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"], "unauthorized_client");
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bypass_drill_relaxes_the_requirement_then_reverts_by_itself() {
    let until = time::OffsetDateTime::now_utc() + time::Duration::minutes(15);
    let until = until
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let site = Site::start_with(|yaml| {
        let edited = yaml.replace(
            "      allowTemporaryBypass: true\n",
            &format!("      allowTemporaryBypass:\n        until: \"{until}\"\n        reason: sealed recap drill\n"),
        );
        assert_ne!(edited, *yaml, "the demo configuration changed: the edit did nothing");
        *yaml = edited;
    })
    .await;
    let mut conn = site.conn().await;
    // Bypass on: no proof → an unbound Bearer token.
    let reply = site.token(&mut conn, "DPOP", &[]).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.json()["token_type"], "Bearer");
    assert!(jwt_claims(reply.json()["access_token"].as_str().unwrap())
        .get("cnf")
        .is_none());
    // With a proof: validated and bound as usual; a bad proof is still refused.
    let key = ProofKey::es256().unwrap();
    let reply = site
        .token(&mut conn, "DPOP", &[&site.proof(&key, None)])
        .await;
    assert_eq!(reply.json()["token_type"], "DPoP");
    let reply = site.token(&mut conn, "DPOP", &["garbage"]).await;
    assert_eq!(reply.status, 400);
    let exposition = site.metrics().await;
    assert_eq!(
        metric(
            &exposition,
            "authority_dpop_requests_total{result=\"bypass\"}"
        ),
        1.0
    );
    assert_eq!(metric(&exposition, "authority_dpop_bypass_active"), 1.0);
    assert_eq!(
        conn.get("/ready").await.unwrap().json()["bypass"]["active"],
        true
    );

    // 16 minutes later the bypass has ended by itself, without a restart.
    site.clock.advance(16 * 60);
    let reply = site.token(&mut conn, "DPOP", &[]).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"], "use_dpop_nonce");
    assert_eq!(
        conn.get("/ready").await.unwrap().json()["bypass"]["active"],
        false
    );
    site.stop().await;
}

/// With no `metrics:` configuration, `/metrics` is on a loopback plain-HTTP listener at
/// 127.0.0.1:9464 and not public. The server then runs with only the port changed (to a
/// free one: tests never bind fixed ports): the public TLS listener answers 404 for
/// `/metrics`, the loopback listener serves it, `/health` and `/ready` stay public.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_on_loopback_by_default_and_not_on_the_public_listener() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let site = Site::start_prepared(|demo, yaml| {
        let bare = yaml.replacen("metrics:\n  listen: 127.0.0.1:0\n", "", 1);
        assert_ne!(
            &bare, yaml,
            "the demo configuration changed: no metrics block"
        );
        let path = demo.dir.join("no-metrics-block.yaml");
        std::fs::write(&path, &bare).unwrap();
        let defaults = sealkit::config::Settings::load(&path).unwrap();
        assert_eq!(defaults.metrics_listen.to_string(), "127.0.0.1:9464");
        assert_eq!(
            defaults.metrics_listen,
            sealkit::config::DEFAULT_METRICS_LISTEN
        );
        assert!(!defaults.metrics_public);
    })
    .await;
    assert!(!site.server.authority.current().settings.metrics_public);
    let mut tcp = tokio::net::TcpStream::connect(site.server.metrics_addr)
        .await
        .unwrap();
    assert!(site.server.metrics_addr.ip().is_loopback());
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text:.200}");
    assert!(text.contains("authority_dpop_nonce_miss_total"));
    let mut conn = site.conn().await;
    let reply = conn.get("/metrics").await.unwrap();
    assert_eq!(
        reply.status, 404,
        "the public listener does not serve /metrics"
    );
    assert_eq!(conn.get("/ready").await.unwrap().status, 200);
    assert_eq!(conn.get("/health").await.unwrap().status, 200);
    site.stop().await;
}

/// `metrics.public: true` serves `/metrics` on the public TLS listener as well; the loopback
/// listener keeps serving it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_public_opts_into_the_public_listener() {
    let site = Site::start_with(|yaml| {
        let edited = yaml.replacen(
            "metrics:\n  listen: 127.0.0.1:0\n",
            "metrics:\n  listen: 127.0.0.1:0\n  public: true\n",
            1,
        );
        assert_ne!(
            &edited, yaml,
            "the demo configuration changed: no metrics block"
        );
        *yaml = edited;
    })
    .await;
    let reply = site.conn().await.get("/metrics").await.unwrap();
    assert_eq!(reply.status, 200);
    let text = String::from_utf8(reply.body.to_vec()).unwrap();
    assert!(
        text.contains("authority_dpop_nonce_miss_total"),
        "{text:.200}"
    );
    assert!(site
        .metrics()
        .await
        .contains("authority_dpop_nonce_miss_total"));
    site.stop().await;
}
