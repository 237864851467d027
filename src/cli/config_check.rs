//! `sealkit config check FILE`: validates a configuration and prints every problem with
//! its key path.

use crate::config::Settings;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum ConfigCommand {
    /// Validate an authority.yaml; prints every problem, exits 3 when invalid
    Check {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

pub fn run(command: ConfigCommand) -> anyhow::Result<ExitCode> {
    match command {
        ConfigCommand::Check { file } => {
            let settings = Settings::load(&file)?;
            println!(
                "{}: valid ({} tenant(s), {} client(s), issuer {})",
                file.display(),
                settings.tenants.len(),
                settings.clients.len(),
                settings.issuer
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
