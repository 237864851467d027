//! `sealkit drill`: the verification matrix against a live authority (`drill run`), and
//! bypass drills against the authority running on this host (through its control socket).

use crate::config::duration::HumanDuration;
use crate::control::{ControlRequest, ControlResponse};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum DrillCommand {
    /// Run the verification matrix against a live authority; exit 1 if any scenario fails
    Run(Box<RunArgs>),
    /// Turn a time-boxed DPoP bypass on (it ends by itself), or off with --off
    Bypass(BypassArgs),
    /// Show the running authority's bypass and fence state
    Status(Target),
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// A demo.env-style file naming the issuer, CA, clients and certificates (flags override it)
    #[arg(long, value_name = "FILE")]
    env: Option<PathBuf>,
    /// The authority's issuer URL, e.g. https://auth.site-a:8443
    #[arg(long, value_name = "URL")]
    target: Option<String>,
    /// The site's CA certificate (trust anchor for the server certificate)
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Client of a DPoP-requiring tenant, as ID:SECRET
    #[arg(long, value_name = "ID:SECRET")]
    client: Option<String>,
    /// Client of a DPoP tenant with server nonces, as ID:SECRET
    #[arg(long, value_name = "ID:SECRET")]
    nonce_client: Option<String>,
    /// Client allowed to introspect, as ID:SECRET
    #[arg(long, value_name = "ID:SECRET")]
    introspect_client: Option<String>,
    /// Certificate-bound client id (tls_client_auth)
    #[arg(long, value_name = "ID", requires_all = ["mtls_cert", "mtls_key", "other_cert", "other_key"])]
    mtls_client: Option<String>,
    #[arg(long, value_name = "FILE")]
    mtls_cert: Option<PathBuf>,
    #[arg(long, value_name = "FILE")]
    mtls_key: Option<PathBuf>,
    /// A second valid certificate that is not the mTLS client's
    #[arg(long, value_name = "FILE")]
    other_cert: Option<PathBuf>,
    #[arg(long, value_name = "FILE")]
    other_key: Option<PathBuf>,
    /// On the authority's host: its log directory (to check the audit entries)
    #[arg(long, value_name = "DIR")]
    log_dir: Option<PathBuf>,
    /// Also run the bypass drill (on the authority's host: needs --config or --socket)
    #[arg(long)]
    bypass: bool,
    #[command(flatten)]
    host: Target,
    /// Write the report to FILE: JUnit XML when it ends in .xml, JSON otherwise
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

fn credentials(text: &str) -> anyhow::Result<crate::drill::Credentials> {
    let (id, secret) = text
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("write client credentials as ID:SECRET"))?;
    Ok(crate::drill::Credentials {
        id: id.to_string(),
        secret: secret.to_string(),
    })
}

fn run_matrix(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut plan = match &args.env {
        Some(file) => crate::drill::DrillPlan::from_env_file(file)?,
        None => crate::drill::DrillPlan::default(),
    };
    if let Some(target) = args.target {
        plan.issuer = target;
    }
    if let Some(ca) = args.ca {
        plan.ca_file = ca;
    }
    if plan.issuer.is_empty() || plan.ca_file.as_os_str().is_empty() {
        anyhow::bail!("name the authority with --target URL and --ca FILE (or --env FILE)");
    }
    if let Some(c) = &args.client {
        plan.dpop_client = Some(credentials(c)?);
    }
    if let Some(c) = &args.nonce_client {
        plan.nonce_client = Some(credentials(c)?);
    }
    if let Some(c) = &args.introspect_client {
        plan.introspect_client = Some(credentials(c)?);
    }
    if let (Some(id), Some(cert), Some(key), Some(other_cert), Some(other_key)) = (
        args.mtls_client,
        args.mtls_cert,
        args.mtls_key,
        args.other_cert,
        args.other_key,
    ) {
        plan.mtls = Some(crate::drill::MtlsClients {
            client_id: id,
            cert,
            key,
            other_cert,
            other_key,
        });
    }
    if args.log_dir.is_some() {
        plan.log_dir = args.log_dir;
    }
    if args.bypass {
        let mut host = args.host;
        if host.config.is_none() && host.socket.is_none() {
            // The env file's SEALKIT_CONFIG names the authority on this host (demo.env does).
            if let Some(file) = &args.env {
                host.config = crate::client::oauth::read_env_file(file)?
                    .remove("SEALKIT_CONFIG")
                    .map(PathBuf::from);
            }
        }
        plan.bypass_socket = Some(host.socket()?);
    }
    let runtime = super::runtime()?;
    let report = runtime.block_on(crate::drill::run(&plan));
    out!("{}", report.table());
    if let Some(path) = &args.report {
        let text = if path.extension().is_some_and(|e| e == "xml") {
            report.junit()
        } else {
            report.json()
        };
        std::fs::write(path, text)?;
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_FAILURE)
    })
}

#[derive(clap::Args)]
pub struct Target {
    /// The authority.yaml of the running authority (its dataDir holds the control socket)
    #[arg(
        long,
        value_name = "FILE",
        env = "SEALKIT_CONFIG",
        conflicts_with = "socket"
    )]
    config: Option<PathBuf>,
    /// The control socket itself
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct BypassArgs {
    /// How long the bypass lasts (e.g. 15m; at most 4h)
    #[arg(long = "for", value_name = "DURATION", required_unless_present = "off")]
    duration: Option<HumanDuration>,
    /// Why (recorded in the audit events)
    #[arg(long, required_unless_present = "off")]
    reason: Option<String>,
    /// End the bypass now
    #[arg(long, conflicts_with_all = ["duration", "reason"])]
    off: bool,
    #[command(flatten)]
    target: Target,
}

impl Target {
    pub fn socket(&self) -> anyhow::Result<PathBuf> {
        if let Some(socket) = &self.socket {
            return Ok(socket.clone());
        }
        let config = self.config.clone().ok_or_else(|| {
            anyhow::anyhow!("name the running authority with --config FILE or --socket PATH")
        })?;
        let settings = crate::config::Settings::load(&config)?;
        Ok(crate::control::socket_path(&settings.data_dir))
    }
}

pub fn send(target: &Target, request: ControlRequest) -> anyhow::Result<ControlResponse> {
    let socket = target.socket()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(crate::control::send(&socket, &request))?)
}

pub fn run(command: DrillCommand) -> anyhow::Result<ExitCode> {
    let (target, request) = match command {
        DrillCommand::Run(args) => return run_matrix(*args),
        DrillCommand::Bypass(args) if args.off => (args.target, ControlRequest::BypassOff),
        DrillCommand::Bypass(args) => {
            let seconds = args.duration.map(|d| d.as_secs()).unwrap_or(0);
            (
                args.target,
                ControlRequest::BypassOn {
                    seconds,
                    reason: args.reason.unwrap_or_default(),
                },
            )
        }
        DrillCommand::Status(target) => (target, ControlRequest::Status),
    };
    let status_only = matches!(request, ControlRequest::Status);
    let response = send(&target, request)?;
    if status_only {
        // A script reads this: JSON and nothing else on stdout.
        outln!("{}", serde_json::to_string_pretty(&response.status)?);
    } else {
        outln!("{}", response.message);
        outln!("{}", serde_json::to_string_pretty(&response.status)?);
    }
    Ok(ExitCode::SUCCESS)
}
