//! Tests of CSR signing, revocation, CRLs and rotation, judged by the real `openssl`
//! command line where a relying party would be.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::tests::{mode, openssl_text, TempDir};
use super::*;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::pkey::Private;
use openssl::stack::Stack;
use openssl::x509::extension::{BasicConstraints as OsslBc, ExtendedKeyUsage, KeyUsage};
use openssl::x509::{X509Extension, X509Req, X509ReqBuilder};
use std::process::Command;

/// Runs `openssl <args>`; (success, stdout + stderr).
fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn write(tmp: &Path, name: &str, contents: &str) -> String {
    let path = tmp.join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_str().unwrap().to_string()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `openssl verify` of `leaf_pem` against the CA's root, with `untrusted` intermediates,
/// `crl` (a CRL file) and extra flags; (verified, output).
fn verify(
    ca: &SiteCa,
    leaf_pem: &str,
    untrusted: &Path,
    crl: Option<&str>,
    flags: &[&str],
    tmp: &Path,
) -> (bool, String) {
    let leaf = write(
        tmp,
        &format!("leaf-{}.pem", rand::random::<u64>()),
        leaf_pem,
    );
    let root = ca.root_cert_path();
    let mut args = vec!["verify", "-CAfile", p(&root), "-untrusted", p(untrusted)];
    if let Some(crl) = crl {
        args.extend(["-CRLfile", crl]);
    }
    args.extend(flags);
    args.push(&leaf);
    let (ok, out) = openssl(&args);
    (ok && out.contains(": OK"), out)
}

fn p256_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

/// A CSR for `key` with subject CN=`cn` and the given requested extensions.
fn csr_with(key: &PKey<Private>, cn: &str, extensions: Vec<X509Extension>) -> String {
    let mut b = X509ReqBuilder::new().unwrap();
    let mut name = openssl::x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    b.set_subject_name(&name.build()).unwrap();
    b.set_pubkey(key).unwrap();
    if !extensions.is_empty() {
        let mut stack = Stack::new().unwrap();
        for e in extensions {
            stack.push(e).unwrap();
        }
        b.add_extensions(&stack).unwrap();
    }
    let digest = if key.id() == openssl::pkey::Id::ED25519 {
        MessageDigest::null()
    } else {
        MessageDigest::sha256()
    };
    b.sign(key, digest).unwrap();
    String::from_utf8(b.build().to_pem().unwrap()).unwrap()
}

fn client(id: &str) -> LeafProfile {
    LeafProfile::Client {
        client_id: id.to_string(),
        tenant: None,
    }
}

fn crl_number(crl_text: &str) -> Vec<u64> {
    let lines: Vec<&str> = crl_text.lines().collect();
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("X509v3 CRL Number"))
        .map(|(i, _)| lines[i + 1].trim().parse().unwrap())
        .collect()
}

/// `openssl crl -text` of every CRL in a PEM file.
fn crl_texts(file: &str, tmp: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap();
    text.split_inclusive("-----END X509 CRL-----\n")
        .filter(|block| block.contains("BEGIN X509 CRL"))
        .map(|block| {
            let one = write(tmp, &format!("one-{}.crl", rand::random::<u64>()), block);
            let (ok, out) = openssl(&["crl", "-in", &one, "-noout", "-text"]);
            assert!(ok, "{out}");
            out
        })
        .collect()
}

// ---- sign-csr -------------------------------------------------------------------------

