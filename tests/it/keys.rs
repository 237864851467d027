//! Signing-key rotation on a running authority: `next` published ahead of use, tokens of
//! every key verifying against `/jwks` until they expire, retirement only after that.

use crate::harness::{jwt_claims, Site, BIN};
use serde_json::Value;

async fn jwks(site: &Site) -> Value {
    let reply = site.conn().await.get("/jwks").await.unwrap();
    assert_eq!(reply.status, 200);
    reply.json()
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

/// Verifies a token's ES256 signature with the key of its `kid` in `jwks` (as a resource
/// server would), and returns that kid.
fn verify_with(jwks: &Value, token: &str) -> Result<String, String> {
    use base64::Engine;
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    let kid = header["kid"].as_str().unwrap().to_string();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .ok_or_else(|| format!("kid {kid} is not in /jwks"))?;
    let jwk = josekit::jwk::Jwk::from_map(jwk.as_object().unwrap().clone()).unwrap();
    let verifier = josekit::jws::ES256.verifier_from_jwk(&jwk).unwrap();
    josekit::jwt::decode_with_verifier(token, &verifier).map_err(|e| e.to_string())?;
    Ok(kid)
}

fn keys(site: &Site, args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN)
        .arg("keys")
        .args(args)
        .arg("--config")
        .arg(&site.demo.config)
        .output()
        .unwrap()
}

