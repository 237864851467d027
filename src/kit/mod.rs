//! The offline kit: everything a sealed host needs, in one signed file carried across the
//! air gap — the static `sealkit` binary, the kit files (installer, systemd unit, default
//! configuration, alert rules, README), trust roots (bundle signing public keys, the site CA
//! certificate), optionally host TLS material and drill credentials, and signed bundles.
//!
//! Format (version 1), as `sealkit kit build` writes it:
//!
//! ```text
//! <kit>.tar.zst = [zstd skippable frame, magic 0x184D2A5B: the archive's .minisig text]
//!                 [zstd frames: a tar archive]
//!   tar:  sealkit                      the binary (0755)
//!         sealkit.cdx.json             its CycloneDX SBOM (required; docs/provenance.md)
//!         install.sh, sealkit.service, authority.yaml, README.md, prometheus/…  (kit/)
//!         trust/keys/<KEYID>.pub       bundle signing keys to pin on the host
//!         trust/site-ca.crt            the site CA certificate (optional)
//!         tls/…                        host TLS files for /etc/sealkit/tls (optional)
//!         drill/…                      drill credentials (optional)
//!         bundles/<name>.bundle.tar.zst(.minisig)
//!         SHA256SUMS                   `<sha256>  <path>` for every file above, sorted
//!         SHA256SUMS.minisig           minisign signature of SHA256SUMS
//! ```
//!
//! Two signatures, both minisign (prehashed, with a trusted comment), by the same key:
//!
//! 1. **the archive signature**, in a skippable frame at the very start, covers every byte
//!    after that frame; its trusted comment names the SHA-256 of `SHA256SUMS`. It is checked
//!    before anything is decompressed, so one changed byte anywhere is refused before a
//!    single entry is read. `zstd -d` and `tar --zstd` skip the frame, so the archive also
//!    unpacks with standard tools;
//! 2. **the SHA256SUMS signature**, inside, covers the list of files and their digests, so
//!    an unpacked directory can be checked with `sealkit kit verify DIR` (or with `minisign
//!    -V` + `sha256sum -c`). Every file must be listed with its digest; anything not listed is
//!    refused. The list must name the SBOM: a kit without it (removed, or from a sealkit that
//!    did not ship one) is refused.
//!
//! This module owns building and verifying kits (and extracting a verified kit). It does
//! not install anything (that is `kit/install.sh`) and does not print (`cli::kit` does).

#[cfg(test)]
mod tests;

use crate::bundle::manifest::{check_path, format_time, parse_time};
use crate::bundle::signing::{
    parse_public_key, public_key_id, public_key_text, secret_key_id, sign_data, verify_signature,
    TrustedKey, TrustedKeys,
};
use crate::bundle::{BundleError, NoProgress, Refusal};
use minisign::{PublicKey, SecretKey};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Kit format version (in both trusted comments).
pub const FORMAT_VERSION: u32 = 1;
/// The list of files and digests.
pub const SUMS_NAME: &str = "SHA256SUMS";
/// The signature of [`SUMS_NAME`].
pub const SUMS_SIGNATURE_NAME: &str = "SHA256SUMS.minisig";
/// The binary's path inside the kit.
pub const BINARY_PATH: &str = "sealkit";
/// The CycloneDX SBOM of the binary inside the kit (`scripts/build-static.sh` writes it
/// beside the binary under the same name, see [`default_sbom_path`]).
pub const SBOM_PATH: &str = "sealkit.cdx.json";
/// Where the pinned bundle signing keys go inside the kit.
pub const TRUST_KEYS_DIR: &str = "trust/keys";
/// The site CA certificate inside the kit.
pub const CA_CERT_PATH: &str = "trust/site-ca.crt";
/// Host TLS files inside the kit.
pub const TLS_DIR: &str = "tls";
/// Drill credentials inside the kit.
pub const DRILL_DIR: &str = "drill";
/// Signed bundles inside the kit.
pub const BUNDLES_DIR: &str = "bundles";
/// First word of the SHA256SUMS signature's trusted comment.
pub const SUMS_COMMENT_TAG: &str = "sealkit-kit";
/// First word of the archive signature's trusted comment.
pub const ARCHIVE_COMMENT_TAG: &str = "sealkit-kit-archive";
/// Magic of the zstd skippable frame carrying the archive signature (any of
/// `0x184D2A50..=0x184D2A5F` is a skippable frame; this one is sealkit's).
pub const SIGNATURE_FRAME_MAGIC: u32 = 0x184D_2A5B;
/// Magic of an ordinary zstd frame.
const ZSTD_FRAME_MAGIC: u32 = 0xFD2F_B528;
/// zstd window of the kit's frames (and the most a verifier accepts): 8 MiB.
pub const WINDOW_LOG: u32 = 23;
/// Where the kit carries the runbooks the alert rules point to (`docs/runbooks/`).
pub const RUNBOOKS_DIR: &str = "runbooks";

/// Top-level names the kit builder places itself; a kit directory must not use them.
const RESERVED: [&str; 9] = [
    RUNBOOKS_DIR,
    BINARY_PATH,
    SBOM_PATH,
    SUMS_NAME,
    SUMS_SIGNATURE_NAME,
    "trust",
    TLS_DIR,
    DRILL_DIR,
    BUNDLES_DIR,
];

