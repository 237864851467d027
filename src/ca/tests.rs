//! Tests of the site CA against the real `openssl` command line and the openssl crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

/// A unique directory under the system temp dir, removed on drop.
pub(super) struct TempDir(PathBuf);

impl TempDir {
    pub(super) fn new() -> TempDir {
        let mut b = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut b);
        let dir = std::env::temp_dir().join(format!("sealkit-ca-test-{}", hex_lower(&b)));
        std::fs::create_dir(&dir).unwrap();
        TempDir(dir)
    }
    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// `openssl verify -CAfile root -untrusted intermediate [-purpose p] leaf`; (success, output).
fn openssl_verify(
    ca: &SiteCa,
    leaf_pem: &str,
    purpose: Option<&str>,
    tmp: &Path,
) -> (bool, String) {
    let leaf = tmp.join(format!("leaf-{}.pem", rand::random::<u64>()));
    std::fs::write(&leaf, leaf_pem).unwrap();
    let mut cmd = Command::new("openssl");
    cmd.arg("verify")
        .arg("-CAfile")
        .arg(ca.root_cert_path())
        .arg("-untrusted")
        .arg(ca.intermediate_cert_path());
    if let Some(p) = purpose {
        cmd.arg("-purpose").arg(p);
    }
    let out = cmd.arg(&leaf).output().expect("run openssl verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && text.contains(": OK"), text)
}

pub(super) fn openssl_text(pem: &str, tmp: &Path) -> String {
    let path = tmp.join(format!("text-{}.pem", rand::random::<u64>()));
    std::fs::write(&path, pem).unwrap();
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-serial", "-in"])
        .arg(&path)
        .output()
        .expect("run openssl x509");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn server_names() -> (Vec<String>, Vec<IpAddr>) {
    (
        vec!["auth.site.internal".to_string(), "auth".to_string()],
        vec!["10.0.0.5".parse().unwrap(), "::1".parse().unwrap()],
    )
}

#[test]
fn init_then_issue_server_and_client_verify_with_openssl() {
    let tmp = TempDir::new();
    let dir = tmp.path().join("ca");
    let ca = SiteCa::init(&dir, "Test Site", KeyAlgorithm::default()).unwrap();
    assert_eq!(ca.algorithm(), KeyAlgorithm::EcdsaP256);

    // CA directory and keys are private from creation.
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("root.key")), 0o600);
    assert_eq!(mode(&dir.join("intermediate.key")), 0o600);

    // Root is self-signed for ~10 years, intermediate is a pathLen:0 CA for ~5 years.
    let root_text = openssl_text(
        &std::fs::read_to_string(ca.root_cert_path()).unwrap(),
        tmp.path(),
    );
    assert!(root_text.contains("Subject: CN = Test Site Root CA, O = Test Site"));
    assert!(root_text.contains("Issuer: CN = Test Site Root CA, O = Test Site"));
    let int_text = openssl_text(&ca.intermediate_pem, tmp.path());
    assert!(int_text.contains("CA:TRUE, pathlen:0"), "{int_text}");
    assert!(
        int_text.contains("Certificate Sign, CRL Sign"),
        "{int_text}"
    );
    let years = (ca.intermediate_not_after() - OffsetDateTime::now_utc()).whole_days();
    assert!((1820..=1826).contains(&years), "{years}");

    // Server leaf.
    let (dns, ips) = server_names();
    let server = ca.issue_server(&dns, &ips, 90).unwrap();
    let (ok, out) = openssl_verify(&ca, &server.cert_pem, Some("sslserver"), tmp.path());
    assert!(ok, "server leaf must verify as sslserver: {out}");
    let (ok, _) = openssl_verify(&ca, &server.cert_pem, Some("sslclient"), tmp.path());
    assert!(!ok, "server leaf must not verify as sslclient");
    let text = openssl_text(&server.cert_pem, tmp.path());
    assert!(
        text.contains(
            "DNS:auth.site.internal, DNS:auth, IP Address:10.0.0.5, IP Address:0:0:0:0:0:0:0:1"
        ),
        "{text}"
    );
    assert!(text.contains("TLS Web Server Authentication"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(
        text.contains(&format!("serial={}", server.serial_hex)),
        "{text}"
    );

    // Client leaf.
    let client = ca.issue_client("svc-backup", Some("ops"), 30).unwrap();
    let (ok, out) = openssl_verify(&ca, &client.cert_pem, Some("sslclient"), tmp.path());
    assert!(ok, "client leaf must verify as sslclient: {out}");
    let (ok, _) = openssl_verify(&ca, &client.cert_pem, Some("sslserver"), tmp.path());
    assert!(!ok, "client leaf must not verify as sslserver");
    let text = openssl_text(&client.cert_pem, tmp.path());
    assert!(text.contains("URI:urn:sealkit:client:svc-backup"), "{text}");
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(!text.contains("TLS Web Server Authentication"), "{text}");
    assert!(text.contains("Subject: CN = svc-backup, O = ops"), "{text}");

    // Written files: chain is leaf + intermediate, key is 0600 and matches the leaf.
    let out_dir = tmp.path().join("out");
    let (crt, key) = server.write(&out_dir, "auth").unwrap();
    let key = key.unwrap();
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&out_dir), 0o700);
    let chain = X509::stack_from_pem(std::fs::read(&crt).unwrap().as_slice()).unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[0].to_pem().unwrap(), server.cert_pem.as_bytes());
    assert_eq!(chain[1].to_pem().unwrap(), ca.intermediate_pem.as_bytes());
    let private = PKey::private_key_from_pem(&std::fs::read(&key).unwrap()).unwrap();
    assert!(private.public_eq(&chain[0].public_key().unwrap()));

    let (_, ckey) = client.write(&out_dir, "svc-backup").unwrap();
    let ckey = ckey.unwrap();
    assert_eq!(mode(&ckey), 0o600);
}

