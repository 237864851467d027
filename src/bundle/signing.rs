//! minisign keys and signatures, in the standard formats the `minisign` CLI reads and
//! writes, and the trusted comment that binds a signature to one bundle.
//!
//! A signature is accepted only when it is prehashed (minisign ≥ 0.8's default), carries a
//! trusted comment, and was made by a pinned key; the comment is parsed only after the
//! whole signature (data and comment) verified.

use super::error::{io_err, one_line, refuse, BundleError, Refusal};
use super::manifest::{check_site, format_time, parse_time};
use crate::archive::HashingReader;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use minisign::{PublicKey, PublicKeyBox, SecretKey, SecretKeyBox, SignatureBox};
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

/// The first word of every sealkit trusted comment.
pub const COMMENT_TAG: &str = "sealkit-bundle";

/// The minisign key id of a key number, as the CLI prints it (`{:016X}` of the LE u64).
pub fn key_id(keynum: &[u8]) -> String {
    let mut bytes = [0u8; 8];
    for (dst, src) in bytes.iter_mut().zip(keynum) {
        *dst = *src;
    }
    format!("{:016X}", u64::from_le_bytes(bytes))
}

pub fn public_key_id(key: &PublicKey) -> String {
    key_id(key.keynum())
}

/// A public key in the minisign `.pub` format (two lines), or its bare base64 line.
pub fn parse_public_key(text: &str) -> Result<PublicKey, String> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let result = match lines.as_slice() {
        [comment, key] if comment.starts_with("untrusted comment:") => PublicKey::from_box(
            PublicKeyBox::from_string(&format!("{comment}\n{key}\n")).map_err(|e| e.to_string())?,
        ),
        [key] => PublicKey::from_base64(key),
        _ => {
            return Err(
                "not a minisign public key (expected `untrusted comment: ...` and one base64 line)"
                    .into(),
            )
        }
    };
    let key = result.map_err(|e| format!("not a minisign public key: {e}"))?;
    // The key's algorithm id: `Ed` (Ed25519) is the only one the minisign CLI accepts; the
    // library would take any two bytes, and pin a key the CLI refuses.
    let bytes = key.to_bytes();
    let algorithm = bytes.get(..2).unwrap_or_default();
    if algorithm != b"Ed" {
        return Err(format!(
            "not an Ed25519 minisign public key: its algorithm id is {:?}, the minisign CLI accepts only \"Ed\"",
            String::from_utf8_lossy(algorithm)
        ));
    }
    Ok(key)
}

/// The `.pub` file text of a public key (what `minisign -G` writes).
pub fn public_key_text(key: &PublicKey) -> String {
    match key.to_box() {
        Ok(b) => b.to_string(),
        Err(_) => format!(
            "untrusted comment: minisign public key {}\n{}\n",
            public_key_id(key),
            key.to_base64()
        ),
    }
}

/// One pinned public key.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub id: String,
    pub key: PublicKey,
    /// Where it was read from.
    pub source: PathBuf,
}

/// The set of public keys a bundle signature may be made with.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<TrustedKey>,
}

impl TrustedKeys {
    /// Reads every `*.pub` in `dir` (other files are ignored; an unreadable key is an error,
    /// never silently skipped).
    pub fn load_dir(dir: &Path) -> Result<TrustedKeys, BundleError> {
        let mut keys = TrustedKeys::default();
        let entries = std::fs::read_dir(dir).map_err(io_err(format!(
            "cannot read trusted keys in {}",
            dir.display()
        )))?;
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(format!("cannot read {}", dir.display())))?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "pub") {
                paths.push(path);
            }
        }
        paths.sort();
        for path in paths {
            keys.add_file(&path)?;
        }
        Ok(keys)
    }

    /// Reads keys from files and directories (each directory as in [`Self::load_dir`]).
    pub fn load_paths(paths: &[PathBuf]) -> Result<TrustedKeys, BundleError> {
        let mut keys = TrustedKeys::default();
        for path in paths {
            if path.is_dir() {
                for key in Self::load_dir(path)?.keys {
                    keys.push(key);
                }
            } else {
                keys.add_file(path)?;
            }
        }
        Ok(keys)
    }

    fn add_file(&mut self, path: &Path) -> Result<(), BundleError> {
        let text = std::fs::read_to_string(path)
            .map_err(io_err(format!("cannot read public key {}", path.display())))?;
        let key = parse_public_key(&text)
            .map_err(|e| BundleError::Key(format!("{}: {e}", path.display())))?;
        self.push(TrustedKey {
            id: public_key_id(&key),
            key,
            source: path.to_path_buf(),
        });
        Ok(())
    }

    pub fn push(&mut self, key: TrustedKey) {
        if !self.keys.iter().any(|k| k.id == key.id) {
            self.keys.push(key);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }

    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.id.clone()).collect()
    }

    pub fn find(&self, keynum: &[u8]) -> Option<&TrustedKey> {
        self.keys.iter().find(|k| k.key.keynum() == keynum)
    }
}