/// Tokens issued before, during and after `sealkit keys rotate` (while a client keeps
/// asking for tokens) all verify against `/jwks` until they expire; the key used after the
/// rotation was in `/jwks` before it; `retire` is refused while a token of the old key may
/// live, and afterwards the old key is gone from `/jwks` and no live token needs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_keeps_every_token_verifiable_until_it_expires() {
    let site = std::sync::Arc::new(Site::start().await);
    let before_jwks = jwks(&site).await;
    let before_kids = kids(&before_jwks);
    assert_eq!(
        before_kids.len(),
        2,
        "current and next from the first start: {before_jwks}"
    );
    let (old, next) = (before_kids[0].clone(), before_kids[1].clone());

    let mut tokens = Vec::new();
    let mut conn = site.conn().await;
    for _ in 0..5 {
        let reply = site.token(&mut conn, "BEARER", &[]).await;
        tokens.push(reply.json()["access_token"].as_str().unwrap().to_string());
    }
    // A client keeps asking while the operator rotates.
    let load = {
        let site = site.clone();
        tokio::spawn(async move {
            let mut conn = site.conn().await;
            let mut issued = Vec::new();
            for _ in 0..60 {
                let reply = site.token(&mut conn, "BEARER", &[]).await;
                assert_eq!(reply.status, 200, "{:?}", reply.body);
                issued.push(reply.json()["access_token"].as_str().unwrap().to_string());
            }
            issued
        })
    };
    let out = tokio::task::spawn_blocking({
        let site = site.clone();
        move || keys(&site, &["rotate"])
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    tokens.extend(load.await.unwrap());
    for _ in 0..5 {
        let reply = site.token(&mut conn, "BEARER", &[]).await;
        tokens.push(reply.json()["access_token"].as_str().unwrap().to_string());
    }

    let after_jwks = jwks(&site).await;
    let after_kids = kids(&after_jwks);
    assert_eq!(
        after_kids[0], next,
        "the promoted key was published before the rotation"
    );
    assert!(
        after_kids.contains(&old),
        "the previous key stays published"
    );
    let mut by_kid = std::collections::BTreeMap::<String, usize>::new();
    for token in &tokens {
        let kid = verify_with(&after_jwks, token).unwrap();
        *by_kid.entry(kid).or_default() += 1;
        let info = site.introspect(&mut conn, token).await;
        assert_eq!(info["active"], true, "{info}");
    }
    assert!(by_kid.get(&old).copied().unwrap_or(0) >= 5, "{by_kid:?}");
    assert!(by_kid.get(&next).copied().unwrap_or(0) >= 5, "{by_kid:?}");
    assert_eq!(by_kid.len(), 2, "{by_kid:?}");

    // Too early: a token of the old key may still be live.
    let out = keys(&site, &["retire", "--kid", &old]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("may still verify live tokens"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(kids(&jwks(&site).await).contains(&old));

    // Once every token of the old key has expired, it is retired and gone from /jwks.
    site.clock.advance(3_600);
    let out = keys(&site, &["retire", "--kid", &old]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let retired_jwks = jwks(&site).await;
    assert!(!kids(&retired_jwks).contains(&old), "{retired_jwks}");
    let now = site.clock.now();
    let fresh = site.token(&mut conn, "BEARER", &[]).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    for token in tokens.iter().chain(std::iter::once(&fresh)) {
        if jwt_claims(token)["exp"].as_i64().unwrap() > now {
            assert_ne!(verify_with(&retired_jwks, token).unwrap(), old);
        }
    }
    assert_eq!(verify_with(&retired_jwks, &fresh).unwrap(), next);
    // With the authority stopped, `keys rotate` changes the files (the next start uses
    // them) and leaves its audit event, with the operator's uid, in the log directory.
    let site = std::sync::Arc::try_unwrap(site).ok().unwrap();
    let config = site.demo.config.clone();
    let logs = site.demo.dir.join("logs");
    let kept = site.stop_keeping_files().await;
    std::fs::create_dir_all(&logs).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["keys", "rotate", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let audit = std::fs::read_to_string(logs.join("audit.log")).unwrap();
    let line: Value = serde_json::from_str(
        audit
            .lines()
            .find(|l| l.contains("authority.keys.rotated"))
            .unwrap_or_else(|| panic!("no authority.keys.rotated in {audit}")),
    )
    .unwrap();
    assert_eq!(line["current"], after_kids[1].as_str(), "{line}");
    assert!(line["operator_uid"].is_u64(), "{line}");
    drop(kept);
}

/// An automatic schedule on a running authority: `keys schedule` plans keys ahead (the
/// published next first); a manual rotate is then refused with the reason; at the
/// activation time issued tokens switch `kid` without a restart; every token issued before
/// and after verifies against `/jwks` until it expires, and the old key leaves `/jwks` by
/// itself once its last token has expired. The key gauges follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_switches_kid_at_activation_and_drops_the_old_key_after_its_tokens() {
    let site = Site::start().await;
    let first = kids(&jwks(&site).await);
    let (old, next) = (first[0].clone(), first[1].clone());

    let out = keys(&site, &["schedule", "--every", "30m"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "below the 1h minimum is a usage error"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--every must be at least 1h"));
    let out = keys(&site, &["schedule", "--every", "1h", "--ahead", "3"]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("signing keys scheduled"), "{said}");
    let schedule = site
        .server
        .authority
        .core
        .signing_key
        .set()
        .schedule
        .expect("a schedule");
    assert_eq!(
        schedule.keys[1].kid, next,
        "the published next activates first"
    );
    let activates = schedule.keys[1].activates;
    assert_eq!(
        kids(&jwks(&site).await),
        first,
        "nothing changes before the activation"
    );

    let out = keys(&site, &["rotate"]);
    assert_eq!(out.status.code(), Some(4), "a refused act: could not run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rotates on a schedule"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let status = keys(&site, &["status"]);
    let status = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(status.contains(&format!("signing {old}")), "{status}");
    assert!(status.contains(&format!("planned {next}")), "{status}");

    let mut conn = site.conn().await;
    let mut tokens = Vec::new();
    let issue = |tokens: &mut Vec<String>, reply: sealkit::client::https::Reply| {
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        let token = reply.json()["access_token"].as_str().unwrap().to_string();
        tokens.push(token.clone());
        crate::harness::jwt_header(&token)["kid"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        issue(&mut tokens, site.token(&mut conn, "BEARER", &[]).await),
        old
    );
    // One second before the activation the old key still signs; at it, the planned one.
    site.clock.advance(activates - 1 - site.clock.now());
    assert_eq!(
        issue(&mut tokens, site.token(&mut conn, "BEARER", &[]).await),
        old
    );
    site.clock.advance(activates - site.clock.now());
    assert_eq!(
        issue(&mut tokens, site.token(&mut conn, "BEARER", &[]).await),
        next
    );
    assert_eq!(
        issue(&mut tokens, site.token(&mut conn, "BEARER", &[]).await),
        next
    );

    let after = jwks(&site).await;
    assert_eq!(
        kids(&after),
        vec![next.clone(), schedule.keys[2].kid.clone(), old.clone()],
        "current, the next planned key, and the old key while its tokens live"
    );
    let now = site.clock.now();
    for token in &tokens {
        verify_with(&after, token).unwrap();
        // The first token was issued an hour of (test) clock ago: expired, not refused.
        let live = jwt_claims(token)["exp"].as_i64().unwrap() > now;
        assert_eq!(site.introspect(&mut conn, token).await["active"], live);
    }
    // The gauges follow within a housekeeping tick (1 s).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let metrics = loop {
        let metrics = site.metrics().await;
        let created =
            crate::harness::metric(&metrics, "authority_signing_key_created_timestamp_seconds");
        if created == activates as f64 {
            break metrics;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the key's age counts from its activation: {created} != {activates}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        crate::harness::metric(
            &metrics,
            "authority_signing_key_schedule_end_timestamp_seconds"
        ),
        schedule.keys[3].activates as f64
    );

    // Once the last token of the old key has expired (5m lifetime + 5s skew), the old key
    // leaves /jwks by itself (the housekeeping tick; no request needed).
    site.clock.advance(200);
    assert_eq!(
        issue(&mut tokens, site.token(&mut conn, "BEARER", &[]).await),
        next
    );
    site.clock.advance(106);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let dropped = loop {
        let now = jwks(&site).await;
        if !kids(&now).contains(&old) {
            break now;
        }
        assert!(std::time::Instant::now() < deadline, "{now}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let now = site.clock.now();
    let mut live = 0;
    for token in &tokens {
        let claims = jwt_claims(token);
        if claims["exp"].as_i64().unwrap() > now {
            live += 1;
            assert_eq!(
                verify_with(&dropped, token).unwrap(),
                next,
                "live tokens verify"
            );
        } else if crate::harness::jwt_header(token)["kid"] == old.as_str() {
            // Every token of the old key has expired: none needs it any more.
            assert!(verify_with(&dropped, token).is_err());
        }
    }
    assert!(live >= 1, "a live token was checked");
    site.stop().await;
}
