//! `sealkit secret generate`: a new client secret and the hash to register.

use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum SecretCommand {
    /// Print a new random client secret (256 bits) and its `secretHash` for authority.yaml
    Generate,
}

pub fn run(command: SecretCommand) -> anyhow::Result<ExitCode> {
    match command {
        SecretCommand::Generate => {
            let secret = crate::secret::generate();
            outln!("secret:     {secret}");
            outln!("secretHash: {}", crate::secret::SecretHash::of(&secret));
            errln!("Give the secret to the client once; register only the secretHash.");
            Ok(ExitCode::SUCCESS)
        }
    }
}
