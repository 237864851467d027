//! `sealkit guard --config guard.yaml`: enforce DPoP and certificate binding in front of
//! the site's resource services; `sealkit guard --config FILE --check` validates one.

use crate::guard::config::GuardSettings;
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct GuardArgs {
    /// The guard.yaml to serve
    #[arg(long, short, value_name = "FILE", env = "SEALKIT_GUARD_CONFIG")]
    config: PathBuf,
    /// Only validate the file and print what it configures
    #[arg(long)]
    check: bool,
}

pub fn run(args: GuardArgs) -> anyhow::Result<ExitCode> {
    let settings = GuardSettings::load(&args.config)?;
    if args.check {
        outln!(
            "{}: valid ({} routes, upstream {:?})",
            args.config.display(),
            settings.routes.len(),
            settings.upstream
        );
        return Ok(ExitCode::SUCCESS);
    }
    let _logs = crate::telemetry::init_logging(&settings.logging)?;
    let runtime = super::runtime()?;
    runtime
        .block_on(crate::guard::run(settings, args.config))
        .context("the guard stopped with an error")?;
    Ok(ExitCode::SUCCESS)
}
