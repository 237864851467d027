//! Test helpers: a sealed host in a temp dir (bundle root, pinned key, host TLS files),
//! source directories, packing + signing, a whole-root hash, and a crafter of hostile
//! archives that signs them with the test key afterwards.

use super::activate::BundleRoot;
use super::manifest::{format_time, FileEntry, Manifest, Totals, FORMAT_VERSION};
use super::signing::{keygen, load_secret_key, sign_data, Passphrase, TrustedComment};
use super::{pack, sign, ImportOptions, Limits, NoProgress, PackOptions};
use minisign::SecretKey;
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub const SITE: &str = "test-site";
/// A fixed "now" (2026-11-05T12:00:00Z) so expiry is tested without the system clock.
pub const NOW: i64 = 1_793_880_000;
pub const DAY: i64 = 86_400;

pub struct TestKey {
    pub sk: SecretKey,
    pub id: String,
    pub public: PathBuf,
    pub secret: PathBuf,
}

/// An unencrypted key pair written to `dir/<name>.{key,pub}`.
pub fn test_key(dir: &Path, name: &str) -> TestKey {
    let secret = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    let generated = keygen(&secret, &public, Passphrase::Unencrypted).unwrap();
    TestKey {
        sk: load_secret_key(&secret, Passphrase::Unencrypted).unwrap(),
        id: generated.key_id,
        public,
        secret,
    }
}

/// Real TLS material from sealkit's own CA, made once per test process: the
/// configuration loader reads every file as `serve` would, so placeholders no longer pass.
pub struct TestPki {
    /// Server leaf + intermediate, PEM.
    pub server_chain: String,
    pub server_key: String,
    /// A key that is not the server certificate's.
    pub other_key: String,
    /// Root + intermediate (`ca-bundle.crt`).
    pub ca_bundle: String,
    /// CRLs signed by the CA (intermediate's and root's).
    pub crl: String,
}

pub fn test_pki() -> &'static TestPki {
    static PKI: std::sync::OnceLock<TestPki> = std::sync::OnceLock::new();
    PKI.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::ca::SiteCa::init(
            &dir.path().join("ca"),
            "bundle tests",
            crate::ca::KeyAlgorithm::EcdsaP256,
        )
        .unwrap();
        let server = ca
            .issue_server(&["localhost".to_string()], &[], 30)
            .unwrap();
        let other = ca.issue_client("someone-else", None, 30).unwrap();
        TestPki {
            server_chain: server.chain_pem.clone(),
            server_key: server.key_pem.clone().unwrap(),
            other_key: other.key_pem.clone().unwrap(),
            ca_bundle: std::fs::read_to_string(dir.path().join("ca/ca-bundle.crt")).unwrap(),
            crl: ca.crl_pem(30).unwrap(),
        }
    })
}

pub struct Host {
    pub tmp: tempfile::TempDir,
    pub root: BundleRoot,
    /// Host files the configuration points at (TLS certificate and key, data dir).
    pub host: PathBuf,
    /// Where test bundles and signatures are written.
    pub work: PathBuf,
    pub key: TestKey,
}

impl Host {
    pub fn new() -> Host {
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().join("host");
        let work = tmp.path().join("work");
        std::fs::create_dir_all(host.join("tls")).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        let pki = test_pki();
        std::fs::write(host.join("tls/server.crt"), &pki.server_chain).unwrap();
        std::fs::write(host.join("tls/server.key"), &pki.server_key).unwrap();
        let key = test_key(&work, "signer");
        let root = BundleRoot::new(tmp.path().join("root"));
        root.trust_add(&key.public).unwrap();
        Host {
            tmp,
            root,
            host,
            work,
            key,
        }
    }

    pub fn options(&self) -> ImportOptions {
        let mut options = ImportOptions::new(NOW);
        options.site = Some(SITE.to_string());
        options
    }

