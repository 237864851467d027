//! Hostile bundles from someone holding a signing key, and broken ones from an operator:
//! a configuration the authority cannot load, paths that lead into the bundle root by
//! another spelling, keys the minisign CLI refuses, padded trusted comments, a `created`
//! far ahead, an archive without its end-of-archive marker. Each is refused with its own
//! code and leaves the bundle root byte-identical.

use super::signing::TrustedComment;
use super::testutil::*;
use super::*;
use std::path::Path;

/// Refused with `kind`, the root unchanged, v1 still active; returns the message.
fn refused(host: &Host, bundle: &Path, kind: Refusal) -> String {
    let before = tree_hash(host.root.path());
    let error = match import(&host.root, bundle, &host.options(), &NoProgress) {
        Ok(outcome) => panic!("expected {kind:?}, got {outcome:?}"),
        Err(e) => e,
    };
    assert_eq!(error.refusal(), Some(kind), "wrong refusal: {error}");
    assert_eq!(error.exit_code(), kind.exit_code());
    assert_eq!(
        tree_hash(host.root.path()),
        before,
        "the bundle root changed after a refusal: {error}"
    );
    let active = host.root.read_state().unwrap().unwrap().active.unwrap();
    assert_eq!(active.version, 1);
    error.to_string()
}

/// A host with v1 active; v1 also carries an unreferenced `tls/server.key` (any file may
/// travel; only referencing a key inside the root is refused).
fn active_v1() -> Host {
    let host = Host::new();
    let source = host.source("v1");
    std::fs::create_dir_all(source.join("tls")).unwrap();
    std::fs::write(source.join("tls/server.key"), &test_pki().server_key).unwrap();
    std::fs::write(source.join("tls/server.crt"), &test_pki().server_chain).unwrap();
    let v1 = host.bundle_from(&source, 1, NOW - DAY, 30);
    import(&host.root, &v1, &host.options(), &NoProgress).unwrap();
    host
}

/// v2's source with `authority.yaml` edited by `edit` (which must change it) and extra files.
fn source_v2(host: &Host, edit: impl Fn(&str) -> String, files: &[(&str, &str)]) -> PathBuf {
    let source = host.source(&format!("v2-{}", rand::random::<u32>()));
    let config = host.config("v2");
    let edited = edit(&config);
    assert_ne!(edited, config, "the edit did not apply");
    std::fs::write(source.join("authority.yaml"), edited).unwrap();
    for (path, text) in files {
        let target = source.join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, text).unwrap();
    }
    source
}

use std::path::PathBuf;

