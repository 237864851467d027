//! `sealkit ca …`: command-line front end of the site CA ([`crate::ca`]).
//!
//! Responsible for parsing the `ca` subcommands and printing what was written. Not
//! responsible for any certificate logic; that lives in `crate::ca`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::ca::{IssuedLeaf, KeyAlgorithm, SiteCa};

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
    /// List every certificate the CA has issued.
    List {
        /// CA directory.
        #[arg(long)]
        dir: PathBuf,
    },
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

/// Runs a `ca` subcommand, printing what it wrote.
pub fn run(cmd: CaCommand) -> anyhow::Result<()> {
    match cmd {
        CaCommand::Init { dir, name, alg } => {
            let ca = SiteCa::init(&dir, &name, alg)
                .with_context(|| format!("initialising a CA in {}", dir.display()))?;
            println!(
                "Initialised site CA {:?} ({}) in {}",
                ca.name(),
                ca.algorithm(),
                dir.display()
            );
            println!(
                "  root certificate (give to clients): {}",
                ca.root_cert_path().display()
            );
            println!(
                "  issuing certificate:                {}",
                ca.intermediate_cert_path().display()
            );
            println!(
                "  private keys (0600):                {}, {}",
                dir.join("root.key").display(),
                dir.join("intermediate.key").display()
            );
            println!(
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
        CaCommand::List { dir } => {
            let ca = open(&dir)?;
            let entries = ca.inventory().context("reading the inventory")?;
            println!(
                "{:<40}  {:<12}  {:<20}  {:<7}  SUBJECT / SANS",
                "SERIAL", "KIND", "NOT AFTER", "REVOKED"
            );
            for e in &entries {
                let sans = if e.sans.is_empty() {
                    String::new()
                } else {
                    format!("  [{}]", e.sans.join(", "))
                };
                println!(
                    "{:<40}  {:<12}  {:<20}  {:<7}  {}{}",
                    e.serial,
                    e.kind.to_string(),
                    e.not_after,
                    if e.revoked { "yes" } else { "no" },
                    e.subject,
                    sans
                );
            }
            println!("{} certificate(s)", entries.len());
            Ok(())
        }
    }
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
    println!("Issued {kind} certificate serial {}", leaf.serial_hex);
    println!("  valid until:            {}", leaf.not_after_rfc3339());
    println!("  chain (leaf + issuing): {}", crt.display());
    println!("  private key (0600):     {}", key.display());
    println!(
        "  trust anchor:           {}",
        ca.root_cert_path().display()
    );
    Ok(())
}
