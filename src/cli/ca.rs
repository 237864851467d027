//! `sealkit ca …`: command-line front end of the site CA ([`crate::ca`]).
//!
//! Responsible for parsing the `ca` subcommands and printing what was written. Not
//! responsible for any certificate logic; that lives in `crate::ca`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::ca::{IssuedLeaf, KeyAlgorithm, LeafProfile, RevocationReason, SiteCa};

/// `sealkit ca`: a subcommand and where its audit events also go.
#[derive(Debug, clap::Args)]
pub struct CaArgs {
    #[command(subcommand)]
    command: CaCommand,
    /// The configuration of the authority this CA serves (e.g.
    /// /var/lib/sealkit/bundles/current/authority.yaml): audit events also go to its log
    /// directory. They always go to <dir>/audit.log.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Site certificate authority commands.
#[derive(Debug, clap::Subcommand)]
pub enum CaCommand {
    /// Create a site CA: a root (10 years) and an issuing intermediate (5 years).
    Init {
        /// Directory to create the CA in (created 0700; must not already hold a CA).
        #[arg(long)]
        dir: PathBuf,
        /// Site name, used in the CA subjects (e.g. "Harbour Site").
        #[arg(long)]
        name: String,
        /// Key algorithm for the CA and every certificate it issues.
        #[arg(long, value_enum, default_value_t = KeyAlgorithm::default())]
        alg: KeyAlgorithm,
    },
    /// Issue a leaf certificate and its key.
    #[command(subcommand)]
    Issue(IssueCommand),
    /// Sign a certificate signing request (PKCS#10): for keys that never leave their host.
    ///
    /// Only the CSR's public key is used (after checking its self-signature); subject, SANs
    /// and EKU come from these flags. A CSR asking to be a CA, or for another EKU than the
    /// profile's, is refused.
    SignCsr(SignCsrArgs),
    /// Mark a leaf certificate revoked; the next `ca crl` lists it.
    Revoke {
        /// Serial number in hex, as `ca list` or `openssl x509 -serial` print it.
        serial: String,
        /// CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// Reason recorded in the CRL.
        #[arg(long, value_enum, default_value_t = RevocationReason::Unspecified)]
        reason: RevocationReason,
    },
    /// Write the CRLs: one per issuing intermediate, then the root's, in one PEM file.
    Crl {
        /// CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// Days until next-update: publish a new CRL before then.
        #[arg(long, default_value_t = 7)]
        days: u32,
        /// File to write (replaced atomically if it exists).
        #[arg(long)]
        out: PathBuf,
    },
    /// Make a new issuing intermediate (needs root.key); older ones stay valid for their
    /// leaves unless --revoke-old is given.
    Rotate {
        /// CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// Also revoke every older intermediate (e.g. caCompromise when an intermediate key
        /// leaked): their leaves stop verifying once the new CRL and bundle are installed.
        #[arg(long, value_enum, value_name = "REASON")]
        revoke_old: Option<RevocationReason>,
    },
    /// List every certificate the CA has issued, with its status.
    List {
        /// CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// Print JSON: every inventory field, the status, and `x5t#S256` (base64url, as a
        /// bound token's `cnf` carries it)
        #[arg(long)]
        json: bool,
    },
}

/// Options of `ca sign-csr`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("profile").required(true).args(["client_id", "server"])))]
pub struct SignCsrArgs {
    /// CA directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// The PEM certificate signing request.
    #[arg(long)]
    pub csr: PathBuf,
    /// Client profile: OAuth client id; becomes CN and SAN URI urn:sealkit:client:<id>.
    #[arg(long)]
    pub client_id: Option<String>,
    /// Client profile: tenant, recorded as the subject O.
    #[arg(long, requires = "client_id")]
    pub tenant: Option<String>,
    /// Server profile (EKU serverAuth) with the --dns / --ip names.
    #[arg(long)]
    pub server: bool,
    /// Server profile: DNS name to include (repeatable); the first becomes the subject CN.
    #[arg(long = "dns", value_name = "NAME", requires = "server")]
    pub dns: Vec<String>,
    /// Server profile: IP address to include (repeatable).
    #[arg(long = "ip", value_name = "ADDR", requires = "server")]
    pub ip: Vec<IpAddr>,
    /// Validity in days.
    #[arg(long, default_value_t = 90)]
    pub days: u32,
    /// Directory to write <base>.crt (leaf + intermediate) into.
    #[arg(long)]
    pub out: PathBuf,
    /// File base name; defaults to the client id, or the first DNS name or IP address.
    #[arg(long)]
    pub base: Option<String>,
}

/// Kinds of leaf certificate.
#[derive(Debug, clap::Subcommand)]
pub enum IssueCommand {
    /// A TLS server certificate (EKU serverAuth) for DNS names and/or IP addresses.
    Server(ServerArgs),
    /// A TLS client certificate (EKU clientAuth) for an OAuth client.
    Client(ClientArgs),
}

/// Options of `ca issue server`.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// CA directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// DNS name to include (repeatable); the first becomes the subject CN.
    #[arg(long = "dns", value_name = "NAME")]
    pub dns: Vec<String>,
    /// IP address to include (repeatable).
    #[arg(long = "ip", value_name = "ADDR")]
    pub ip: Vec<IpAddr>,
    /// Validity in days.
    #[arg(long, default_value_t = 90)]
    pub days: u32,
    /// Directory to write <base>.crt (leaf + intermediate) and <base>.key (0600) into.
    #[arg(long)]
    pub out: PathBuf,
    /// File base name; defaults to the first DNS name or IP address.
    #[arg(long)]
    pub base: Option<String>,
}

