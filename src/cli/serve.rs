//! `sealkit serve --config FILE` or `sealkit serve --bundle-root DIR`.

use crate::config::Settings;
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The authority.yaml to serve
    #[arg(
        long,
        short,
        value_name = "FILE",
        env = "SEALKIT_CONFIG",
        required_unless_present = "bundle_root"
    )]
    config: Option<PathBuf>,
    /// Serve the active generation of this bundle root (`<DIR>/current/authority.yaml`),
    /// first cleaning up after an import that was interrupted
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    bundle_root: Option<PathBuf>,
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = match (args.config, args.bundle_root) {
        (Some(config), _) => config,
        (None, Some(dir)) => {
            let root = crate::bundle::BundleRoot::new(&dir);
            let recovery = crate::bundle::recover(&root)
                .with_context(|| format!("cannot recover the bundle root {}", dir.display()))?;
            if !recovery.is_empty() {
                errln!("sealkit: cleaned up after an interrupted bundle operation: {recovery:?}");
            }
            root.config_path()
        }
        (None, None) => {
            anyhow::bail!("name the configuration with --config FILE or --bundle-root DIR")
        }
    };
    let settings = Settings::load(&config)?;
    serve(settings, config)?;
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
