//! `sealkit drill`: bypass drills against the authority running on this host (through its
//! local control socket). The verification-matrix runner joins it later (`drill run`).

use crate::config::duration::HumanDuration;
use crate::control::{ControlRequest, ControlResponse};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum DrillCommand {
    /// Turn a time-boxed DPoP bypass on (it ends by itself), or off with --off
    Bypass(BypassArgs),
    /// Show the running authority's bypass and fence state
    Status(Target),
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
    let response = send(&target, request)?;
    println!("{}", response.message);
    println!("{}", serde_json::to_string_pretty(&response.status)?);
    Ok(ExitCode::SUCCESS)
}
