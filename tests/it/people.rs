//! People and the user grants against the real `sealkit serve` process of a demo site:
//! the device flow driven through its pages, DPoP-bound refresh tokens (rotation, reuse,
//! another key), and sign-in lockout with its audit trail and clean logs.

use crate::harness::spawn_serve;
use sealkit::client::device;
use sealkit::client::https::{Connection, Reply, TlsTarget};
use sealkit::client::ProofKey;
use sealkit::demo::DemoSite;
use std::path::Path;
use std::time::{Duration, Instant};

fn demo_site(dir: &Path, max_failed: u32) -> DemoSite {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let site = sealkit::demo::prepare(
        &dir.join("site"),
        format!("127.0.0.1:{port}").parse().unwrap(),
    )
    .unwrap();
    let yaml = std::fs::read_to_string(&site.config).unwrap();
    let edited = yaml.replace(
        "people:\n  users: users.yaml\n  lockout:\n    maxFailedAttempts: 5\n",
        &format!(
            "people:\n  users: users.yaml\n  devicePollInterval: 1s\n  lockout:\n    maxFailedAttempts: {max_failed}\n"
        ),
    );
    assert_ne!(
        yaml, edited,
        "the demo's people section changed; update this edit"
    );
    std::fs::write(&site.config, edited).unwrap();
    site
}

fn text(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

/// The value of the hidden `csrf` input of a page.
fn csrf(page: &str) -> String {
    let start = page.find("name=\"csrf\" value=\"").expect("no csrf field") + 19;
    page[start..].split('"').next().unwrap().to_string()
}

/// The `name=value` of the session cookie a page set.
fn cookie(reply: &Reply) -> String {
    let set = reply.header("set-cookie").expect("no session cookie");
    for attribute in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attribute), "{attribute} missing: {set}");
    }
    set.split(';').next().unwrap().to_string()
}

/// Opens the sign-in page and signs in; returns the answer.
async fn sign_in(conn: &mut Connection, user_code: &str, user: &str, password: &str) -> Reply {
    let page = conn
        .get(&format!("/device?user_code={user_code}"))
        .await
        .unwrap();
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    let body = text(&page);
    assert!(
        body.contains("type=\"password\" name=\"password\""),
        "{body}"
    );
    let c = cookie(&page);
    conn.post_form(
        "/device",
        &[
            ("csrf", &csrf(&body)),
            ("user_code", user_code),
            ("username", user),
            ("password", password),
        ],
        &[("cookie", &c)],
    )
    .await
    .unwrap()
}

