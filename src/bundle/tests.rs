//! Bundle tests with real files in temp dirs, real archives, real signatures, and the real
//! `minisign` CLI (Debian package `minisign`).
//!
//! Every refusal test starts from a host with v1 active and checks that the whole bundle
//! root is byte-identical afterwards (paths, modes, contents, link targets).

use super::activate::{recover, rollback, status, Pending, PendingOp, RollbackOptions};
use super::manifest::{check_path, Manifest};
use super::signing::{parse_public_key, public_key_id, TrustedComment};
use super::testutil::*;
use super::*;
use std::path::Path;
use std::process::Command;

fn import_err(host: &Host, bundle: &Path, options: &ImportOptions) -> BundleError {
    match import(&host.root, bundle, options, &NoProgress) {
        Ok(outcome) => panic!("expected a refusal, got {outcome:?}"),
        Err(e) => e,
    }
}

/// Asserts `bundle` is refused with `kind` and that the root did not change at all.
fn assert_refused_with(
    host: &Host,
    bundle: &Path,
    options: &ImportOptions,
    kind: Refusal,
) -> String {
    let before = tree_hash(host.root.path());
    let error = import_err(host, bundle, options);
    assert_eq!(error.refusal(), Some(kind), "wrong refusal: {error}");
    assert_eq!(error.exit_code(), kind.exit_code());
    let message = error.to_string();
    assert!(!message.contains('\n'), "not one line: {message}");
    assert_eq!(
        tree_hash(host.root.path()),
        before,
        "the bundle root changed after a refusal: {message}"
    );
    message
}

fn assert_refused(host: &Host, bundle: &Path, kind: Refusal) -> String {
    let message = assert_refused_with(host, bundle, &host.options(), kind);
    // The active generation is still v1.
    let active = host.root.read_state().unwrap().unwrap().active.unwrap();
    assert_eq!(active.version, 1);
    let config = std::fs::read_to_string(host.root.config_path()).unwrap();
    assert!(config.contains("/v1\n"), "active config changed");
    message
}

/// A host with v1 imported and active.
fn active_v1() -> Host {
    let host = Host::new();
    let v1 = host.bundle(1);
    import(&host.root, &v1, &host.options(), &NoProgress).unwrap();
    host
}

fn config_files(host: &Host, config: &str) -> Vec<(&'static str, Vec<u8>)> {
    let _ = host;
    vec![
        ("authority.yaml", config.as_bytes().to_vec()),
        ("notes/README.txt", b"crafted\n".to_vec()),
    ]
}

fn crafted_v2(host: &Host) -> Crafted {
    Crafted::new(2, &config_files(host, &host.config("v2")))
}