#[derive(Debug, thiserror::Error)]
pub enum KitError {
    /// The kit was refused; nothing was extracted or installed.
    #[error("kit refused ({}): {reason}", .kind.code())]
    Refused { kind: Refusal, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// `kit build`: an input cannot go into a kit.
    #[error("{0}")]
    Build(String),
    /// A key could not be used.
    #[error(transparent)]
    Bundle(BundleError),
}

impl KitError {
    /// The process exit code: a refusal uses the bundle refusal codes (10–24), anything
    /// else is 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            KitError::Refused { kind, .. } => kind.exit_code(),
            _ => crate::bundle::EXIT_COULD_NOT_RUN,
        }
    }

    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            KitError::Refused { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

impl From<BundleError> for KitError {
    fn from(error: BundleError) -> Self {
        match error {
            BundleError::Refused { kind, reason } => KitError::Refused { kind, reason },
            other => KitError::Bundle(other),
        }
    }
}

fn refuse(kind: Refusal, reason: impl Into<String>) -> KitError {
    KitError::Refused {
        kind,
        reason: reason.into(),
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> KitError {
    let context = context.into();
    move |source| KitError::Io { context, source }
}

/// Caps applied while verifying a kit; each is a refusal, never a truncation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KitLimits {
    /// Largest accepted kit file.
    pub max_kit_bytes: u64,
    /// Largest accepted signature (archive frame or `SHA256SUMS.minisig`).
    pub max_signature_bytes: u64,
    /// Largest accepted `SHA256SUMS`.
    pub max_sums_bytes: u64,
    /// Most decompressed bytes (the whole tar stream).
    pub max_output_bytes: u64,
    /// Most entries (files and directories).
    pub max_entries: u64,
}

impl Default for KitLimits {
    fn default() -> Self {
        KitLimits {
            max_kit_bytes: 2 << 30,
            max_signature_bytes: 64 * 1024,
            max_sums_bytes: 1 << 20,
            max_output_bytes: 4 << 30,
            max_entries: 10_000,
        }
    }
}

/// How `kit build` writes the kit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One `.tar.zst` with the archive signature in front (zstd level 1–19).
    Archive { level: i32 },
    /// A directory (SHA256SUMS + signature + files), e.g. to burn onto read-only media.
    Directory,
}

/// What goes into a kit.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The `sealkit` binary (normally the static musl build).
    pub binary: PathBuf,
    /// The binary's CycloneDX SBOM (JSON), shipped as [`SBOM_PATH`].
    pub sbom: PathBuf,
    /// The kit files (`kit/` of the source tree): installer, unit, default configuration,
    /// alert rules, README. Dotfiles are skipped.
    pub kit_dir: PathBuf,
    /// Signed bundles; each needs its `.minisig` beside it.
    pub bundles: Vec<PathBuf>,
    /// Public keys to pin on the host; empty: the signing key's own public key.
    pub trusted_keys: Vec<PathBuf>,
    /// The site CA certificate (PEM).
    pub ca_cert: Option<PathBuf>,
    /// Host TLS files (server certificate and key, …) for `/etc/sealkit/tls`.
    pub tls_dir: Option<PathBuf>,
    /// Drill credentials (a `drill.env`, client certificates) for a sealed drill.
    pub drill_dir: Option<PathBuf>,
    /// The runbooks (`docs/runbooks/` of the source tree), shipped as [`RUNBOOKS_DIR`].
    pub runbooks: Option<PathBuf>,
    /// Unix seconds: the kit's creation time (archive mtimes, comments).
    pub created: i64,
    pub layout: Layout,
}

/// One file of a kit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KitFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub mode: u32,
}

/// What [`build`] wrote.
#[derive(Debug, Clone)]
pub struct BuildSummary {
    pub out: PathBuf,
    pub key_id: String,
    pub created: String,
    /// Every file listed in SHA256SUMS.
    pub files: Vec<KitFile>,
    pub sums_sha256: String,
    /// Ids of the keys in `trust/keys/`.
    pub trusted_key_ids: Vec<String>,
    /// Size of the written archive (0 for a directory).
    pub archive_bytes: u64,
}

/// What [`verify`] established.
#[derive(Debug, Clone)]
pub struct VerifiedKit {
    /// Key that signed SHA256SUMS (and the archive).
    pub key_id: String,
    pub created: String,
    pub files: Vec<KitFile>,
    pub sums_sha256: String,
    /// Whether the archive signature was checked (false for a directory).
    pub archive_signature: bool,
    /// Where the verified kit was extracted to.
    pub extracted: Option<PathBuf>,
}

impl VerifiedKit {
    /// The bundles the kit carries (paths inside the kit).
    pub fn bundles(&self) -> Vec<&str> {
        self.files
            .iter()
            .map(|f| f.path.as_str())
            .filter(|p| p.starts_with("bundles/") && p.ends_with(".tar.zst"))
            .collect()
    }
}

/// Options of [`verify`].
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Extract a verified archive into this directory (must not exist; created 0700 and
    /// renamed into place only once everything verified).
    pub extract: Option<PathBuf>,
    pub limits: KitLimits,
}

// ---------------------------------------------------------------------------------------
// Building

/// Where an input's bytes come from.
#[derive(Debug, Clone)]
enum Source {
    File(PathBuf),
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Input {
    path: String,
    source: Source,
    mode: u32,
}

/// `0755` when any execute bit is set, `0600` when neither group nor others may read (a
/// private key stays private inside the kit), else `0644`.
fn kit_mode(source_mode: u32) -> u32 {
    if source_mode & 0o111 != 0 {
        0o755
    } else if source_mode & 0o044 == 0 {
        0o600
    } else {
        0o644
    }
}

fn file_input(path: &str, source: &Path) -> Result<Input, KitError> {
    let meta =
        std::fs::metadata(source).map_err(io_err(format!("cannot read {}", source.display())))?;
    if !meta.is_file() {
        return Err(KitError::Build(format!(
            "{} is not a regular file",
            source.display()
        )));
    }
    check_path(path).map_err(|e| KitError::Build(format!("{}: {e}", source.display())))?;
    Ok(Input {
        path: path.to_string(),
        source: Source::File(source.to_path_buf()),
        mode: kit_mode(meta.permissions().mode()),
    })
}

/// Every regular file under `dir` (recursively, sorted, dotfiles skipped) as kit inputs
/// under `prefix`. Symbolic links and special files are refused.
fn dir_inputs(dir: &Path, prefix: &str) -> Result<Vec<Input>, KitError> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), prefix.to_string())];
    while let Some((current, at)) = stack.pop() {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&current)
            .map_err(io_err(format!("cannot read {}", current.display())))?
        {
            let entry = entry.map_err(io_err(format!("cannot read {}", current.display())))?;
            names.push(entry.file_name());
        }
        names.sort();
        for name in names {
            let Some(name) = name.to_str().map(str::to_string) else {
                return Err(KitError::Build(format!(
                    "{}: a file name is not UTF-8",
                    current.display()
                )));
            };
            if name.starts_with('.') {
                continue;
            }
            let path = current.join(&name);
            let kit_path = if at.is_empty() {
                name.clone()
            } else {
                format!("{at}/{name}")
            };
            let meta = std::fs::symlink_metadata(&path)
                .map_err(io_err(format!("cannot read {}", path.display())))?;
            if meta.is_dir() {
                stack.push((path, kit_path));
            } else if meta.is_file() {
                out.push(file_input(&kit_path, &path)?);
            } else {
                return Err(KitError::Build(format!(
                    "{} is a symbolic link or special file; a kit holds regular files only",
                    path.display()
                )));
            }
        }
    }
    Ok(out)
}

/// Assembles and signs a kit at `out` (which must not exist).
pub fn build(
    out: &Path,
    options: &BuildOptions,
    key: &SecretKey,
) -> Result<BuildSummary, KitError> {
    build_with_progress(out, options, key, &NoProgress)
}