/// The lines of every log file in `dir` (the writer is asynchronous: waits until `needle`
/// appears `count` times).
fn logs_with(dir: &Path, needle: &str, count: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all: String = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect();
        if all.matches(needle).count() >= count {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {count} × {needle} in the logs:\n{all}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_flow_then_refresh_rotation_reuse_and_key_binding() {
    let dir = tempfile::tempdir().unwrap();
    let site = demo_site(dir.path(), 5);
    let (mut server, metrics_addr) =
        crate::harness::spawn_serve_with_metrics(&["--config".as_ref(), site.config.as_os_str()]);
    let target = TlsTarget::new(&site.issuer, &site.ca_file, None).unwrap();
    let issuer = site.issuer.clone();
    let client_id = site.var("SEALKIT_CLI_CLIENT_ID").to_string();
    let key = std::sync::Arc::new(ProofKey::es256().unwrap());

    // Discovery lists the grant and the endpoint.
    let mut conn = target.connect().await.unwrap();
    let meta = conn
        .get("/.well-known/oauth-authorization-server")
        .await
        .unwrap()
        .json();
    assert!(meta["grant_types_supported"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g == "urn:ietf:params:oauth:grant-type:device_code"));
    assert_eq!(
        meta["device_authorization_endpoint"],
        format!("{issuer}/device_authorization")
    );

    // The device runs the flow (sealkit's library client) while a person uses the pages.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let device_task = {
        let (target, key, issuer, client_id) = (
            target.clone(),
            key.clone(),
            issuer.clone(),
            client_id.clone(),
        );
        tokio::spawn(async move {
            let mut conn = target.connect().await.unwrap();
            device::run(&mut conn, &issuer, &client_id, None, &key, move |codes| {
                let _ = tx.send(codes.clone());
            })
            .await
        })
    };
    let codes = rx.await.unwrap();
    assert!(codes.verification_uri_complete.ends_with(&codes.user_code));

    let user = site.var("SEALKIT_USER");
    let password = site.var("SEALKIT_USER_PASSWORD");
    // A wrong user code gets an error page after sign-in, never an approval form.
    let wrong = sign_in(&mut conn, "BBBB-BBBB", user, password).await;
    assert_eq!(wrong.status, 400, "{}", text(&wrong));
    assert!(!text(&wrong).contains("Approve"), "{}", text(&wrong));

    let consent = sign_in(&mut conn, &codes.user_code, user, password).await;
    assert_eq!(consent.status, 200, "{}", text(&consent));
    let page = text(&consent);
    assert!(
        page.contains("value=\"approve\"") && page.contains("value=\"deny\""),
        "{page}"
    );
    let approved = conn
        .post_form(
            "/device/decision",
            &[
                ("csrf", &csrf(&page)),
                ("user_code", &codes.user_code),
                ("decision", "approve"),
            ],
            &[("cookie", &cookie(&consent))],
        )
        .await
        .unwrap();
    assert_eq!(approved.status, 200, "{}", text(&approved));

    let tokens = device_task.await.unwrap().unwrap();
    assert_eq!(tokens.token_type, "DPoP");
    assert_eq!(tokens.scope, "read write");
    let claims = crate::harness::jwt_claims(&tokens.access_token);
    assert_eq!(claims["sub"], user);
    assert_eq!(claims["cnf"]["jkt"], key.thumbprint());
    let first_refresh = tokens
        .refresh_token
        .clone()
        .expect("a DPoP-bound refresh token");

    let token_url = format!("{issuer}/token");
    // Another key: refused, and the refresh token is not burnt by the attempt.
    let other = ProofKey::es256().unwrap();
    let stolen = refresh(
        &mut conn,
        &token_url,
        &client_id,
        first_refresh.clone(),
        &other,
    )
    .await;
    assert!(
        stolen.status == 400 || stolen.status == 401,
        "{}",
        text(&stolen)
    );
    assert_eq!(
        stolen.json()["error"],
        "invalid_dpop_proof",
        "{}",
        text(&stolen)
    );
    // No proof at all: refused.
    let bare = conn
        .post_form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &first_refresh),
                ("client_id", &client_id),
            ],
            &[],
        )
        .await
        .unwrap();
    assert_ne!(bare.status, 200, "{}", text(&bare));

    // The right key: a new access token and a new refresh token.
    let rotated = refresh(
        &mut conn,
        &token_url,
        &client_id,
        first_refresh.clone(),
        &key,
    )
    .await;
    assert_eq!(rotated.status, 200, "{}", text(&rotated));
    let rotated = rotated.json();
    let second_access = rotated["access_token"].as_str().unwrap().to_string();
    let second_refresh = rotated["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(second_refresh, first_refresh);

    let active = introspect(&mut conn, &site, second_refresh.clone()).await;
    assert_eq!(active["active"], true, "{active}");
    assert_eq!(active["cnf"]["jkt"], key.thumbprint());
    assert_eq!(
        introspect(&mut conn, &site, second_access.clone()).await["active"],
        true
    );

    // Reuse of the first refresh token: refused, and the whole family is inactive.
    let reused = refresh(
        &mut conn,
        &token_url,
        &client_id,
        first_refresh.clone(),
        &key,
    )
    .await;
    assert_eq!(reused.status, 400, "{}", text(&reused));
    assert_eq!(reused.json()["error"], "invalid_grant");
    for (name, token) in [
        ("the first access token", tokens.access_token.clone()),
        ("the rotated access token", second_access.clone()),
        ("the rotated refresh token", second_refresh.clone()),
    ] {
        assert_eq!(
            introspect(&mut conn, &site, token).await["active"],
            false,
            "{name} is still active"
        );
    }
    let after = refresh(
        &mut conn,
        &token_url,
        &client_id,
        second_refresh.clone(),
        &key,
    )
    .await;
    assert_eq!(after.status, 400, "{}", text(&after));

    let logs = logs_with(
        &site.dir.join("logs"),
        "\"event\":\"authority.refresh.reuse\"",
        1,
    );
    for (name, secret) in [
        ("the password", password),
        ("a refresh token", first_refresh.as_str()),
        ("a refresh token", second_refresh.as_str()),
        ("the user code", codes.user_code.as_str()),
    ] {
        assert!(!logs.contains(secret), "the logs contain {name}");
    }
    let metrics = crate::harness::scrape(metrics_addr).await;
    assert!(
        crate::harness::metric(&metrics, "authority_refresh_reuse_total") >= 1.0,
        "{metrics}"
    );
    server.kill().unwrap();
    server.wait().unwrap();
}