#[test]
fn sign_csr_from_openssl_req_uses_only_the_public_key() {
    let tmp = TempDir::new();
    let ca = SiteCa::init(&tmp.path().join("ca"), "Site", KeyAlgorithm::EcdsaP256).unwrap();
    // Exactly as the runbook tells a workload host to do it, asking for a name it must not get.
    let key = tmp.path().join("w.key");
    let csr = tmp.path().join("w.csr");
    let (ok, out) = openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        p(&key),
        "-out",
        p(&csr),
        "-subj",
        "/CN=admin/O=Evil",
        "-addext",
        "subjectAltName=DNS:evil.example,URI:urn:sealkit:client:admin",
    ]);
    assert!(ok, "{out}");
    let before = ca.inventory().unwrap().len();
    let leaf = ca
        .sign_csr(
            &std::fs::read_to_string(&csr).unwrap(),
            LeafProfile::Client {
                client_id: "svc-backup".to_string(),
                tenant: Some("ops".to_string()),
            },
            30,
        )
        .unwrap();

    assert!(
        leaf.key_pem.is_none(),
        "the CA never holds the workload key"
    );
    let cert = X509::from_pem(leaf.cert_pem.as_bytes()).unwrap();
    let workload_key = PKey::private_key_from_pem(&std::fs::read(&key).unwrap()).unwrap();
    assert!(workload_key.public_eq(&cert.public_key().unwrap()));

    let text = openssl_text(&leaf.cert_pem, tmp.path());
    assert!(text.contains("Subject: CN = svc-backup, O = ops"), "{text}");
    assert!(text.contains("URI:urn:sealkit:client:svc-backup"), "{text}");
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(!text.contains("evil") && !text.contains("admin"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    let bits = cert.serial_number().to_bn().unwrap().num_bits();
    assert!(bits >= 128, "{bits}");

    let (ok, out) = verify(
        &ca,
        &leaf.cert_pem,
        &ca.intermediate_cert_path(),
        None,
        &["-purpose", "sslclient"],
        tmp.path(),
    );
    assert!(ok, "{out}");

    let inv = ca.inventory().unwrap();
    assert_eq!(inv.len(), before + 1);
    let entry = inv.last().unwrap();
    assert_eq!(entry.serial, leaf.serial_hex);
    assert_eq!(entry.kind, CertKind::Client);
    assert_eq!(entry.issuer.as_deref(), Some(ca.intermediate_serial()));
    assert_eq!(
        entry.sha256,
        hex_lower(&Sha256::digest(cert.to_der().unwrap()))
    );

    // Written as a chain only: there is no key to write.
    let out_dir = tmp.path().join("out");
    let (crt, key_path) = leaf.write(&out_dir, "svc-backup").unwrap();
    assert!(key_path.is_none());
    assert!(!out_dir.join("svc-backup.key").exists());
    assert_eq!(std::fs::read_to_string(crt).unwrap(), leaf.chain_pem);
}

#[test]
fn sign_csr_server_profile_and_key_types() {
    let tmp = TempDir::new();
    let ca = SiteCa::init(tmp.path(), "Site", KeyAlgorithm::EcdsaP256).unwrap();
    let server = || LeafProfile::Server {
        dns: vec!["api.site.internal".to_string()],
        ips: vec!["10.1.2.3".parse().unwrap()],
    };
    let keys = [
        p256_key(),
        PKey::from_ec_key(
            EcKey::generate(&EcGroup::from_curve_name(Nid::SECP384R1).unwrap()).unwrap(),
        )
        .unwrap(),
        PKey::generate_ed25519().unwrap(),
        PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap(),
    ];
    for key in &keys {
        // A server CSR asking for serverAuth (the profile's own EKU) is fine.
        let csr = csr_with(
            key,
            "whatever",
            vec![ExtendedKeyUsage::new().server_auth().build().unwrap()],
        );
        let leaf = ca.sign_csr(&csr, server(), 30).unwrap();
        let cert = X509::from_pem(leaf.cert_pem.as_bytes()).unwrap();
        assert!(key.public_eq(&cert.public_key().unwrap()), "{:?}", key.id());
        let (ok, out) = verify(
            &ca,
            &leaf.cert_pem,
            &ca.intermediate_cert_path(),
            None,
            &["-purpose", "sslserver"],
            tmp.path(),
        );
        assert!(ok, "{:?}: {out}", key.id());
        let text = openssl_text(&leaf.cert_pem, tmp.path());
        assert!(
            text.contains("DNS:api.site.internal, IP Address:10.1.2.3"),
            "{text}"
        );
        assert!(!text.contains("Client Authentication"), "{text}");
    }

    // Keys a leaf may not have.
    for key in [
        PKey::from_rsa(openssl::rsa::Rsa::generate(1024).unwrap()).unwrap(),
        PKey::from_ec_key(
            EcKey::generate(&EcGroup::from_curve_name(Nid::SECP521R1).unwrap()).unwrap(),
        )
        .unwrap(),
    ] {
        let err = ca
            .sign_csr(&csr_with(&key, "x", vec![]), server(), 30)
            .unwrap_err();
        assert!(matches!(err, CaError::UnsupportedCsrKey(_)), "{err}");
    }
}

#[test]
fn sign_csr_refuses_a_csr_asking_to_be_a_ca() {
    let tmp = TempDir::new();
    let ca = SiteCa::init(tmp.path(), "Site", KeyAlgorithm::EcdsaP256).unwrap();
    let before = ca.inventory().unwrap().len();

    // With the openssl CLI, as an attacker on a workload host would.
    let csr = tmp.path().join("ca.csr");
    let (ok, out) = openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        p(&tmp.path().join("ca.key")),
        "-out",
        p(&csr),
        "-subj",
        "/CN=sub-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
    ]);
    assert!(ok, "{out}");
    let err = ca
        .sign_csr(&std::fs::read_to_string(&csr).unwrap(), client("c"), 30)
        .unwrap_err();
    assert!(matches!(err, CaError::CsrRequestsCa { .. }), "{err}");
    assert!(
        err.to_string().contains("basicConstraints CA:TRUE"),
        "{err}"
    );

    // Asking for certificate signing through keyUsage is asking to be a CA too.
    let key = p256_key();
    let csr = csr_with(
        &key,
        "x",
        vec![KeyUsage::new()
            .digital_signature()
            .key_cert_sign()
            .build()
            .unwrap()],
    );
    let err = ca.sign_csr(&csr, client("c"), 30).unwrap_err();
    assert!(
        matches!(&err, CaError::CsrRequestsCa { asked } if asked == "keyUsage keyCertSign"),
        "{err}"
    );

    // CA:FALSE is not a request to be a CA.
    let csr = csr_with(&key, "x", vec![OsslBc::new().build().unwrap()]);
    ca.sign_csr(&csr, client("c"), 30).unwrap();
    assert_eq!(ca.inventory().unwrap().len(), before + 1);
}