/// As [`build`], reporting the archiving (the long step: compressing the binary) to
/// `progress`.
pub fn build_with_progress(
    out: &Path,
    options: &BuildOptions,
    key: &SecretKey,
    progress: &dyn crate::bundle::Progress,
) -> Result<BuildSummary, KitError> {
    if out.symlink_metadata().is_ok() {
        return Err(KitError::Build(format!(
            "{} exists; refusing to overwrite it",
            out.display()
        )));
    }
    let mut inputs = vec![file_input(BINARY_PATH, &options.binary)?];
    if let Some(input) = inputs.first_mut() {
        input.mode = 0o755;
    }
    check_sbom(&options.sbom)?;
    let mut sbom = file_input(SBOM_PATH, &options.sbom)?;
    sbom.mode = 0o644;
    inputs.push(sbom);

    for input in dir_inputs(&options.kit_dir, "")? {
        let top = input.path.split('/').next().unwrap_or_default();
        if RESERVED.contains(&top) {
            return Err(KitError::Build(format!(
                "{}/{}: `{top}` is reserved for what `kit build` adds itself",
                options.kit_dir.display(),
                input.path
            )));
        }
        inputs.push(input);
    }

    // Trust roots: the keys to pin (default: the signer's own) and the site CA.
    let mut shipped = TrustedKeys::default();
    if options.trusted_keys.is_empty() {
        let public = PublicKey::from_secret_key(key)
            .map_err(|e| KitError::Build(format!("cannot derive the public key: {e}")))?;
        shipped.push(TrustedKey {
            id: public_key_id(&public),
            key: public,
            source: PathBuf::from("(signing key)"),
        });
    }
    for file in &options.trusted_keys {
        let text = std::fs::read_to_string(file)
            .map_err(io_err(format!("cannot read {}", file.display())))?;
        let public = parse_public_key(&text)
            .map_err(|e| KitError::Build(format!("{}: {e}", file.display())))?;
        shipped.push(TrustedKey {
            id: public_key_id(&public),
            key: public,
            source: file.clone(),
        });
    }
    for trusted in shipped.keys() {
        inputs.push(Input {
            path: format!("{TRUST_KEYS_DIR}/{}.pub", trusted.id),
            source: Source::Bytes(public_key_text(&trusted.key).into_bytes()),
            mode: 0o644,
        });
    }
    if let Some(ca) = &options.ca_cert {
        let pem = std::fs::read(ca).map_err(io_err(format!("cannot read {}", ca.display())))?;
        let certs = openssl::x509::X509::stack_from_pem(&pem).unwrap_or_default();
        if certs.is_empty() {
            return Err(KitError::Build(format!(
                "{} is not a PEM certificate",
                ca.display()
            )));
        }
        let mut input = file_input(CA_CERT_PATH, ca)?;
        input.mode = 0o644;
        inputs.push(input);
    }
    if let Some(dir) = &options.tls_dir {
        inputs.extend(dir_inputs(dir, TLS_DIR)?);
    }
    if let Some(dir) = &options.drill_dir {
        inputs.extend(dir_inputs(dir, DRILL_DIR)?);
    }
    if let Some(dir) = &options.runbooks {
        for mut input in dir_inputs(dir, RUNBOOKS_DIR)? {
            input.mode = 0o644;
            inputs.push(input);
        }
    }

    // Bundles: each must verify against the keys the host will pin, or the kit would
    // install a host that refuses its own configuration.
    for bundle in &options.bundles {
        let name = bundle
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let signature = PathBuf::from(format!("{}.minisig", bundle.display()));
        let verify_options = crate::bundle::VerifyOptions::new(options.created);
        crate::bundle::verify(bundle, &shipped, &verify_options, &NoProgress).map_err(|e| {
            KitError::Build(format!(
                "bundle {} does not verify against the keys the kit pins ({}): {e}",
                bundle.display(),
                shipped.ids().join(", ")
            ))
        })?;
        let mut data = file_input(&format!("{BUNDLES_DIR}/{name}"), bundle)?;
        data.mode = 0o644;
        let mut sig = file_input(&format!("{BUNDLES_DIR}/{name}.minisig"), &signature)?;
        sig.mode = 0o644;
        inputs.push(data);
        inputs.push(sig);
    }

    inputs.sort_by(|a, b| a.path.cmp(&b.path));
    let mut seen = BTreeSet::new();
    for input in &inputs {
        if !seen.insert(input.path.clone()) {
            return Err(KitError::Build(format!(
                "{} would be in the kit twice",
                input.path
            )));
        }
    }
    // A path must not be both a file and a directory (`tls` file and `tls/x`).
    for input in &inputs {
        let mut prefix = String::new();
        for component in input.path.split('/') {
            if !prefix.is_empty() && seen.contains(&prefix) {
                return Err(KitError::Build(format!(
                    "{prefix} is both a file and a directory in the kit"
                )));
            }
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(component);
        }
    }

    let created = format_time(options.created);
    match options.layout {
        Layout::Archive { level } => build_archive(
            out,
            &inputs,
            &created,
            options.created,
            level,
            key,
            progress,
        ),
        Layout::Directory => build_directory(out, &inputs, &created, key),
    }
    .map(|(files, sums_sha256, archive_bytes)| BuildSummary {
        out: out.to_path_buf(),
        key_id: secret_key_id(key),
        created,
        files,
        sums_sha256,
        trusted_key_ids: shipped.ids(),
        archive_bytes,
    })
}

/// Where `scripts/build-static.sh` puts the SBOM of `binary`: beside it, named
/// `<binary>.cdx.json` (`…/release/sealkit` → `…/release/sealkit.cdx.json`).
pub fn default_sbom_path(binary: &Path) -> PathBuf {
    let mut name = binary.as_os_str().to_os_string();
    name.push(".cdx.json");
    PathBuf::from(name)
}

/// `kit build` ships only a CycloneDX JSON document as the SBOM.
fn check_sbom(path: &Path) -> Result<(), KitError> {
    let bytes = std::fs::read(path).map_err(io_err(format!(
        "cannot read the SBOM {} (scripts/build-static.sh writes it beside the binary; or give --sbom)",
        path.display()
    )))?;
    let document: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| KitError::Build(format!("the SBOM {} is not JSON: {e}", path.display())))?;
    if document.get("bomFormat").and_then(|v| v.as_str()) != Some("CycloneDX") {
        return Err(KitError::Build(format!(
            "{} is not a CycloneDX SBOM (no \"bomFormat\": \"CycloneDX\")",
            path.display()
        )));
    }
    Ok(())
}

