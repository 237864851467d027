//! Signed configuration bundles against a running authority (the real binary): import,
//! reload without restart, rollback refused, a bad bundle changes nothing.

use sealkit::client::https::{basic_auth, TlsTarget};
use std::path::Path;
use std::process::{Child, Command, Output};

use crate::harness::BIN;

pub(crate) fn sealkit(args: &[&str], cwd: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

pub(crate) fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A bundle source directory: the demo's authority.yaml with host paths made absolute.
pub(crate) fn write_source(
    site: &sealkit::demo::DemoSite,
    dir: &Path,
    extra_client: Option<(&str, &str)>,
) {
    std::fs::create_dir_all(dir).unwrap();
    let d = site.dir.display().to_string();
    let mut yaml = std::fs::read_to_string(&site.config)
        .unwrap()
        .replace("certificate: tls/", &format!("certificate: {d}/tls/"))
        .replace("privateKey: tls/", &format!("privateKey: {d}/tls/"))
        .replace("clientCa: ca/", &format!("clientCa: {d}/ca/"))
        .replace("dataDir: data", &format!("dataDir: {d}/data"))
        .replace("directory: logs", &format!("directory: {d}/logs"));
    // The users file travels in the bundle beside authority.yaml.
    std::fs::copy(site.dir.join("users.yaml"), dir.join("users.yaml")).unwrap();
    if let Some((id, secret)) = extra_client {
        yaml.push_str(&format!(
            "  - id: {id}\n    tenant: unconstrained\n    secretHash: \"{}\"\n    audience: [api]\n",
            sealkit::secret::SecretHash::of(secret)
        ));
    }
    std::fs::write(dir.join("authority.yaml"), yaml).unwrap();
}

pub(crate) fn pack_and_sign(work: &Path, source: &str, version: &str) -> String {
    let file = format!("site-v{version}.bundle.tar.zst");
    ok(sealkit(
        &[
            "bundle",
            "pack",
            source,
            "--version",
            version,
            "--expires",
            "30d",
            "--site",
            "demo",
            "-o",
            &file,
        ],
        work,
    ));
    ok(sealkit(
        &["bundle", "sign", "--secret-key", "signing.key", &file],
        work,
    ));
    file
}

/// `signing.key`/`signing.pub` in `work` (unencrypted), the public key pinned in `root`.
pub(crate) fn signing_key_pinned(work: &Path, root: &str) {
    ok(sealkit(
        &[
            "bundle",
            "keygen",
            "--unencrypted",
            "--secret-key",
            "signing.key",
            "--public-key",
            "signing.pub",
        ],
        work,
    ));
    ok(sealkit(
        &["bundle", "trust", "add", "signing.pub", "--root", root],
        work,
    ));
}

fn serve(root: &Path) -> Child {
    crate::harness::spawn_serve(&["--bundle-root".as_ref(), root.as_os_str()])
}

fn tree_digest(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let name = path.strip_prefix(dir).unwrap().display().to_string();
            // The lock file, and the audit file a refusal appends to (by design: the
            // refusal is an audit event), are not the bundle state.
            if name == "lock" || name == "audit.log" {
                continue;
            }
            if meta.is_dir() {
                stack.push(path);
            } else if meta.file_type().is_symlink() {
                out.push((
                    name,
                    std::fs::read_link(&path)
                        .unwrap()
                        .display()
                        .to_string()
                        .into_bytes(),
                ));
            } else {
                out.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_bundle_reconfigures_a_running_authority_and_a_stale_one_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let site = sealkit::demo::prepare(
        &work.join("site"),
        format!("127.0.0.1:{port}").parse().unwrap(),
    )
    .unwrap();
    let root = work.join("bundles");
    let root_arg = root.display().to_string();
    signing_key_pinned(work, &root_arg);

    write_source(&site, &work.join("src-v1"), None);
    let v1 = pack_and_sign(work, "src-v1", "1");
    // The minisign CLI verifies our signature.
    let out = Command::new("minisign")
        .args(["-V", "-p", "signing.pub", "-m", &v1])
        .current_dir(work)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "minisign: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(sealkit(
        &[
            "bundle", "import", &v1, "--site", "demo", "--root", &root_arg,
        ],
        work,
    ));

    let mut server = serve(&root);
    let target = TlsTarget::new(&site.issuer, &site.ca_file, None).unwrap();
    let mut conn = target.connect().await.unwrap();
    let form = [("grant_type", "client_credentials")];
    let secret = sealkit::secret::generate();
    let newcomer = basic_auth("added-by-v2", &secret);
    assert_eq!(
        conn.post_form("/token", &form, &[("authorization", &newcomer)])
            .await
            .unwrap()
            .status,
        401
    );

    // v2 adds a client; importing it reloads the running authority.
    write_source(&site, &work.join("src-v2"), Some(("added-by-v2", &secret)));
    let v2 = pack_and_sign(work, "src-v2", "2");
    let socket = site
        .dir
        .join("data")
        .join("control.sock")
        .display()
        .to_string();
    ok(sealkit(
        &[
            "bundle",
            "import",
            &v2,
            "--root",
            &root_arg,
            "--reload-socket",
            &socket,
        ],
        work,
    ));
    let reply = conn
        .post_form("/token", &form, &[("authorization", &newcomer)])
        .await
        .unwrap();
    assert_eq!(
        reply.status, 200,
        "the new client works on the same connection, no restart: {:?}",
        reply.body
    );

    // v1 again: a rollback attack, refused with its own exit code; nothing changes.
    let before = tree_digest(&root);
    let out = sealkit(&["bundle", "import", &v1, "--root", &root_arg], work);
    assert_eq!(
        out.status.code(),
        Some(16),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tree_digest(&root), before);

    // A correctly signed v3 whose authority.yaml is invalid: refused (3), nothing changes.
    std::fs::create_dir_all(work.join("src-v3")).unwrap();
    let broken = std::fs::read_to_string(work.join("src-v2/authority.yaml"))
        .unwrap()
        .replace("tenant: unconstrained", "tenant: nowhere");
    std::fs::write(work.join("src-v3/authority.yaml"), broken).unwrap();
    let v3 = pack_and_sign(work, "src-v3", "3");
    let out = sealkit(
        &[
            "bundle",
            "import",
            &v3,
            "--root",
            &root_arg,
            "--reload-socket",
            &socket,
        ],
        work,
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tree_digest(&root), before);
    // A flipped byte in the bundle: refused before anything is unpacked.
    let mut bytes = std::fs::read(work.join(&v2)).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(work.join("tampered.bundle.tar.zst"), bytes).unwrap();
    std::fs::copy(
        work.join(format!("{v2}.minisig")),
        work.join("tampered.bundle.tar.zst.minisig"),
    )
    .unwrap();
    let out = sealkit(
        &[
            "bundle",
            "import",
            "tampered.bundle.tar.zst",
            "--root",
            &root_arg,
        ],
        work,
    );
    assert_eq!(
        out.status.code(),
        Some(11),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tree_digest(&root), before);

    // The server kept serving the v2 configuration throughout.
    let reply = conn
        .post_form("/token", &form, &[("authorization", &newcomer)])
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    server.kill().unwrap();
    server.wait().unwrap();
}

