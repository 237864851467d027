//! Kit build and verify: a built kit verifies (archive and directory), and one changed
//! byte anywhere — in the archive, in a file of an unpacked kit, or in a file of an archive
//! re-signed by the right key — is refused before anything is extracted. A kit must carry
//! its SBOM: removed, altered, or dropped from a re-signed SHA256SUMS, it is refused.

use super::*;
use crate::bundle::{self, Limits, NoProgress, PackOptions, Passphrase};
use std::os::unix::fs::PermissionsExt;

struct Site {
    dir: tempfile::TempDir,
    key: SecretKey,
    public: PathBuf,
    options: BuildOptions,
}

fn now() -> i64 {
    crate::clock::unix_now()
}

fn keypair(dir: &Path, name: &str) -> (SecretKey, PathBuf) {
    let secret = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    bundle::keygen(&secret, &public, Passphrase::Unencrypted).unwrap();
    let key = bundle::load_secret_key(&secret, Passphrase::Unencrypted).unwrap();
    (key, public)
}

fn write(path: &Path, contents: &[u8], mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A signed bundle of the example site's configuration.
fn signed_bundle(dir: &Path, key: &SecretKey) -> PathBuf {
    let source = dir.join("site-src");
    write(
        &source.join("authority.yaml"),
        include_bytes!("../../bundles/example-site/authority.yaml"),
        0o644,
    );
    let out = dir.join("example-site-v1.bundle.tar.zst");
    let options = PackOptions::new("example-site", 1, now() - 60, now() + 86_400);
    bundle::pack(&source, &out, &options, &NoProgress).unwrap();
    bundle::sign(&out, key, None, &Limits::default(), &NoProgress).unwrap();
    out
}

fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (key, public) = keypair(root, "signing");

    let binary = root.join("bin/sealkit");
    write(&binary, b"\x7fELF pretend static binary\n", 0o755);
    let sbom = root.join("bin/sealkit.cdx.json");
    write(&sbom, SBOM, 0o600);

    let kit = root.join("kit");
    write(&kit.join("install.sh"), b"#!/bin/sh\necho install\n", 0o755);
    write(&kit.join("sealkit.service"), b"[Service]\n", 0o644);
    write(&kit.join("README.md"), b"# kit\n", 0o644);
    write(&kit.join("prometheus/alerts.yaml"), b"groups: []\n", 0o644);
    write(&kit.join(".editor-swap"), b"skipped\n", 0o644);

    let ca = rcgen::generate_simple_self_signed(vec!["site-ca".to_string()]).unwrap();
    let ca_file = root.join("ca.crt");
    write(&ca_file, ca.cert.pem().as_bytes(), 0o644);

    let tls = root.join("tls");
    write(&tls.join("server.crt"), ca.cert.pem().as_bytes(), 0o644);
    write(
        &tls.join("server.key"),
        ca.key_pair.serialize_pem().as_bytes(),
        0o600,
    );

    let bundle = signed_bundle(root, &key);
    let options = BuildOptions {
        sbom,
        binary,
        kit_dir: kit,
        bundles: vec![bundle],
        trusted_keys: Vec::new(),
        ca_cert: Some(ca_file),
        tls_dir: Some(tls),
        drill_dir: None,
        runbooks: None,
        created: now(),
        layout: Layout::Archive { level: 3 },
    };
    Site {
        dir,
        key,
        public,
        options,
    }
}

fn trusted(public: &Path) -> TrustedKeys {
    TrustedKeys::load_paths(&[public.to_path_buf()]).unwrap()
}

fn refusal(result: Result<VerifiedKit, KitError>) -> (Refusal, String) {
    match result {
        Err(KitError::Refused { kind, reason }) => (kind, reason),
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(kit) => panic!("expected a refusal, the kit verified: {kit:?}"),
    }
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".partial-") || n.contains(".compressing-"))
        .collect()
}

/// A minimal CycloneDX document standing in for the SBOM of the pretend binary.
const SBOM: &[u8] = br#"{"bomFormat":"CycloneDX","specVersion":"1.5","version":1,"components":[]}"#;