/// Options of `ca issue client`.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// CA directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// OAuth client id; becomes CN and SAN URI urn:sealkit:client:<id>.
    #[arg(long)]
    pub client_id: String,
    /// Tenant, recorded as the subject O.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Validity in days.
    #[arg(long, default_value_t = 90)]
    pub days: u32,
    /// Directory to write <base>.crt (leaf + intermediate) and <base>.key (0600) into.
    #[arg(long)]
    pub out: PathBuf,
    /// File base name; defaults to the client id.
    #[arg(long)]
    pub base: Option<String>,
}

/// Runs a `ca` subcommand with its audit trail: every act that changes the CA appends an
/// `authority.ca.*` event (with the operator's uid) to `<dir>/audit.log` and, with
/// `--config`, to the authority's log directory; a refused act appends `authority.ca.failed`.
pub fn run_audited(args: CaArgs) -> anyhow::Result<()> {
    use crate::telemetry::audit;
    let (action, dir) = match &args.command {
        CaCommand::Init { dir, .. } => ("init", dir),
        CaCommand::Issue(IssueCommand::Server(a)) => ("issue-server", &a.dir),
        CaCommand::Issue(IssueCommand::Client(a)) => ("issue-client", &a.dir),
        CaCommand::SignCsr(a) => ("sign-csr", &a.dir),
        CaCommand::Revoke { dir, .. } => ("revoke", dir),
        CaCommand::Crl { dir, .. } => ("crl", dir),
        CaCommand::Rotate { dir, .. } => ("rotate", dir),
        CaCommand::List { .. } => return run(args.command),
    };
    let dir = dir.clone();
    if let Some(config) = &args.config {
        if audit::also_to_log_directory_of(config).is_none() {
            errln!(
                "sealkit: warning: no log directory found through {}; audit events go to {} only",
                config.display(),
                dir.join(audit::FILE_NAME).display()
            );
        }
    }
    if dir.is_dir() {
        audit::also_to(&dir);
    }
    let outcome = run(args.command);
    if let Err(error) = &outcome {
        tracing::info!(event = "authority.ca.failed", action, dir = %dir.display(), error = format!("{error:#}"));
    }
    // `ca init` creates its directory: its events reach the file once it exists.
    if dir.is_dir() {
        audit::also_to(&dir);
    }
    outcome
}