use crate::archive::copy_hashing;

fn open_input(input: &Input) -> Result<(Box<dyn Read>, u64), KitError> {
    match &input.source {
        Source::File(path) => {
            let file =
                File::open(path).map_err(io_err(format!("cannot read {}", path.display())))?;
            let len = file
                .metadata()
                .map_err(io_err(format!("cannot read {}", path.display())))?
                .len();
            Ok((Box::new(file), len))
        }
        Source::Bytes(bytes) => Ok((Box::new(io::Cursor::new(bytes.clone())), bytes.len() as u64)),
    }
}

fn source_name(input: &Input) -> String {
    match &input.source {
        Source::File(path) => path.display().to_string(),
        Source::Bytes(_) => input.path.clone(),
    }
}

/// The SHA256SUMS text (`sha256sum -c` format) of `files`, sorted by path.
pub fn render_sums(files: &[KitFile]) -> String {
    let mut sorted: Vec<&KitFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    sorted
        .iter()
        .map(|f| format!("{}  {}\n", f.sha256, f.path))
        .collect()
}

/// The trusted comment of the SHA256SUMS signature.
pub fn sums_comment(created: &str, files: usize) -> String {
    format!("{SUMS_COMMENT_TAG} format={FORMAT_VERSION} created={created} files={files}")
}

/// The trusted comment of the archive signature.
pub fn archive_comment(created: &str, sums_sha256: &str) -> String {
    format!(
        "{ARCHIVE_COMMENT_TAG} format={FORMAT_VERSION} created={created} sums=sha256:{sums_sha256}"
    )
}

/// The untrusted comment of the SHA256SUMS signature (fixed, so that no byte of a kit is
/// outside what is checked).
fn sums_untrusted(key_id: &str) -> String {
    format!("sealkit offline kit SHA256SUMS signed by {key_id}")
}

/// The untrusted comment of the archive signature.
fn archive_untrusted(key_id: &str) -> String {
    format!("sealkit offline kit signed by {key_id}")
}

fn sign_sums(sums: &str, created: &str, files: usize, key: &SecretKey) -> Result<String, KitError> {
    Ok(sign_data(
        key,
        io::Cursor::new(sums.as_bytes()),
        &sums_comment(created, files),
        &sums_untrusted(&secret_key_id(key)),
    )?)
}

/// A verified signature must also be byte for byte what `kit build` writes: minisign
/// leaves the untrusted comment (and some whitespace) outside the signature, and a kit
/// accepts no byte that nothing checks.
fn check_canonical(what: &str, text: &str, untrusted: &str) -> Result<(), KitError> {
    let parsed = minisign::SignatureBox::from_string(text)
        .map_err(|e| refuse(Refusal::BadSignature, format!("{what}: {e}")))?;
    let comment = parsed.untrusted_comment().unwrap_or_default();
    if comment != untrusted || parsed.to_string() != text {
        return Err(refuse(
            Refusal::BadSignature,
            format!("{what} is not in the form `sealkit kit build` writes (altered outside the signed part)"),
        ));
    }
    Ok(())
}

/// A sibling of `path` for temporary output: `<name>.<tag>-<pid>`.
fn sibling(path: &Path, tag: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "kit".into());
    path.with_file_name(format!(".{name}.{tag}-{}", std::process::id()))
}

fn create_new(path: &Path, mode: u32) -> Result<File, KitError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err(format!("cannot create {}", path.display())))
}

/// Removes a temporary file or directory when dropped, unless disarmed.
struct Cleanup {
    path: Option<PathBuf>,
}

impl Cleanup {
    fn new(path: &Path) -> Self {
        Cleanup {
            path: Some(path.to_path_buf()),
        }
    }
    fn disarm(&mut self) {
        self.path = None;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            if path.is_dir() {
                let _ = make_writable(&path);
                let _ = std::fs::remove_dir_all(&path);
            } else {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

fn make_writable(dir: &Path) -> io::Result<()> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            make_writable(&entry.path())?;
        }
    }
    Ok(())
}

fn sync_parent(path: &Path) {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(dir) = File::open(parent) {
            let _ = dir.sync_all();
        }
    }
}

type Built = (Vec<KitFile>, String, u64);

/// Reports every byte read to a progress display.
struct Counted<'a, R> {
    inner: R,
    progress: &'a dyn crate::bundle::Progress,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