#[test]
fn serial_and_validity_are_as_promised() {
    let tmp = TempDir::new();
    let ca = SiteCa::init(tmp.path(), "Site", KeyAlgorithm::EcdsaP256).unwrap();
    let before = OffsetDateTime::now_utc().unix_timestamp();
    let leaf = ca.issue_client("c1", None, 7).unwrap();
    let cert = X509::from_pem(leaf.cert_pem.as_bytes()).unwrap();

    // Positive, 20 octets, matches serial_hex.
    let bn = cert.serial_number().to_bn().unwrap();
    assert!(!bn.is_negative());
    // 20 octets with leading bits 01: always 159 bits, 158 of them random (≥ 128).
    assert_eq!(bn.num_bits(), 159);
    assert_eq!(bn.to_hex_str().unwrap().to_string(), leaf.serial_hex);
    assert_eq!(leaf.serial_hex.len(), 40);

    // Explicit not_before = now − 5 min, not_after = now + 7 days, as returned.
    let not_before = asn1_to_offset(cert.not_before()).unwrap().unix_timestamp();
    let not_after = asn1_to_offset(cert.not_after()).unwrap();
    assert_eq!(not_after, leaf.not_after);
    assert_eq!(not_after.unix_timestamp() - not_before, 7 * 86_400 + 300);
    assert!((before - 301..=before - 299).contains(&not_before));

    // Two leaves never share a serial.
    let other = ca.issue_client("c1", None, 7).unwrap();
    assert_ne!(other.serial_hex, leaf.serial_hex);
}

#[test]
fn inventory_records_every_certificate() {
    let tmp = TempDir::new();
    let ca = SiteCa::init(tmp.path(), "Site", KeyAlgorithm::EcdsaP256).unwrap();
    let (dns, ips) = server_names();
    let server = ca.issue_server(&dns, &ips, 90).unwrap();
    let client = ca.issue_client("svc-backup", Some("ops"), 30).unwrap();

    let inv = SiteCa::open(tmp.path()).unwrap().inventory().unwrap();
    let kinds: Vec<CertKind> = inv.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            CertKind::Root,
            CertKind::Intermediate,
            CertKind::Server,
            CertKind::Client
        ]
    );
    assert!(inv.iter().all(|e| !e.revoked));
    assert_eq!(inv[2].serial, server.serial_hex);
    assert_eq!(inv[2].subject, "CN=auth.site.internal,O=Site");
    assert_eq!(
        inv[2].sans,
        [
            "DNS:auth.site.internal",
            "DNS:auth",
            "IP:10.0.0.5",
            "IP:::1"
        ]
    );
    assert_eq!(inv[2].not_after, server.not_after_rfc3339());
    assert_eq!(inv[3].serial, client.serial_hex);
    assert_eq!(inv[3].subject, "CN=svc-backup,O=ops");
    assert_eq!(inv[3].sans, ["URI:urn:sealkit:client:svc-backup"]);
    let der = X509::from_pem(client.cert_pem.as_bytes())
        .unwrap()
        .to_der()
        .unwrap();
    assert_eq!(inv[3].sha256, hex_lower(&Sha256::digest(&der)));
}