/// Runs a `ca` subcommand, printing what it wrote.
pub fn run(cmd: CaCommand) -> anyhow::Result<()> {
    match cmd {
        CaCommand::Init { dir, name, alg } => {
            let ca = SiteCa::init(&dir, &name, alg)
                .with_context(|| format!("initialising a CA in {}", dir.display()))?;
            tracing::info!(event = "authority.ca.initialised", dir = %dir.display(), name = %name, alg = %ca.algorithm(), intermediate_serial = %ca.intermediate_serial());
            outln!(
                "Initialised site CA {:?} ({}) in {}",
                ca.name(),
                ca.algorithm(),
                dir.display()
            );
            outln!(
                "  root certificate (give to clients): {}",
                ca.root_cert_path().display()
            );
            outln!(
                "  issuing certificate:                {}",
                ca.intermediate_cert_path().display()
            );
            outln!(
                "  private keys (0600):                {}, {}",
                dir.join("root.key").display(),
                dir.join("intermediate.key").display()
            );
            outln!(
                "  client-CA bundle (for servers):     {}",
                ca.trust_bundle_path().display()
            );
            outln!(
                "  inventory:                          {}",
                ca.inventory_path().display()
            );
            Ok(())
        }
        CaCommand::Issue(IssueCommand::Server(args)) => {
            let base = match args.base {
                Some(b) => b,
                None => default_base(args.dns.first(), args.ip.first()),
            };
            IssuedLeaf::output_paths(&args.out, &base).context("checking the output files")?;
            let ca = open(&args.dir)?;
            let leaf = ca
                .issue_server(&args.dns, &args.ip, args.days)
                .context("issuing a server certificate")?;
            report(&ca, "server", &leaf, &args.out, &base)
        }
        CaCommand::Issue(IssueCommand::Client(args)) => {
            let base = args.base.unwrap_or_else(|| safe_base(&args.client_id));
            IssuedLeaf::output_paths(&args.out, &base).context("checking the output files")?;
            let ca = open(&args.dir)?;
            let leaf = ca
                .issue_client(&args.client_id, args.tenant.as_deref(), args.days)
                .context("issuing a client certificate")?;
            report(&ca, "client", &leaf, &args.out, &base)
        }
        CaCommand::SignCsr(args) => sign_csr(args),
        CaCommand::Revoke {
            serial,
            dir,
            reason,
        } => {
            let ca = open(&dir)?;
            ca.revoke(&serial, reason)
                .with_context(|| format!("revoking {serial}"))?;
            tracing::info!(event = "authority.ca.revoked", dir = %dir.display(), serial = %serial, reason = %reason);
            outln!("Revoked {serial} ({reason}).");
            outln!(
                "  publish it: sealkit ca crl --dir {} --out <file>, then install the file wherever CRLs are checked",
                dir.display()
            );
            Ok(())
        }
        CaCommand::Crl { dir, days, out } => {
            let ca = open(&dir)?;
            let pem = ca.crl_pem(days).context("signing the CRLs")?;
            write_public_file(&out, &pem)?;
            let count = pem.matches("-----BEGIN X509 CRL-----").count();
            tracing::info!(event = "authority.ca.crlWritten", dir = %dir.display(), out = %out.display(), crls = count, next_update_days = days);
            outln!(
                "Wrote {count} CRL(s) (one per issuing intermediate, then the root's) to {}",
                out.display()
            );
            outln!("  next update due within {days} day(s): publish a new one before then");
            Ok(())
        }
        CaCommand::Rotate { dir, revoke_old } => {
            let ca = match revoke_old {
                Some(reason) => SiteCa::rotate_and_revoke_old(&dir, reason),
                None => SiteCa::rotate(&dir),
            }
            .with_context(|| format!("rotating the intermediate in {}", dir.display()))?;
            tracing::info!(event = "authority.ca.rotated", dir = %dir.display(), intermediate_serial = %ca.intermediate_serial(), revoke_old = %revoke_old.map(|r| r.to_string()).unwrap_or_default());
            outln!(
                "New issuing intermediate {} valid until {}",
                ca.intermediate_serial(),
                ca.intermediate_not_after().date()
            );
            if let Some(reason) = revoke_old {
                outln!("  every older intermediate is revoked ({reason}) in root.crl; re-issue their leaves (`ca list` shows them as issuer-revoked)");
            } else {
                outln!("  older intermediates stay valid for the leaves they issued");
            }
            outln!(
                "  install on servers: {} (client-CA bundle) and a fresh `ca crl`",
                ca.trust_bundle_path().display()
            );
            Ok(())
        }
        CaCommand::List { dir, json } => {
            let ca = open(&dir)?;
            let listed = ca.list().context("reading the inventory")?;
            if json {
                let all: Vec<serde_json::Value> = listed
                    .iter()
                    .map(|item| {
                        let mut value = serde_json::to_value(&item.entry).unwrap_or_default();
                        value["status"] = serde_json::json!(item.status.as_str());
                        value["x5t#S256"] = serde_json::json!(x5t_s256(&item.entry.sha256));
                        value
                    })
                    .collect();
                outln!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(());
            }
            outln!(
                "{:<40}  {:<12}  {:<14}  {:<20}  {:<43}  SUBJECT / SANS",
                "SERIAL",
                "KIND",
                "STATUS",
                "NOT AFTER",
                "X5T#S256"
            );
            for item in &listed {
                let e = &item.entry;
                let sans = if e.sans.is_empty() {
                    String::new()
                } else {
                    format!("  [{}]", e.sans.join(", "))
                };
                outln!(
                    "{:<40}  {:<12}  {:<14}  {:<20}  {:<43}  {}{}",
                    e.serial,
                    e.kind.to_string(),
                    item.status.as_str(),
                    e.not_after,
                    x5t_s256(&e.sha256),
                    e.subject,
                    sans
                );
            }
            outln!("{} certificate(s)", listed.len());
            Ok(())
        }
    }
}

