//! Monitoring: `/metrics` as Prometheus text that `promtool check metrics` finds nothing
//! wrong with, OpenMetrics when asked for, and the expiry timestamps an alert needs.

use crate::harness::{metric, Site};
use bytes::Bytes;
use http_body_util::Full;

/// A scrape of the loopback metrics listener with this `Accept` header.
async fn scrape(site: &Site, accept: &str) -> (String, String) {
    let request = http::Request::get("/metrics")
        .header(http::header::ACCEPT, accept)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = sealkit::client::https::connect_plain(site.server.metrics_addr)
        .await
        .unwrap()
        .send(request)
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    let content_type = reply.header("content-type").unwrap_or("").to_string();
    (
        content_type,
        String::from_utf8(reply.body.to_vec()).unwrap(),
    )
}

/// `promtool check metrics` on a live scrape (`Accept: text/plain`) exits 0 and prints
/// nothing; the expiry gauges hold the dates of the files the configuration names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_scrape_passes_promtool_and_carries_the_expiry_dates() {
    use sealkit::ca::SiteCa;
    let site = Site::start_prepared(|demo, yaml| {
        let ca = SiteCa::open(&demo.dir.join("ca")).unwrap();
        std::fs::write(demo.dir.join("ca/site.crl"), ca.crl_pem(7).unwrap()).unwrap();
        let edited = yaml.replace(
            "  clientCa: ca/root.crt\n",
            "  clientCa: ca/root.crt\n  clientCrl: ca/site.crl\n",
        );
        assert_ne!(
            &edited, yaml,
            "the demo configuration changed: clientCa not found"
        );
        *yaml = edited;
    })
    .await;
    // Some traffic, so counters and histograms have samples.
    let mut conn = site.conn().await;
    let _ = site.token(&mut conn, "BEARER", &[]).await;
    let _ = conn
        .post_form(
            "/token",
            &[("grant_type", "client_credentials")],
            &[(
                "authorization",
                &sealkit::client::https::basic_auth("x", "y"),
            )],
        )
        .await
        .unwrap();

    let (content_type, text) = scrape(&site, "text/plain").await;
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &text).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(file.path()).unwrap())
        .output()
        .expect("promtool (Debian package prometheus; scripts/test.sh installs it)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check metrics: {said}");
    assert_eq!(said, "", "promtool check metrics printed something");

    let now = sealkit::clock::unix_now() as f64;
    let not_after = metric(
        &text,
        "authority_tls_certificate_not_after_timestamp_seconds",
    );
    assert!(not_after > now + 86_400.0, "{not_after}");
    let next_update = metric(&text, "authority_client_crl_next_update_timestamp_seconds");
    assert!(
        (next_update - (now + 7.0 * 86_400.0)).abs() < 3_600.0,
        "CRL nextUpdate {next_update}, now {now}"
    );
    let key = metric(&text, "authority_signing_key_created_timestamp_seconds");
    assert!(key > now - 3_600.0 && key <= now + 1.0, "{key}");
    assert_eq!(
        metric(&text, "authority_bundle_expires_timestamp_seconds"),
        0.0
    );
    assert!(metric(&text, "process_resident_memory_bytes") > 0.0);
    assert!(metric(&text, "process_open_fds") > 0.0);
    assert!(text.contains("sealkit_build_info{version=\""));
    assert_eq!(
        metric(
            &text,
            "authority_client_auth_failures_total{reason=\"unknown-client\"}"
        ),
        1.0
    );

    let (content_type, open) = scrape(
        &site,
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    )
    .await;
    assert!(content_type.starts_with("application/openmetrics-text"));
    assert!(open.ends_with("# EOF\n"));
    site.stop().await;
}