#[test]
fn sign_csr_refuses_other_extended_key_usages() {
    let tmp = TempDir::new();
    let ca = SiteCa::init(tmp.path(), "Site", KeyAlgorithm::EcdsaP256).unwrap();
    let key = p256_key();
    let before = ca.inventory().unwrap().len();

    let csr = csr_with(
        &key,
        "x",
        vec![ExtendedKeyUsage::new().code_signing().build().unwrap()],
    );
    let err = ca.sign_csr(&csr, client("c"), 30).unwrap_err();
    match &err {
        CaError::CsrRequestsEku {
            asked,
            profile,
            granted,
        } => {
            assert_eq!(asked, &["codeSigning"]);
            assert_eq!((*profile, *granted), ("client", "clientAuth"));
        }
        other => panic!("expected CsrRequestsEku, got {other}"),
    }
    assert!(err.to_string().contains("codeSigning"), "{err}");

    // A client CSR asking for serverAuth besides clientAuth is refused, naming serverAuth.
    let csr = csr_with(
        &key,
        "x",
        vec![ExtendedKeyUsage::new()
            .client_auth()
            .server_auth()
            .build()
            .unwrap()],
    );
    let err = ca.sign_csr(&csr, client("c"), 30).unwrap_err();
    assert!(
        matches!(&err, CaError::CsrRequestsEku { asked, .. } if asked == &["serverAuth"]),
        "{err}"
    );
    // And a server CSR asking for clientAuth.
    let csr = csr_with(
        &key,
        "x",
        vec![ExtendedKeyUsage::new().client_auth().build().unwrap()],
    );
    let err = ca
        .sign_csr(
            &csr,
            LeafProfile::Server {
                dns: vec!["a.site".to_string()],
                ips: vec![],
            },
            30,
        )
        .unwrap_err();
    assert!(
        matches!(&err, CaError::CsrRequestsEku { asked, profile: "server", .. } if asked == &["clientAuth"]),
        "{err}"
    );
    assert_eq!(ca.inventory().unwrap().len(), before);

    // Asking for exactly the profile's EKU is accepted.
    let csr = csr_with(
        &key,
        "x",
        vec![ExtendedKeyUsage::new().client_auth().build().unwrap()],
    );
    ca.sign_csr(&csr, client("c"), 30).unwrap();
}

#[test]
fn sign_csr_refuses_a_bad_self_signature_and_garbage() {
    let tmp = TempDir::new();
    let ca = SiteCa::init(tmp.path(), "Site", KeyAlgorithm::EcdsaP256).unwrap();
    let good = csr_with(&p256_key(), "x", vec![]);
    ca.sign_csr(&good, client("c"), 30).unwrap();
    let before = ca.inventory().unwrap().len();

    // Flip the last octet of the signature (the tail of ECDSA's s): still well-formed DER.
    let mut der = X509Req::from_pem(good.as_bytes())
        .unwrap()
        .to_der()
        .unwrap();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let tampered = String::from_utf8(X509Req::from_der(&der).unwrap().to_pem().unwrap()).unwrap();
    let err = ca.sign_csr(&tampered, client("c"), 30).unwrap_err();
    assert!(matches!(err, CaError::CsrBadSignature), "{err}");

    // A CSR signed by one key but carrying another (someone else's public key).
    let mut b = X509ReqBuilder::new().unwrap();
    b.set_pubkey(&p256_key()).unwrap();
    b.sign(&p256_key(), MessageDigest::sha256()).unwrap();
    let swapped = String::from_utf8(b.build().to_pem().unwrap()).unwrap();
    let err = ca.sign_csr(&swapped, client("c"), 30).unwrap_err();
    assert!(matches!(err, CaError::CsrBadSignature), "{err}");

    for garbage in ["", "hello", &ca.intermediate_pem] {
        let err = ca.sign_csr(garbage, client("c"), 30).unwrap_err();
        assert!(matches!(err, CaError::InvalidCsr(_)), "{err}");
    }
    // The profile is still checked: a bad client id is the operator's error.
    let err = ca.sign_csr(&good, client("a b"), 30).unwrap_err();
    assert!(matches!(err, CaError::InvalidClientId(_)), "{err}");
    assert_eq!(ca.inventory().unwrap().len(), before);
}