    /// A valid authority.yaml for this host; `marker` lands in the issuer's path.
    pub fn config(&self, marker: &str) -> String {
        format!(
            "issuer: https://auth.test-site.example/{marker}\n\
             listen: 127.0.0.1:8443\n\
             tls:\n  certificate: {host}/tls/server.crt\n  privateKey: {host}/tls/server.key\n\
             dataDir: {host}/data\n\
             tenants:\n  - id: t1\n    senderConstraint: dpop\n\
             clients:\n  - id: c1\n    tenant: t1\n    secretHash: \"sha256:47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU\"\n    audience: [\"https://api.example\"]\n",
            host = self.host.display()
        )
    }

    /// A source directory `work/<name>` with authority.yaml and one more file.
    pub fn source(&self, name: &str) -> PathBuf {
        let dir = self.work.join(name);
        std::fs::create_dir_all(dir.join("notes")).unwrap();
        std::fs::write(dir.join("authority.yaml"), self.config(name)).unwrap();
        std::fs::write(dir.join("notes/README.txt"), format!("bundle {name}\n")).unwrap();
        dir
    }

    /// Packs and signs `source` as `version`, created `created`, valid `days`.
    pub fn bundle_from(&self, source: &Path, version: u64, created: i64, days: i64) -> PathBuf {
        self.bundle_as(source, SITE, version, created, days, &self.key)
    }

    pub fn bundle_as(
        &self,
        source: &Path,
        site: &str,
        version: u64,
        created: i64,
        days: i64,
        key: &TestKey,
    ) -> PathBuf {
        let out = self.work.join(format!(
            "{site}-v{version}-{}.bundle.tar.zst",
            rand::random::<u32>()
        ));
        let options = PackOptions::new(site, version, created, created + days * DAY);
        pack(source, &out, &options, &NoProgress).unwrap();
        sign(&out, &key.sk, None, &Limits::default(), &NoProgress).unwrap();
        out
    }

    /// A fresh source and bundle for `version`, created `version` hours after NOW − 1 day.
    pub fn bundle(&self, version: u64) -> PathBuf {
        let source = self.source(&format!("v{version}"));
        self.bundle_from(&source, version, NOW - DAY + version as i64 * 3600, 30)
    }

    /// Writes crafted bytes and their signature (by `key`, with `comment`) to `work/`.
    pub fn signed_bytes(&self, bytes: &[u8], comment: &str, key: &TestKey) -> PathBuf {
        let path = self
            .work
            .join(format!("crafted-{}.tar.zst", rand::random::<u32>()));
        std::fs::write(&path, bytes).unwrap();
        let signature = sign_data(&key.sk, bytes, comment, "crafted").unwrap();
        std::fs::write(super::pack::default_signature_path(&path), signature).unwrap();
        path
    }
}

/// A hash of everything under `dir`: paths, types, modes, contents, link targets.
pub fn tree_hash(dir: &Path) -> String {
    let mut hasher = Sha256::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut all = Vec::new();
    while let Some(path) = stack.pop() {
        let meta = path.symlink_metadata().unwrap();
        all.push(path.clone());
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
    }
    all.sort();
    for path in all {
        let meta = path.symlink_metadata().unwrap();
        let rel = path
            .strip_prefix(dir)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        hasher.update(rel.as_bytes());
        hasher.update(format!(":{:o}:", meta.permissions().mode()).as_bytes());
        if meta.file_type().is_symlink() {
            hasher.update(b"L");
            hasher.update(
                std::fs::read_link(&path)
                    .unwrap()
                    .to_string_lossy()
                    .as_bytes(),
            );
        } else if meta.is_file() {
            hasher.update(b"F");
            hasher.update(std::fs::read(&path).unwrap());
        } else {
            hasher.update(b"D");
        }
        hasher.update(b"\n");
    }
    super::hex(&hasher.finalize())
}