fn build_archive(
    out: &Path,
    inputs: &[Input],
    created: &str,
    created_unix: i64,
    level: i32,
    key: &SecretKey,
    progress: &dyn crate::bundle::Progress,
) -> Result<Built, KitError> {
    let total: u64 = inputs
        .iter()
        .map(|input| match &input.source {
            Source::File(path) => std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
            Source::Bytes(bytes) => bytes.len() as u64,
        })
        .sum();
    progress.start("compressing", total);
    let compressed_path = sibling(out, "compressing");
    // Removed when this function returns, whatever happens.
    let _compressed_guard = Cleanup::new(&compressed_path);
    let file = create_new(&compressed_path, 0o600)?;
    let werr = || io_err(format!("cannot write {}", compressed_path.display()));
    let mut encoder =
        zstd::stream::write::Encoder::new(BufWriter::new(file), level).map_err(werr())?;
    encoder.window_log(WINDOW_LOG).map_err(werr())?;
    encoder.include_checksum(true).map_err(werr())?;
    let mut tar = tar::Builder::new(encoder);
    let mtime = u64::try_from(created_unix).unwrap_or(0);

    let mut files = Vec::with_capacity(inputs.len());
    for input in inputs {
        let (reader, len) = open_input(input)?;
        let mut header = tar_header(len, input.mode, mtime);
        let counted = Counted {
            inner: reader,
            progress,
        };
        let mut hashing = crate::archive::HashingReader::new(counted);
        tar.append_data(&mut header, &input.path, &mut hashing)
            .map_err(io_err(format!("cannot archive {}", source_name(input))))?;
        let bytes = hashing.bytes;
        let sha256 = hashing.finish_hex();
        if bytes != len {
            return Err(KitError::Build(format!(
                "{} changed size while it was being archived; build again",
                source_name(input)
            )));
        }
        files.push(KitFile {
            path: input.path.clone(),
            size: len,
            sha256,
            mode: input.mode,
        });
    }
    progress.finish();
    let sums = render_sums(&files);
    let sums_sha256 = crate::bundle::sha256_hex(sums.as_bytes());
    let sums_signature = sign_sums(&sums, created, files.len(), key)?;
    for (name, bytes) in [
        (SUMS_NAME, sums.as_bytes()),
        (SUMS_SIGNATURE_NAME, sums_signature.as_bytes()),
    ] {
        let mut header = tar_header(bytes.len() as u64, 0o644, mtime);
        tar.append_data(&mut header, name, bytes).map_err(werr())?;
    }
    let encoder = tar.into_inner().map_err(werr())?;
    let writer = encoder.finish().map_err(werr())?;
    let file = writer.into_inner().map_err(|e| KitError::Io {
        context: format!("cannot write {}", compressed_path.display()),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(werr())?;
    drop(file);

    // The archive signature, over exactly the compressed bytes.
    let compressed = File::open(&compressed_path).map_err(werr())?;
    let signature = sign_data(
        key,
        compressed,
        &archive_comment(created, &sums_sha256),
        &archive_untrusted(&secret_key_id(key)),
    )?;
    let frame_len = u32::try_from(signature.len())
        .map_err(|_| KitError::Build("the signature is too large".into()))?;

    let partial = sibling(out, "partial");
    let mut partial_guard = Cleanup::new(&partial);
    let perr = || io_err(format!("cannot write {}", partial.display()));
    let mut writer = BufWriter::new(create_new(&partial, 0o644)?);
    writer
        .write_all(&SIGNATURE_FRAME_MAGIC.to_le_bytes())
        .map_err(perr())?;
    writer.write_all(&frame_len.to_le_bytes()).map_err(perr())?;
    writer.write_all(signature.as_bytes()).map_err(perr())?;
    let mut compressed = File::open(&compressed_path).map_err(werr())?;
    io::copy(&mut compressed, &mut writer).map_err(perr())?;
    let file = writer.into_inner().map_err(|e| KitError::Io {
        context: format!("cannot write {}", partial.display()),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(perr())?;
    let archive_bytes = file.metadata().map_err(perr())?.len();
    drop(file);
    std::fs::rename(&partial, out).map_err(io_err(format!("cannot create {}", out.display())))?;
    partial_guard.disarm();
    sync_parent(out);
    Ok((files, sums_sha256, archive_bytes))
}

fn tar_header(size: u64, mode: u32, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(mode);
    header.set_mtime(mtime);
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn build_directory(
    out: &Path,
    inputs: &[Input],
    created: &str,
    key: &SecretKey,
) -> Result<Built, KitError> {
    let partial = sibling(out, "partial");
    let mut guard = Cleanup::new(&partial);
    create_dir(&partial, 0o700)?;
    let mut files = Vec::with_capacity(inputs.len());
    let mut extractor = crate::archive::Extractor::new(&partial);
    for input in inputs {
        let (reader, len) = open_input(input)?;
        let target = partial.join(&input.path);
        let mut file = extractor.create_file(&input.path, input.mode)?;
        let (bytes, sha256) = copy_hashing(reader, &mut file)
            .map_err(io_err(format!("cannot copy {}", source_name(input))))?;
        file.sync_all()
            .map_err(io_err(format!("cannot write {}", target.display())))?;
        if bytes != len {
            return Err(KitError::Build(format!(
                "{} changed size while it was being copied; build again",
                source_name(input)
            )));
        }
        files.push(KitFile {
            path: input.path.clone(),
            size: len,
            sha256,
            mode: input.mode,
        });
    }
    let sums = render_sums(&files);
    let sums_sha256 = crate::bundle::sha256_hex(sums.as_bytes());
    let signature = sign_sums(&sums, created, files.len(), key)?;
    for (name, bytes) in [
        (SUMS_NAME, sums.as_bytes()),
        (SUMS_SIGNATURE_NAME, signature.as_bytes()),
    ] {
        extractor.write_file(name, 0o644, bytes)?;
    }
    extractor.finish()?;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))
        .map_err(io_err(format!("cannot chmod {}", partial.display())))?;
    std::fs::rename(&partial, out).map_err(io_err(format!("cannot create {}", out.display())))?;
    guard.disarm();
    sync_parent(out);
    Ok((files, sums_sha256, 0))
}

fn create_dir(path: &Path, mode: u32) -> Result<(), KitError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(io_err(format!("cannot create {}", path.display())))
}

// ---------------------------------------------------------------------------------------
// Verifying

/// A file seen from `start` on: position 0 is byte `start` of the file.
struct Window<R> {
    inner: R,
    start: u64,
}

impl<R: Read> Read for Window<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<R: Seek> Seek for Window<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let absolute = match pos {
            SeekFrom::Start(n) => self
                .inner
                .seek(SeekFrom::Start(self.start.saturating_add(n)))?,
            other => self.inner.seek(other)?,
        };
        if absolute < self.start {
            self.inner.seek(SeekFrom::Start(self.start))?;
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the signed data",
            ));
        }
        Ok(absolute - self.start)
    }
}

/// Parses `<tag> format=1 created=<t> <last>=<value>` exactly as rendered.
fn parse_comment<'a>(text: &'a str, tag: &str, last: &str) -> Result<(String, &'a str), String> {
    let mut words = text.split(' ');
    if words.next() != Some(tag) {
        return Err(format!(
            "the trusted comment does not start with `{tag}` (not a sealkit kit signature)"
        ));
    }
    let mut field = |name: &str| -> Result<&'a str, String> {
        words
            .next()
            .and_then(|w| w.strip_prefix(name))
            .and_then(|w| w.strip_prefix('='))
            .ok_or_else(|| format!("the trusted comment lacks `{name}=` where expected"))
    };
    if field("format")? != FORMAT_VERSION.to_string() {
        return Err(format!("the kit format is not {FORMAT_VERSION}"));
    }
    let created = field("created")?.to_string();
    parse_time(&created)?;
    let value = field(last)?;
    if words.next().is_some() {
        return Err("the trusted comment has trailing words".into());
    }
    Ok((created, value))
}

/// A parsed, signed SHA256SUMS.
struct Sums {
    key_id: String,
    created: String,
    sha256: String,
    /// path → digest
    entries: BTreeMap<String, String>,
}

