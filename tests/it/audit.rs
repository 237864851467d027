//! The audit stream (`audit.log` in the log directory and beside the state a command
//! changes): one event per failed client authentication with its counter, the operator's
//! uid on command acts.

use crate::harness::{metric, scrape, spawn_serve_with_metrics, BIN};
use sealkit::client::https::{basic_auth, TlsTarget};
use sealkit::demo::DemoSite;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The JSON lines of `dir/audit.log` (empty when absent).
fn audit_lines(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("audit.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits until `dir/audit.log` holds `count` lines of `event` (the writer is async).
fn wait_for_events(dir: &Path, event: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<Value> = audit_lines(dir)
            .into_iter()
            .filter(|l| l["event"] == event)
            .collect();
        if lines.len() >= count || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn my_uid() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A wrong secret, an unknown client and a wrong certificate: each one audit event with
/// the presented client id, method, reason and peer (never the secret), and one step of
/// `authority_client_auth_failures_total{reason}`. An unsupported grant type and a scope
/// the client may not have are audited and counted too; issued tokens carry their jti.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_client_authentications_are_audited_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let site: DemoSite = sealkit::demo::prepare(
        &dir.path().join("site"),
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
    )
    .unwrap();
    // A certificate from the site CA for another client: valid, but not demo-mtls's.
    let ca = sealkit::ca::SiteCa::open(&site.dir.join("ca")).unwrap();
    let other = ca
        .issue_client("someone-else", Some("high-assurance"), 30)
        .unwrap();
    let certs = site.dir.join("certs");
    other.write(&certs, "someone-else").unwrap();

    let (mut server, metrics_addr) =
        spawn_serve_with_metrics(&["--config".as_ref(), site.config.as_os_str()]);
    let target = TlsTarget::new(&site.issuer, &site.ca_file, None).unwrap();
    let mut conn = target.connect().await.unwrap();
    let before = scrape(metrics_addr).await;
    let form = [("grant_type", "client_credentials")];
    let client = site.var("SEALKIT_DPOP_CLIENT_ID").to_string();
    let wrong_secret = "not-the-secret-5f1c";
    let reply = conn
        .post_form(
            "/token",
            &form,
            &[("authorization", &basic_auth(&client, wrong_secret))],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 401);
    let reply = conn
        .post_form(
            "/token",
            &form,
            &[("authorization", &basic_auth("nobody-7d2e", "whatever"))],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 401);
    let with_other = TlsTarget::new(
        &site.issuer,
        &site.ca_file,
        Some((
            &certs.join("someone-else.crt"),
            &certs.join("someone-else.key"),
        )),
    )
    .unwrap();
    let reply = with_other
        .connect()
        .await
        .unwrap()
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
    assert_eq!(reply.status, 401, "{:?}", reply.body);
    let auth = basic_auth(&client, site.var("SEALKIT_DPOP_CLIENT_SECRET"));
    let reply = conn
        .post_form(
            "/token",
            &[("grant_type", "password")],
            &[("authorization", &auth)],
        )
        .await
        .unwrap();
    assert_eq!(reply.json()["error"], "unsupported_grant_type");
    let reply = conn
        .post_form(
            "/token",
            &[("grant_type", "client_credentials"), ("scope", "root-7a")],
            &[("authorization", &auth)],
        )
        .await
        .unwrap();
    assert_eq!(reply.json()["error"], "invalid_scope", "{:?}", reply.body);
    let after = scrape(metrics_addr).await;

    let logs = site.dir.join("logs");
    let failures = wait_for_events(&logs, "authority.client.authentication.failed", 3);
    assert_eq!(failures.len(), 3, "{failures:?}");
    let expected = [
        (client.as_str(), "client_secret_basic", "wrong-secret"),
        ("nobody-7d2e", "client_secret_basic", "unknown-client"),
        (
            "demo-mtls",
            "tls_client_auth",
            "certificate-does-not-authenticate-client",
        ),
    ];
    for (line, (id, method, reason)) in failures.iter().zip(expected) {
        assert_eq!(line["client"], id, "{line}");
        assert_eq!(line["method"], method, "{line}");
        assert_eq!(line["reason"], reason, "{line}");
        assert!(
            line["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{line}"
        );
        let series = format!("authority_client_auth_failures_total{{reason=\"{reason}\"}}");
        assert_eq!(
            metric(&after, &series) - metric(&before, &series),
            1.0,
            "{series}"
        );
    }
    let refused = wait_for_events(&logs, "authority.token.refused", 2);
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!(refused[0]["error"], "unsupported_grant_type");
    assert_eq!(refused[1]["error"], "invalid_scope");
    for error in ["unsupported_grant_type", "invalid_scope"] {
        let series = format!("authority_token_requests_refused_total{{error=\"{error}\"}}");
        assert_eq!(metric(&after, &series) - metric(&before, &series), 1.0);
    }
    let reply = conn
        .post_form("/token", &form, &[("authorization", &auth)])
        .await;
    let _ = reply; // the DPoP client needs a proof: refused, but not an auth failure
    server.kill().unwrap();
    server.wait().unwrap();
    let text = std::fs::read_to_string(logs.join("audit.log")).unwrap();
    assert!(!text.contains(wrong_secret), "the audit log holds a secret");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(logs.join("audit.log"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

/// `sealkit bundle import` and `sealkit ca revoke` append their events, with the operator's
/// real uid, to the authority's log directory and beside the state they changed.
#[test]
fn bundle_import_and_ca_revoke_leave_their_events_with_the_operator() {
    use crate::bundle::{ok, pack_and_sign, sealkit, signing_key_pinned, write_source};
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let site: DemoSite = sealkit::demo::prepare(
        &work.join("site"),
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
    )
    .unwrap();
    let logs = site.dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap(); // as kit/install.sh does
    let root = work.join("bundles");
    let root_arg = root.display().to_string();
    signing_key_pinned(work, &root_arg);
    write_source(&site, &work.join("src-v1"), None);
    let v1 = pack_and_sign(work, "src-v1", "1");
    let out = std::process::Command::new(BIN)
        .args([
            "bundle", "import", &v1, "--site", "demo", "--root", &root_arg,
        ])
        .current_dir(work)
        .env_remove("USER")
        .env_remove("SUDO_USER")
        .output()
        .unwrap();
    ok(out);
    let uid = my_uid();
    // The second import finds the log directory through the active configuration.
    write_source(&site, &work.join("src-v2"), None);
    let v2 = pack_and_sign(work, "src-v2", "2");
    ok(sealkit(
        &["bundle", "import", &v2, "--root", &root_arg],
        work,
    ));
    for place in [&logs, &root] {
        let lines = audit_lines(place);
        let imported: Vec<&Value> = lines
            .iter()
            .filter(|l| l["event"] == "authority.bundle.imported")
            .collect();
        assert_eq!(imported.len(), 2, "{}: {lines:?}", place.display());
        for line in imported {
            assert_eq!(line["operator_uid"], uid, "{line}");
            assert!(
                line["operator"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("uid {uid}")),
                "{line}"
            );
        }
    }
    assert!(
        audit_lines(&root)
            .iter()
            .any(|l| l["event"] == "authority.bundle.keyTrusted"),
        "trust add is audited beside the bundle root"
    );

    let ca_dir = dir.path().join("ca");
    let ca = sealkit::ca::SiteCa::init(&ca_dir, "Audit Site", Default::default()).unwrap();
    let leaf = ca.issue_client("c1", None, 30).unwrap();
    let config = root.join("current/authority.yaml");
    let out = std::process::Command::new(BIN)
        .args(["ca", "revoke", &leaf.serial_hex, "--dir"])
        .arg(&ca_dir)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for place in [&logs, &ca_dir] {
        let lines = audit_lines(place);
        let revoked: Vec<&Value> = lines
            .iter()
            .filter(|l| l["event"] == "authority.ca.revoked")
            .collect();
        assert_eq!(revoked.len(), 1, "{}: {lines:?}", place.display());
        assert_eq!(revoked[0]["serial"], leaf.serial_hex.as_str());
        assert_eq!(revoked[0]["operator_uid"], uid);
    }
    // A refused act is audited too.
    let out = std::process::Command::new(BIN)
        .args(["ca", "revoke", "00:ff", "--dir"])
        .arg(&ca_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let failed: Vec<Value> = audit_lines(&ca_dir)
        .into_iter()
        .filter(|l| l["event"] == "authority.ca.failed")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["action"], "revoke");
}