fn sign_csr(args: SignCsrArgs) -> anyhow::Result<()> {
    let (profile, kind, default) = match args.client_id {
        Some(client_id) => (
            LeafProfile::Client {
                client_id: client_id.clone(),
                tenant: args.tenant,
            },
            "client",
            safe_base(&client_id),
        ),
        None => (
            LeafProfile::Server {
                dns: args.dns.clone(),
                ips: args.ip.clone(),
            },
            "server",
            default_base(args.dns.first(), args.ip.first()),
        ),
    };
    let base = args.base.unwrap_or(default);
    IssuedLeaf::cert_output_path(&args.out, &base).context("checking the output file")?;
    let csr = read_csr(&args.csr)?;
    let ca = open(&args.dir)?;
    let leaf = ca
        .sign_csr(&csr, profile, args.days)
        .with_context(|| format!("signing {}", args.csr.display()))?;
    report(&ca, kind, &leaf, &args.out, &base)
}

/// Replaces `path` atomically with a 0644 file.
fn write_public_file(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .context("the output path has no file name")?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

fn open(dir: &Path) -> anyhow::Result<SiteCa> {
    SiteCa::open(dir).with_context(|| format!("opening the CA in {}", dir.display()))
}

/// First DNS name or IP, made safe as a file name.
fn default_base(dns: Option<&String>, ip: Option<&IpAddr>) -> String {
    let raw = dns
        .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
        .or_else(|| ip.map(|i| i.to_string()))
        .unwrap_or_else(|| "server".to_string());
    safe_base(&raw)
}

/// Replaces characters not allowed in an output file base name with `_`. Only the
/// default is sanitised; an explicit `--base` is checked as given.
fn safe_base(raw: &str) -> String {
    let safe: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let safe = safe.trim_start_matches('.');
    if safe.is_empty() {
        "leaf".to_string()
    } else {
        safe.to_string()
    }
}

fn report(
    ca: &SiteCa,
    kind: &str,
    leaf: &IssuedLeaf,
    out: &Path,
    base: &str,
) -> anyhow::Result<()> {
    let (crt, key) = leaf.write(out, base).with_context(|| {
        format!(
            "writing the {kind} certificate (serial {}, already recorded in the inventory)",
            leaf.serial_hex
        )
    })?;
    tracing::info!(event = "authority.ca.issued", kind, serial = %leaf.serial_hex, not_after = %leaf.not_after_rfc3339(), certificate = %crt.display());
    outln!("Issued {kind} certificate serial {}", leaf.serial_hex);
    outln!("  valid until:            {}", leaf.not_after_rfc3339());
    outln!("  chain (leaf + issuing): {}", crt.display());
    match key {
        Some(key) => outln!("  private key (0600):     {}", key.display()),
        None => outln!("  private key:            stays on the host that made the CSR"),
    }
    outln!(
        "  trust anchor:           {}",
        ca.root_cert_path().display()
    );
    Ok(())
}

/// A CSR file as PEM text: PEM as it is, DER (what `openssl req -outform DER` writes)
/// wrapped into PEM; either way `ca::inspect_csr` then checks all of it.
fn read_csr(path: &std::path::Path) -> anyhow::Result<String> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read the CSR {}", path.display()))?;
    match std::str::from_utf8(&bytes) {
        Ok(text) if text.contains("-----BEGIN") => Ok(text.to_string()),
        _ if bytes.first() == Some(&0x30) => {
            use base64::Engine;
            let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
            let mut pem = String::from("-----BEGIN CERTIFICATE REQUEST-----\n");
            for line in encoded.as_bytes().chunks(64) {
                pem.push_str(&String::from_utf8_lossy(line));
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE REQUEST-----\n");
            Ok(pem)
        }
        _ => anyhow::bail!(
            "{} is neither a PEM nor a DER certificate signing request (PKCS#10)",
            path.display()
        ),
    }
}

/// The inventory's SHA-256 (hex) as `x5t#S256`: base64url without padding, the form a
/// certificate-bound token's `cnf` and the configuration use.
fn x5t_s256(sha256_hex: &str) -> String {
    use base64::Engine;
    let bytes: Option<Vec<u8>> = (0..sha256_hex.len())
        .step_by(2)
        .map(|i| {
            sha256_hex
                .get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect();
    match bytes {
        Some(bytes) if bytes.len() == 32 => {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        }
        _ => String::from("-"),
    }
}
