//! Tests that run the real `sealkit` binary as a separate process: what an operator sees in
//! the log files, exit codes, and crash safety across `kill -9`.

use crate::harness::jwt_claims;
use sealkit::client::https::{basic_auth, TlsTarget};
use sealkit::client::ProofKey;
use sealkit::demo::DemoSite;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::harness::{spawn_serve, BIN};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn demo_site(dir: &Path) -> DemoSite {
    sealkit::demo::prepare(
        &dir.join("site"),
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
    )
    .unwrap()
}

/// Starts `sealkit serve --config` for a demo site.
fn serve(site: &DemoSite) -> Child {
    spawn_serve(&["--config".as_ref(), site.config.as_os_str()])
}

/// Polls `dir`'s log files until one line contains every needle (the writer is async).
fn wait_for_log_line(dir: &Path, needles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return line.to_string();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {needles:?} in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn all_logs(dir: &Path) -> String {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_leaves_an_audit_entry_and_logs_carry_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let site = demo_site(dir.path());
    let mut server = serve(&site);
    let target = TlsTarget::new(&site.issuer, &site.ca_file, None).unwrap();
    let mut conn = target.connect().await.unwrap();
    let key = ProofKey::es256().unwrap();
    let url = site.var("SEALKIT_TOKEN_URL").to_string();
    let auth = basic_auth(
        site.var("SEALKIT_DPOP_CLIENT_ID"),
        site.var("SEALKIT_DPOP_CLIENT_SECRET"),
    );
    let proof = key.proof("POST", &url, None, None).unwrap();
    let form = [("grant_type", "client_credentials")];
    let headers = [("authorization", auth.as_str()), ("dpop", proof.as_str())];
    let first = conn.post_form("/token", &form, &headers).await.unwrap();
    assert_eq!(first.status, 200);
    let token = first.json()["access_token"].as_str().unwrap().to_string();
    let second = conn.post_form("/token", &form, &headers).await.unwrap();
    assert_eq!(second.status, 401);

    let logs = site.dir.join("logs");
    let jkt = key.thumbprint();
    let audit = wait_for_log_line(&logs, &["\"event\":\"authority.dpop.replay\"", &jkt]);
    assert!(
        audit.contains("\"client\":\"demo-dpop\"")
            && audit.contains("\"tenant\":\"dpop-required\""),
        "{audit}"
    );
    let request = wait_for_log_line(
        &logs,
        &[
            "\"event\":\"authority.dpop.request\"",
            "\"result\":\"accepted\"",
            &jkt,
        ],
    );
    for field in ["\"tenant\":", "\"client\":", "\"cnf_jkt\":", "\"nonce\":"] {
        assert!(request.contains(field), "{field} missing in {request}");
    }

    // Also a nonce-tenant client and a bearer request, so their secrets have been handled.
    let nonce_auth = basic_auth(
        site.var("SEALKIT_NONCE_CLIENT_ID"),
        site.var("SEALKIT_NONCE_CLIENT_SECRET"),
    );
    let _ = conn
        .post_form("/token", &form, &[("authorization", &nonce_auth)])
        .await
        .unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    let text = all_logs(&logs);
    for (name, secret) in [
        ("a client secret", site.var("SEALKIT_DPOP_CLIENT_SECRET")),
        ("a client secret", site.var("SEALKIT_NONCE_CLIENT_SECRET")),
        ("an access token", token.as_str()),
        ("a DPoP proof", proof.as_str()),
        ("a proof signature", proof.rsplit('.').next().unwrap()),
    ] {
        assert!(!text.contains(secret), "the logs contain {name}");
    }
    // The token's id is not a credential: `authority.token.issued` names it (issue 16), so
    // an auditor can follow one token from issue to revocation.
    let jti = jwt_claims(&token)["jti"].as_str().unwrap().to_string();
    assert!(
        text.lines()
            .any(|l| l.contains("\"event\":\"authority.token.issued\"") && l.contains(&jti)),
        "authority.token.issued lacks the jti"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_neither_reopens_a_used_proof_nor_unrevokes_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let site = demo_site(dir.path());
    let target = TlsTarget::new(&site.issuer, &site.ca_file, None).unwrap();
    let key = ProofKey::es256().unwrap();
    let url = site.var("SEALKIT_TOKEN_URL").to_string();
    let auth = basic_auth(
        site.var("SEALKIT_DPOP_CLIENT_ID"),
        site.var("SEALKIT_DPOP_CLIENT_SECRET"),
    );
    let resource = basic_auth(
        site.var("SEALKIT_INTROSPECT_CLIENT_ID"),
        site.var("SEALKIT_INTROSPECT_CLIENT_SECRET"),
    );
    let form = [("grant_type", "client_credentials")];
    let proof = key.proof("POST", &url, None, None).unwrap();

    let mut server = serve(&site);
    let mut conn = target.connect().await.unwrap();
    let first = conn
        .post_form(
            "/token",
            &form,
            &[("authorization", &auth), ("dpop", &proof)],
        )
        .await
        .unwrap();
    assert_eq!(first.status, 200);
    let other = key.proof("POST", &url, None, None).unwrap();
    let reply = conn
        .post_form(
            "/token",
            &form,
            &[("authorization", &auth), ("dpop", &other)],
        )
        .await
        .unwrap();
    let revoked = reply.json()["access_token"].as_str().unwrap().to_string();
    let reply = conn
        .post_form(
            "/revoke",
            &[("token", &revoked)],
            &[("authorization", &auth)],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    server.kill().unwrap(); // SIGKILL: no shutdown path runs
    server.wait().unwrap();

    let mut server = serve(&site);
    let mut conn = target.connect().await.unwrap();
    let again = conn
        .post_form(
            "/token",
            &form,
            &[("authorization", &auth), ("dpop", &proof)],
        )
        .await
        .unwrap();
    assert_ne!(
        again.status, 200,
        "a proof used before the crash was accepted again: {:?}",
        again.body
    );
    assert!(matches!(
        again.json()["error"].as_str(),
        Some("invalid_dpop_proof") | Some("use_dpop_nonce")
    ));
    let info = conn
        .post_form(
            "/introspect",
            &[("token", &revoked)],
            &[("authorization", &resource)],
        )
        .await
        .unwrap();
    assert_eq!(info.json(), serde_json::json!({"active": false}));
    // The authority still serves: a fresh proof with the nonce it hands out succeeds.
    let nonce = again.header("dpop-nonce").map(str::to_string);
    let fresh = key.proof("POST", &url, nonce.as_deref(), None).unwrap();
    let reply = conn
        .post_form(
            "/token",
            &form,
            &[("authorization", &auth), ("dpop", &fresh)],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn config_check_lists_every_problem_with_its_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let site = demo_site(dir.path());
    let ok = Command::new(BIN)
        .args(["config", "check"])
        .arg(&site.config)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let yaml = std::fs::read_to_string(&site.config)
        .unwrap()
        .replace(
            "allowedAlgorithms: [ES256, EdDSA]",
            "allowedAlgorithms: [ES256, none, HS256]",
        )
        .replace("replayWindow: 5m", "replayWindow: 30s")
        .replace("tenant: unconstrained", "tenant: nowhere");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, yaml).unwrap();
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for path in [
        "security.senderConstraints.dpop.allowedAlgorithms[1]",
        "security.senderConstraints.dpop.allowedAlgorithms[2]",
        "security.senderConstraints.dpop.replayWindow",
    ] {
        assert!(stderr.contains(path), "{path} not reported in:\n{stderr}");
    }
    // Both clients of the renamed tenant are reported, each with its own index.
    assert_eq!(
        stderr.matches("].tenant: unknown tenant `nowhere`").count(),
        2,
        "{stderr}"
    );

    let unknown_key = dir.path().join("unknown.yaml");
    std::fs::write(
        &unknown_key,
        std::fs::read_to_string(&site.config)
            .unwrap()
            .replace("dataDir:", "dataDirectory:"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(&unknown_key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("dataDirectory"));
}

fn sealkit(args: &[&str], config: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_bypass_and_reload_reach_the_running_authority_through_its_control_socket() {
    let dir = tempfile::tempdir().unwrap();
    let site = demo_site(dir.path());
    let mut server = serve(&site);
    let target = TlsTarget::new(&site.issuer, &site.ca_file, None).unwrap();
    let mut conn = target.connect().await.unwrap();
    let form = [("grant_type", "client_credentials")];
    let auth = basic_auth(
        site.var("SEALKIT_DPOP_CLIENT_ID"),
        site.var("SEALKIT_DPOP_CLIENT_SECRET"),
    );

    // Bypass on: a no-proof request gets an unbound token; the event is logged.
    let out = sealkit(
        &["drill", "bypass", "--for", "15m", "--reason", "recap drill"],
        &site.config,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply = conn
        .post_form("/token", &form, &[("authorization", &auth)])
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.json()["token_type"], "Bearer");
    let logs = site.dir.join("logs");
    wait_for_log_line(
        &logs,
        &["\"event\":\"authority.dpop.bypass.started\"", "recap drill"],
    );
    wait_for_log_line(
        &logs,
        &["\"event\":\"authority.dpop.proof.bypass\"", "demo-dpop"],
    );
    // Bypass off: enforcement is back at once.
    let out = sealkit(&["drill", "bypass", "--off"], &site.config);
    assert!(out.status.success());
    let reply = conn
        .post_form("/token", &form, &[("authorization", &auth)])
        .await
        .unwrap();
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"], "use_dpop_nonce");
    wait_for_log_line(&logs, &["\"event\":\"authority.dpop.bypass.ended\""]);
    // Over the maximum duration: refused, nothing changes.
    let out = sealkit(
        &["drill", "bypass", "--for", "5h", "--reason", "too long"],
        &site.config,
    );
    assert!(!out.status.success());

    // Reload: a client added to the file works without a restart, over the same connection.
    let secret = sealkit::secret::generate();
    let mut yaml = std::fs::read_to_string(&site.config).unwrap();
    yaml.push_str(&format!(
        "  - id: added-later\n    tenant: unconstrained\n    secretHash: \"{}\"\n    audience: [api]\n",
        sealkit::secret::SecretHash::of(&secret)
    ));
    let added = basic_auth("added-later", &secret);
    assert_eq!(
        conn.post_form("/token", &form, &[("authorization", &added)])
            .await
            .unwrap()
            .status,
        401
    );
    std::fs::write(&site.config, &yaml).unwrap();
    let out = sealkit(&["reload"], &site.config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        conn.post_form("/token", &form, &[("authorization", &added)])
            .await
            .unwrap()
            .status,
        200
    );
    // A broken file is refused by reload and the running configuration stays.
    std::fs::write(
        &site.config,
        yaml.replace("tenant: unconstrained", "tenant: missing"),
    )
    .unwrap();
    let out = sealkit(&["reload"], &site.config);
    assert!(!out.status.success());
    assert_eq!(
        conn.post_form("/token", &form, &[("authorization", &added)])
            .await
            .unwrap()
            .status,
        200
    );
    server.kill().unwrap();
    server.wait().unwrap();
}

/// The drill can fail: against an authority that does not require DPoP for the DPoP
/// tenant, the first row of the matrix fails and the exit code says so.
#[test]
fn drill_run_fails_against_a_misconfigured_authority() {
    let dir = tempfile::tempdir().unwrap();
    let site = demo_site(dir.path());
    let yaml = std::fs::read_to_string(&site.config).unwrap();
    let misconfigured = yaml.replacen(
        "  - id: dpop-required\n    senderConstraint: dpop\n",
        "  - id: dpop-required\n    senderConstraint: none\n",
        1,
    );
    assert_ne!(yaml, misconfigured);
    std::fs::write(&site.config, misconfigured).unwrap();
    let mut server = serve(&site);
    let report = dir.path().join("report.xml");
    let out = Command::new(BIN)
        .args(["drill", "run", "--env"])
        .arg(site.dir.join("demo.env"))
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("DPoP required without proof"))
        .unwrap();
    assert!(row.ends_with("FAIL"), "{row}");
    let junit = std::fs::read_to_string(&report).unwrap();
    assert!(junit.contains("<failure"), "{junit}");
    assert!(
        junit.contains("name=\"nonce round trip\""),
        "every matrix row is listed: {junit}"
    );
}

/// Runs `sealkit bench ARGS --floor-iterations 50 --json`, which must succeed; its JSON
/// and its text.
pub(crate) fn bench_json(args: &[&str]) -> (serde_json::Value, String) {
    let output = Command::new(BIN)
        .arg("bench")
        .args(args)
        .args(["--floor-iterations", "50", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "exit {:?}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    (serde_json::from_str(&stdout).unwrap(), stdout)
}

/// `sealkit bench`, as an operator sizing a site runs it: it starts its own authority,
/// drives it, and reports figures for every scenario with no failed request. (Figures
/// only: nothing here judges speed.)
#[test]
fn bench_reports_figures_for_dpop_and_introspection() {
    let (json, stdout) = bench_json(&[
        "--scenario",
        "dpop,introspect",
        "--requests",
        "400",
        "--connections",
        "4",
        "--warmup",
        "0s",
    ]);
    let reports = json["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 2, "{stdout}");
    for (report, scenario) in reports.iter().zip(["dpop", "introspect"]) {
        assert_eq!(report["scenario"], scenario, "{report}");
        assert_eq!(report["ok"], 400, "{report}");
        assert_eq!(report["non_200"], 0, "{report}");
        assert_eq!(report["transport_errors"], 0, "{report}");
        assert!(report["per_second"].as_f64().unwrap() > 0.0, "{report}");
        assert!(
            report["latency"]["p99_ms"].as_f64().unwrap() > 0.0,
            "{report}"
        );
        assert!(report["server"]["pid"].as_u64().is_some(), "{report}");
        assert!(
            report["floor"]["es256_verify_us"].as_f64().unwrap() > 0.0,
            "{report}"
        );
    }
}

/// `sealkit bench --soak`: a steady rate, interval by interval, every request answered 200
/// at the rate asked for, with the server's own p99 beside the client's.
#[test]
fn a_short_soak_holds_its_rate_and_reports_the_servers_p99() {
    let (json, stdout) = bench_json(&[
        "--scenario",
        "dpop",
        "--soak",
        "4s",
        "--interval",
        "2s",
        "--rate",
        "100",
        "--connections",
        "4",
    ]);
    let intervals = json["soak"]["intervals"].as_array().unwrap();
    assert_eq!(intervals.len(), 2, "{stdout}");
    let (mut client_max, mut server_max) = (0.0f64, 0.0f64);
    for interval in intervals {
        assert_eq!(interval["non_200"], 0, "{interval}");
        assert_eq!(interval["transport_errors"], 0, "{interval}");
        // 100/s for 2 s: the dispatcher keeps the rate (a few requests may straddle).
        let ok = interval["ok"].as_u64().unwrap();
        assert!(
            (180..=220).contains(&ok),
            "{ok} requests in 2 s at 100/s: {interval}"
        );
        let client = interval["latency"]["p99_ms"].as_f64().unwrap();
        let server = interval["server_p99_ms"].as_f64().unwrap();
        assert!(server > 0.0, "server p99 {server} ms: {interval}");
        client_max = client_max.max(client);
        server_max = server_max.max(server);
    }
    // The client's time includes the server's. The server's p99 is interpolated within a
    // bucket that doubles, so it can read up to twice what it was; and its interval is cut
    // by a scrape, not by the client's clock: compared over the whole soak.
    assert!(
        server_max <= 2.0 * client_max,
        "server p99 {server_max} ms against the client's {client_max} ms"
    );
}

/// `/fresh-auth` goes through the same gate as `/token`: a fresh-auth request that got 200,
/// replayed after `kill -9` and a restart, is refused for every DPoP client (the restart
/// fence), nonce tenant or not; a fresh proof with the nonce handed out gets 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_auth_request_replayed_after_kill_9_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let site = demo_site(dir.path());
    let target = TlsTarget::new(&site.issuer, &site.ca_file, None).unwrap();
    let token_url = site.var("SEALKIT_TOKEN_URL").to_string();
    let fresh_url = format!("{}/fresh-auth", site.issuer);
    let form = [("grant_type", "client_credentials")];

    let mut server = serve(&site);
    let mut conn = target.connect().await.unwrap();
    // One DPoP client without nonces, one in the nonce tenant: a token each, then a
    // fresh-auth request that succeeds.
    let mut captured = Vec::new();
    for prefix in ["DPOP", "NONCE"] {
        let auth = basic_auth(
            site.var(&format!("SEALKIT_{prefix}_CLIENT_ID")),
            site.var(&format!("SEALKIT_{prefix}_CLIENT_SECRET")),
        );
        let key = ProofKey::es256().unwrap();
        let mut nonce: Option<String> = None;
        let token = loop {
            let proof = key
                .proof("POST", &token_url, nonce.as_deref(), None)
                .unwrap();
            let reply = conn
                .post_form(
                    "/token",
                    &form,
                    &[("authorization", &auth), ("dpop", &proof)],
                )
                .await
                .unwrap();
            if reply.status == 200 {
                break reply.json()["access_token"].as_str().unwrap().to_string();
            }
            assert_eq!(reply.json()["error"], "use_dpop_nonce", "{:?}", reply.body);
            assert!(nonce.is_none(), "a second nonce round");
            nonce = reply.header("dpop-nonce").map(str::to_string);
        };
        let dpop = format!("DPoP {token}");
        let mut fresh_nonce = nonce.clone();
        let proof = loop {
            let proof = key
                .proof("POST", &fresh_url, fresh_nonce.as_deref(), Some(&token))
                .unwrap();
            let reply = conn
                .post_form(
                    "/fresh-auth",
                    &[],
                    &[("authorization", &dpop), ("dpop", &proof)],
                )
                .await
                .unwrap();
            if reply.status == 200 {
                break proof;
            }
            assert_eq!(reply.json()["error"], "use_dpop_nonce", "{:?}", reply.body);
            fresh_nonce = reply.header("dpop-nonce").map(str::to_string);
        };
        captured.push((prefix, key, token, proof));
    }
    server.kill().unwrap(); // SIGKILL: no shutdown path runs
    server.wait().unwrap();

    let mut server = serve(&site);
    let mut conn = target.connect().await.unwrap();
    for (prefix, key, token, proof) in &captured {
        let dpop = format!("DPoP {token}");
        let again = conn
            .post_form(
                "/fresh-auth",
                &[],
                &[("authorization", &dpop), ("dpop", proof)],
            )
            .await
            .unwrap();
        assert_eq!(
            again.status, 401,
            "{prefix}: replay accepted: {:?}",
            again.body
        );
        assert!(
            matches!(
                again.json()["error"].as_str(),
                Some("use_dpop_nonce") | Some("invalid_dpop_proof")
            ),
            "{prefix}: {:?}",
            again.body
        );
        // The fence: even the client without nonces is asked for one, with the header.
        assert_eq!(again.json()["error"], "use_dpop_nonce", "{prefix}");
        let nonce = again
            .header("dpop-nonce")
            .expect("a DPoP-Nonce")
            .to_string();
        assert!(again
            .header("www-authenticate")
            .unwrap()
            .starts_with("DPoP error=\"use_dpop_nonce\""));
        let fresh = key
            .proof("POST", &fresh_url, Some(&nonce), Some(token))
            .unwrap();
        let reply = conn
            .post_form(
                "/fresh-auth",
                &[],
                &[("authorization", &dpop), ("dpop", &fresh)],
            )
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{prefix}: {:?}", reply.body);
    }
    server.kill().unwrap();
    server.wait().unwrap();
}

/// `allowTemporaryBypass: false` is a switch: `drill bypass` is refused with a clear
/// message, a non-zero exit and an audit event, and requests stay enforced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_that_forbids_bypass_refuses_bypass_drills() {
    let dir = tempfile::tempdir().unwrap();
    let site = demo_site(dir.path());
    let yaml = std::fs::read_to_string(&site.config).unwrap();
    let forbidden = yaml.replace("allowTemporaryBypass: true", "allowTemporaryBypass: false");
    assert_ne!(
        forbidden, yaml,
        "the demo configuration changed: the edit did nothing"
    );
    std::fs::write(&site.config, forbidden).unwrap();
    let mut server = serve(&site);

    let out = sealkit(
        &["drill", "bypass", "--for", "1m", "--reason", "recap drill"],
        &site.config,
    );
    assert!(!out.status.success(), "a forbidden bypass started");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("forbids bypass drills") && stderr.contains("allowTemporaryBypass"),
        "{stderr}"
    );
    wait_for_log_line(
        &site.dir.join("logs"),
        &[
            "\"event\":\"authority.dpop.bypass.refused\"",
            "forbids bypass",
        ],
    );
    // Still enforced: no proof → use_dpop_nonce.
    let target = TlsTarget::new(&site.issuer, &site.ca_file, None).unwrap();
    let mut conn = target.connect().await.unwrap();
    let auth = basic_auth(
        site.var("SEALKIT_DPOP_CLIENT_ID"),
        site.var("SEALKIT_DPOP_CLIENT_SECRET"),
    );
    let reply = conn
        .post_form(
            "/token",
            &[("grant_type", "client_credentials")],
            &[("authorization", &auth)],
        )
        .await
        .unwrap();
    assert_eq!(reply.json()["error"], "use_dpop_nonce");
    server.kill().unwrap();
    server.wait().unwrap();
}

/// Timeouts of `0s` and a replay window beyond its bound are refused with their key paths.
#[test]
fn config_check_bounds_every_timeout_and_the_replay_window() {
    let dir = tempfile::tempdir().unwrap();
    let site = demo_site(dir.path());
    let mut doc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&site.config).unwrap()).unwrap();
    doc["limits"] =
        serde_yaml::from_str("{headerReadTimeout: 0s, bodyReadTimeout: 0s, handshakeTimeout: 10m}")
            .unwrap();
    doc["security"]["senderConstraints"]["dpop"]["replayWindow"] = "2h".into();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, serde_yaml::to_string(&doc).unwrap()).unwrap();
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in [
        "limits.headerReadTimeout: must be between 1s and 2m",
        "limits.bodyReadTimeout: must be between 1s and 2m",
        "limits.handshakeTimeout: must be between 1s and 2m",
        "security.senderConstraints.dpop.replayWindow: must be at most 1h",
    ] {
        assert!(stderr.contains(line), "`{line}` not in:\n{stderr}");
    }
}

/// Four problems of four kinds — a value of the wrong type, a misspelt nested key, a value
/// that is not a duration, an issuer that is not https — are four lines, each with its
/// full key path, and exit 3.
#[test]
fn config_check_prints_one_line_per_problem_with_its_full_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let site = demo_site(dir.path());
    let mut yaml: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&site.config).unwrap()).unwrap();
    yaml["issuer"] = "http://127.0.0.1:8443".into();
    yaml["tokens"]["lifetime"] = "five minutes".into();
    yaml["limits"] = serde_yaml::from_str("{maxBodyBytes: lots}").unwrap();
    let tenant = yaml["tenants"][1].as_mapping_mut().unwrap();
    let constraint = tenant.remove("senderConstraint").unwrap();
    tenant.insert("senderConstrain".into(), constraint);
    let bad = dir.path().join("site/four.yaml");
    std::fs::write(&bad, serde_yaml::to_string(&yaml).unwrap()).unwrap();
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stderr}");
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 4, "{stderr}");
    let shown = bad.display().to_string();
    for path in [
        "tokens.lifetime: `five minutes` is not a duration",
        "limits.maxBodyBytes: invalid type",
        "tenants[1].senderConstrain: unknown key",
        "issuer: must be an https URL",
    ] {
        let prefix = format!("{shown}: {path}");
        assert_eq!(
            lines.iter().filter(|l| l.starts_with(&prefix)).count(),
            1,
            "{path:?} not reported once in:\n{stderr}"
        );
    }
}