/// What the signer attests about one bundle, carried in the signature's trusted comment:
///
/// `sealkit-bundle format=1 site=<id> version=<n> created=<time> expires=<time> manifest=sha256:<hex>`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedComment {
    pub site: String,
    pub version: u64,
    /// Unix seconds.
    pub created: i64,
    pub expires: i64,
    /// Lowercase hex SHA-256 of the `manifest.json` bytes in the archive.
    pub manifest_sha256: String,
}

impl TrustedComment {
    pub fn render(&self) -> String {
        format!(
            "{COMMENT_TAG} format={} site={} version={} created={} expires={} manifest=sha256:{}",
            super::manifest::FORMAT_VERSION,
            self.site,
            self.version,
            format_time(self.created),
            format_time(self.expires),
            self.manifest_sha256
        )
    }

    /// Parses a comment; only the exact form [`Self::render`] produces is accepted.
    pub fn parse(text: &str) -> Result<TrustedComment, String> {
        let mut words = text.split(' ');
        if words.next() != Some(COMMENT_TAG) {
            return Err(format!(
                "the trusted comment does not start with `{COMMENT_TAG}` (not a sealkit bundle signature)"
            ));
        }
        let mut field = |name: &str| -> Result<&str, String> {
            let word = words.next().unwrap_or_default();
            word.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('='))
                .ok_or_else(|| format!("the trusted comment lacks `{name}=` where expected"))
        };
        let format = field("format")?;
        if format != super::manifest::FORMAT_VERSION.to_string() {
            return Err(format!(
                "the trusted comment has format={format}; expected 1"
            ));
        }
        let site = field("site")?.to_string();
        check_site(&site)?;
        let version: u64 = field("version")?
            .parse()
            .map_err(|_| "the trusted comment's version is not a number".to_string())?;
        let created = parse_time(field("created")?)?;
        let expires = parse_time(field("expires")?)?;
        let manifest_sha256 = field("manifest")?
            .strip_prefix("sha256:")
            .ok_or_else(|| "the trusted comment's manifest digest is not sha256:<hex>".to_string())?
            .to_string();
        let comment = TrustedComment {
            site,
            version,
            created,
            expires,
            manifest_sha256,
        };
        if words.next().is_some() || comment.render() != text {
            return Err("the trusted comment is not in canonical form".into());
        }
        Ok(comment)
    }
}

/// How a secret key's passphrase is obtained.
#[derive(Clone)]
pub enum Passphrase {
    /// From a file or the environment.
    Given(String),
    /// The key has none (tests and demos only).
    Unencrypted,
    /// Let minisign ask on the terminal.
    Prompt,
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Passphrase::Given(_) => f.write_str("Passphrase::Given(<redacted>)"),
            Passphrase::Unencrypted => f.write_str("Passphrase::Unencrypted"),
            Passphrase::Prompt => f.write_str("Passphrase::Prompt"),
        }
    }
}

/// What [`keygen`] wrote.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    pub key_id: String,
    pub secret_key: PathBuf,
    pub public_key: PathBuf,
    pub encrypted: bool,
}