/// Checks the SHA256SUMS signature and parses it strictly.
fn check_sums(sums: &[u8], signature: &str, keys: &TrustedKeys) -> Result<Sums, KitError> {
    let signed =
        verify_signature(io::Cursor::new(sums), signature, keys).map_err(
            |e| match KitError::from(e) {
                KitError::Refused { kind, reason } => {
                    refuse(kind, format!("{SUMS_SIGNATURE_NAME}: {reason}"))
                }
                other => other,
            },
        )?;
    check_canonical(
        SUMS_SIGNATURE_NAME,
        signature,
        &sums_untrusted(&signed.key_id),
    )?;
    let (created, files) = parse_comment(&signed.trusted_comment, SUMS_COMMENT_TAG, "files")
        .map_err(|e| refuse(Refusal::BadComment, format!("{SUMS_SIGNATURE_NAME}: {e}")))?;
    if signed.trusted_comment != sums_comment(&created, files.parse().unwrap_or(usize::MAX)) {
        return Err(refuse(
            Refusal::BadComment,
            format!("{SUMS_SIGNATURE_NAME}: the trusted comment is not in canonical form"),
        ));
    }
    let text = std::str::from_utf8(sums).map_err(|_| {
        refuse(
            Refusal::ContentMismatch,
            format!("{SUMS_NAME} is not UTF-8"),
        )
    })?;
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(refuse(
            Refusal::ContentMismatch,
            format!("{SUMS_NAME} does not end with a newline"),
        ));
    }
    let mut entries = BTreeMap::new();
    let mut previous: Option<&str> = None;
    for (number, line) in text.lines().enumerate() {
        let bad = |why: &str| {
            refuse(
                Refusal::ContentMismatch,
                format!("{SUMS_NAME} line {}: {why}", number + 1),
            )
        };
        let (digest, path) = line
            .split_once("  ")
            .ok_or_else(|| bad("not `<sha256>  <path>`"))?;
        if digest.len() != 64
            || !digest
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(bad("not a lowercase hex SHA-256"));
        }
        check_path(path).map_err(|e| bad(&e))?;
        if path == SUMS_NAME || path == SUMS_SIGNATURE_NAME {
            return Err(bad("lists the signature files themselves"));
        }
        if previous.is_some_and(|p| p >= path) {
            return Err(bad("not sorted by path, or a path twice"));
        }
        previous = Some(path);
        entries.insert(path.to_string(), digest.to_string());
    }
    if !entries.contains_key(SBOM_PATH) {
        return Err(refuse(
            Refusal::ContentMismatch,
            format!("{SUMS_NAME} does not list {SBOM_PATH}: a kit must carry the SBOM of its binary (removed, or built by a sealkit without SBOMs)"),
        ));
    }
    if files != entries.len().to_string() {
        return Err(refuse(
            Refusal::ContentMismatch,
            format!(
                "{SUMS_NAME} lists {} file(s); its signature says {files}",
                entries.len()
            ),
        ));
    }
    Ok(Sums {
        key_id: signed.key_id,
        created,
        sha256: signed.sha256,
        entries,
    })
}

/// Every file found must be listed with the same digest, every listed file found.
fn check_contents(
    found: &BTreeMap<String, KitFile>,
    sums: &Sums,
) -> Result<Vec<KitFile>, KitError> {
    for (path, file) in found {
        match sums.entries.get(path) {
            None => {
                return Err(refuse(
                    Refusal::ContentMismatch,
                    format!("{path} is not listed in {SUMS_NAME}; a kit holds nothing unlisted"),
                ))
            }
            Some(digest) if digest != &file.sha256 => {
                return Err(refuse(
                    Refusal::ContentMismatch,
                    format!(
                    "{path}: sha256 {} does not match {SUMS_NAME} ({digest}); the file was altered",
                    file.sha256
                ),
                ))
            }
            Some(_) => {}
        }
    }
    if let Some(missing) = sums.entries.keys().find(|p| !found.contains_key(*p)) {
        return Err(refuse(
            Refusal::ContentMismatch,
            format!("{missing} is listed in {SUMS_NAME} but missing from the kit"),
        ));
    }
    Ok(found.values().cloned().collect())
}

/// Verifies a kit (a `.tar.zst` from `kit build`, or a kit directory) against `keys`, and
/// optionally extracts a verified archive. Nothing is written unless everything verified.
pub fn verify(
    path: &Path,
    keys: &TrustedKeys,
    options: &VerifyOptions,
) -> Result<VerifiedKit, KitError> {
    if keys.is_empty() {
        return Err(refuse(
            Refusal::UntrustedKey,
            "no trusted key given: a kit is only accepted against a pinned public key",
        ));
    }
    let meta =
        std::fs::metadata(path).map_err(io_err(format!("cannot read {}", path.display())))?;
    if meta.is_dir() {
        if options.extract.is_some() {
            return Err(KitError::Build(
                "a kit directory is used in place; --extract applies to a kit archive".into(),
            ));
        }
        return verify_directory(path, keys, &options.limits);
    }
    verify_archive(path, meta.len(), keys, options)
}

fn read_capped(reader: &mut impl Read, cap: u64, what: &str) -> Result<Vec<u8>, KitError> {
    let mut bytes = Vec::new();
    reader
        .take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| refuse(Refusal::CorruptArchive, format!("{what}: {e}")))?;
    if bytes.len() as u64 > cap {
        return Err(refuse(
            Refusal::TooLarge,
            format!("{what} is larger than {cap} bytes"),
        ));
    }
    Ok(bytes)
}

