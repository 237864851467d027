//! `sealkit config check FILE`: validates a configuration and prints every problem with
//! its key path.

use crate::config::{ConfigError, Settings};
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
            let settings = match Settings::load(&file) {
                Ok(settings) => settings,
                // One line per problem, each with its key path.
                Err(ConfigError::Invalid { path, problems }) => {
                    for problem in problems {
                        errln!("{}: {problem}", path.display());
                    }
                    return Ok(ExitCode::from(super::EXIT_INVALID_CONFIG));
                }
                Err(other) => return Err(other.into()),
            };
            outln!(
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