/// Creates a minisign key pair: the secret key 0600 (passphrase-protected unless
/// `Passphrase::Unencrypted`), the public key 0644. Existing files are never overwritten.
pub fn keygen(
    secret_path: &Path,
    public_path: &Path,
    passphrase: Passphrase,
) -> Result<GeneratedKey, BundleError> {
    for path in [secret_path, public_path] {
        if path.symlink_metadata().is_ok() {
            return Err(BundleError::Key(format!(
                "{} exists; refusing to overwrite a key",
                path.display()
            )));
        }
    }
    let key_err = |e: minisign::PError| BundleError::Key(format!("key generation failed: {e}"));
    let (pk, sk, encrypted) = match passphrase {
        Passphrase::Given(p) if p.is_empty() => {
            return Err(BundleError::Key(
                "the passphrase is empty; give one, or ask for --unencrypted explicitly".into(),
            ))
        }
        Passphrase::Given(p) => {
            let pair = minisign::KeyPair::generate_encrypted_keypair(Some(p)).map_err(key_err)?;
            (pair.pk, pair.sk, true)
        }
        Passphrase::Prompt => {
            let pair = minisign::KeyPair::generate_encrypted_keypair(None).map_err(key_err)?;
            (pair.pk, pair.sk, true)
        }
        Passphrase::Unencrypted => {
            // An empty password gives a checksummed, unencrypted key still labelled scrypt;
            // relabel it "no KDF" so the minisign CLI (-W keys) reads it without a prompt.
            let pair = minisign::KeyPair::generate_encrypted_keypair(Some(String::new()))
                .map_err(key_err)?;
            let mut bytes = pair.sk.to_bytes();
            if let Some(kdf) = bytes.get_mut(2..4) {
                kdf.copy_from_slice(&[0, 0]);
            }
            let sk = SecretKey::from_bytes(&bytes).map_err(key_err)?;
            (pair.pk, sk, false)
        }
    };
    let id = public_key_id(&pk);
    let comment = format!(
        "sealkit bundle signing key {id}{}",
        if encrypted { "" } else { " (UNENCRYPTED)" }
    );
    let sk_text = sk.to_box(Some(&comment)).map_err(key_err)?.to_string();
    write_new(secret_path, sk_text.as_bytes(), 0o600)?;
    write_new(public_path, public_key_text(&pk).as_bytes(), 0o644)?;
    Ok(GeneratedKey {
        key_id: id,
        secret_key: secret_path.to_path_buf(),
        public_key: public_path.to_path_buf(),
        encrypted,
    })
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), BundleError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let context = || format!("cannot write {}", path.display());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err(context()))?;
    file.write_all(contents).map_err(io_err(context()))?;
    file.sync_all().map_err(io_err(context()))
}