#[test]
fn a_bundle_the_authority_cannot_load_is_refused_by_import_and_by_config_check() {
    let host = active_v1();
    let pki = test_pki();
    let host_dir = host.host.display().to_string();
    let other_ca = tempfile::tempdir().unwrap();
    let foreign = crate::ca::SiteCa::init(
        &other_ca.path().join("ca"),
        "foreign",
        crate::ca::KeyAlgorithm::EcdsaP256,
    )
    .unwrap();
    let foreign_crl = foreign.crl_pem(30).unwrap();
    // The chain reversed: intermediate first.
    let mut certs: Vec<&str> = pki
        .server_chain
        .split_inclusive("-----END CERTIFICATE-----\n")
        .collect();
    certs.reverse();
    let reversed = certs.concat();
    std::fs::write(host.host.join("tls/other.key"), &pki.other_key).unwrap();

    let cert_line = format!("certificate: {host_dir}/tls/server.crt");
    let key_line = format!("privateKey: {host_dir}/tls/server.key");
    let with_ca = || {
        let cert_line = cert_line.clone();
        move |c: &str| {
            c.replace(
                &cert_line,
                &format!("{cert_line}\n  clientCa: tls/ca.crt\n  clientCrl: tls/client.crl"),
            )
        }
    };
    type Edit<'a> = Box<dyn Fn(&str) -> String + 'a>;
    /// What, the edit, files to ship, the key path and the reason expected.
    type Case<'a> = (&'a str, Edit<'a>, Vec<(&'a str, String)>, &'a str, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "garbage certificate shipped in the bundle",
            Box::new(|c: &str| c.replace(&cert_line, "certificate: tls/server.crt")),
            vec![("tls/server.crt", "garbage\n".into())],
            "tls.certificate",
            "holds no PEM certificate",
        ),
        (
            "a PEM block that is not a certificate",
            Box::new(|c: &str| c.replace(&cert_line, "certificate: tls/server.crt")),
            vec![(
                "tls/server.crt",
                "-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n".into(),
            )],
            "tls.certificate",
            "not an X.509 certificate",
        ),
        (
            "chain out of order",
            Box::new(|c: &str| c.replace(&cert_line, "certificate: tls/server.crt")),
            vec![("tls/server.crt", reversed.clone())],
            "tls.certificate",
            "not issued by certificate #2",
        ),
        (
            "private key of another certificate",
            Box::new(|c: &str| {
                c.replace(&key_line, &format!("privateKey: {host_dir}/tls/other.key"))
            }),
            vec![],
            "tls.privateKey",
            "does not match the certificate",
        ),
        (
            "unparsable CRL",
            Box::new(with_ca()),
            vec![
                ("tls/ca.crt", pki.ca_bundle.clone()),
                (
                    "tls/client.crl",
                    "-----BEGIN X509 CRL-----\nZ2FyYmFnZQ==\n-----END X509 CRL-----\n".into(),
                ),
            ],
            "tls.clientCrl",
            "not an X.509 CRL",
        ),
        (
            "CRL signed by another CA",
            Box::new(with_ca()),
            vec![
                ("tls/ca.crt", pki.ca_bundle.clone()),
                ("tls/client.crl", foreign_crl.clone()),
            ],
            "tls.clientCrl",
            "signed by a certificate of tls.clientCa",
        ),
    ];
    for (what, edit, files, key, reason) in cases {
        let files: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
        let source = source_v2(&host, edit, &files);
        // `config check` (the same loader) judges the source directory alike ...
        let problems = match crate::config::Settings::load(&source.join("authority.yaml")) {
            Err(crate::config::ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("{what}: config check accepted it: {other:?}"),
        };
        assert!(
            problems
                .iter()
                .any(|p| p.path == key && p.message.contains(reason)),
            "{what}: {problems:?}"
        );
        // ... and the import refuses the bundle with exit 3, nothing changed.
        let bundle = host.bundle_from(&source, 2, NOW - 600, 30);
        let message = refused(&host, &bundle, Refusal::InvalidConfig);
        assert!(
            message.contains(key) && message.contains(reason),
            "{what}: {message}"
        );
    }
    // The CA's own CRL is accepted (the CRL rule can pass).
    let source = source_v2(
        &host,
        with_ca(),
        &[("tls/ca.crt", &pki.ca_bundle), ("tls/client.crl", &pki.crl)],
    );
    let bundle = host.bundle_from(&source, 2, NOW - 600, 30);
    import(&host.root, &bundle, &host.options(), &NoProgress).unwrap();
}