// ---- revoke + CRL ---------------------------------------------------------------------

#[test]
fn revoked_leaf_is_refused_by_openssl_crl_check_and_a_good_one_accepted() {
    let tmp = TempDir::new();
    let ca = SiteCa::init(&tmp.path().join("ca"), "Site", KeyAlgorithm::EcdsaP256).unwrap();
    let bad = ca.issue_client("lost-laptop", None, 30).unwrap();
    let good = ca.issue_client("svc-backup", None, 30).unwrap();
    // Serials as operators paste them: lower case with colons.
    let pasted: String = bad
        .serial_hex
        .to_ascii_lowercase()
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    ca.revoke(&pasted, RevocationReason::KeyCompromise).unwrap();

    let crl = write(tmp.path(), "crl.pem", &ca.crl_pem(7).unwrap());
    let (ok, text) = openssl(&["crl", "-in", &crl, "-noout", "-text"]);
    assert!(ok, "{text}");
    assert!(text.contains("Certificate Revocation List (CRL)"), "{text}");
    assert!(text.contains("Next Update"), "{text}");
    assert!(text.contains("X509v3 CRL Number"), "{text}");
    assert!(text.contains("Key Compromise"), "{text}");
    let int_crl = &crl_texts(&crl, tmp.path())[0];
    assert!(
        int_crl.contains("Issuer: CN = Site Issuing CA, O = Site"),
        "{int_crl}"
    );
    assert!(
        int_crl.contains(&format!("Serial Number: {}", bad.serial_hex)),
        "{int_crl}"
    );
    assert!(!int_crl.contains(&good.serial_hex), "{int_crl}");

    let int = ca.intermediate_cert_path();
    let (ok, out) = verify(
        &ca,
        &bad.cert_pem,
        &int,
        Some(&crl),
        &["-crl_check"],
        tmp.path(),
    );
    assert!(!ok, "a revoked leaf must be refused: {out}");
    assert!(out.contains("certificate revoked"), "{out}");
    let (ok, out) = verify(
        &ca,
        &good.cert_pem,
        &int,
        Some(&crl),
        &["-crl_check"],
        tmp.path(),
    );
    assert!(ok, "a good leaf must be accepted: {out}");
    // The root's CRL covers the intermediate, so the whole chain can be checked.
    let (ok, out) = verify(
        &ca,
        &good.cert_pem,
        &int,
        Some(&crl),
        &["-crl_check_all"],
        tmp.path(),
    );
    assert!(ok, "{out}");

    // Without the CRL the revoked leaf still verifies: the refusal above is the CRL's doing.
    let (ok, out) = verify(&ca, &bad.cert_pem, &int, None, &[], tmp.path());
    assert!(ok, "{out}");
}

#[test]
fn crl_number_increases_and_persists() {
    let tmp = TempDir::new();
    let dir = tmp.path().join("ca");
    let ca = SiteCa::init(&dir, "Site", KeyAlgorithm::EcdsaP256).unwrap();
    let first = write(tmp.path(), "1.pem", &ca.crl_pem(7).unwrap());
    let second = write(tmp.path(), "2.pem", &ca.crl_pem(1).unwrap());
    drop(ca);
    let reopened = SiteCa::open(&dir).unwrap();
    let third = write(tmp.path(), "3.pem", &reopened.crl_pem(7).unwrap());

    let numbers: Vec<u64> = [&first, &second, &third]
        .iter()
        .map(|f| crl_number(&crl_texts(f, tmp.path())[0])[0])
        .collect();
    assert!(
        numbers[0] < numbers[1] && numbers[1] < numbers[2],
        "{numbers:?}"
    );
    // Every CRL in a file carries a number greater than any signed before it, including
    // the root's (written by init, before any `crl`).
    let root_number = crl_number(&crl_texts(&third, tmp.path())[1])[0];
    assert!(root_number < numbers[0], "{root_number} {numbers:?}");
    assert_eq!(
        std::fs::read_to_string(dir.join("crl_number"))
            .unwrap()
            .trim(),
        numbers[2].to_string()
    );

    // next-update is as asked.
    let text = &crl_texts(&second, tmp.path())[0];
    let next = text
        .lines()
        .find(|l| l.contains("Next Update"))
        .unwrap()
        .to_string();
    let tomorrow = OffsetDateTime::now_utc() + Duration::days(1);
    assert!(next.contains(&tomorrow.year().to_string()), "{next}");

    assert!(matches!(
        reopened.crl_pem(0),
        Err(CaError::InvalidValidity(0))
    ));
    assert!(matches!(
        reopened.crl_pem(367),
        Err(CaError::InvalidValidity(367))
    ));
}