#[test]
fn reopened_ca_issues_chains_that_verify() {
    let tmp = TempDir::new();
    drop(SiteCa::init(tmp.path(), "Site", KeyAlgorithm::EcdsaP256).unwrap());
    let ca = SiteCa::open(tmp.path()).unwrap();
    let leaf = ca.issue_server(&["a.site".to_string()], &[], 10).unwrap();
    let (ok, out) = openssl_verify(&ca, &leaf.cert_pem, Some("sslserver"), tmp.path());
    assert!(ok, "{out}");
    // The AKI of the leaf is the intermediate's SKI.
    let int = X509::from_pem(ca.intermediate_pem.as_bytes()).unwrap();
    let cert = X509::from_pem(leaf.cert_pem.as_bytes()).unwrap();
    assert_eq!(
        cert.authority_key_id().unwrap().as_slice(),
        int.subject_key_id().unwrap().as_slice()
    );
}

#[test]
fn every_algorithm_produces_verifiable_chains() {
    for alg in [KeyAlgorithm::EcdsaP384, KeyAlgorithm::Ed25519] {
        let tmp = TempDir::new();
        let ca = SiteCa::init(tmp.path(), "Site", alg).unwrap();
        let server = ca.issue_server(&["a.site".to_string()], &[], 10).unwrap();
        let (ok, out) = openssl_verify(&ca, &server.cert_pem, Some("sslserver"), tmp.path());
        assert!(ok, "{alg}: {out}");
        let client = ca.issue_client("c", None, 10).unwrap();
        let (ok, out) = openssl_verify(&ca, &client.cert_pem, Some("sslclient"), tmp.path());
        assert!(ok, "{alg}: {out}");
        // The key PEM is readable by OpenSSL and belongs to the certificate.
        let key = PKey::private_key_from_pem(server.key_pem.as_ref().unwrap().as_bytes())
            .unwrap_or_else(|e| panic!("{alg}: OpenSSL cannot read the leaf key: {e}"));
        let cert = X509::from_pem(server.cert_pem.as_bytes()).unwrap();
        assert!(key.public_eq(&cert.public_key().unwrap()), "{alg}");
        assert_eq!(SiteCa::open(tmp.path()).unwrap().algorithm(), alg);
        for ca_key in ["root.key", "intermediate.key"] {
            let pem = std::fs::read(tmp.path().join(ca_key)).unwrap();
            PKey::private_key_from_pem(&pem)
                .unwrap_or_else(|e| panic!("{alg}: OpenSSL cannot read {ca_key}: {e}"));
        }
    }
}

#[test]
fn init_refuses_a_directory_that_holds_a_ca() {
    let tmp = TempDir::new();
    SiteCa::init(tmp.path(), "Site", KeyAlgorithm::EcdsaP256).unwrap();
    let root_before = std::fs::read(tmp.path().join("root.crt")).unwrap();
    let key_before = std::fs::read(tmp.path().join("root.key")).unwrap();
    let err = SiteCa::init(tmp.path(), "Other", KeyAlgorithm::Ed25519).unwrap_err();
    assert!(matches!(err, CaError::AlreadyInitialised { .. }), "{err}");
    assert_eq!(
        std::fs::read(tmp.path().join("root.crt")).unwrap(),
        root_before
    );
    assert_eq!(
        std::fs::read(tmp.path().join("root.key")).unwrap(),
        key_before
    );

    // A half-initialised directory (a stray key) is refused too.
    let tmp2 = TempDir::new();
    std::fs::write(tmp2.path().join("intermediate.key"), "x").unwrap();
    let err = SiteCa::init(tmp2.path(), "Site", KeyAlgorithm::EcdsaP256).unwrap_err();
    assert!(matches!(err, CaError::AlreadyInitialised { .. }), "{err}");
}