/// One raw tar entry for [`Crafted`].
pub struct RawEntry {
    pub name: Vec<u8>,
    pub kind: tar::EntryType,
    pub mode: u32,
    pub data: Vec<u8>,
    pub link: Vec<u8>,
    /// Header size field; defaults to `data.len()`.
    pub size: Option<u64>,
}

impl RawEntry {
    pub fn file(name: &str, data: &[u8]) -> RawEntry {
        RawEntry {
            name: name.as_bytes().to_vec(),
            kind: tar::EntryType::Regular,
            mode: 0o644,
            data: data.to_vec(),
            link: Vec::new(),
            size: None,
        }
    }
    pub fn special(name: &str, kind: tar::EntryType, link: &str) -> RawEntry {
        RawEntry {
            name: name.as_bytes().to_vec(),
            kind,
            mode: 0o644,
            data: Vec::new(),
            link: link.as_bytes().to_vec(),
            size: None,
        }
    }
}

/// A hand-made archive: a manifest (normally listing `files`) and raw entries, written
/// byte by byte so that nothing (not even the tar crate) sanitises hostile names.
pub struct Crafted {
    pub manifest: Manifest,
    pub entries: Vec<RawEntry>,
}

impl Crafted {
    /// A valid archive for `version` holding `files` (authority.yaml should be one).
    pub fn new(version: u64, files: &[(&str, Vec<u8>)]) -> Crafted {
        let mut listed: Vec<FileEntry> = files
            .iter()
            .map(|(path, data)| FileEntry {
                path: path.to_string(),
                size: data.len() as u64,
                sha256: super::sha256_hex(data),
                mode: "0644".into(),
            })
            .collect();
        listed.sort_by(|a, b| a.path.cmp(&b.path));
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            site: SITE.into(),
            version,
            created: format_time(NOW - 3600),
            expires: format_time(NOW + 30 * DAY),
            totals: Totals {
                files: listed.len() as u64,
                bytes: listed.iter().map(|f| f.size).sum(),
            },
            files: listed,
        };
        let entries = files
            .iter()
            .map(|(path, data)| RawEntry::file(path, data))
            .collect();
        Crafted { manifest, entries }
    }

    pub fn manifest_bytes(&self) -> Vec<u8> {
        self.manifest.to_json()
    }

    /// The comment a signer would write for this manifest.
    pub fn comment(&self) -> TrustedComment {
        TrustedComment {
            site: self.manifest.site.clone(),
            version: self.manifest.version,
            created: self.manifest.created_unix(),
            expires: self.manifest.expires_unix(),
            manifest_sha256: super::sha256_hex(&self.manifest_bytes()),
        }
    }

    /// The uncompressed tar stream: manifest.json first, then the entries.
    pub fn tar(&self) -> Vec<u8> {
        let mut out = Vec::new();
        append_raw(
            &mut out,
            &RawEntry::file("manifest.json", &self.manifest_bytes()),
        );
        for entry in &self.entries {
            append_raw(&mut out, entry);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    pub fn compressed(&self) -> Vec<u8> {
        zstd::encode_all(&self.tar()[..], 3).unwrap()
    }

    /// Compressed, signed with the comment matching the manifest, written to `work/`.
    pub fn signed(&self, host: &Host) -> PathBuf {
        host.signed_bytes(&self.compressed(), &self.comment().render(), &host.key)
    }
}

fn append_raw(out: &mut Vec<u8>, entry: &RawEntry) {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(entry.kind);
    header.set_size(entry.size.unwrap_or(entry.data.len() as u64));
    header.set_mode(entry.mode);
    header.set_mtime(0);
    {
        let bytes = header.as_mut_bytes();
        bytes[..100].fill(0);
        bytes[..entry.name.len()].copy_from_slice(&entry.name);
        bytes[157..257].fill(0);
        bytes[157..157 + entry.link.len()].copy_from_slice(&entry.link);
    }
    header.set_cksum();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&entry.data);
    let pad = (512 - entry.data.len() % 512) % 512;
    out.resize(out.len() + pad, 0);
}