#[test]
fn revoke_refuses_unknown_repeated_and_ca_serials() {
    let tmp = TempDir::new();
    let ca = SiteCa::init(tmp.path(), "Site", KeyAlgorithm::EcdsaP256).unwrap();
    let leaf = ca.issue_server(&["a.site".to_string()], &[], 10).unwrap();
    let inv = ca.inventory().unwrap();

    let err = ca
        .revoke(&"4".repeat(40), RevocationReason::Superseded)
        .unwrap_err();
    assert!(matches!(err, CaError::UnknownSerial(_)), "{err}");
    for bad in ["", "xyz", "12 34"] {
        let err = ca.revoke(bad, RevocationReason::Superseded).unwrap_err();
        assert!(matches!(err, CaError::InvalidSerial(_)), "{bad:?}: {err}");
    }
    for ca_entry in &inv[..2] {
        let err = ca
            .revoke(&ca_entry.serial, RevocationReason::KeyCompromise)
            .unwrap_err();
        assert!(matches!(err, CaError::CannotRevokeCa { .. }), "{err}");
    }

    ca.revoke(&leaf.serial_hex, RevocationReason::Superseded)
        .unwrap();
    let err = ca
        .revoke(&leaf.serial_hex, RevocationReason::KeyCompromise)
        .unwrap_err();
    assert!(matches!(err, CaError::AlreadyRevoked { .. }), "{err}");

    // The rewrite kept every entry, changed only the revoked one, kept the mode, and left
    // no temporary file behind.
    let after = ca.inventory().unwrap();
    assert_eq!(after.len(), inv.len());
    assert_eq!(after[..3].iter().filter(|e| e.revoked).count(), 1);
    let revoked = &after[2];
    assert_eq!(revoked.serial, leaf.serial_hex);
    assert_eq!(
        revoked.revocation_reason,
        Some(RevocationReason::Superseded)
    );
    assert!(revoked.revoked_at.is_some());
    assert_eq!(
        InventoryEntry {
            revoked: false,
            revoked_at: None,
            revocation_reason: None,
            ..revoked.clone()
        },
        inv[2]
    );
    assert_eq!(mode(&ca.inventory_path()), 0o644);
    let strays: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp") || n == "ca.lock")
        .collect();
    assert!(strays.is_empty(), "{strays:?}");
}

#[test]
fn concurrent_issuance_and_revocation_lose_no_inventory_entry() {
    let tmp = TempDir::new();
    let ca = SiteCa::init(tmp.path(), "Site", KeyAlgorithm::EcdsaP256).unwrap();
    let victims: Vec<String> = (0..6)
        .map(|i| {
            ca.issue_client(&format!("v{i}"), None, 10)
                .unwrap()
                .serial_hex
        })
        .collect();
    let issued = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..4 {
            let ca = SiteCa::open(tmp.path()).unwrap();
            let issued = &issued;
            s.spawn(move || {
                for i in 0..5 {
                    let leaf = ca.issue_client(&format!("c{t}-{i}"), None, 10).unwrap();
                    issued.lock().unwrap().push(leaf.serial_hex);
                }
            });
        }
        let ca = SiteCa::open(tmp.path()).unwrap();
        let victims = &victims;
        s.spawn(move || {
            for v in victims {
                ca.revoke(v, RevocationReason::Superseded).unwrap();
            }
        });
    });
    let inv = ca.inventory().unwrap();
    for serial in issued.lock().unwrap().iter() {
        assert!(inv.iter().any(|e| &e.serial == serial), "{serial} was lost");
    }
    for v in &victims {
        assert!(inv.iter().any(|e| &e.serial == v && e.revoked), "{v}");
    }
    assert_eq!(inv.len(), 2 + 6 + 20);
}