fn verify_archive(
    path: &Path,
    len: u64,
    keys: &TrustedKeys,
    options: &VerifyOptions,
) -> Result<VerifiedKit, KitError> {
    let limits = &options.limits;
    if len > limits.max_kit_bytes {
        return Err(refuse(
            Refusal::TooLarge,
            format!(
                "{} is {len} bytes; at most {} are accepted",
                path.display(),
                limits.max_kit_bytes
            ),
        ));
    }
    let open = || File::open(path).map_err(io_err(format!("cannot read {}", path.display())));

    // 1. The archive signature frame, then the signature over everything after it —
    //    before a single byte is decompressed.
    let mut file = open()?;
    let mut head = [0u8; 8];
    file.read_exact(&mut head).map_err(|_| {
        refuse(
            Refusal::CorruptArchive,
            format!("{} is too short to be a kit", path.display()),
        )
    })?;
    let [m0, m1, m2, m3, l0, l1, l2, l3] = head;
    let magic = u32::from_le_bytes([m0, m1, m2, m3]);
    let frame_len = u64::from(u32::from_le_bytes([l0, l1, l2, l3]));
    if magic == ZSTD_FRAME_MAGIC {
        return Err(refuse(
            Refusal::BadSignature,
            format!(
                "{} is a plain .tar.zst without the kit signature frame (not made by `sealkit kit build`, or stripped)",
                path.display()
            ),
        ));
    }
    if magic != SIGNATURE_FRAME_MAGIC {
        return Err(refuse(
            Refusal::BadSignature,
            format!(
                "{} does not start with the kit signature frame",
                path.display()
            ),
        ));
    }
    if frame_len > limits.max_signature_bytes || 8 + frame_len > len {
        return Err(refuse(
            Refusal::BadSignature,
            format!("the kit signature frame claims {frame_len} bytes"),
        ));
    }
    let mut signature = vec![0u8; usize::try_from(frame_len).unwrap_or(0)];
    file.read_exact(&mut signature).map_err(|_| {
        refuse(
            Refusal::BadSignature,
            "the kit signature frame is truncated",
        )
    })?;
    let signature = String::from_utf8(signature)
        .map_err(|_| refuse(Refusal::BadSignature, "the kit signature is not text"))?;
    let start = 8 + frame_len;
    file.seek(SeekFrom::Start(start))
        .map_err(io_err(format!("cannot read {}", path.display())))?;
    let signed = verify_signature(Window { inner: file, start }, &signature, keys)?;
    check_canonical(
        "the kit signature",
        &signature,
        &archive_untrusted(&signed.key_id),
    )?;
    let (created, sums_digest) =
        parse_comment(&signed.trusted_comment, ARCHIVE_COMMENT_TAG, "sums")
            .map_err(|e| refuse(Refusal::BadComment, e))?;
    let sums_digest = sums_digest
        .strip_prefix("sha256:")
        .filter(|d| d.len() == 64)
        .ok_or_else(|| {
            refuse(
                Refusal::BadComment,
                "the comment's sums digest is not sha256:<hex>",
            )
        })?
        .to_string();
    if signed.trusted_comment != archive_comment(&created, &sums_digest) {
        return Err(refuse(
            Refusal::BadComment,
            "the trusted comment is not in canonical form",
        ));
    }

    // 2. Decompress and walk (into a private staging directory when extracting).
    let staging = match &options.extract {
        Some(dest) => {
            if dest.symlink_metadata().is_ok() {
                return Err(KitError::Build(format!(
                    "{} exists; extract into a new directory",
                    dest.display()
                )));
            }
            let staging = sibling(dest, "partial");
            create_dir(&staging, 0o700)?;
            Some(staging)
        }
        None => None,
    };
    let mut staging_guard = staging.as_deref().map(Cleanup::new);
    let mut file = open()?;
    file.seek(SeekFrom::Start(start))
        .map_err(io_err(format!("cannot read {}", path.display())))?;
    let mut compressed = crate::archive::HashingReader::new(file);
    let walked = walk(&mut compressed, staging.as_deref(), limits)?;
    let compressed_sha256 = compressed.finish_hex();
    if compressed_sha256 != signed.sha256 {
        return Err(refuse(
            Refusal::CorruptArchive,
            "the kit changed while it was being verified",
        ));
    }

    // 3. SHA256SUMS: the one the archive signature names, signed itself, listing exactly
    //    the files found.
    let (Some(sums), Some(sums_signature)) = (walked.sums, walked.sums_signature) else {
        return Err(refuse(
            Refusal::ContentMismatch,
            format!("the kit has no {SUMS_NAME} or no {SUMS_SIGNATURE_NAME}"),
        ));
    };
    if crate::bundle::sha256_hex(&sums) != sums_digest {
        return Err(refuse(
            Refusal::ContentMismatch,
            format!("{SUMS_NAME} is not the one the archive signature names"),
        ));
    }
    let sums_signature = String::from_utf8(sums_signature).map_err(|_| {
        refuse(
            Refusal::BadSignature,
            format!("{SUMS_SIGNATURE_NAME} is not text"),
        )
    })?;
    let sums = check_sums(&sums, &sums_signature, keys)?;
    if sums.key_id != signed.key_id || sums.created != created {
        return Err(refuse(
            Refusal::ContentMismatch,
            "the archive and SHA256SUMS signatures disagree (key or creation time)",
        ));
    }
    let files = check_contents(&walked.files, &sums)?;

    // 4. Only now does the extracted tree appear under its name.
    let extracted = match (&options.extract, &staging) {
        (Some(dest), Some(staging)) => {
            std::fs::rename(staging, dest)
                .map_err(io_err(format!("cannot create {}", dest.display())))?;
            if let Some(guard) = staging_guard.as_mut() {
                guard.disarm();
            }
            sync_parent(dest);
            Some(dest.clone())
        }
        _ => None,
    };
    Ok(VerifiedKit {
        key_id: signed.key_id,
        created,
        files,
        sums_sha256: sums.sha256,
        archive_signature: true,
        extracted,
    })
}

/// The kit checks behind the archive signature, for the fuzz target only: walks the
/// compressed tar stream `compressed` as `verify` does after the signature verified
/// (`walk`, then the SHA256SUMS checks when the archive carries them). Reaching this code
/// through `verify` costs an Ed25519 signature per input, which under coverage
/// instrumentation held the target to ~130 executions/s (docs/fuzzing.md).
#[cfg(fuzzing)]
#[doc(hidden)]
pub fn fuzz_walk(
    compressed: &[u8],
    keys: &TrustedKeys,
    limits: &KitLimits,
) -> Result<usize, KitError> {
    let walked = walk(compressed, None, limits)?;
    if let (Some(sums), Some(signature)) = (walked.sums, walked.sums_signature) {
        let signature =
            String::from_utf8(signature).map_err(|_| refuse(Refusal::BadSignature, "not text"))?;
        let sums = check_sums(&sums, &signature, keys)?;
        check_contents(&walked.files, &sums)?;
    }
    Ok(walked.files.len())
}

struct Walked {
    files: BTreeMap<String, KitFile>,
    sums: Option<Vec<u8>>,
    sums_signature: Option<Vec<u8>>,
}

impl From<crate::archive::ArchiveError> for KitError {
    fn from(error: crate::archive::ArchiveError) -> Self {
        match error {
            crate::archive::ArchiveError::Io { context, source } => {
                KitError::Io { context, source }
            }
            other => KitError::from(BundleError::from(other)),
        }
    }
}

