//! `sealkit kit …`: build the offline kit on the connected side, verify (and unpack) it on
//! the sealed host. Front end of [`crate::kit`]: arguments, passphrase, printing, exit
//! codes (a refusal exits with the bundle refusal codes, e.g. 11 bad signature, 12
//! untrusted key, 22 content mismatch). No kit logic lives here.

use crate::bundle::{self, Passphrase, TrustedKeys};
use crate::kit::{self, BuildOptions, KitError, Layout, VerifyOptions};
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum KitCommand {
    /// Assemble and sign an offline kit: binary, kit files, trust roots, signed bundles,
    /// SHA256SUMS and signatures, as one .tar.zst (or a directory with --dir)
    Build(BuildArgs),
    /// Verify a kit (archive or directory) against a trusted key before anything is
    /// installed; with --extract, unpack a verified archive into a new directory
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The kit to write (never overwritten), e.g. sealkit-kit-site-a.tar.zst
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Write a directory instead of a .tar.zst
    #[arg(long)]
    dir: bool,
    /// The sealkit binary to ship (normally the static musl build); default: this one
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
    /// The binary's CycloneDX SBOM; default: beside the binary, <binary>.cdx.json (where
    /// scripts/build-static.sh writes it)
    #[arg(long, value_name = "FILE")]
    sbom: Option<PathBuf>,
    /// The kit files: installer, systemd unit, default authority.yaml, alert rules, README
    #[arg(long, value_name = "DIR", default_value = "kit")]
    kit_dir: PathBuf,
    /// A signed bundle to carry (its FILE.minisig beside it); repeatable
    #[arg(long, value_name = "FILE")]
    bundle: Vec<PathBuf>,
    /// A bundle signing public key the host pins (repeatable); default: the key of --secret-key
    #[arg(long, value_name = "KEY.pub")]
    trusted_key: Vec<PathBuf>,
    /// The site CA certificate (installed as /etc/sealkit/site-ca.crt)
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// Host TLS files for /etc/sealkit/tls (server.crt, server.key, …). The kit then holds
    /// a private key: carry it like one
    #[arg(long, value_name = "DIR")]
    tls_dir: Option<PathBuf>,
    /// Drill credentials (drill.env, client certificates) for an acceptance drill on the host
    #[arg(long, value_name = "DIR")]
    drill_dir: Option<PathBuf>,
    /// minisign secret key that signs the kit (the bundle signing key)
    #[arg(long, value_name = "FILE")]
    secret_key: PathBuf,
    /// Read the passphrase from this file; else $SEALKIT_BUNDLE_PASSPHRASE, else a prompt
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// The runbooks the alert rules point to, shipped as runbooks/ [default: docs/runbooks
    /// when it exists]
    #[arg(long, value_name = "DIR")]
    runbooks: Option<PathBuf>,
    /// Pack a dynamically linked binary anyway (the kit promises a static one: a sealed
    /// host may lack the libraries it needs)
    #[arg(long)]
    allow_dynamic: bool,
    /// zstd level of the archive
    #[arg(long, default_value_t = 19, value_parser = clap::value_parser!(i32).range(1..=19))]
    level: i32,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The kit: a .tar.zst from `kit build`, or an unpacked kit directory
    #[arg(value_name = "KIT")]
    kit: PathBuf,
    /// Trusted public keys (files or directories of *.pub), carried apart from the kit
    #[arg(long, value_name = "KEY.pub", num_args = 1.., required = true)]
    trusted_keys: Vec<PathBuf>,
    /// Unpack the verified archive into this new directory (0700; appears only when
    /// everything verified)
    #[arg(long, value_name = "DIR")]
    extract: Option<PathBuf>,
    /// Largest accepted kit, in bytes
    #[arg(long, value_name = "BYTES")]
    max_size: Option<u64>,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

/// Runs a `kit` subcommand; a kit refusal exits with its own code and one line saying why.
pub fn run(command: KitCommand) -> anyhow::Result<ExitCode> {
    crate::telemetry::init_cli_logging();
    let result = match command {
        KitCommand::Build(args) => build(args),
        KitCommand::Verify(args) => verify(args),
    };
    match result {
        Ok(code) => Ok(code),
        Err(error) => match error.downcast::<KitError>() {
            Ok(kit_error) => {
                errln!("sealkit: {kit_error}");
                if kit_error.refusal().is_some() {
                    errln!("sealkit: nothing was extracted or installed; do not use this kit");
                }
                Ok(ExitCode::from(kit_error.exit_code()))
            }
            Err(other) => Err(other),
        },
    }
}

/// The passphrase from `--passphrase-file` or the environment, else a terminal prompt (as
/// `bundle sign` takes it).
fn passphrase(file: Option<&Path>) -> anyhow::Result<Passphrase> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the passphrase file {}", file.display()))?;
        return Ok(Passphrase::Given(
            text.lines().next().unwrap_or_default().to_string(),
        ));
    }
    Ok(match std::env::var(super::bundle::PASSPHRASE_ENV) {
        Ok(value) => Passphrase::Given(value),
        Err(_) => Passphrase::Prompt,
    })
}