const EXPECTED_FILES: [&str; 12] = [
    "README.md",
    "bundles/example-site-v1.bundle.tar.zst",
    "bundles/example-site-v1.bundle.tar.zst.minisig",
    "install.sh",
    "prometheus/alerts.yaml",
    "sealkit",
    "sealkit.cdx.json",
    "sealkit.service",
    "tls/server.crt",
    "tls/server.key",
    "trust/keys/KEYID.pub",
    "trust/site-ca.crt",
];

fn expected_files(key_id: &str) -> Vec<String> {
    EXPECTED_FILES
        .iter()
        .map(|p| p.replace("KEYID", key_id))
        .collect()
}

#[test]
fn a_built_archive_verifies_and_extracts_exactly_what_was_signed() {
    let site = site();
    let out = site.dir.path().join("kit.tar.zst");
    let summary = build(&out, &site.options, &site.key).unwrap();
    let paths: Vec<String> = summary.files.iter().map(|f| f.path.clone()).collect();
    assert_eq!(paths, expected_files(&summary.key_id));
    assert_eq!(summary.trusted_key_ids, vec![summary.key_id.clone()]);
    assert!(leftovers(site.dir.path()).is_empty());

    let keys = trusted(&site.public);
    let verified = verify(&out, &keys, &VerifyOptions::default()).unwrap();
    assert!(verified.archive_signature);
    assert_eq!(verified.key_id, summary.key_id);
    assert_eq!(verified.files, summary.files);
    assert_eq!(verified.sums_sha256, summary.sums_sha256);
    assert_eq!(
        verified.bundles(),
        vec!["bundles/example-site-v1.bundle.tar.zst"]
    );

    let dest = site.dir.path().join("unpacked");
    let options = VerifyOptions {
        extract: Some(dest.clone()),
        ..VerifyOptions::default()
    };
    let extracted = verify(&out, &keys, &options).unwrap();
    assert_eq!(extracted.extracted.as_deref(), Some(dest.as_path()));
    let mode = |p: &str| {
        std::fs::metadata(dest.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(
        mode(""),
        0o700,
        "the unpacked kit holds a private key: 0700"
    );
    assert_eq!(mode("sealkit"), 0o755);
    assert_eq!(mode("install.sh"), 0o755);
    assert_eq!(mode("tls/server.key"), 0o600, "a private key stays private");
    assert_eq!(mode("README.md"), 0o644);
    assert_eq!(
        std::fs::read(dest.join("sealkit")).unwrap(),
        std::fs::read(&site.options.binary).unwrap()
    );
    assert!(!dest.join(".editor-swap").exists(), "dotfiles are skipped");

    // The unpacked kit is itself a verifiable kit directory, and `sha256sum -c` format.
    let again = verify(&dest, &keys, &VerifyOptions::default()).unwrap();
    assert!(!again.archive_signature);
    assert_eq!(again.files.len(), summary.files.len());
    let sums = std::fs::read_to_string(dest.join(SUMS_NAME)).unwrap();
    let line = format!(
        "{}  sealkit\n",
        summary
            .files
            .iter()
            .find(|f| f.path == "sealkit")
            .unwrap()
            .sha256
    );
    assert!(sums.contains(&line), "{sums}");

    // Never into an existing directory.
    let err = verify(&out, &keys, &options).unwrap_err();
    assert!(err.to_string().contains("exists"), "{err}");
    // And a kit is never overwritten.
    let err = build(&out, &site.options, &site.key).unwrap_err();
    assert!(err.to_string().contains("exists"), "{err}");
}

#[test]
fn one_changed_byte_anywhere_in_the_archive_is_refused_before_extraction() {
    let site = site();
    let out = site.dir.path().join("kit.tar.zst");
    build(&out, &site.options, &site.key).unwrap();
    let keys = trusted(&site.public);
    let original = std::fs::read(&out).unwrap();
    let len = original.len();
    let frame = 8 + u32::from_le_bytes(original[4..8].try_into().unwrap()) as usize;
    // The frame header, the signature inside it, the first compressed bytes, and positions
    // spread over the whole file, to the last byte.
    let mut positions = vec![
        0,
        3,
        4,
        7,
        8,
        20,
        frame / 2,
        frame - 1,
        frame,
        frame + 1,
        frame + 4,
    ];
    positions.extend((1..40).map(|i| frame + (len - frame) * i / 40));
    positions.push(len - 1);
    let tampered = site.dir.path().join("tampered.tar.zst");
    let dest = site.dir.path().join("must-not-appear");
    for position in positions {
        let mut bytes = original.clone();
        bytes[position] ^= 0x01;
        std::fs::write(&tampered, &bytes).unwrap();
        let options = VerifyOptions {
            extract: Some(dest.clone()),
            ..VerifyOptions::default()
        };
        let (kind, reason) = refusal(verify(&tampered, &keys, &options));
        assert!(
            matches!(kind, Refusal::BadSignature | Refusal::TooLarge),
            "byte {position}/{len}: {kind:?} {reason}"
        );
        assert!(!dest.exists(), "byte {position}: nothing may be extracted");
        assert!(
            leftovers(site.dir.path()).is_empty(),
            "byte {position}: staging left behind"
        );
    }
    // Truncated, or with a byte appended: refused too.
    for bytes in [
        &original[..len - 1],
        &[original.as_slice(), b"\0"].concat()[..],
    ] {
        std::fs::write(&tampered, bytes).unwrap();
        let (kind, _) = refusal(verify(&tampered, &keys, &VerifyOptions::default()));
        assert_eq!(kind, Refusal::BadSignature);
    }
    // The untouched kit still verifies.
    verify(&out, &keys, &VerifyOptions::default()).unwrap();
}

#[test]
fn a_kit_signed_by_another_key_is_refused() {
    let site = site();
    let out = site.dir.path().join("kit.tar.zst");
    build(&out, &site.options, &site.key).unwrap();
    let (_, other) = keypair(site.dir.path(), "other");
    let (kind, reason) = refusal(verify(&out, &trusted(&other), &VerifyOptions::default()));
    assert_eq!(kind, Refusal::UntrustedKey, "{reason}");
    let (kind, _) = refusal(verify(
        &out,
        &TrustedKeys::default(),
        &VerifyOptions::default(),
    ));
    assert_eq!(kind, Refusal::UntrustedKey);
}

#[test]
fn a_plain_tar_zst_without_the_signature_frame_is_refused() {
    let site = site();
    let out = site.dir.path().join("kit.tar.zst");
    build(&out, &site.options, &site.key).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let frame = 8 + u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    let stripped = site.dir.path().join("stripped.tar.zst");
    std::fs::write(&stripped, &bytes[frame..]).unwrap();
    let (kind, reason) = refusal(verify(
        &stripped,
        &trusted(&site.public),
        &VerifyOptions::default(),
    ));
    assert_eq!(kind, Refusal::BadSignature);
    assert!(reason.contains("without the kit signature"), "{reason}");
}

/// Builds a `.tar.zst` of `files` (in order) and puts a valid archive signature in front:
/// what someone holding the key could make. The inner checks must still hold.
fn resigned(path: &Path, files: &[(&str, Vec<u8>)], key: &SecretKey, created: &str) {
    let mut tar = tar::Builder::new(Vec::new());
    // Without a SHA256SUMS, name the digest of an empty one.
    let mut sums_sha256 = crate::bundle::sha256_hex(b"");
    for (name, bytes) in files {
        if *name == SUMS_NAME {
            sums_sha256 = crate::bundle::sha256_hex(bytes);
        }
        let mut header = tar_header(bytes.len() as u64, 0o644, 0);
        tar.append_data(&mut header, name, bytes.as_slice())
            .unwrap();
    }
    let compressed = zstd::encode_all(tar.into_inner().unwrap().as_slice(), 3).unwrap();
    let signature = sign_data(
        key,
        io::Cursor::new(&compressed),
        &archive_comment(created, &sums_sha256),
        &archive_untrusted(&secret_key_id(key)),
    )
    .unwrap();
    let mut out = SIGNATURE_FRAME_MAGIC.to_le_bytes().to_vec();
    out.extend((signature.len() as u32).to_le_bytes());
    out.extend(signature.as_bytes());
    out.extend(compressed);
    std::fs::write(path, out).unwrap();
}

#[test]
fn inside_a_validly_signed_archive_every_file_must_match_signed_sums() {
    let site = site();
    let out = site.dir.path().join("kit.tar.zst");
    let summary = build(&out, &site.options, &site.key).unwrap();
    let keys = trusted(&site.public);
    let dest = site.dir.path().join("unpacked");
    let options = VerifyOptions {
        extract: Some(dest.clone()),
        ..VerifyOptions::default()
    };
    verify(&out, &keys, &options).unwrap();
    let read = |p: &str| std::fs::read(dest.join(p)).unwrap();
    let mut files: Vec<(&str, Vec<u8>)> = summary
        .files
        .iter()
        .map(|f| (f.path.as_str(), read(&f.path)))
        .collect();
    files.push((SUMS_NAME, read(SUMS_NAME)));
    files.push((SUMS_SIGNATURE_NAME, read(SUMS_SIGNATURE_NAME)));
    let probe = site.dir.path().join("probe.tar.zst");

    // As built: verifies.
    resigned(&probe, &files, &site.key, &summary.created);
    verify(&probe, &keys, &VerifyOptions::default()).unwrap();

    // One byte of install.sh changed.
    let mut changed = files.clone();
    let script = changed
        .iter_mut()
        .find(|(p, _)| *p == "install.sh")
        .unwrap();
    script.1[0] ^= 0x20;
    resigned(&probe, &changed, &site.key, &summary.created);
    let (kind, reason) = refusal(verify(&probe, &keys, &VerifyOptions::default()));
    assert_eq!(kind, Refusal::ContentMismatch);
    assert!(
        reason.contains("install.sh") && reason.contains("altered"),
        "{reason}"
    );

    // A file nobody listed.
    let mut extra = files.clone();
    extra.insert(0, ("backdoor.sh", b"#!/bin/sh\n".to_vec()));
    resigned(&probe, &extra, &site.key, &summary.created);
    let (kind, reason) = refusal(verify(&probe, &keys, &VerifyOptions::default()));
    assert_eq!(kind, Refusal::ContentMismatch);
    assert!(reason.contains("backdoor.sh is not listed"), "{reason}");

    // A listed file missing.
    let missing: Vec<_> = files
        .iter()
        .filter(|(p, _)| *p != "sealkit")
        .cloned()
        .collect();
    resigned(&probe, &missing, &site.key, &summary.created);
    let (kind, reason) = refusal(verify(&probe, &keys, &VerifyOptions::default()));
    assert_eq!(kind, Refusal::ContentMismatch);
    assert!(
        reason.contains("sealkit is listed") && reason.contains("missing"),
        "{reason}"
    );

    // SHA256SUMS edited to match the change: its own signature no longer verifies.
    let mut forged = changed.clone();
    let digest =
        crate::bundle::sha256_hex(&forged.iter().find(|(p, _)| *p == "install.sh").unwrap().1);
    let sums = String::from_utf8(read(SUMS_NAME)).unwrap();
    let old = summary
        .files
        .iter()
        .find(|f| f.path == "install.sh")
        .unwrap();
    let sums = sums.replace(&old.sha256, &digest).into_bytes();
    forged.iter_mut().find(|(p, _)| *p == SUMS_NAME).unwrap().1 = sums;
    resigned(&probe, &forged, &site.key, &summary.created);
    let (kind, reason) = refusal(verify(&probe, &keys, &VerifyOptions::default()));
    assert_eq!(kind, Refusal::BadSignature, "{reason}");
    assert!(reason.contains(SUMS_SIGNATURE_NAME), "{reason}");

    // No SHA256SUMS at all.
    let bare: Vec<_> = files
        .iter()
        .filter(|(p, _)| *p != SUMS_NAME && *p != SUMS_SIGNATURE_NAME)
        .cloned()
        .collect();
    resigned(&probe, &bare, &site.key, &summary.created);
    let (kind, _) = refusal(verify(&probe, &keys, &VerifyOptions::default()));
    assert_eq!(kind, Refusal::ContentMismatch);

    // An unsafe path.
    let mut escape = files.clone();
    escape.insert(0, ("../etc/passwd", b"x".to_vec()));
    let mut tar = tar::Builder::new(Vec::new());
    for (name, bytes) in &escape {
        let mut header = tar_header(bytes.len() as u64, 0o644, 0);
        // append_data refuses `..`; write the name into the header directly.
        header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_cksum();
        tar.append(&header, bytes.as_slice()).unwrap();
    }
    let compressed = zstd::encode_all(tar.into_inner().unwrap().as_slice(), 3).unwrap();
    let sums_sha = crate::bundle::sha256_hex(&read(SUMS_NAME));
    let signature = sign_data(
        &site.key,
        io::Cursor::new(&compressed),
        &archive_comment(&summary.created, &sums_sha),
        &archive_untrusted(&summary.key_id),
    )
    .unwrap();
    let mut bytes = SIGNATURE_FRAME_MAGIC.to_le_bytes().to_vec();
    bytes.extend((signature.len() as u32).to_le_bytes());
    bytes.extend(signature.as_bytes());
    bytes.extend(compressed);
    std::fs::write(&probe, bytes).unwrap();
    let (kind, reason) = refusal(verify(&probe, &keys, &VerifyOptions::default()));
    assert_eq!(kind, Refusal::UnsafeEntry, "{reason}");
}

#[test]
fn a_kit_directory_verifies_and_refuses_a_changed_extra_or_missing_file() {
    let mut site = site();
    site.options.layout = Layout::Directory;
    let out = site.dir.path().join("kit-dir");
    let summary = build(&out, &site.options, &site.key).unwrap();
    let keys = trusted(&site.public);
    let verified = verify(&out, &keys, &VerifyOptions::default()).unwrap();
    assert_eq!(verified.files.len(), summary.files.len());
    assert_eq!(
        std::fs::metadata(out.join("tls/server.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // One byte of one file.
    let script = out.join("sealkit.service");
    let original = std::fs::read(&script).unwrap();
    let mut bytes = original.clone();
    bytes[3] ^= 0x01;
    std::fs::write(&script, &bytes).unwrap();
    let (kind, reason) = refusal(verify(&out, &keys, &VerifyOptions::default()));
    assert_eq!(kind, Refusal::ContentMismatch);
    assert!(reason.contains("sealkit.service"), "{reason}");
    std::fs::write(&script, &original).unwrap();
    verify(&out, &keys, &VerifyOptions::default()).unwrap();

    // Something not listed.
    std::fs::write(out.join("prometheus/extra.yaml"), b"x").unwrap();
    let (kind, reason) = refusal(verify(&out, &keys, &VerifyOptions::default()));
    assert_eq!(kind, Refusal::ContentMismatch);
    assert!(
        reason.contains("prometheus/extra.yaml is not listed"),
        "{reason}"
    );
    std::fs::remove_file(out.join("prometheus/extra.yaml")).unwrap();

    // A symbolic link.
    std::os::unix::fs::symlink("/etc/passwd", out.join("link")).unwrap();
    let (kind, _) = refusal(verify(&out, &keys, &VerifyOptions::default()));
    assert_eq!(kind, Refusal::UnsafeEntry);
    std::fs::remove_file(out.join("link")).unwrap();

    // A listed file missing.
    std::fs::remove_file(out.join("README.md")).unwrap();
    let (kind, reason) = refusal(verify(&out, &keys, &VerifyOptions::default()));
    assert_eq!(kind, Refusal::ContentMismatch);
    assert!(reason.contains("README.md is listed"), "{reason}");
    std::fs::write(out.join("README.md"), b"# kit\n").unwrap();

    // One byte of the signature's untrusted comment (which minisign itself does not cover).
    let sig = out.join(SUMS_SIGNATURE_NAME);
    let original_sig = std::fs::read(&sig).unwrap();
    let mut bytes = original_sig.clone();
    bytes[25] ^= 0x01;
    std::fs::write(&sig, &bytes).unwrap();
    let (kind, reason) = refusal(verify(&out, &keys, &VerifyOptions::default()));
    assert_eq!(kind, Refusal::BadSignature, "{reason}");
    std::fs::write(&sig, &original_sig).unwrap();
    verify(&out, &keys, &VerifyOptions::default()).unwrap();

    // One byte of SHA256SUMS: its signature fails.
    let sums = out.join(SUMS_NAME);
    let mut bytes = std::fs::read(&sums).unwrap();
    bytes[0] = if bytes[0] == b'0' { b'1' } else { b'0' };
    std::fs::write(&sums, &bytes).unwrap();
    let (kind, _) = refusal(verify(&out, &keys, &VerifyOptions::default()));
    assert_eq!(kind, Refusal::BadSignature);
}

#[test]
fn build_refuses_bundles_the_host_could_not_import_and_reserved_names() {
    let site = site();
    // A bundle signed by a key the kit does not pin.
    let (other, _) = keypair(site.dir.path(), "other");
    let foreign_dir = site.dir.path().join("foreign");
    std::fs::create_dir_all(&foreign_dir).unwrap();
    let foreign = signed_bundle(&foreign_dir, &other);
    let mut options = site.options.clone();
    options.bundles = vec![foreign];
    let err = build(&site.dir.path().join("a.tar.zst"), &options, &site.key).unwrap_err();
    assert!(
        err.to_string()
            .contains("does not verify against the keys the kit pins"),
        "{err}"
    );

    // …unless that key is shipped too.
    let other_pub = site.dir.path().join("other.pub");
    options.trusted_keys = vec![site.public.clone(), other_pub];
    let summary = build(&site.dir.path().join("b.tar.zst"), &options, &site.key).unwrap();
    assert_eq!(summary.trusted_key_ids.len(), 2);

    // A kit directory trying to place its own binary or trust roots.
    write(
        &site.options.kit_dir.join("trust/keys/evil.pub"),
        b"x",
        0o644,
    );
    let err = build(&site.dir.path().join("c.tar.zst"), &site.options, &site.key).unwrap_err();
    assert!(err.to_string().contains("reserved"), "{err}");
    assert!(leftovers(site.dir.path()).is_empty());
}

#[test]
fn the_sbom_ships_in_the_kit_and_a_kit_without_it_or_with_another_is_refused() {
    let site = site();
    let out = site.dir.path().join("kit.tar.zst");
    let summary = build(&out, &site.options, &site.key).unwrap();
    let shipped = summary
        .files
        .iter()
        .find(|f| f.path == SBOM_PATH)
        .expect("the kit lists the SBOM");
    assert_eq!(shipped.sha256, crate::bundle::sha256_hex(SBOM));
    assert_eq!(shipped.mode, 0o644, "the SBOM is public");
    let keys = trusted(&site.public);
    let dest = site.dir.path().join("unpacked");
    let options = VerifyOptions {
        extract: Some(dest.clone()),
        ..VerifyOptions::default()
    };
    verify(&out, &keys, &options).unwrap();
    assert_eq!(std::fs::read(dest.join(SBOM_PATH)).unwrap(), SBOM);

    // Re-signed by the right key, the SBOM and its SHA256SUMS line removed: refused.
    let read = |p: &str| std::fs::read(dest.join(p)).unwrap();
    let kept: Vec<&KitFile> = summary
        .files
        .iter()
        .filter(|f| f.path != SBOM_PATH)
        .collect();
    let sums: String = kept
        .iter()
        .map(|f| format!("{}  {}\n", f.sha256, f.path))
        .collect();
    let sums_signature = sign_sums(&sums, &summary.created, kept.len(), &site.key).unwrap();
    let mut files: Vec<(&str, Vec<u8>)> = kept
        .iter()
        .map(|f| (f.path.as_str(), read(&f.path)))
        .collect();
    files.push((SUMS_NAME, sums.into_bytes()));
    files.push((SUMS_SIGNATURE_NAME, sums_signature.into_bytes()));
    let probe = site.dir.path().join("no-sbom.tar.zst");
    resigned(&probe, &files, &site.key, &summary.created);
    let (kind, reason) = refusal(verify(&probe, &keys, &VerifyOptions::default()));
    assert_eq!(kind, Refusal::ContentMismatch, "{reason}");
    assert!(
        reason.contains("does not list sealkit.cdx.json") && reason.contains("SBOM"),
        "{reason}"
    );

    // The unpacked kit with its SBOM removed, then altered.
    let sbom = dest.join(SBOM_PATH);
    std::fs::remove_file(&sbom).unwrap();
    let (kind, reason) = refusal(verify(&dest, &keys, &VerifyOptions::default()));
    assert_eq!(kind, Refusal::ContentMismatch, "{reason}");
    assert!(
        reason.contains("sealkit.cdx.json is listed") && reason.contains("missing"),
        "{reason}"
    );
    let mut altered = SBOM.to_vec();
    altered.extend(b"\n");
    std::fs::write(&sbom, &altered).unwrap();
    let (kind, reason) = refusal(verify(&dest, &keys, &VerifyOptions::default()));
    assert_eq!(kind, Refusal::ContentMismatch, "{reason}");
    assert!(
        reason.contains("sealkit.cdx.json: sha256") && reason.contains("altered"),
        "{reason}"
    );
    std::fs::write(&sbom, SBOM).unwrap();
    verify(&dest, &keys, &VerifyOptions::default()).unwrap();
}

#[test]
fn build_needs_a_cyclonedx_sbom() {
    let site = site();
    let mut options = site.options.clone();
    options.sbom = site.dir.path().join("absent.cdx.json");
    let err = build(&site.dir.path().join("a.tar.zst"), &options, &site.key).unwrap_err();
    assert!(err.to_string().contains("cannot read the SBOM"), "{err}");

    let not_cyclonedx = site.dir.path().join("spdx.json");
    write(&not_cyclonedx, br#"{"spdxVersion":"SPDX-2.3"}"#, 0o644);
    options.sbom = not_cyclonedx;
    let err = build(&site.dir.path().join("b.tar.zst"), &options, &site.key).unwrap_err();
    assert!(err.to_string().contains("not a CycloneDX SBOM"), "{err}");
    assert!(leftovers(site.dir.path()).is_empty());

    assert_eq!(
        default_sbom_path(Path::new(
            "target/x86_64-unknown-linux-musl/release/sealkit"
        )),
        Path::new("target/x86_64-unknown-linux-musl/release/sealkit.cdx.json")
    );
}

#[test]
fn linkage_tells_a_loader_from_none() {
    // This test binary is a dynamically linked debug build.
    let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    assert_eq!(super::linkage(&exe), super::Linkage::Dynamic);
    assert_eq!(super::linkage(b"#!/bin/sh\n"), super::Linkage::NotElf);
    // An ELF64 LE header with one PT_LOAD program header and no PT_INTERP.
    let mut elf = vec![0u8; 64 + 56];
    elf[..6].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1]);
    elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
    elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
    elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
    elf[64..68].copy_from_slice(&1u32.to_le_bytes());
    assert_eq!(super::linkage(&elf), super::Linkage::Static);
    elf[64..68].copy_from_slice(&3u32.to_le_bytes());
    assert_eq!(super::linkage(&elf), super::Linkage::Dynamic);
    // Program headers pointing past the end are not an executable.
    elf[64..68].copy_from_slice(&1u32.to_le_bytes());
    elf[0x38..0x3a].copy_from_slice(&9u16.to_le_bytes());
    assert_eq!(super::linkage(&elf[..64 + 56]), super::Linkage::NotElf);
}

#[test]
fn building_reports_every_archived_byte_to_the_progress_display() {
    use std::cell::Cell;
    #[derive(Default)]
    struct Recorded {
        total: Cell<u64>,
        done: Cell<u64>,
        finished: Cell<bool>,
    }
    impl crate::bundle::Progress for Recorded {
        fn start(&self, _label: &str, total: u64) {
            self.total.set(total);
        }
        fn advance(&self, bytes: u64) {
            self.done.set(self.done.get() + bytes);
        }
        fn finish(&self) {
            self.finished.set(true);
        }
    }
    let site = site();
    let out = site.dir.path().join("progress.tar.zst");
    let recorded = Recorded::default();
    let summary = super::build_with_progress(&out, &site.options, &site.key, &recorded).unwrap();
    let archived: u64 = summary
        .files
        .iter()
        .filter(|f| f.path != super::SUMS_NAME && f.path != super::SUMS_SIGNATURE_NAME)
        .map(|f| f.size)
        .sum();
    assert!(recorded.total.get() > 0);
    assert_eq!(recorded.done.get(), recorded.total.get());
    assert_eq!(recorded.done.get(), archived);
    assert!(recorded.finished.get());
}