#[test]
fn list_reports_valid_revoked_and_expired() {
    let tmp = TempDir::new();
    let ca = SiteCa::init(tmp.path(), "Site", KeyAlgorithm::EcdsaP256).unwrap();
    let kept = ca.issue_client("kept", None, 10).unwrap();
    let gone = ca.issue_client("gone", None, 10).unwrap();
    let old = ca.issue_client("old", None, 10).unwrap();
    ca.revoke(&gone.serial_hex, RevocationReason::CessationOfOperation)
        .unwrap();
    // Age one entry past its end (the inventory is the only source `list` reads).
    let mut entries = ca.inventory().unwrap();
    for e in entries.iter_mut().filter(|e| e.serial == old.serial_hex) {
        e.not_after = "2001-01-01T00:00:00Z".to_string();
    }
    inventory::rewrite(&ca.inventory_path(), &entries).unwrap();

    let status = |serial: &str| {
        ca.list()
            .unwrap()
            .into_iter()
            .find(|l| l.entry.serial == serial)
            .unwrap()
            .status
    };
    assert_eq!(status(&kept.serial_hex), CertStatus::Valid);
    assert_eq!(status(&gone.serial_hex), CertStatus::Revoked);
    assert_eq!(status(&old.serial_hex), CertStatus::Expired);
    assert_eq!(status(ca.intermediate_serial()), CertStatus::Valid);
}

#[test]
fn inventories_written_before_the_issuer_field_still_revoke() {
    let tmp = TempDir::new();
    let ca = SiteCa::init(tmp.path(), "Site", KeyAlgorithm::EcdsaP256).unwrap();
    let leaf = ca.issue_client("c", None, 10).unwrap();
    // Strip the fields this change added, as an inventory from before it looks.
    let old: String = std::fs::read_to_string(ca.inventory_path())
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("issuer");
            format!("{v}\n")
        })
        .collect();
    assert!(!old.contains("issuer"));
    std::fs::write(ca.inventory_path(), old).unwrap();
    ca.revoke(&leaf.serial_hex, RevocationReason::KeyCompromise)
        .unwrap();
    let crl = write(tmp.path(), "crl.pem", &ca.crl_pem(7).unwrap());
    let (ok, out) = verify(
        &ca,
        &leaf.cert_pem,
        &ca.intermediate_cert_path(),
        Some(&crl),
        &["-crl_check"],
        tmp.path(),
    );
    assert!(!ok && out.contains("certificate revoked"), "{out}");
}

// ---- rotation -------------------------------------------------------------------------