/// `(code, stderr)` of a finished command.
fn code(out: &Output) -> (Option<i32>, String) {
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A bundle the authority could not load — garbage certificate, a key that is not the
/// certificate's, an unparsable CRL — or whose paths lead into the bundle root by their
/// `<root>/current/…` spelling: `bundle import` and `config check` both exit 3, and the
/// bundle root stays byte-identical. A key with algorithm id `Xx` is refused by
/// `bundle trust add` and, carried in a bundle, by the import.
#[test]
fn a_bundle_the_authority_cannot_load_never_activates() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let site = sealkit::demo::prepare(&work.join("site"), "127.0.0.1:1".parse().unwrap()).unwrap();
    let root = work.join("bundles");
    let root_arg = root.display().to_string();
    signing_key_pinned(work, &root_arg);
    // v1 is valid and also carries a copy of the server key (any file may travel).
    write_source(&site, &work.join("src-v1"), None);
    std::fs::create_dir_all(work.join("src-v1/tls")).unwrap();
    std::fs::copy(
        site.dir.join("tls/server.key"),
        work.join("src-v1/tls/server.key"),
    )
    .unwrap();
    let v1 = pack_and_sign(work, "src-v1", "1");
    ok(sealkit(
        &[
            "bundle", "import", &v1, "--site", "demo", "--root", &root_arg,
        ],
        work,
    ));
    let before = tree_digest(&root);

    let d = site.dir.display().to_string();
    let cert_line = format!("certificate: {d}/tls/server.crt");
    let key_line = format!("privateKey: {d}/tls/server.key");
    let data_line = format!("dataDir: {d}/data");
    let client_key = std::fs::read_dir(site.dir.join("certs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "key"))
        .unwrap();
    let garbage_crl = "-----BEGIN X509 CRL-----\nZ2FyYmFnZQ==\n-----END X509 CRL-----\n";
    /// (name, from, to, file shipped in the bundle, key path reported)
    type Case<'a> = (&'a str, String, String, Option<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "garbage-cert",
            cert_line.clone(),
            "certificate: tls/server.crt".into(),
            Some(("tls/server.crt", "garbage\n")),
            "tls.certificate",
        ),
        (
            "mismatched-key",
            key_line.clone(),
            format!("privateKey: {}", client_key.display()),
            None,
            "tls.privateKey",
        ),
        (
            "garbage-crl",
            cert_line.clone(),
            format!("{cert_line}\n  clientCrl: tls/client.crl"),
            Some(("tls/client.crl", garbage_crl)),
            "tls.clientCrl",
        ),
        (
            "data-in-current",
            data_line.clone(),
            format!("dataDir: {root_arg}/current/data"),
            None,
            "dataDir",
        ),
        (
            "logs-in-current",
            format!("directory: {d}/logs"),
            format!("directory: {root_arg}/current/logs"),
            None,
            "logging.directory",
        ),
        (
            "key-in-current",
            key_line.clone(),
            format!("privateKey: {root_arg}/current/tls/server.key"),
            None,
            "tls.privateKey",
        ),
    ];
    for (i, (name, from, to, shipped, key)) in cases.into_iter().enumerate() {
        let source = work.join(format!("src-{name}"));
        write_source(&site, &source, None);
        let config = source.join("authority.yaml");
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(text.contains(&from), "{name}: the edit does not apply");
        std::fs::write(&config, text.replace(&from, &to)).unwrap();
        if let Some((path, content)) = shipped {
            std::fs::create_dir_all(source.join(path).parent().unwrap()).unwrap();
            std::fs::write(source.join(path), content).unwrap();
        }
        let (status, stderr) = code(&sealkit(
            &["config", "check", config.to_str().unwrap()],
            work,
        ));
        assert_eq!(status, Some(3), "config check {name}: {stderr}");
        assert!(
            stderr.contains(&format!("{key}: ")),
            "config check {name}: {stderr}"
        );
        let bundle = pack_and_sign(
            work,
            source.file_name().unwrap().to_str().unwrap(),
            &(i + 2).to_string(),
        );
        let (status, stderr) = code(&sealkit(
            &["bundle", "import", &bundle, "--root", &root_arg],
            work,
        ));
        assert_eq!(status, Some(3), "bundle import {name}: {stderr}");
        assert!(stderr.contains(key), "bundle import {name}: {stderr}");
        assert_eq!(
            tree_digest(&root),
            before,
            "{name}: the bundle root changed"
        );
    }

    // A minisign public key with algorithm id `Xx`.
    let text = std::fs::read_to_string(work.join("signing.pub")).unwrap();
    let (comment, encoded) = text.trim_end().split_once('\n').unwrap();
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let mut raw = engine.decode(encoded.trim()).unwrap();
    raw[..2].copy_from_slice(b"Xx");
    let xx = format!("{comment}\n{}\n", engine.encode(&raw));
    std::fs::write(work.join("xx.pub"), &xx).unwrap();
    let (status, stderr) = code(&sealkit(
        &["bundle", "trust", "add", "xx.pub", "--root", &root_arg],
        work,
    ));
    assert_ne!(status, Some(0), "trust add accepted an Xx key: {stderr}");
    assert!(stderr.contains("\"Xx\""), "{stderr}");
    assert_eq!(tree_digest(&root), before);
    println!("trust add Xx: exit {status:?}: {}", stderr.trim());
}