/// Reads a minisign secret key (ours or the CLI's). Refuses a key file that group or
/// others can read.
pub fn load_secret_key(path: &Path, passphrase: Passphrase) -> Result<SecretKey, BundleError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(io_err(format!("cannot read secret key {}", path.display())))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(BundleError::Key(format!(
            "{} is accessible to group or others (mode {:o}); chmod 600 it",
            path.display(),
            meta.permissions().mode() & 0o777
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(io_err(format!("cannot read secret key {}", path.display())))?;
    let encoded = text.lines().nth(1).unwrap_or_default().trim();
    let raw = STANDARD.decode(encoded).map_err(|_| {
        BundleError::Key(format!("{} is not a minisign secret key", path.display()))
    })?;
    let unencrypted = raw.get(2..4) == Some(&[0, 0][..]);
    let password = match (unencrypted, passphrase) {
        (true, _) => Some(String::new()),
        (false, Passphrase::Given(p)) => Some(p),
        (false, Passphrase::Prompt) => None,
        (false, Passphrase::Unencrypted) => {
            return Err(BundleError::Key(format!(
                "{} is passphrase-protected: give --passphrase-file or SEALKIT_BUNDLE_PASSPHRASE",
                path.display()
            )))
        }
    };
    SecretKey::from_box(
        SecretKeyBox::from_string(&text).map_err(|e| BundleError::Key(e.to_string()))?,
        password,
    )
    .map_err(|e| BundleError::Key(format!("cannot open {}: {e}", path.display())))
}

/// Signs `data` (prehashed) with a trusted comment; returns the `.minisig` text.
pub fn sign_data(
    sk: &SecretKey,
    data: impl Read,
    trusted_comment: &str,
    untrusted_comment: &str,
) -> Result<String, BundleError> {
    let pk = PublicKey::from_secret_key(sk).ok();
    let signature = minisign::sign(
        pk.as_ref(),
        sk,
        data,
        Some(trusted_comment),
        Some(untrusted_comment),
    )
    .map_err(|e| BundleError::Key(format!("signing failed: {e}")))?;
    Ok(signature.to_string())
}

/// The key id of a secret key.
pub fn secret_key_id(sk: &SecretKey) -> String {
    key_id(sk.keynum())
}

/// A signature that verified against a pinned key.
#[derive(Debug, Clone)]
pub struct VerifiedSignature {
    pub key_id: String,
    /// The raw trusted comment (not yet parsed).
    pub trusted_comment: String,
    /// Lowercase hex SHA-256 of the signed bytes, computed in the same pass.
    pub sha256: String,
}

/// Verifies a `.minisig` over `data` against `keys`: [`Refusal::BadSignature`] when the
/// signature is malformed, legacy, or wrong; [`Refusal::UntrustedKey`] when its key is not
/// pinned. The data is read once; its SHA-256 comes back with the result.
pub fn verify_signature<R: Read + Seek>(
    data: R,
    signature_text: &str,
    keys: &TrustedKeys,
) -> Result<VerifiedSignature, BundleError> {
    let signature = SignatureBox::from_string(signature_text).map_err(|e| {
        refuse(
            Refusal::BadSignature,
            format!("the signature is not a minisign signature: {e}"),
        )
    })?;
    if !signature.is_prehashed() {
        return Err(refuse(
            Refusal::BadSignature,
            "legacy (non-prehashed) minisign signatures are not accepted",
        ));
    }
    let id = key_id(signature.keynum());
    let Some(key) = keys.find(signature.keynum()) else {
        return Err(refuse(
            Refusal::UntrustedKey,
            format!(
                "signed by key {id}, which is not a trusted key (trusted: {})",
                if keys.is_empty() {
                    "none".to_string()
                } else {
                    keys.ids().join(", ")
                }
            ),
        ));
    };
    // The comment exactly as written: the minisign CLI signs and verifies it untrimmed,
    // the minisign crate trims it first.
    let written = written_trusted_comment(signature_text);
    let padded = written.is_some_and(|c| c.trim() != c);
    let mut reader = HashingReader::new(data);
    let verdict = minisign::verify(&key.key, &signature, &mut reader, true, false, false);
    if let Err(e) = verdict {
        if reader.io_error {
            return Err(BundleError::Io {
                context: "cannot read the bundle".into(),
                source: std::io::Error::other(e.to_string()),
            });
        }
        // Data verified, comment did not: if it verifies as written, the signer put
        // whitespace around it — a wrong comment, not a damaged medium.
        if let Some(comment) = written.filter(|_| padded) {
            if e.to_string().contains("Comment signature")
                && global_signature_covers(signature_text, &key.key, comment)
            {
                return Err(refuse(
                    Refusal::BadComment,
                    format!(
                        "the trusted comment {comment:?} has whitespace before or after it; \
                         the signature is genuine, but a sealkit comment is exact: sign again \
                         with the comment `sealkit bundle sign` writes, without surrounding spaces"
                    ),
                ));
            }
        }
        return Err(refuse(
            Refusal::BadSignature,
            format!("signature by key {id} does not verify: {e}"),
        ));
    }
    if padded {
        // Verified only because the crate trimmed it: the whitespace was added afterwards
        // and the minisign CLI would refuse this signature.
        return Err(refuse(
            Refusal::BadSignature,
            "the trusted comment line carries whitespace the signature does not cover (the minisign CLI refuses it)",
        ));
    }
    let trusted_comment = signature
        .trusted_comment()
        .map_err(|e| refuse(Refusal::BadSignature, format!("no trusted comment: {e}")))?;
    Ok(VerifiedSignature {
        key_id: id,
        trusted_comment: one_line(&trusted_comment),
        sha256: reader.finish_hex(),
    })
}

/// The trusted comment of a `.minisig` text exactly as written (third line, after the
/// prefix; only the line break removed).
fn written_trusted_comment(signature_text: &str) -> Option<&str> {
    signature_text
        .split('\n')
        .nth(2)
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .and_then(|line| line.strip_prefix("trusted comment: "))
}

/// Whether the global signature of `signature_text` covers `comment` as given (minisign:
/// Ed25519 over the 64-byte data signature followed by the comment's bytes).
fn global_signature_covers(signature_text: &str, key: &PublicKey, comment: &str) -> bool {
    let mut lines = signature_text.lines();
    let (Some(_), Some(sig_line), Some(_), Some(global_line)) =
        (lines.next(), lines.next(), lines.next(), lines.next())
    else {
        return false;
    };
    let (Ok(sig), Ok(global)) = (
        STANDARD.decode(sig_line.trim()),
        STANDARD.decode(global_line.trim()),
    ) else {
        return false;
    };
    // Signature line: algorithm (2) ‖ key number (8) ‖ signature (64).
    let Some(data_signature) = sig.get(10..74) else {
        return false;
    };
    let public = key.to_bytes();
    let Some(raw_key) = public.get(10..42) else {
        return false;
    };
    let mut message = data_signature.to_vec();
    message.extend_from_slice(comment.as_bytes());
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, raw_key)
        .verify(&message, &global)
        .is_ok()
}