async fn refresh(
    conn: &mut Connection,
    token_url: &str,
    client_id: &str,
    token: String,
    key: &ProofKey,
) -> Reply {
    let proof = key.proof("POST", token_url, None, None).unwrap();
    conn.post_form(
        "/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &token),
            ("client_id", client_id),
        ],
        &[("dpop", &proof)],
    )
    .await
    .unwrap()
}

async fn introspect(conn: &mut Connection, site: &DemoSite, token: String) -> serde_json::Value {
    let auth = sealkit::client::https::basic_auth(
        site.var("SEALKIT_INTROSPECT_CLIENT_ID"),
        site.var("SEALKIT_INTROSPECT_CLIENT_SECRET"),
    );
    conn.post_form(
        "/introspect",
        &[("token", &token)],
        &[("authorization", &auth)],
    )
    .await
    .unwrap()
    .json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockout_after_the_configured_count_audited_and_no_password_in_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let site = demo_site(dir.path(), 3);
    let (mut server, metrics_addr) =
        crate::harness::spawn_serve_with_metrics(&["--config".as_ref(), site.config.as_os_str()]);
    let target = TlsTarget::new(&site.issuer, &site.ca_file, None).unwrap();
    let mut conn = target.connect().await.unwrap();
    let user = site.var("SEALKIT_USER");
    let password = site.var("SEALKIT_USER_PASSWORD");
    let wrong: Vec<String> = (0..3)
        .map(|i| format!("wrong-password-{i}-xyzzy"))
        .collect();
    for w in &wrong {
        let reply = sign_in(&mut conn, "BCDF-GHJK", user, w).await;
        assert_eq!(reply.status, 401, "{}", text(&reply));
    }
    // Locked: even the right password is refused.
    let locked = sign_in(&mut conn, "BCDF-GHJK", user, password).await;
    assert_eq!(locked.status, 401, "{}", text(&locked));
    assert!(text(&locked).contains("Sign-in failed"));

    // The audit stream (`audit.log`) holds each attempt once; the log directory as a whole
    // (the main log and the audit stream) never holds a password.
    let logs = site.dir.join("logs");
    let audit_log = logs.join("audit.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    let audited = loop {
        let text = std::fs::read_to_string(&audit_log).unwrap_or_default();
        if text
            .matches("\"event\":\"authority.login.attempt\"")
            .count()
            >= 4
            || Instant::now() > deadline
        {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let attempts: Vec<&str> = audited
        .lines()
        .filter(|l| l.contains("\"event\":\"authority.login.attempt\""))
        .collect();
    assert_eq!(attempts.len(), 4, "{attempts:#?}");
    assert_eq!(
        attempts
            .iter()
            .filter(|l| l.contains("\"result\":\"failure\""))
            .count(),
        3
    );
    assert!(
        attempts[3].contains("\"result\":\"locked\""),
        "{}",
        attempts[3]
    );
    assert!(attempts
        .iter()
        .all(|l| l.contains(&format!("\"user\":\"{user}\""))));
    let all = logs_with(&logs, "\"event\":\"authority.login.locked\"", 1);
    for secret in wrong.iter().map(String::as_str).chain([password]) {
        assert!(!all.contains(secret), "the logs contain a password");
    }
    let metrics = crate::harness::scrape(metrics_addr).await;
    assert_eq!(
        crate::harness::metric(&metrics, "authority_logins_total{result=\"failure\"}"),
        3.0
    );
    assert_eq!(
        crate::harness::metric(&metrics, "authority_logins_total{result=\"locked\"}"),
        1.0
    );
    server.kill().unwrap();
    server.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_code_with_pkce_and_dpop_jkt() {
    use sealkit::grants::codes::s256;
    let dir = tempfile::tempdir().unwrap();
    let site = demo_site(dir.path(), 5);
    let mut server = spawn_serve(&["--config".as_ref(), site.config.as_os_str()]);
    let target = TlsTarget::new(&site.issuer, &site.ca_file, None).unwrap();
    let mut conn = target.connect().await.unwrap();
    let client_id = site.var("SEALKIT_WEB_CLIENT_ID");
    let redirect_uri = site.var("SEALKIT_WEB_REDIRECT_URI");
    let key = ProofKey::es256().unwrap();
    let verifier = "a".repeat(20) + &"b".repeat(30);
    let query = |redirect: &str, jkt: &str| {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("response_type", "code"),
                ("client_id", client_id),
                ("redirect_uri", redirect),
                ("state", "st-123"),
                ("code_challenge", &s256(&verifier)),
                ("code_challenge_method", "S256"),
                ("dpop_jkt", jkt),
            ])
            .finish()
    };
    // An unregistered redirect URI: an error page, no redirect.
    let bad = conn
        .get(&format!(
            "/authorize?{}",
            query("http://127.0.0.1:1/evil", &key.thumbprint())
        ))
        .await
        .unwrap();
    assert_eq!(bad.status, 400);
    assert!(bad.header("location").is_none());

    let login = conn
        .get(&format!(
            "/authorize?{}",
            query(redirect_uri, &key.thumbprint())
        ))
        .await
        .unwrap();
    assert_eq!(login.status, 200, "{}", text(&login));
    let page = text(&login);
    let request = {
        let start = page.find("name=\"request\" value=\"").unwrap() + 22;
        page[start..].split('"').next().unwrap().to_string()
    };
    let consent = conn
        .post_form(
            "/authorize/login",
            &[
                ("csrf", &csrf(&page)),
                ("request", &request),
                ("username", site.var("SEALKIT_USER")),
                ("password", site.var("SEALKIT_USER_PASSWORD")),
            ],
            &[("cookie", &cookie(&login))],
        )
        .await
        .unwrap();
    assert_eq!(consent.status, 200, "{}", text(&consent));
    let consent_page = text(&consent);
    let decided = conn
        .post_form(
            "/authorize/decision",
            &[
                ("csrf", &csrf(&consent_page)),
                ("request", &request),
                ("decision", "approve"),
            ],
            &[("cookie", &cookie(&consent))],
        )
        .await
        .unwrap();
    assert_eq!(decided.status, 303);
    let location = url::Url::parse(decided.header("location").unwrap()).unwrap();
    assert!(location.as_str().starts_with(redirect_uri), "{location}");
    let param = |k: &str| {
        location
            .query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    assert_eq!(param("state"), "st-123");
    assert_eq!(param("iss"), site.issuer);
    let code = param("code");
    let token_url = format!("{}/token", site.issuer);
    let exchange = |key: &ProofKey, verifier: &str| {
        let proof = key.proof("POST", &token_url, None, None).unwrap();
        let form = vec![
            ("grant_type".to_string(), "authorization_code".to_string()),
            ("code".to_string(), code.clone()),
            ("redirect_uri".to_string(), redirect_uri.to_string()),
            ("client_id".to_string(), client_id.to_string()),
            ("code_verifier".to_string(), verifier.to_string()),
        ];
        (proof, form)
    };
    // A proof by another key than dpop_jkt names: refused (and the code is spent).
    let (proof, form) = exchange(&ProofKey::es256().unwrap(), &verifier);
    let pairs: Vec<(&str, &str)> = form.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let stolen = conn
        .post_form("/token", &pairs, &[("dpop", &proof)])
        .await
        .unwrap();
    assert_eq!(
        stolen.json()["error"],
        "invalid_dpop_proof",
        "{}",
        text(&stolen)
    );
    let (proof, form) = exchange(&key, &verifier);
    let pairs: Vec<(&str, &str)> = form.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let again = conn
        .post_form("/token", &pairs, &[("dpop", &proof)])
        .await
        .unwrap();
    assert_eq!(
        again.json()["error"],
        "invalid_grant",
        "a code is used once: {}",
        text(&again)
    );
    server.kill().unwrap();
    server.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_totp_user_needs_the_current_code_and_no_code_reaches_the_logs() {
    use sealkit::people::totp;
    let dir = tempfile::tempdir().unwrap();
    let site = demo_site(dir.path(), 5);
    // A second user with a TOTP secret, in the users file the demo wrote.
    let secret_b32 = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    let password = "totp-user-password-plugh";
    let hash = sealkit::people::password::hash_password(password, 1024, 1).unwrap();
    let users = site.dir.join("users.yaml");
    let mut yaml = std::fs::read_to_string(&users).unwrap();
    yaml.push_str(&format!(
        "  - id: tess\n    passwordHash: \"{hash}\"\n    groups: [operators]\n    totpSecret: {secret_b32}\n"
    ));
    std::fs::write(&users, yaml).unwrap();
    let mut server = spawn_serve(&["--config".as_ref(), site.config.as_os_str()]);
    let target = TlsTarget::new(&site.issuer, &site.ca_file, None).unwrap();
    let mut conn = target.connect().await.unwrap();
    let secret = totp::decode_secret(secret_b32).unwrap();
    let now = sealkit::clock::unix_now();
    let right = totp::current_code(&secret, now);
    // A code from an hour ago: wrong now.
    let wrong = totp::current_code(&secret, now - 3600);
    let attempt = |code: String| {
        let target = target.clone();
        async move {
            let mut conn = target.connect().await.unwrap();
            let page = conn.get("/device").await.unwrap();
            let body = text(&page);
            conn.post_form(
                "/device",
                &[
                    ("csrf", &csrf(&body)),
                    ("user_code", "BCDF-GHJK"),
                    ("username", "tess"),
                    ("password", password),
                    ("totp", &code),
                ],
                &[("cookie", &cookie(&page))],
            )
            .await
            .unwrap()
        }
    };
    let no_code = sign_in(&mut conn, "BCDF-GHJK", "tess", password).await;
    assert_eq!(no_code.status, 401, "the password alone is not enough");
    assert_eq!(
        attempt(wrong.clone()).await.status,
        401,
        "a stale code is refused"
    );
    // Signed in: the (unknown) user code then gets the error page, not the login form.
    let ok = attempt(right.clone()).await;
    assert_eq!(ok.status, 400, "{}", text(&ok));
    assert!(text(&ok).contains("That code is wrong or has expired"));

    let logs = logs_with(
        &site.dir.join("logs"),
        "\"event\":\"authority.login.attempt\"",
        3,
    );
    assert!(logs.contains("\"reason\":\"totp-code-missing\""));
    assert!(logs.contains("\"reason\":\"wrong-totp-code\""));
    for (name, secret) in [
        ("the password", password),
        ("the TOTP secret", secret_b32),
        ("a TOTP code", right.as_str()),
        ("a TOTP code", wrong.as_str()),
    ] {
        assert!(
            !logs.contains(&format!("\"{secret}\"")) && !logs.contains(&format!("={secret}")),
            "the logs contain {name}"
        );
    }
    server.kill().unwrap();
    server.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_refresh_token_ends_its_sign_in() {
    let dir = tempfile::tempdir().unwrap();
    let site = demo_site(dir.path(), 5);
    let mut server = spawn_serve(&["--config".as_ref(), site.config.as_os_str()]);
    let target = TlsTarget::new(&site.issuer, &site.ca_file, None).unwrap();
    let client_id = site.var("SEALKIT_CLI_CLIENT_ID").to_string();
    let key = std::sync::Arc::new(ProofKey::es256().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let device_task = {
        let (target, key, issuer, client_id) = (
            target.clone(),
            key.clone(),
            site.issuer.clone(),
            client_id.clone(),
        );
        tokio::spawn(async move {
            let mut conn = target.connect().await.unwrap();
            device::run(
                &mut conn,
                &issuer,
                &client_id,
                Some("read"),
                &key,
                move |codes| {
                    let _ = tx.send(codes.clone());
                },
            )
            .await
        })
    };
    let codes = rx.await.unwrap();
    let mut conn = target.connect().await.unwrap();
    let consent = sign_in(
        &mut conn,
        &codes.user_code,
        site.var("SEALKIT_USER"),
        site.var("SEALKIT_USER_PASSWORD"),
    )
    .await;
    let page = text(&consent);
    let approved = conn
        .post_form(
            "/device/decision",
            &[
                ("csrf", &csrf(&page)),
                ("user_code", &codes.user_code),
                ("decision", "approve"),
            ],
            &[("cookie", &cookie(&consent))],
        )
        .await
        .unwrap();
    assert_eq!(approved.status, 200);
    let tokens = device_task.await.unwrap().unwrap();
    assert_eq!(tokens.scope, "read", "the asked scope narrows the group's");
    let refresh_token = tokens.refresh_token.clone().unwrap();
    assert_eq!(
        introspect(&mut conn, &site, tokens.access_token.clone()).await["active"],
        true
    );
    // RFC 7009 by the public client itself (client_id only).
    let revoked = conn
        .post_form(
            "/revoke",
            &[("token", &refresh_token), ("client_id", &client_id)],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(revoked.status, 200, "{}", text(&revoked));
    assert_eq!(
        introspect(&mut conn, &site, refresh_token.clone()).await["active"],
        false
    );
    assert_eq!(
        introspect(&mut conn, &site, tokens.access_token.clone()).await["active"],
        false,
        "the access token of the revoked sign-in is inactive"
    );
    let token_url = format!("{}/token", site.issuer);
    let after = refresh(&mut conn, &token_url, &client_id, refresh_token, &key).await;
    assert_eq!(after.json()["error"], "invalid_grant", "{}", text(&after));
    server.kill().unwrap();
    server.wait().unwrap();
}

/// `sealkit token device`, the operator's command: it prints where to sign in and the
/// code (stderr), waits while a person signs in and approves on the pages, then prints the
/// DPoP-bound tokens (stdout), bound to the key file it was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealkit_token_device_waits_for_the_approval_and_prints_bound_tokens() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let site = demo_site(dir.path(), 5);
    let mut server = spawn_serve(&["--config".as_ref(), site.config.as_os_str()]);
    let target = TlsTarget::new(&site.issuer, &site.ca_file, None).unwrap();
    let mut conn = target.connect().await.unwrap();
    let key_file = dir.path().join("cli-key.jwk");
    let mut command = std::process::Command::new(crate::harness::BIN)
        .args(["token", "device", "--json", "--env"])
        .arg(site.dir.join("demo.env"))
        .arg("--dpop-key")
        .arg(&key_file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = command.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let user_code = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("sealkit token device printed no code");
        if let Some(rest) = line.split("enter the code ").nth(1) {
            break rest.split(')').next().unwrap().to_string();
        }
    };
    let consent = sign_in(
        &mut conn,
        &user_code,
        site.var("SEALKIT_USER"),
        site.var("SEALKIT_USER_PASSWORD"),
    )
    .await;
    assert_eq!(consent.status, 200, "{}", text(&consent));
    let page = text(&consent);
    let approved = conn
        .post_form(
            "/device/decision",
            &[
                ("csrf", &csrf(&page)),
                ("user_code", &user_code),
                ("decision", "approve"),
            ],
            &[("cookie", &cookie(&consent))],
        )
        .await
        .unwrap();
    assert_eq!(approved.status, 200, "{}", text(&approved));

    let output = tokio::task::spawn_blocking(move || command.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let key = ProofKey::load(&key_file).unwrap();
    assert_eq!(answer["token_type"], "DPoP");
    assert_eq!(answer["cnf"]["jkt"], key.thumbprint());
    assert!(answer["refresh_token"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    let claims = crate::harness::jwt_claims(answer["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], site.var("SEALKIT_USER"));
    server.kill().unwrap();
    let _ = server.wait();
}