fn minisign(args: &[&str]) -> std::process::Output {
    Command::new("minisign")
        .args(args)
        .output()
        .expect("the minisign CLI is needed for this test: apt-get install -y minisign")
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

// ---------------------------------------------------------------------------------------
// Round trip and interoperability
// ---------------------------------------------------------------------------------------

#[test]
fn round_trip_pack_sign_cli_verify_import_then_v2_then_v1_is_refused() {
    let host = Host::new();
    let v1 = host.bundle(1);
    let signature = pack::default_signature_path(&v1);

    // The minisign CLI verifies our signature and shows our trusted comment.
    let out = minisign(&[
        "-V",
        "-p",
        s(&host.key.public),
        "-m",
        s(&v1),
        "-x",
        s(&signature),
    ]);
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "minisign -V failed: {shown}");
    assert!(
        shown.contains("Trusted comment: sealkit-bundle format=1 site=test-site version=1 "),
        "{shown}"
    );
    // ... and refuses a tampered copy (the CLI is really checking).
    let tampered = host.work.join("tampered.tar.zst");
    let mut bytes = std::fs::read(&v1).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&tampered, &bytes).unwrap();
    let out = minisign(&[
        "-V",
        "-p",
        s(&host.key.public),
        "-m",
        s(&tampered),
        "-x",
        s(&signature),
    ]);
    assert!(!out.status.success());

    // verify (no side effects), then import.
    let keys = host.root.trusted_keys().unwrap();
    let verified = verify(&v1, &keys, &VerifyOptions::new(NOW), &NoProgress).unwrap();
    assert_eq!(verified.comment.version, 1);
    assert_eq!(verified.key_id, host.key.id);
    let first = import(&host.root, &v1, &host.options(), &NoProgress).unwrap();
    assert!(!first.already_active);
    assert_eq!(first.record.version, 1);
    assert_eq!(first.record.key_id, host.key.id);
    let config_path = host.root.config_path();
    assert!(std::fs::read_to_string(&config_path)
        .unwrap()
        .contains("/v1\n"));
    crate::config::Settings::load(&config_path).unwrap();

    // v2 replaces it.
    let v2 = host.bundle(2);
    let second = import(&host.root, &v2, &host.options(), &NoProgress).unwrap();
    assert_eq!(second.record.version, 2);
    assert_eq!(second.replaced.as_ref().map(|r| r.version), Some(1));
    assert!(std::fs::read_to_string(&config_path)
        .unwrap()
        .contains("/v2\n"));
    let st = status(&host.root).unwrap();
    assert!(st.consistent());
    let state = st.state.unwrap();
    assert_eq!(state.active.as_ref().unwrap().version, 2);
    assert_eq!(state.previous.len(), 1);
    assert_eq!(state.previous[0].version, 1);
    // Generations are read-only.
    use std::os::unix::fs::PermissionsExt;
    let generation = host.root.generation_dir(&second.record.generation);
    let mode = std::fs::metadata(generation.join("authority.yaml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o444);

    // v1 again: a rollback, refused, nothing changed.
    let before = tree_hash(host.root.path());
    let error = import_err(&host, &v1, &host.options());
    assert_eq!(error.refusal(), Some(Refusal::NotNewer), "{error}");
    assert_eq!(tree_hash(host.root.path()), before);
    assert!(std::fs::read_to_string(&config_path)
        .unwrap()
        .contains("/v2\n"));

    // v2 again: a no-op.
    let again = import(&host.root, &v2, &host.options(), &NoProgress).unwrap();
    assert!(again.already_active);
    assert_eq!(tree_hash(host.root.path()), before);
}

#[test]
fn keys_and_signatures_of_the_minisign_cli_are_accepted() {
    let host = active_v1();
    // A key pair made by the CLI (-W: no passphrase), pinned like any other.
    let cli_pub = host.work.join("cli.pub");
    let cli_key = host.work.join("cli.key");
    let out = minisign(&["-G", "-W", "-p", s(&cli_pub), "-s", s(&cli_key)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (cli_id, new) = host.root.trust_add(&cli_pub).unwrap();
    assert!(new);

    // Pack with sealkit, sign with the CLI using the comment sealkit would write.
    let source = host.source("v2");
    let bundle = host.work.join("cli-signed.tar.zst");
    let options = PackOptions::new(SITE, 2, NOW - 1800, NOW + 30 * DAY);
    let packed = pack(&source, &bundle, &options, &NoProgress).unwrap();
    let comment = TrustedComment {
        site: SITE.into(),
        version: 2,
        created: NOW - 1800,
        expires: NOW + 30 * DAY,
        manifest_sha256: packed.manifest_sha256.clone(),
    };
    let out = minisign(&[
        "-S",
        "-s",
        s(&cli_key),
        "-m",
        s(&bundle),
        "-t",
        &comment.render(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outcome = import(&host.root, &bundle, &host.options(), &NoProgress).unwrap();
    assert_eq!(outcome.record.version, 2);
    assert_eq!(outcome.record.key_id, cli_id);

    // Our (unencrypted) secret key file is usable by the CLI too.
    let source = host.source("v3");
    let bundle = host.work.join("cli-signed-v3.tar.zst");
    let options = PackOptions::new(SITE, 3, NOW - 900, NOW + 30 * DAY);
    let packed = pack(&source, &bundle, &options, &NoProgress).unwrap();
    let comment = TrustedComment {
        version: 3,
        created: NOW - 900,
        manifest_sha256: packed.manifest_sha256,
        ..comment
    };
    let out = minisign(&[
        "-S",
        "-s",
        s(&host.key.secret),
        "-m",
        s(&bundle),
        "-t",
        &comment.render(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outcome = import(&host.root, &bundle, &host.options(), &NoProgress).unwrap();
    assert_eq!(outcome.record.key_id, host.key.id);
}

#[test]
fn a_passphrase_protected_key_signs_and_the_cli_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("k.key");
    let public = dir.path().join("k.pub");
    let generated = keygen(&secret, &public, Passphrase::Given("correct horse".into())).unwrap();
    assert!(generated.encrypted);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Never overwritten.
    assert!(keygen(&secret, &public, Passphrase::Unencrypted).is_err());
    // Wrong or missing passphrase: refused.
    assert!(load_secret_key(&secret, Passphrase::Given("wrong".into())).is_err());
    assert!(load_secret_key(&secret, Passphrase::Unencrypted).is_err());
    let key = load_secret_key(&secret, Passphrase::Given("correct horse".into())).unwrap();
    assert_eq!(signing::secret_key_id(&key), generated.key_id);
    // The public key file is what `minisign -G` writes: the CLI verifies with it.
    let data = dir.path().join("data.bin");
    std::fs::write(&data, b"hello").unwrap();
    let signature = signing::sign_data(&key, &b"hello"[..], "sealkit test", "test").unwrap();
    let sig_path = dir.path().join("data.bin.minisig");
    std::fs::write(&sig_path, signature).unwrap();
    let out = minisign(&["-V", "-p", s(&public), "-m", s(&data)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&public).unwrap();
    assert_eq!(
        public_key_id(&parse_public_key(&text).unwrap()),
        generated.key_id
    );
    assert!(text.starts_with("untrusted comment: minisign public key"));
}

// ---------------------------------------------------------------------------------------
// Refusals, each leaving the root byte-identical
// ---------------------------------------------------------------------------------------

#[test]
fn refuses_a_bundle_signed_by_an_untrusted_key() {
    let host = active_v1();
    let other = test_key(&host.work, "other");
    let source = host.source("v2");
    let bundle = host.bundle_as(&source, SITE, 2, NOW - 600, 30, &other);
    let message = assert_refused(&host, &bundle, Refusal::UntrustedKey);
    assert!(message.contains(&other.id), "{message}");
}

#[test]
fn refuses_one_flipped_byte_in_the_bundle() {
    let host = active_v1();
    let bundle = host.bundle(2);
    let mut bytes = std::fs::read(&bundle).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&bundle, bytes).unwrap();
    assert_refused(&host, &bundle, Refusal::BadSignature);
}

#[test]
fn refuses_one_flipped_byte_in_the_signature() {
    let host = active_v1();
    let bundle = host.bundle(2);
    let sig_path = pack::default_signature_path(&bundle);
    let original = std::fs::read_to_string(&sig_path).unwrap();
    // In the signature line (after the algorithm and key id), and in the trusted comment.
    for (line_index, column) in [(1usize, 60usize), (2, 40)] {
        let mut lines: Vec<String> = original.lines().map(str::to_string).collect();
        let mut chars: Vec<char> = lines[line_index].chars().collect();
        chars[column] = if chars[column] == 'A' { 'B' } else { 'A' };
        lines[line_index] = chars.into_iter().collect();
        std::fs::write(&sig_path, lines.join("\n") + "\n").unwrap();
        assert_refused(&host, &bundle, Refusal::BadSignature);
    }
    std::fs::remove_file(&sig_path).unwrap();
    assert_refused(&host, &bundle, Refusal::BadSignature);
}

#[test]
fn refuses_an_expired_bundle() {
    let host = active_v1();
    let bundle = host.bundle(2);
    let mut options = host.options();
    options.now = NOW + 31 * DAY;
    let message = assert_refused_with(&host, &bundle, &options, Refusal::Expired);
    assert!(message.contains("expired"), "{message}");
}

#[test]
fn refuses_a_bundle_for_another_site() {
    let host = active_v1();
    let source = host.source("v2");
    let bundle = host.bundle_as(&source, "other-site", 2, NOW - 600, 30, &host.key);
    assert_refused(&host, &bundle, Refusal::WrongSite);
}

#[test]
fn refuses_a_parent_dir_entry() {
    let host = active_v1();
    let mut crafted = crafted_v2(&host);
    crafted.entries.push(RawEntry::file("../x", b"escaped"));
    crafted
        .entries
        .push(RawEntry::file("notes/../../y", b"escaped"));
    let bundle = crafted.signed(&host);
    let message = assert_refused(&host, &bundle, Refusal::UnsafeEntry);
    assert!(message.contains("`..`"), "{message}");
    assert!(!host.tmp.path().join("x").exists());
    assert!(!host.root.path().join("x").exists());
    assert!(!host.root.staging_dir().join("x").exists());
}

#[test]
fn refuses_an_absolute_path() {
    let host = active_v1();
    let target = host.tmp.path().join("absolute-evil");
    let mut crafted = crafted_v2(&host);
    crafted
        .entries
        .push(RawEntry::file(target.to_str().unwrap(), b"escaped"));
    let bundle = crafted.signed(&host);
    let message = assert_refused(&host, &bundle, Refusal::UnsafeEntry);
    assert!(message.contains("absolute"), "{message}");
    assert!(!target.exists());
}

#[test]
fn refuses_a_symlink() {
    let host = active_v1();
    let mut crafted = crafted_v2(&host);
    crafted.entries.push(RawEntry::special(
        "notes/passwd",
        tar::EntryType::Symlink,
        "/etc/passwd",
    ));
    let bundle = crafted.signed(&host);
    let message = assert_refused(&host, &bundle, Refusal::UnsafeEntry);
    assert!(message.contains("symbolic link"), "{message}");
}

#[test]
fn refuses_a_hardlink() {
    let host = active_v1();
    let mut crafted = crafted_v2(&host);
    crafted.entries.push(RawEntry::special(
        "notes/hard",
        tar::EntryType::Link,
        "authority.yaml",
    ));
    let bundle = crafted.signed(&host);
    let message = assert_refused(&host, &bundle, Refusal::UnsafeEntry);
    assert!(message.contains("hard link"), "{message}");
}

#[test]
fn refuses_device_files_and_fifos() {
    let host = active_v1();
    for kind in [
        tar::EntryType::Char,
        tar::EntryType::Block,
        tar::EntryType::Fifo,
    ] {
        let mut crafted = crafted_v2(&host);
        crafted.entries.push(RawEntry::special("dev", kind, ""));
        let bundle = crafted.signed(&host);
        assert_refused(&host, &bundle, Refusal::UnsafeEntry);
    }
}

#[test]
fn refuses_a_file_missing_from_the_manifest_and_one_missing_from_the_archive() {
    let host = active_v1();
    let mut crafted = crafted_v2(&host);
    crafted
        .entries
        .push(RawEntry::file("notes/extra.txt", b"smuggled"));
    let bundle = crafted.signed(&host);
    let message = assert_refused(&host, &bundle, Refusal::ContentMismatch);
    assert!(message.contains("not in the manifest"), "{message}");

    let mut crafted = crafted_v2(&host);
    crafted.entries.retain(|e| e.name != b"notes/README.txt");
    let bundle = crafted.signed(&host);
    let message = assert_refused(&host, &bundle, Refusal::ContentMismatch);
    assert!(message.contains("not in the archive"), "{message}");
}

#[test]
fn refuses_content_that_differs_from_the_manifest() {
    let host = active_v1();
    // Same size, different bytes.
    let mut crafted = crafted_v2(&host);
    crafted.entries[1].data = b"CRAFTED\n".to_vec();
    let bundle = crafted.signed(&host);
    let message = assert_refused(&host, &bundle, Refusal::ContentMismatch);
    assert!(message.contains("sha256"), "{message}");
    // Another mode than the manifest's.
    let mut crafted = crafted_v2(&host);
    crafted.entries[1].mode = 0o755;
    assert_refused(&host, &crafted.signed(&host), Refusal::ContentMismatch);
    // setuid.
    let mut crafted = crafted_v2(&host);
    crafted.entries[1].mode = 0o4755;
    assert_refused(&host, &crafted.signed(&host), Refusal::UnsafeEntry);
    // Duplicate entry.
    let mut crafted = crafted_v2(&host);
    crafted
        .entries
        .push(RawEntry::file("notes/README.txt", b"crafted\n"));
    assert_refused(&host, &crafted.signed(&host), Refusal::UnsafeEntry);
}

#[test]
fn refuses_a_manifest_that_the_signed_comment_does_not_name() {
    let host = active_v1();
    let crafted = crafted_v2(&host);
    let mut comment = crafted.comment();
    comment.manifest_sha256 = sha256_hex(b"another manifest");
    let bundle = host.signed_bytes(&crafted.compressed(), &comment.render(), &host.key);
    let message = assert_refused(&host, &bundle, Refusal::ManifestMismatch);
    assert!(message.contains("sha256"), "{message}");

    // Right digest, but the comment claims another version than the manifest.
    let mut crafted = crafted_v2(&host);
    crafted.manifest.version = 3;
    let mut comment = crafted.comment();
    comment.version = 2;
    let bundle = host.signed_bytes(&crafted.compressed(), &comment.render(), &host.key);
    assert_refused(&host, &bundle, Refusal::ManifestMismatch);
}

#[test]
fn refuses_a_signature_whose_comment_is_not_a_sealkit_comment() {
    let host = active_v1();
    let crafted = crafted_v2(&host);
    let bundle = host.signed_bytes(&crafted.compressed(), "timestamp:1793880000", &host.key);
    assert_refused(&host, &bundle, Refusal::BadComment);
}

#[test]
fn refuses_a_zstd_bomb() {
    let host = active_v1();
    // 24 MiB of zeros, correctly listed in the manifest: a few KiB compressed. The
    // default ratio cap (200:1 past 16 MiB) stops it.
    let big = vec![0u8; 24 * 1024 * 1024];
    let mut files = config_files(&host, &host.config("v2"));
    files.push(("big.bin", big));
    let crafted = Crafted::new(2, &files);
    let compressed = crafted.compressed();
    assert!(compressed.len() < 64 * 1024, "{}", compressed.len());
    let bundle = host.signed_bytes(&compressed, &crafted.comment().render(), &host.key);
    let message = assert_refused(&host, &bundle, Refusal::DecompressionLimit);
    assert!(message.contains("bomb"), "{message}");

    // The absolute output cap.
    let mut options = host.options();
    options.limits.max_output_bytes = 1024 * 1024;
    options.limits.ratio_floor_bytes = u64::MAX;
    assert_refused_with(&host, &bundle, &options, Refusal::DecompressionLimit);

    // The entry-count cap.
    let mut options = host.options();
    options.limits.max_entries = 2;
    assert_refused_with(
        &host,
        &crafted_v2(&host).signed(&host),
        &options,
        Refusal::DecompressionLimit,
    );
}

#[test]
fn refuses_a_zstd_window_larger_than_the_cap() {
    let host = active_v1();
    let crafted = crafted_v2(&host);
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    encoder.window_log(27).unwrap();
    std::io::Write::write_all(&mut encoder, &crafted.tar()).unwrap();
    let compressed = encoder.finish().unwrap();
    let bundle = host.signed_bytes(&compressed, &crafted.comment().render(), &host.key);
    let message = assert_refused(&host, &bundle, Refusal::DecompressionLimit);
    assert!(message.contains("window"), "{message}");
}

#[test]
fn refuses_a_truncated_archive_and_trailing_data() {
    let host = active_v1();
    let crafted = crafted_v2(&host);
    let compressed = crafted.compressed();
    let truncated = &compressed[..compressed.len() * 2 / 3];
    let bundle = host.signed_bytes(truncated, &crafted.comment().render(), &host.key);
    assert_refused(&host, &bundle, Refusal::CorruptArchive);

    // A truncated tar inside a complete zstd stream.
    let tar = crafted.tar();
    let compressed = zstd::encode_all(&tar[..tar.len() - 1024 - 600], 3).unwrap();
    let bundle = host.signed_bytes(&compressed, &crafted.comment().render(), &host.key);
    assert_refused(&host, &bundle, Refusal::CorruptArchive);

    // Garbage after the zstd frame, and data after the tar end marker.
    let mut compressed = crafted.compressed();
    compressed.extend_from_slice(b"garbage");
    let bundle = host.signed_bytes(&compressed, &crafted.comment().render(), &host.key);
    assert_refused(&host, &bundle, Refusal::CorruptArchive);
    let mut tar = crafted.tar();
    tar.extend_from_slice(b"hidden payload");
    let compressed = zstd::encode_all(&tar[..], 3).unwrap();
    let bundle = host.signed_bytes(&compressed, &crafted.comment().render(), &host.key);
    assert_refused(&host, &bundle, Refusal::CorruptArchive);
}

#[test]
fn refuses_an_invalid_configuration_inside_a_correctly_signed_bundle() {
    let host = active_v1();
    let source = host.source("v2");
    let broken = host.config("v2").replace("https://", "http://");
    std::fs::write(source.join("authority.yaml"), broken).unwrap();
    let bundle = host.bundle_from(&source, 2, NOW - 600, 30);
    let message = assert_refused(&host, &bundle, Refusal::InvalidConfig);
    assert!(message.contains("issuer"), "{message}");
    assert_eq!(Refusal::InvalidConfig.exit_code(), 3);

    // Host files that do not exist on this host.
    let missing = host
        .config("v2")
        .replace("tls/server.crt", "tls/missing.crt");
    std::fs::write(source.join("authority.yaml"), missing).unwrap();
    let bundle = host.bundle_from(&source, 2, NOW - 600, 30);
    let message = assert_refused(&host, &bundle, Refusal::InvalidConfig);
    assert!(message.contains("tls.certificate"), "{message}");

    // A data directory inside the (read-only) bundle, a private key travelling in it.
    let inside = host.config("v2").replace(
        &format!("dataDir: {}/data", host.host.display()),
        "dataDir: data",
    );
    std::fs::write(source.join("authority.yaml"), inside).unwrap();
    let bundle = host.bundle_from(&source, 2, NOW - 600, 30);
    let message = assert_refused(&host, &bundle, Refusal::InvalidConfig);
    assert!(message.contains("dataDir"), "{message}");
    let key_inside = host.config("v2").replace(
        &format!("privateKey: {}/tls/server.key", host.host.display()),
        "privateKey: server.key",
    );
    std::fs::write(source.join("authority.yaml"), key_inside).unwrap();
    std::fs::write(source.join("server.key"), "key").unwrap();
    let bundle = host.bundle_from(&source, 2, NOW - 600, 30);
    let message = assert_refused(&host, &bundle, Refusal::InvalidConfig);
    assert!(message.contains("tls.privateKey"), "{message}");
}

#[test]
fn refuses_an_older_version_a_same_version_and_an_older_creation_time() {
    let host = active_v1();
    // Same version, other content.
    let source = host.source("v1-other");
    let bundle = host.bundle_from(&source, 1, NOW - 600, 30);
    assert_refused(&host, &bundle, Refusal::NotNewer);
    // Newer version created before the active one.
    let source = host.source("v2");
    let bundle = host.bundle_from(&source, 2, NOW - 10 * DAY, 30);
    assert_refused(&host, &bundle, Refusal::OlderThanActive);
}

/// A damaged `created` in state.json must not let an older bundle through: it used to
/// read as 0 ("created in 1970"), so any bundle counted as newer than the active one.
#[test]
fn a_damaged_active_record_refuses_the_import_instead_of_passing_the_created_check() {
    let host = active_v1();
    let mut state = host.root.read_state().unwrap().unwrap();
    let mut active = state.active.clone().unwrap();
    active.created = "not a time".into();
    assert_eq!(active.created_unix(), i64::MAX, "fails closed");
    active.expires = "soon".into();
    assert_eq!(active.expires_unix(), i64::MIN, "fails closed");
    state.active = Some(active);
    host.root.write_state(&state).unwrap();
    let before = tree_hash(host.root.path());
    // Created well before v1: refused today only because the record is unreadable.
    let bundle = host.bundle_from(&host.source("v2"), 2, NOW - 10 * DAY, 30);
    let error = import_err(&host, &bundle, &host.options());
    assert!(matches!(error, BundleError::State(_)), "{error}");
    assert_eq!(error.exit_code(), error::EXIT_FAILURE);
    assert!(
        error.to_string().contains("state.json is damaged"),
        "{error}"
    );
    assert_eq!(tree_hash(host.root.path()), before);
}

#[test]
fn refuses_a_bundle_over_the_size_cap() {
    let host = active_v1();
    let bundle = host.bundle(2);
    let mut options = host.options();
    options.limits.max_bundle_bytes = 100;
    assert_refused_with(&host, &bundle, &options, Refusal::TooLarge);
}

#[test]
fn refuses_an_unusable_trusted_key_set() {
    let host = active_v1();
    let mut files = config_files(&host, &host.config("v2"));
    files.push(("trust/keys/bad.pub", b"not a key\n".to_vec()));
    let crafted = Crafted::new(2, &files);
    assert_refused(&host, &crafted.signed(&host), Refusal::KeyRotation);
}

#[test]
fn every_refusal_kind_has_its_own_exit_code() {
    let mut codes: Vec<u8> = Refusal::ALL.iter().map(|r| r.exit_code()).collect();
    codes.extend([
        0,
        1,
        2,
        error::EXIT_FAILURE,
        error::EXIT_NOTHING_TO_DO,
        error::EXIT_RELOAD_FAILED,
    ]);
    let count = codes.len();
    codes.sort();
    codes.dedup();
    assert_eq!(codes.len(), count);
}

// ---------------------------------------------------------------------------------------
// Host state: first import, lock, crash safety, rollback, pruning, rotation
// ---------------------------------------------------------------------------------------

#[test]
fn the_first_import_needs_the_site_and_later_ones_remember_it() {
    let host = Host::new();
    let v1 = host.bundle(1);
    let mut options = host.options();
    options.site = None;
    let error = import_err(&host, &v1, &options);
    assert!(matches!(error, BundleError::Usage(_)), "{error}");
    import(&host.root, &v1, &host.options(), &NoProgress).unwrap();
    let v2 = host.bundle(2);
    import(&host.root, &v2, &options, &NoProgress).unwrap();
    options.site = Some("other-site".into());
    let v3 = host.bundle(3);
    assert!(matches!(
        import_err(&host, &v3, &options),
        BundleError::Usage(_)
    ));
}

#[test]
fn a_live_lock_refuses_and_a_stale_one_is_taken_over() {
    let host = active_v1();
    let lock = host.root.path().join("lock");
    std::fs::write(&lock, format!("{}\n", std::process::id())).unwrap();
    let v2 = host.bundle(2);
    let error = import_err(&host, &v2, &host.options());
    assert!(matches!(error, BundleError::Busy { .. }), "{error}");
    std::fs::write(&lock, "4000000000\n").unwrap();
    import(&host.root, &v2, &host.options(), &NoProgress).unwrap();
    assert!(!lock.exists());
}

#[test]
fn an_interrupted_import_is_cleaned_at_the_next_start_and_the_active_generation_is_intact() {
    let host = active_v1();
    let clean = tree_hash(host.root.path());

    // What a `kill -9` in the middle of an extraction leaves behind.
    let leftover = host.root.staging_dir().join("import-4000000000-deadbeef");
    std::fs::create_dir_all(leftover.join("tree/notes")).unwrap();
    std::fs::write(leftover.join("bundle.tar.zst"), b"partial").unwrap();
    std::fs::write(leftover.join("tree/authority.yaml"), b"half a fi").unwrap();
    std::os::unix::fs::symlink("generations/nowhere", host.root.path().join("current.tmp"))
        .unwrap();
    std::fs::write(host.root.path().join(".state.json.tmp-4000000000"), b"{").unwrap();
    std::fs::write(host.root.path().join("lock"), b"4000000000\n").unwrap();
    assert_ne!(tree_hash(host.root.path()), clean);
    // The active generation is untouched throughout.
    assert!(std::fs::read_to_string(host.root.config_path())
        .unwrap()
        .contains("/v1\n"));

    // The next start (the server's, or any bundle command) cleans it.
    let recovery = recover(&host.root).unwrap();
    assert_eq!(recovery.cleaned.len(), 3, "{recovery:?}");
    assert_eq!(tree_hash(host.root.path()), clean);

    // The same leftovers are cleaned by the next import, which then succeeds.
    std::fs::create_dir_all(leftover.join("tree")).unwrap();
    let v2 = host.bundle(2);
    let outcome = import(&host.root, &v2, &host.options(), &NoProgress).unwrap();
    assert_eq!(outcome.recovery.cleaned.len(), 1);
    assert_eq!(
        std::fs::read_dir(host.root.staging_dir()).unwrap().count(),
        0
    );
}

#[test]
fn an_import_interrupted_before_the_switch_is_dropped() {
    let host = active_v1();
    let clean = tree_hash(host.root.path());
    let mut state = host.root.read_state().unwrap().unwrap();
    let mut record = state.active.clone().unwrap();
    record.generation = "2-0123456789ab".into();
    record.version = 2;
    state.pending = Some(Pending {
        op: PendingOp::Import,
        record,
        reason: None,
    });
    host.root.write_state(&state).unwrap();
    let placed = host.root.generation_dir("2-0123456789ab");
    std::fs::create_dir_all(&placed).unwrap();
    std::fs::write(placed.join("authority.yaml"), "x").unwrap();

    let recovery = recover(&host.root).unwrap();
    assert_eq!(recovery.abandoned.as_deref(), Some("2-0123456789ab"));
    assert_eq!(tree_hash(host.root.path()), clean);
}

#[test]
fn an_import_interrupted_after_the_switch_is_completed() {
    let host = active_v1();
    let before = host.root.read_state().unwrap().unwrap();
    let v2 = host.bundle(2);
    import(&host.root, &v2, &host.options(), &NoProgress).unwrap();
    let after = host.root.read_state().unwrap().unwrap();
    // Rewind state.json to the moment after the switch, before completion.
    let mut interrupted = before.clone();
    interrupted.pending = Some(Pending {
        op: PendingOp::Import,
        record: after.active.clone().unwrap(),
        reason: None,
    });
    host.root.write_state(&interrupted).unwrap();
    let st = status(&host.root).unwrap();
    assert!(!st.consistent());

    let recovery = recover(&host.root).unwrap();
    assert_eq!(
        recovery.completed.as_deref(),
        Some(after.active.as_ref().unwrap().generation.as_str())
    );
    assert_eq!(host.root.read_state().unwrap().unwrap(), after);
    assert!(status(&host.root).unwrap().consistent());
}

#[test]
fn rollback_reactivates_the_previous_generation_and_is_not_a_way_around_versions() {
    let host = active_v1();
    let options = RollbackOptions {
        reason: "v2 broke the payroll client".into(),
        operator: Some("alice".into()),
        now: NOW + 60,
    };
    // Nothing to roll back to yet: its own exit code, not a usage error.
    let nothing = rollback(&host.root, &options).unwrap_err();
    assert!(matches!(nothing, BundleError::NothingToDo(_)), "{nothing}");
    assert_eq!(nothing.exit_code(), error::EXIT_NOTHING_TO_DO);
    let v2 = host.bundle(2);
    import(&host.root, &v2, &host.options(), &NoProgress).unwrap();
    let empty_reason = RollbackOptions {
        reason: " ".into(),
        ..options.clone()
    };
    assert!(rollback(&host.root, &empty_reason).is_err());

    let outcome = rollback(&host.root, &options).unwrap();
    assert_eq!(outcome.from.version, 2);
    assert_eq!(outcome.to.version, 1);
    assert!(std::fs::read_to_string(host.root.config_path())
        .unwrap()
        .contains("/v1\n"));
    let state = host.root.read_state().unwrap().unwrap();
    assert_eq!(state.active.as_ref().unwrap().version, 1);
    assert!(state.previous.is_empty());
    assert_eq!(state.rolled_back[0].version, 2);
    assert_eq!(
        state.rolled_back[0].rolled_back_because.as_deref(),
        Some("v2 broke the payroll client")
    );
    assert!(status(&host.root).unwrap().consistent());

    // Rolling back is not a way around versions: another v1 is still refused, the very
    // same v1 is a no-op, and a new v3 goes on top.
    let other_v1 = host.source("v1-other");
    let other_v1 = host.bundle_from(&other_v1, 1, NOW - 600, 30);
    assert_eq!(
        import_err(&host, &other_v1, &host.options()).refusal(),
        Some(Refusal::NotNewer)
    );
    let v3 = host.bundle(3);
    let outcome = import(&host.root, &v3, &host.options(), &NoProgress).unwrap();
    assert_eq!(outcome.replaced.unwrap().version, 1);
    let state = host.root.read_state().unwrap().unwrap();
    assert!(state.rolled_back.is_empty());
    assert_eq!(outcome.pruned.len(), 1, "the rolled-back v2 is removed");
}

#[test]
fn rollback_refuses_a_generation_modified_on_disk() {
    let host = active_v1();
    let v2 = host.bundle(2);
    import(&host.root, &v2, &host.options(), &NoProgress).unwrap();
    let state = host.root.read_state().unwrap().unwrap();
    let previous = host.root.generation_dir(&state.previous[0].generation);
    use std::os::unix::fs::PermissionsExt;
    let file = previous.join("notes/README.txt");
    std::fs::set_permissions(
        previous.join("notes"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&file, "tampered\n").unwrap();
    let options = RollbackOptions {
        reason: "test".into(),
        operator: None,
        now: NOW,
    };
    let error = rollback(&host.root, &options).unwrap_err();
    assert!(matches!(error, BundleError::State(_)), "{error}");
    assert!(std::fs::read_to_string(host.root.config_path())
        .unwrap()
        .contains("/v2\n"));
}

#[test]
fn pruning_keeps_the_requested_number_of_previous_generations() {
    let host = active_v1();
    let mut options = host.options();
    options.keep = 1;
    for version in 2..=4 {
        let bundle = host.bundle(version);
        import(&host.root, &bundle, &options, &NoProgress).unwrap();
    }
    let state = host.root.read_state().unwrap().unwrap();
    assert_eq!(state.active.as_ref().unwrap().version, 4);
    assert_eq!(state.previous.len(), 1);
    assert_eq!(state.previous[0].version, 3);
    let on_disk = std::fs::read_dir(host.root.generations_dir())
        .unwrap()
        .count();
    assert_eq!(on_disk, 2);
}

#[test]
fn a_bundle_signed_by_the_current_key_rotates_the_trusted_key_set() {
    let host = active_v1();
    let successor = test_key(&host.work, "successor");
    // v2 carries the new key set {successor}, signed by the current key.
    let source = host.source("v2");
    std::fs::create_dir_all(source.join("trust/keys")).unwrap();
    std::fs::copy(&successor.public, source.join("trust/keys/successor.pub")).unwrap();
    let v2 = host.bundle_from(&source, 2, NOW - 3000, 30);
    // A key set signed by a key that is not trusted is refused like any bundle.
    let rogue = test_key(&host.work, "rogue");
    let forged = host.bundle_as(&source, SITE, 2, NOW - 3000, 30, &rogue);
    assert_refused(&host, &forged, Refusal::UntrustedKey);

    let outcome = import(&host.root, &v2, &host.options(), &NoProgress).unwrap();
    let rotation = outcome.rotation.unwrap();
    assert_eq!(rotation.added, vec![successor.id.clone()]);
    assert_eq!(rotation.retired, vec![host.key.id.clone()]);
    assert_eq!(
        host.root.trusted_keys().unwrap().ids(),
        vec![successor.id.clone()]
    );

    // The retired key can no longer sign; the successor can.
    let source = host.source("v3");
    let by_old = host.bundle_as(&source, SITE, 3, NOW - 2000, 30, &host.key);
    assert_eq!(
        import_err(&host, &by_old, &host.options()).refusal(),
        Some(Refusal::UntrustedKey)
    );
    let by_new = host.bundle_as(&source, SITE, 3, NOW - 2000, 30, &successor);
    import(&host.root, &by_new, &host.options(), &NoProgress).unwrap();
    // A rollback does not bring the retired key back.
    rollback(
        &host.root,
        &RollbackOptions {
            reason: "test".into(),
            operator: None,
            now: NOW,
        },
    )
    .unwrap();
    assert_eq!(host.root.trusted_keys().unwrap().ids(), vec![successor.id]);
}

// ---------------------------------------------------------------------------------------
// verify, pack, formats
// ---------------------------------------------------------------------------------------

#[test]
fn verify_changes_nothing_and_checks_the_contents() {
    let host = Host::new();
    let v1 = host.bundle(1);
    let keys = host.root.trusted_keys().unwrap();
    let before_root = tree_hash(host.root.path());
    let before_work = tree_hash(&host.work);
    let verified = verify(&v1, &keys, &VerifyOptions::new(NOW), &NoProgress).unwrap();
    assert_eq!(verified.manifest.site, SITE);
    assert_eq!(tree_hash(host.root.path()), before_root);
    assert_eq!(tree_hash(&host.work), before_work);

    let mut options = VerifyOptions::new(NOW);
    options.site = Some("elsewhere".into());
    let error = verify(&v1, &keys, &options, &NoProgress).unwrap_err();
    assert_eq!(error.refusal(), Some(Refusal::WrongSite));
    let mut crafted = crafted_v2(&host);
    crafted.entries.push(RawEntry::file("../x", b"x"));
    let error = verify(
        &crafted.signed(&host),
        &keys,
        &VerifyOptions::new(NOW),
        &NoProgress,
    )
    .unwrap_err();
    assert_eq!(error.refusal(), Some(Refusal::UnsafeEntry));
    let error = verify(
        &v1,
        &TrustedKeys::default(),
        &VerifyOptions::new(NOW),
        &NoProgress,
    )
    .unwrap_err();
    assert_eq!(error.refusal(), Some(Refusal::UntrustedKey));
}

#[test]
fn pack_refuses_links_reserved_names_and_a_missing_config() {
    let host = Host::new();
    let out = host.work.join("out.tar.zst");
    let options = PackOptions::new(SITE, 1, NOW, NOW + DAY);

    let source = host.source("links");
    std::os::unix::fs::symlink("/etc/passwd", source.join("notes/passwd")).unwrap();
    let error = pack(&source, &out, &options, &NoProgress).unwrap_err();
    assert!(error.to_string().contains("links"), "{error}");

    let source = host.source("reserved");
    std::fs::write(source.join("manifest.json"), "{}").unwrap();
    assert!(pack(&source, &out, &options, &NoProgress).is_err());

    let source = host.source("noconfig");
    std::fs::remove_file(source.join("authority.yaml")).unwrap();
    assert!(pack(&source, &out, &options, &NoProgress).is_err());

    let source = host.source("unknown-key");
    std::fs::write(source.join("authority.yaml"), "issuer: x\nbogus: 1\n").unwrap();
    assert!(pack(&source, &out, &options, &NoProgress).is_err());
    assert!(!out.exists());

    // The manifest of a good pack lists every file with size, digest and mode.
    let source = host.source("good");
    let summary = pack(&source, &out, &options, &NoProgress).unwrap();
    let paths: Vec<&str> = summary
        .manifest
        .files
        .iter()
        .map(|f| f.path.as_str())
        .collect();
    assert_eq!(paths, ["authority.yaml", "notes/README.txt"]);
    assert_eq!(summary.manifest.files[1].size, "bundle good\n".len() as u64);
    assert_eq!(summary.manifest.files[1].mode, "0644");
    assert_eq!(summary.manifest.totals.files, 2);
}

#[test]
fn trusted_comments_round_trip_and_only_the_canonical_form_parses() {
    let comment = TrustedComment {
        site: "site-a".into(),
        version: 7,
        created: NOW,
        expires: NOW + 30 * DAY,
        manifest_sha256: sha256_hex(b"m"),
    };
    let text = comment.render();
    assert_eq!(TrustedComment::parse(&text).unwrap(), comment);
    assert!(text
        .starts_with("sealkit-bundle format=1 site=site-a version=7 created=2026-11-05T12:00:00Z"));
    for bad in [
        text.replace("version=7", "version=07"),
        text.replace("12:00:00Z", "12:00:00+00:00"),
        format!("{text} extra=1"),
        text.replace("site=site-a", "site=../a"),
        text.replace("format=1", "format=2"),
        "timestamp:1793880000\tfile:x".to_string(),
    ] {
        assert!(TrustedComment::parse(&bad).is_err(), "{bad}");
    }
}

#[test]
fn bundle_paths_are_strict() {
    for good in ["authority.yaml", "trust/keys/a.pub", "a/b/c-d_e.f+g@h=i,j"] {
        check_path(good).unwrap();
    }
    for bad in [
        "",
        "/etc/passwd",
        "../x",
        "a/../b",
        "a//b",
        "./a",
        "a/",
        "a\\b",
        "a b",
        "ä",
        "a/\u{0}b",
    ] {
        assert!(check_path(bad).is_err(), "{bad:?}");
    }
    assert!(check_path(&"a".repeat(300)).is_err());
}

#[test]
fn manifests_are_checked_for_consistency() {
    let host = Host::new();
    let crafted = crafted_v2(&host);
    let good = crafted.manifest.clone();
    good.validate().unwrap();
    let mut m = good.clone();
    m.totals.bytes += 1;
    assert!(m.validate().is_err());
    let mut m = good.clone();
    m.files.reverse();
    assert!(m.validate().is_err());
    let mut m = good.clone();
    m.files.retain(|f| f.path != "authority.yaml");
    m.totals.files -= 1;
    m.totals.bytes = m.files.iter().map(|f| f.size).sum();
    assert!(m.validate().is_err());
    let mut m = good.clone();
    m.files[0].mode = "04755".into();
    assert!(m.validate().is_err());
    let mut m = good;
    m.expires = m.created.clone();
    assert!(m.validate().is_err());
    assert!(Manifest::parse(b"{\"formatVersion\":1,\"unknown\":true}").is_err());
}

#[test]
fn the_example_site_packs_and_validates_with_host_paths() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("bundles/example-site");
    let host = Host::new();
    // Its TLS files live on the host (/etc/sealkit/tls); map them into the temp host.
    let text = std::fs::read_to_string(example.join("authority.yaml")).unwrap();
    let mapped = text
        .replace(
            "/etc/sealkit/tls/",
            &format!("{}/tls/", host.host.display()),
        )
        .replace(
            "/etc/sealkit/site-ca.crt",
            &format!("{}/tls/site-ca.crt", host.host.display()),
        )
        .replace(
            "/var/lib/sealkit/data",
            &format!("{}/data", host.host.display()),
        );
    std::fs::write(host.host.join("tls/site-ca.crt"), &test_pki().ca_bundle).unwrap();
    let settings =
        crate::config::Settings::from_yaml(&mapped, &example, crate::clock::unix_now()).unwrap();
    assert!(!settings.clients.is_empty());
    assert!(!settings.tenants.is_empty());

    // And it packs as it is (pack checks syntax; the host validates the rest on import).
    let out = host.work.join("example.tar.zst");
    let options = PackOptions::new("example-site", 1, NOW, NOW + 30 * DAY);
    let summary = pack(&example, &out, &options, &NoProgress).unwrap();
    assert!(summary.manifest.find("authority.yaml").is_some());
}

#[test]
fn reasons_are_one_line_with_control_characters_escaped() {
    assert_eq!(
        error::one_line("2 problem(s) in x.yaml:\n  a: bad\n  b: worse\n"),
        "2 problem(s) in x.yaml: a: bad; b: worse"
    );
    assert_eq!(error::one_line("name\u{1b}[31m\tx"), "name\\u{1b}[31m\\tx");
}

#[test]
fn a_rotation_that_keeps_the_old_key_retires_nothing_and_normalises_file_names() {
    let host = active_v1();
    // The kit installer pinned the key under its own name.
    let keys_dir = host.root.trusted_keys_dir();
    std::fs::rename(
        keys_dir.join(format!("{}.pub", host.key.id)),
        keys_dir.join("installer.pub"),
    )
    .unwrap();
    let successor = test_key(&host.work, "successor");
    let source = host.source("v2");
    std::fs::create_dir_all(source.join("trust/keys")).unwrap();
    std::fs::copy(&successor.public, source.join("trust/keys/new.pub")).unwrap();
    std::fs::copy(&host.key.public, source.join("trust/keys/old.pub")).unwrap();
    let v2 = host.bundle_from(&source, 2, NOW - 3000, 30);
    let rotation = import(&host.root, &v2, &host.options(), &NoProgress)
        .unwrap()
        .rotation
        .unwrap();
    assert_eq!(rotation.added, vec![successor.id.clone()]);
    assert!(rotation.retired.is_empty());
    let mut expected = vec![
        format!("{}.pub", host.key.id),
        format!("{}.pub", successor.id),
    ];
    expected.sort();
    let mut files: Vec<String> = std::fs::read_dir(&keys_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, expected);
}

/// The guard's configuration travels in the bundle and is judged at import like the
/// authority's: a valid guard.yaml activates, a broken one (or one keeping its data
/// directory inside the bundle) is refused with exit 3 and the root unchanged.
#[test]
fn a_guard_configuration_in_the_bundle_is_validated_at_import() {
    let host = active_v1();
    let guard = |data_dir: &str, upstream: &str| {
        format!(
            "listen: 127.0.0.1:9443\nexternalUrl: https://api.test-site.example\n\
             tls:\n  certificate: {h}/tls/server.crt\n  privateKey: {h}/tls/server.key\n\
             dataDir: {data_dir}\nissuer: https://auth.test-site.example/v2\n\
             keys:\n  jwksFile: jwks.json\nupstream: {upstream}\n\
             routes:\n  - prefix: /api/\n    audience: https://api.example\n    accept: [dpop]\n",
            h = host.host.display()
        )
    };
    let source = host.source("v2");
    std::fs::write(source.join("jwks.json"), r#"{"keys":[]}"#).unwrap();
    let data = format!("{}/guard-data", host.host.display());

    std::fs::write(
        source.join("guard.yaml"),
        guard(&data, "http://10.0.0.9:80"),
    )
    .unwrap();
    let bundle = host.bundle_from(&source, 2, NOW - 600, 30);
    let message = assert_refused(&host, &bundle, Refusal::InvalidConfig);
    assert!(message.contains("upstream"), "{message}");

    std::fs::write(
        source.join("guard.yaml"),
        guard("guard-data", "unix:/run/app.sock"),
    )
    .unwrap();
    let bundle = host.bundle_from(&source, 2, NOW - 600, 30);
    let message = assert_refused(&host, &bundle, Refusal::InvalidConfig);
    assert!(message.contains("dataDir"), "{message}");

    std::fs::write(
        source.join("guard.yaml"),
        guard(&data, "unix:/run/app.sock"),
    )
    .unwrap();
    let bundle = host.bundle_from(&source, 2, NOW - 600, 30);
    import(&host.root, &bundle, &host.options(), &NoProgress).unwrap();
    let active = host.root.read_state().unwrap().unwrap().active.unwrap();
    assert_eq!(active.version, 2);
}