fn build(args: BuildArgs) -> anyhow::Result<ExitCode> {
    if !args.kit_dir.join("install.sh").is_file() {
        return Err(super::UsageError::new(format!(
            "{} is not a kit directory (it has no install.sh): run `sealkit kit build` in the \
             sealkit source tree, which holds kit/, or name it with --kit-dir DIR",
            args.kit_dir.display()
        ))
        .into());
    }
    let binary = match args.binary {
        Some(path) => path,
        None => std::env::current_exe().context("cannot find this executable; give --binary")?,
    };
    let head = {
        use std::io::Read;
        let mut head = Vec::new();
        std::fs::File::open(&binary)
            .with_context(|| format!("cannot read the binary {}", binary.display()))?
            .take(1 << 20)
            .read_to_end(&mut head)
            .with_context(|| format!("cannot read the binary {}", binary.display()))?;
        head
    };
    if kit::linkage(&head) == kit::Linkage::Dynamic && !args.allow_dynamic {
        return Err(super::UsageError::new(format!(
            "{} is dynamically linked; the kit promises a static binary (build it with \
             scripts/build-static.sh and give --binary), or pass --allow-dynamic",
            binary.display()
        ))
        .into());
    }
    let runbooks = match args.runbooks {
        Some(dir) => Some(dir),
        None => Some(PathBuf::from("docs/runbooks")).filter(|d| d.is_dir()),
    };
    let key = bundle::load_secret_key(
        &args.secret_key,
        passphrase(args.passphrase_file.as_deref())?,
    )?;
    let sbom = args.sbom.unwrap_or_else(|| kit::default_sbom_path(&binary));
    let options = BuildOptions {
        sbom,
        binary,
        kit_dir: args.kit_dir,
        bundles: args.bundle,
        trusted_keys: args.trusted_key,
        ca_cert: args.ca_cert,
        tls_dir: args.tls_dir,
        drill_dir: args.drill_dir,
        runbooks,
        created: crate::clock::unix_now(),
        layout: if args.dir {
            Layout::Directory
        } else {
            Layout::Archive { level: args.level }
        },
    };
    let progress = super::bundle::BarProgress::new();
    let summary = kit::build_with_progress(&args.out, &options, &key, &progress)?;
    let bytes: u64 = summary.files.iter().map(|f| f.size).sum();
    outln!(
        "built kit {} ({} file(s), {} byte(s){}), signed by key {}",
        summary.out.display(),
        summary.files.len(),
        bytes,
        if summary.archive_bytes > 0 {
            format!(" → {} compressed", summary.archive_bytes)
        } else {
            String::new()
        },
        summary.key_id
    );
    outln!("  created {}", summary.created);
    outln!("  SHA256SUMS sha256:{}", summary.sums_sha256);
    outln!("  hosts will pin: {}", summary.trusted_key_ids.join(", "));
    for file in &summary.files {
        outln!(
            "  {}  {:>10}  {}",
            &file.sha256[..16.min(file.sha256.len())],
            file.size,
            file.path
        );
    }
    outln!(
        "On the sealed host: sealkit kit verify {} --trusted-keys <key.pub> --extract <dir>",
        summary
            .out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let keys = TrustedKeys::load_paths(&args.trusted_keys)?;
    let mut options = VerifyOptions {
        extract: args.extract,
        ..VerifyOptions::default()
    };
    if let Some(max) = args.max_size {
        options.limits.max_kit_bytes = max;
    }
    let verified = kit::verify(&args.kit, &keys, &options)?;
    if args.json {
        let files: Vec<_> = verified
            .files
            .iter()
            .map(|f| serde_json::json!({"path": f.path, "size": f.size, "sha256": f.sha256}))
            .collect();
        outln!(
            "{}",
            serde_json::json!({
                "valid": true,
                "keyId": verified.key_id,
                "created": verified.created,
                "archiveSignature": verified.archive_signature,
                "sha256sums": verified.sums_sha256,
                "files": files,
                "bundles": verified.bundles(),
                "sbom": verified
                    .files
                    .iter()
                    .find(|f| f.path == kit::SBOM_PATH)
                    .map(|f| serde_json::json!({"path": f.path, "sha256": f.sha256})),
                "extracted": verified.extracted,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{}: valid kit, signed by key {}, created {}",
        args.kit.display(),
        verified.key_id,
        verified.created
    );
    outln!(
        "  {} file(s), every one listed in the signed SHA256SUMS with a matching digest{}",
        verified.files.len(),
        if verified.archive_signature {
            "; archive signature valid"
        } else {
            ""
        }
    );
    if let Some(sbom) = verified.files.iter().find(|f| f.path == kit::SBOM_PATH) {
        outln!(
            "  SBOM: {} sha256:{} (compare with the binary's `sealkit --version --verbose`)",
            sbom.path,
            sbom.sha256
        );
    }
    for bundle in verified.bundles() {
        outln!("  bundle: {bundle}");
    }
    match &verified.extracted {
        Some(dir) => outln!(
            "  extracted into {} — next: sh {}/install.sh",
            dir.display(),
            dir.display()
        ),
        None => outln!("  (nothing extracted; add --extract DIR to unpack it)"),
    }
    Ok(ExitCode::SUCCESS)
}
