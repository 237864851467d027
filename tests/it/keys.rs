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