/// Decompresses and walks the kit's tar stream through the one safe archive reader,
/// extracting into `staging` when given; every file hashed, SHA256SUMS and its signature
/// kept aside.
fn walk(
    compressed: impl Read,
    staging: Option<&Path>,
    limits: &KitLimits,
) -> Result<Walked, KitError> {
    let archive_limits = crate::archive::Limits {
        max_window_log: WINDOW_LOG,
        max_output_bytes: limits.max_output_bytes,
        max_ratio: None,
        ratio_floor_bytes: 0,
        max_entries: limits.max_entries,
    };
    let mut walked = Walked {
        files: BTreeMap::new(),
        sums: None,
        sums_signature: None,
    };
    let mut extractor = staging.map(crate::archive::Extractor::new);
    crate::archive::walk(compressed, u64::MAX, &archive_limits, |entry| {
        let name = entry.path.to_string();
        if entry.kind == crate::archive::Kind::Directory {
            if let Some(extractor) = extractor.as_mut() {
                extractor.create_dirs(&name, true)?;
            }
            return Ok::<(), KitError>(());
        }
        let mode = entry.mode;
        if !matches!(mode, 0o600 | 0o644 | 0o755) {
            return Err(refuse(
                Refusal::UnsafeEntry,
                format!("{name:?}: mode {mode:04o} (only 0600, 0644, 0755)"),
            ));
        }
        if name == SUMS_NAME || name == SUMS_SIGNATURE_NAME {
            let cap = if name == SUMS_NAME {
                limits.max_sums_bytes
            } else {
                limits.max_signature_bytes
            };
            if entry.size > cap {
                return Err(refuse(
                    Refusal::TooLarge,
                    format!("{name} is larger than {cap} bytes"),
                ));
            }
            let bytes = entry.read_capped(cap)?;
            if let Some(extractor) = extractor.as_mut() {
                extractor.write_file(&name, 0o644, &bytes)?;
            }
            if name == SUMS_NAME {
                walked.sums = Some(bytes);
            } else {
                walked.sums_signature = Some(bytes);
            }
            return Ok(());
        }
        let sha256 = match extractor.as_mut() {
            Some(extractor) => {
                let mut file = extractor.create_file(&name, mode)?;
                let digest = entry.copy_hashing(&mut file)?;
                file.sync_all()
                    .map_err(io_err(format!("cannot write {name}")))?;
                digest
            }
            None => entry.copy_hashing(&mut io::sink())?,
        };
        walked.files.insert(
            name.clone(),
            KitFile {
                path: name,
                size: entry.size,
                sha256,
                mode,
            },
        );
        Ok(())
    })?;
    if let Some(extractor) = &extractor {
        extractor.finish()?;
    }
    Ok(walked)
}

fn verify_directory(
    dir: &Path,
    keys: &TrustedKeys,
    limits: &KitLimits,
) -> Result<VerifiedKit, KitError> {
    let read = |name: &str, cap: u64| -> Result<Vec<u8>, KitError> {
        let path = dir.join(name);
        let meta = std::fs::symlink_metadata(&path).map_err(|_| {
            refuse(
                Refusal::ContentMismatch,
                format!("{} has no {name}", dir.display()),
            )
        })?;
        if !meta.is_file() {
            return Err(refuse(
                Refusal::UnsafeEntry,
                format!("{name} is not a regular file"),
            ));
        }
        let mut file =
            File::open(&path).map_err(io_err(format!("cannot read {}", path.display())))?;
        read_capped(&mut file, cap, name)
    };
    let sums_bytes = read(SUMS_NAME, limits.max_sums_bytes)?;
    let signature = String::from_utf8(read(SUMS_SIGNATURE_NAME, limits.max_signature_bytes)?)
        .map_err(|_| {
            refuse(
                Refusal::BadSignature,
                format!("{SUMS_SIGNATURE_NAME} is not text"),
            )
        })?;
    let sums = check_sums(&sums_bytes, &signature, keys)?;

    let mut found = BTreeMap::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    let mut count = 0u64;
    while let Some((current, at)) = stack.pop() {
        for entry in std::fs::read_dir(&current)
            .map_err(io_err(format!("cannot read {}", current.display())))?
        {
            let entry = entry.map_err(io_err(format!("cannot read {}", current.display())))?;
            count += 1;
            if count > limits.max_entries {
                return Err(refuse(
                    Refusal::DecompressionLimit,
                    format!("more than {} entries", limits.max_entries),
                ));
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let kit_path = if at.is_empty() {
                name.clone()
            } else {
                format!("{at}/{name}")
            };
            if at.is_empty() && (name == SUMS_NAME || name == SUMS_SIGNATURE_NAME) {
                continue;
            }
            check_path(&kit_path).map_err(|e| refuse(Refusal::UnsafeEntry, e))?;
            let meta = entry
                .path()
                .symlink_metadata()
                .map_err(io_err(format!("cannot read {}", entry.path().display())))?;
            if meta.is_dir() {
                stack.push((entry.path(), kit_path));
            } else if meta.is_file() {
                let file = File::open(entry.path())
                    .map_err(io_err(format!("cannot read {}", entry.path().display())))?;
                let (size, sha256) = copy_hashing(file, &mut io::sink())
                    .map_err(io_err(format!("cannot read {}", entry.path().display())))?;
                found.insert(
                    kit_path.clone(),
                    KitFile {
                        path: kit_path,
                        size,
                        sha256,
                        mode: meta.permissions().mode() & 0o7777,
                    },
                );
            } else {
                return Err(refuse(
                    Refusal::UnsafeEntry,
                    format!("{kit_path} is a symbolic link or special file"),
                ));
            }
        }
    }
    let files = check_contents(&found, &sums)?;
    Ok(VerifiedKit {
        key_id: sums.key_id,
        created: sums.created,
        files,
        sums_sha256: sums.sha256,
        archive_signature: false,
        extracted: None,
    })
}

/// How an ELF executable is linked, as far as `kit build` cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linkage {
    /// No program interpreter: runs on a host with no libraries (static or static-pie).
    Static,
    /// Needs a dynamic loader (`PT_INTERP`) and the libraries it names.
    Dynamic,
    /// Not a 64-bit little-endian ELF executable.
    NotElf,
}

/// Reads the ELF program headers of `bytes` and says whether a loader is needed.
pub fn linkage(bytes: &[u8]) -> Linkage {
    const PT_INTERP: u32 = 3;
    let u16_at = |at: usize| {
        bytes
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        bytes
            .get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    // ELFCLASS64, ELFDATA2LSB.
    if bytes.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return Linkage::NotElf;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return Linkage::NotElf;
    };
    for i in 0..usize::from(phnum) {
        let Some(at) = usize::try_from(phoff)
            .ok()
            .and_then(|o| o.checked_add(i * usize::from(phentsize)))
        else {
            return Linkage::NotElf;
        };
        match u32_at(at) {
            Some(PT_INTERP) => return Linkage::Dynamic,
            Some(_) => {}
            None => return Linkage::NotElf,
        }
    }
    Linkage::Static
}