#[test]
fn paths_into_the_bundle_root_are_refused_whatever_their_spelling() {
    let host = active_v1();
    let root = host.root.path().display().to_string();
    let host_dir = host.host.display().to_string();
    // A host symlink that leads into the root, and the root reached through a symlink.
    std::os::unix::fs::symlink(host.root.generations_dir(), host.host.join("gen-link")).unwrap();
    std::os::unix::fs::symlink(host.root.path(), host.host.join("root-link")).unwrap();
    let data_line = format!("dataDir: {host_dir}/data");
    let key_line = format!("privateKey: {host_dir}/tls/server.key");
    let cert_line = format!("certificate: {host_dir}/tls/server.crt");
    let cases: Vec<(String, String, &str)> = vec![
        (
            data_line.clone(),
            format!("dataDir: {root}/current/data"),
            "dataDir",
        ),
        (
            data_line.clone(),
            format!("dataDir: {root}/trusted-keys"),
            "dataDir",
        ),
        (
            data_line.clone(),
            format!("dataDir: {root}/generations"),
            "dataDir",
        ),
        (
            data_line.clone(),
            format!("dataDir: {host_dir}/gen-link/x"),
            "dataDir",
        ),
        (
            data_line.clone(),
            format!("dataDir: {host_dir}/root-link/current/data"),
            "dataDir",
        ),
        (
            data_line.clone(),
            format!("{data_line}\nlogging:\n  directory: {root}/current/logs"),
            "logging.directory",
        ),
        // A key shipped in v1, referenced by v2 through `current`: served from a bundle.
        (
            key_line.clone(),
            format!("privateKey: {root}/current/tls/server.key"),
            "tls.privateKey",
        ),
        (
            key_line.clone(),
            format!("privateKey: {host_dir}/root-link/current/tls/server.key"),
            "tls.privateKey",
        ),
        // A public file of another generation, which a later import deletes.
        (
            cert_line.clone(),
            format!("certificate: {root}/current/tls/server.crt"),
            "tls.certificate",
        ),
    ];
    for (from, to, key) in cases {
        let source = source_v2(&host, |c| c.replace(&from, &to), &[]);
        let bundle = host.bundle_from(&source, 2, NOW - 600, 30);
        let message = refused(&host, &bundle, Refusal::InvalidConfig);
        assert!(
            message.contains(&format!("{key}:")) && message.contains("bundle root"),
            "{to}: {message}"
        );
    }
    // `config check` judges a file anywhere by the same rules: a data directory in a
    // bundle root is refused wherever the file lies; the active generation itself passes.
    let generation = host.root.path().join("current");
    let text = std::fs::read_to_string(generation.join("authority.yaml")).unwrap();
    let copy = tempfile::tempdir().unwrap();
    std::fs::write(
        copy.path().join("authority.yaml"),
        text.replace(&data_line, &format!("dataDir: {root}/current/data")),
    )
    .unwrap();
    let problems = match crate::config::Settings::load(&copy.path().join("authority.yaml")) {
        Err(crate::config::ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("accepted: {other:?}"),
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "dataDir");
    crate::config::Settings::load(&host.root.config_path()).unwrap();
}

/// `key`'s public key file with its algorithm id replaced.
fn with_algorithm(key: &TestKey, id: &[u8; 2]) -> String {
    use base64::Engine;
    let text = std::fs::read_to_string(&key.public).unwrap();
    let mut lines = text.lines();
    let comment = lines.next().unwrap();
    let engine = base64::engine::general_purpose::STANDARD;
    let mut raw = engine.decode(lines.next().unwrap().trim()).unwrap();
    raw[..2].copy_from_slice(id);
    format!("{comment}\n{}\n", engine.encode(raw))
}

#[test]
fn only_ed25519_keys_are_pinned_by_trust_add_or_by_a_rotation() {
    let host = active_v1();
    let other = test_key(&host.work, "other");
    let xx = host.work.join("xx.pub");
    std::fs::write(&xx, with_algorithm(&other, b"Xx")).unwrap();
    let before = tree_hash(host.root.path());
    let error = host.root.trust_add(&xx).unwrap_err();
    assert!(error.to_string().contains("\"Xx\""), "{error}");
    assert_eq!(tree_hash(host.root.path()), before);
    // The unmodified key is accepted (the rule can pass).
    assert!(super::signing::parse_public_key(&with_algorithm(&other, b"Ed")).is_ok());

    // `bundle pack` refuses such a key; a signer crafting the archive by hand is refused
    // at import.
    let crafted = Crafted::new(
        2,
        &[
            ("authority.yaml", host.config("v2").into_bytes()),
            (
                "trust/keys/xx.pub",
                with_algorithm(&other, b"Xx").into_bytes(),
            ),
        ],
    );
    let bundle = crafted.signed(&host);
    let message = refused(&host, &bundle, Refusal::KeyRotation);
    assert!(message.contains("\"Xx\""), "{message}");
    assert_eq!(
        host.root.trusted_keys().unwrap().ids(),
        vec![host.key.id.clone()]
    );
}

#[test]
fn a_trusted_comment_padded_with_whitespace_is_a_bad_comment_not_a_bad_signature() {
    let host = active_v1();
    let source = host.source("v2");
    let bundle = host.work.join("padded.tar.zst");
    let options = PackOptions::new(SITE, 2, NOW - 1800, NOW + 30 * DAY);
    let packed = pack(&source, &bundle, &options, &NoProgress).unwrap();
    let comment = TrustedComment {
        site: SITE.into(),
        version: 2,
        created: NOW - 1800,
        expires: NOW + 30 * DAY,
        manifest_sha256: packed.manifest_sha256,
    }
    .render();
    for padded in [format!(" {comment}"), format!("{comment} ")] {
        let out = std::process::Command::new("minisign")
            .args(["-S", "-s"])
            .arg(&host.key.secret)
            .arg("-m")
            .arg(&bundle)
            .args(["-t", &padded])
            .output()
            .expect("the minisign CLI is needed: apt-get install -y minisign");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The CLI verifies it ...
        let out = std::process::Command::new("minisign")
            .args(["-V", "-p"])
            .arg(&host.key.public)
            .arg("-m")
            .arg(&bundle)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // ... and sealkit says what is wrong with it, rather than "tampered".
        let message = refused(&host, &bundle, Refusal::BadComment);
        assert!(message.contains("whitespace"), "{message}");
    }
    // Whitespace added to a signed comment afterwards is not covered by the signature.
    let signature = pack::default_signature_path(&bundle);
    std::fs::remove_file(&signature).unwrap();
    sign(&bundle, &host.key.sk, None, &Limits::default(), &NoProgress).unwrap();
    let text = std::fs::read_to_string(&signature).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[2].push(' ');
    std::fs::write(&signature, lines.join("\n") + "\n").unwrap();
    refused(&host, &bundle, Refusal::BadSignature);
}

#[test]
fn a_bundle_created_further_ahead_than_the_documented_skew_is_refused() {
    let host = active_v1();
    let source = host.source("v2");
    let ahead = NOW + MAX_CREATED_AHEAD as i64 + 60;
    let bundle = host.bundle_from(&source, 2, ahead, 30);
    let message = refused(&host, &bundle, Refusal::CreatedInFuture);
    assert!(message.contains("ahead of this host's clock"), "{message}");
    assert_eq!(Refusal::CreatedInFuture.exit_code(), 24);
    // Within the skew it is accepted.
    let bundle = host.bundle_from(&source, 2, NOW + MAX_CREATED_AHEAD as i64 - 60, 30);
    import(&host.root, &bundle, &host.options(), &NoProgress).unwrap();
}

#[test]
fn an_archive_without_its_end_of_archive_marker_is_refused() {
    let host = active_v1();
    let crafted = Crafted::new(
        2,
        &[
            ("authority.yaml", host.config("v2").into_bytes()),
            ("notes/README.txt", b"crafted\n".to_vec()),
        ],
    );
    let tar = crafted.tar();
    for cut in [1024, 512] {
        let compressed = zstd::encode_all(&tar[..tar.len() - cut], 3).unwrap();
        let bundle = host.signed_bytes(&compressed, &crafted.comment().render(), &host.key);
        let message = refused(&host, &bundle, Refusal::CorruptArchive);
        assert!(
            message.contains("end-of-archive marker"),
            "{cut}: {message}"
        );
    }
    // With both zero blocks it is accepted.
    import(
        &host.root,
        &crafted.signed(&host),
        &host.options(),
        &NoProgress,
    )
    .unwrap();
}
