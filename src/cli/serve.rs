//! `sealkit serve --config FILE`.

use crate::config::Settings;
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The authority.yaml to serve
    #[arg(long, short, value_name = "FILE", env = "SEALKIT_CONFIG")]
    config: PathBuf,
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(&args.config)?;
    serve(settings, args.config)?;
    Ok(ExitCode::SUCCESS)
}

/// Installs logging and serves until SIGTERM/SIGINT.
pub fn serve(settings: Settings, config_path: PathBuf) -> anyhow::Result<()> {
    let _logs = crate::telemetry::init_logging(&settings.logging)?;
    let runtime = super::runtime()?;
    runtime
        .block_on(crate::server::run(settings, config_path))
        .context("the authority stopped with an error")?;
    Ok(())
}