#[test]
fn open_refuses_missing_or_unsafe_ca() {
    let tmp = TempDir::new();
    let err = SiteCa::open(tmp.path()).unwrap_err();
    assert!(matches!(err, CaError::NotInitialised { .. }), "{err}");

    SiteCa::init(tmp.path(), "Site", KeyAlgorithm::EcdsaP256).unwrap();
    let key = tmp.path().join("intermediate.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = SiteCa::open(tmp.path()).unwrap_err();
    assert!(
        matches!(err, CaError::KeyPermissions { mode: 0o644, .. }),
        "{err}"
    );

    // A key that does not belong to the intermediate certificate is refused.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::copy(tmp.path().join("root.key"), &key).unwrap();
    let err = SiteCa::open(tmp.path()).unwrap_err();
    assert!(matches!(err, CaError::BadKey { .. }), "{err}");
}

#[test]
fn issuance_rejects_bad_input() {
    let tmp = TempDir::new();
    let ca = SiteCa::init(tmp.path(), "Site", KeyAlgorithm::EcdsaP256).unwrap();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert!(matches!(
        ca.issue_server(&[], &[], 90),
        Err(CaError::NoSubjectAltNames)
    ));
    for bad in [
        "", "-a.site", "a..site", "a_b.site", "*.site", "10.0.0.1", "é.site",
    ] {
        let err = ca.issue_server(&s(&[bad]), &[], 90).unwrap_err();
        assert!(
            matches!(err, CaError::InvalidDnsName { .. }),
            "{bad}: {err}"
        );
    }
    assert!(ca.issue_server(&s(&["*.a.site"]), &[], 90).is_ok());
    for bad in ["", "a/b", "a b", "x:y", &"c".repeat(65)] {
        let err = ca.issue_client(bad, None, 90).unwrap_err();
        assert!(matches!(err, CaError::InvalidClientId(_)), "{bad:?}: {err}");
    }
    let err = ca.issue_client("c", Some(" ops"), 90).unwrap_err();
    assert!(matches!(err, CaError::InvalidTenant(_)), "{err}");
    let err = ca.issue_client("c", None, 0).unwrap_err();
    assert!(matches!(err, CaError::InvalidValidity(0)), "{err}");
    let err = ca.issue_client("c", None, 5000).unwrap_err();
    assert!(matches!(err, CaError::OutlivesIssuer { .. }), "{err}");
    let err = ca.issue_client("c", None, u32::MAX).unwrap_err();
    assert!(
        matches!(
            err,
            CaError::OutlivesIssuer { .. } | CaError::InvalidValidity(_)
        ),
        "{err}"
    );
    // Rejected requests leave no trace in the inventory.
    assert_eq!(ca.inventory().unwrap().len(), 3);
    for bad in ["Bad\nName", "", " x", &"n".repeat(49)] {
        let err =
            SiteCa::init(&tmp.path().join("other"), bad, KeyAlgorithm::EcdsaP256).unwrap_err();
        assert!(matches!(err, CaError::InvalidCaName(_)), "{bad:?}: {err}");
    }
}

#[test]
fn write_refuses_to_overwrite_and_bad_names() {
    let tmp = TempDir::new();
    let ca = SiteCa::init(&tmp.path().join("ca"), "Site", KeyAlgorithm::EcdsaP256).unwrap();
    let out = tmp.path().join("out");
    let first = ca.issue_client("c", None, 10).unwrap();
    let (_, key) = first.write(&out, "c").unwrap();
    let key = key.unwrap();
    let second = ca.issue_client("c", None, 10).unwrap();
    let err = second.write(&out, "c").unwrap_err();
    assert!(matches!(err, CaError::FileExists { .. }), "{err}");
    assert_eq!(Some(std::fs::read_to_string(&key).unwrap()), first.key_pem);

    // A certificate in the way does not leave a stray key behind.
    std::fs::write(out.join("d.crt"), "x").unwrap();
    assert!(matches!(
        second.write(&out, "d"),
        Err(CaError::FileExists { .. })
    ));
    assert!(!out.join("d.key").exists());

    // The pre-issuance check sees the same conflicts.
    assert!(matches!(
        IssuedLeaf::output_paths(&out, "c"),
        Err(CaError::FileExists { .. })
    ));
    assert!(IssuedLeaf::output_paths(&out, "e").is_ok());

    for bad in ["", "../x", "a/b", ".hidden"] {
        assert!(
            matches!(second.write(&out, bad), Err(CaError::InvalidFileBase(_))),
            "{bad}"
        );
    }
}

#[test]
fn debug_output_hides_keys() {
    let tmp = TempDir::new();
    let ca = SiteCa::init(tmp.path(), "Site", KeyAlgorithm::EcdsaP256).unwrap();
    let leaf = ca.issue_client("c", None, 10).unwrap();
    let shown = format!("{ca:?} {leaf:?}");
    assert!(shown.contains("<redacted>"));
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    let key_body: String = leaf
        .key_pem
        .as_ref()
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    assert!(!shown.contains(&key_body));
}

#[test]
fn rfc4514_escaping() {
    assert_eq!(crate::dn::escape_value("Ops, Inc"), "Ops\\, Inc");
    assert_eq!(crate::dn::escape_value("#a "), "\\#a\\ ");
    assert_eq!(crate::dn::escape_value("plain"), "plain");
}