#[test]
fn rotation_keeps_old_leaves_valid_and_crls_per_intermediate() {
    let tmp = TempDir::new();
    let dir = tmp.path().join("ca");
    let ca1 = SiteCa::init(&dir, "Site", KeyAlgorithm::EcdsaP256).unwrap();
    let bundle_before = std::fs::read_to_string(ca1.trust_bundle_path()).unwrap();
    assert_eq!(
        X509::stack_from_pem(bundle_before.as_bytes())
            .unwrap()
            .len(),
        2
    );
    let old_leaf = ca1.issue_client("old", None, 30).unwrap();
    let old_revoked = ca1.issue_client("old-revoked", None, 30).unwrap();

    let ca2 = SiteCa::rotate(&dir).unwrap();
    assert_ne!(ca2.intermediate_serial(), ca1.intermediate_serial());
    let int2 = openssl_text(&ca2.intermediate_pem, tmp.path());
    assert!(
        int2.contains("Subject: CN = Site Issuing CA 2, O = Site"),
        "{int2}"
    );
    assert!(int2.contains("CA:TRUE, pathlen:0"), "{int2}");
    assert!(
        int2.contains("Issuer: CN = Site Root CA, O = Site"),
        "{int2}"
    );
    assert_eq!(mode(&dir.join("intermediate.key")), 0o600);
    for ext in ["crt", "key"] {
        assert!(dir
            .join("intermediates")
            .join(format!("{}.{ext}", ca1.intermediate_serial()))
            .exists());
    }
    assert_eq!(
        mode(
            &dir.join("intermediates")
                .join(format!("{}.key", ca1.intermediate_serial()))
        ),
        0o600
    );
    let new_leaf = ca2.issue_client("new", None, 30).unwrap();
    let new_server = ca2.issue_server(&["a.site".to_string()], &[], 30).unwrap();
    assert!(new_leaf.chain_pem.ends_with(&ca2.intermediate_pem));

    // The bundle file: root + both intermediates, and the same as trust_bundle_pem().
    let bundle = std::fs::read_to_string(ca2.trust_bundle_path()).unwrap();
    assert_eq!(bundle, ca2.trust_bundle_pem().unwrap());
    assert_eq!(X509::stack_from_pem(bundle.as_bytes()).unwrap().len(), 3);
    for (leaf, purpose) in [
        (&old_leaf, "sslclient"),
        (&new_leaf, "sslclient"),
        (&new_server, "sslserver"),
    ] {
        // As a server loading the bundle as its client-CA file…
        let (ok, out) = openssl(&[
            "verify",
            "-purpose",
            purpose,
            "-CAfile",
            p(&ca2.trust_bundle_path()),
            &write(
                tmp.path(),
                &format!("l-{}.pem", leaf.serial_hex),
                &leaf.cert_pem,
            ),
        ]);
        assert!(ok && out.contains(": OK"), "{out}");
        // …and as a client sending its chain to a root-only verifier.
        let (ok, out) = verify(
            &ca2,
            &leaf.cert_pem,
            &ca2.trust_bundle_path(),
            None,
            &["-purpose", purpose],
            tmp.path(),
        );
        assert!(ok, "{out}");
    }

    // Revocation after rotation lands in the old intermediate's CRL.
    ca2.revoke(&old_revoked.serial_hex, RevocationReason::KeyCompromise)
        .unwrap();
    let crl = write(tmp.path(), "crl.pem", &ca2.crl_pem(7).unwrap());
    let texts = crl_texts(&crl, tmp.path());
    assert_eq!(texts.len(), 3, "new intermediate, old intermediate, root");
    assert!(
        texts[0].contains("Issuer: CN = Site Issuing CA 2"),
        "{}",
        texts[0]
    );
    assert!(
        texts[1].contains("Issuer: CN = Site Issuing CA, O = Site"),
        "{}",
        texts[1]
    );
    assert!(
        texts[2].contains("Issuer: CN = Site Root CA"),
        "{}",
        texts[2]
    );
    assert!(texts[1].contains(&old_revoked.serial_hex));
    assert!(!texts[0].contains(&old_revoked.serial_hex));
    let numbers: Vec<u64> = texts[..2].iter().map(|t| crl_number(t)[0]).collect();
    assert_eq!(numbers[0], numbers[1], "one CRL number per `crl` run");

    let bundle_path = ca2.trust_bundle_path();
    let (ok, out) = verify(
        &ca2,
        &old_revoked.cert_pem,
        &bundle_path,
        Some(&crl),
        &["-crl_check_all"],
        tmp.path(),
    );
    assert!(!ok && out.contains("certificate revoked"), "{out}");
    for leaf in [&old_leaf, &new_leaf] {
        let (ok, out) = verify(
            &ca2,
            &leaf.cert_pem,
            &bundle_path,
            Some(&crl),
            &["-crl_check_all"],
            tmp.path(),
        );
        assert!(ok, "{out}");
    }

    // The inventory records who issued what.
    let inv = ca2.inventory().unwrap();
    let issuer = |s: &str| inv.iter().find(|e| e.serial == s).unwrap().issuer.clone();
    assert_eq!(
        issuer(&old_leaf.serial_hex).as_deref(),
        Some(ca1.intermediate_serial())
    );
    assert_eq!(
        issuer(&new_leaf.serial_hex).as_deref(),
        Some(ca2.intermediate_serial())
    );
    assert_eq!(
        inv.iter()
            .filter(|e| e.kind == CertKind::Intermediate)
            .count(),
        2
    );

    // A third generation gets a third name.
    let ca3 = SiteCa::rotate(&dir).unwrap();
    assert!(openssl_text(&ca3.intermediate_pem, tmp.path()).contains("Site Issuing CA 3"));
    assert_eq!(
        crl_texts(
            &write(tmp.path(), "c3.pem", &ca3.crl_pem(7).unwrap()),
            tmp.path()
        )
        .len(),
        4
    );
}

#[test]
fn rotate_and_revoke_old_kills_the_old_intermediates_leaves() {
    let tmp = TempDir::new();
    let dir = tmp.path().join("ca");
    let ca1 = SiteCa::init(&dir, "Site", KeyAlgorithm::EcdsaP256).unwrap();
    let old_leaf = ca1.issue_client("old", None, 30).unwrap();
    let old_int = write(tmp.path(), "old-int.pem", &ca1.intermediate_pem);

    let ca2 = SiteCa::rotate_and_revoke_old(&dir, RevocationReason::CaCompromise).unwrap();
    let new_leaf = ca2.issue_client("new", None, 30).unwrap();

    // The bundle no longer carries the revoked intermediate.
    let bundle = X509::stack_from_pem(ca2.trust_bundle_pem().unwrap().as_bytes()).unwrap();
    assert_eq!(bundle.len(), 2);
    let crl = write(tmp.path(), "crl.pem", &ca2.crl_pem(7).unwrap());
    let texts = crl_texts(&crl, tmp.path());
    assert_eq!(
        texts.len(),
        2,
        "new intermediate + root; none from the revoked key"
    );
    assert!(texts[1].contains(ca1.intermediate_serial()), "{}", texts[1]);
    assert!(texts[1].contains("CA Compromise"), "{}", texts[1]);

    // The old intermediate itself is revoked in the root's CRL…
    let (ok, out) = verify(
        &ca2,
        &ca1.intermediate_pem,
        &ca2.root_cert_path(),
        Some(&crl),
        &["-crl_check"],
        tmp.path(),
    );
    assert!(!ok && out.contains("certificate revoked"), "{out}");
    // …so a client still presenting the old chain is refused once the chain is checked
    // (and the old key signs no CRL any more: its leaves' status is unknown, refused too).
    let (ok, out) = verify(
        &ca2,
        &old_leaf.cert_pem,
        Path::new(&old_int),
        Some(&crl),
        &["-crl_check_all"],
        tmp.path(),
    );
    assert!(!ok, "{out}");
    // Without the CRLs it would still verify: the refusal is the root CRL's doing.
    let (ok, out) = verify(
        &ca2,
        &old_leaf.cert_pem,
        Path::new(&old_int),
        None,
        &[],
        tmp.path(),
    );
    assert!(ok, "{out}");
    let (ok, out) = verify(
        &ca2,
        &new_leaf.cert_pem,
        &ca2.intermediate_cert_path(),
        Some(&crl),
        &["-crl_check_all"],
        tmp.path(),
    );
    assert!(ok, "{out}");

    let status = |serial: &str| {
        ca2.list()
            .unwrap()
            .into_iter()
            .find(|l| l.entry.serial == serial)
            .unwrap()
            .status
    };
    assert_eq!(status(&old_leaf.serial_hex), CertStatus::IssuerRevoked);
    assert_eq!(status(ca1.intermediate_serial()), CertStatus::Revoked);
    assert_eq!(status(&new_leaf.serial_hex), CertStatus::Valid);
}

#[test]
fn only_rotate_reads_the_root_key() {
    let tmp = TempDir::new();
    let dir = tmp.path().join("ca");
    drop(SiteCa::init(&dir, "Site", KeyAlgorithm::Ed25519).unwrap());
    // With the root key moved offline, everything but rotation works.
    let offline = tmp.path().join("root.key.offline");
    std::fs::rename(dir.join("root.key"), &offline).unwrap();
    let ca = SiteCa::open(&dir).unwrap();
    let leaf = ca.issue_client("c", None, 10).unwrap();
    ca.revoke(&leaf.serial_hex, RevocationReason::Superseded)
        .unwrap();
    ca.crl_pem(7).unwrap();
    let err = SiteCa::rotate(&dir).unwrap_err();
    assert!(matches!(err, CaError::RootKeyOffline { .. }), "{err}");
    assert!(err.to_string().contains("offline medium"), "{err}");
    assert_eq!(
        ca.inventory().unwrap().len(),
        3,
        "a failed rotation records nothing"
    );

    // Brought back readable by others, it is refused.
    std::fs::rename(&offline, dir.join("root.key")).unwrap();
    std::fs::set_permissions(
        dir.join("root.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    let err = SiteCa::rotate(&dir).unwrap_err();
    assert!(matches!(err, CaError::KeyPermissions { .. }), "{err}");
    std::fs::set_permissions(
        dir.join("root.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let ca2 = SiteCa::rotate(&dir).unwrap();
    let (ok, out) = verify(
        &ca2,
        &ca2.issue_server(&["a.site".to_string()], &[], 5)
            .unwrap()
            .cert_pem,
        &ca2.intermediate_cert_path(),
        None,
        &[],
        tmp.path(),
    );
    assert!(ok, "{out}");
}

#[test]
fn an_interrupted_rotation_is_named_with_its_fix() {
    let tmp = TempDir::new();
    let dir = tmp.path().join("ca");
    let ca1 = SiteCa::init(&dir, "Site", KeyAlgorithm::EcdsaP256).unwrap();
    let ca2 = SiteCa::rotate(&dir).unwrap();
    // As if the crash came between replacing the key and replacing the certificate.
    std::fs::write(dir.join("intermediate.crt"), &ca1.intermediate_pem).unwrap();
    let err = SiteCa::open(&dir).unwrap_err();
    match &err {
        CaError::InterruptedRotation { serial, .. } => {
            assert_eq!(serial, ca2.intermediate_serial())
        }
        other => panic!("expected InterruptedRotation, got {other}"),
    }
    assert!(err.to_string().contains("cp "), "{err}");
    // The fix the message names works.
    std::fs::copy(
        dir.join("intermediates")
            .join(format!("{}.crt", ca2.intermediate_serial())),
        dir.join("intermediate.crt"),
    )
    .unwrap();
    assert_eq!(
        SiteCa::open(&dir).unwrap().intermediate_serial(),
        ca2.intermediate_serial()
    );
}
