//! The command line: one clap command tree, one file per command group, and the exit
//! codes. This is the only layer that prints or uses `anyhow`.
//!
//! Exit codes: one table, [`exit`] (the README's "Exit codes" repeats it).

// First: the print macros (`outln!`, `out!`, `errln!`) every command module uses.
#[macro_use]
pub mod output;
mod bench;
mod bundle;
mod ca;
mod client;
mod config_check;
mod demo;
mod drill;
mod generate;
mod guard;
mod keys;
mod kit;
mod reload;
mod secret;
mod serve;
mod token;
mod user;
mod version;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Every exit code `sealkit` gives, in one place.
///
/// A reader that goes away early (`sealkit ca list --json | head -1`) changes nothing: the
/// command finishes quietly and exits with its own code, 0 when it succeeded (no panic, no
/// 141; see [`output`]). Output lost to any other write error (a full disk) is
/// [`exit::COULD_NOT_RUN`].
pub mod exit {
    /// The command did what it was asked.
    pub const SUCCESS: u8 = 0;
    /// The command ran and what it checked is not right: a drill with failed rows, a
    /// bundle root that is expired or missing (`bundle status`), a resource that refused
    /// (`token call`).
    pub const CHECKS_FAILED: u8 = 1;
    /// Usage: clap's own errors, and flags that cannot work together or are missing.
    pub const USAGE: u8 = 2;
    /// The configuration is invalid (`config check`, `serve`, `demo`).
    pub const INVALID_CONFIG: u8 = 3;
    /// The command could not run: a file it cannot read or write, an authority or control
    /// socket it cannot reach, a request the authority refused, a broken site.
    pub const COULD_NOT_RUN: u8 = crate::bundle::EXIT_COULD_NOT_RUN;
    /// Nothing to do: no previous generation to roll back to.
    pub const NOTHING_TO_DO: u8 = crate::bundle::EXIT_NOTHING_TO_DO;
    /// 10–29: a bundle or kit was refused, one code per reason
    /// (`bundle::error::Refusal::exit_code`, listed in docs/bundle-format.md).
    pub const REFUSED_FIRST: u8 = 10;
    /// A bundle was activated but the running authority was not told to reload.
    pub const RELOAD_FAILED: u8 = crate::bundle::EXIT_RELOAD_FAILED;
    /// `serve` / `guard`: the store failed and only a new process can reopen it (the
    /// supervisor restarts the service).
    pub const STORE_FAILED: u8 = crate::store::health::EXIT_STORE_FAILED;
}

pub const EXIT_FAILURE: u8 = exit::CHECKS_FAILED;
pub const EXIT_INVALID_CONFIG: u8 = exit::INVALID_CONFIG;

/// A command line that cannot work (a missing or contradictory flag that clap cannot
/// express): exit [`exit::USAGE`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

impl UsageError {
    pub fn new(message: impl Into<String>) -> UsageError {
        UsageError(message.into())
    }
}

#[derive(Parser)]
#[command(
    name = "sealkit",
    version,
    about = "OAuth 2.0 Authority for sealed sites: DPoP and mTLS sender-constrained tokens",
    disable_version_flag = true,
    subcommand_required = false,
    arg_required_else_help = true,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Print the version; with --verbose, the build's provenance (commit, target, static or
    /// dynamic, SOURCE_DATE_EPOCH, Cargo.lock and SBOM digests)
    #[arg(short = 'V', long)]
    version: bool,
    /// With --version: print the build's provenance
    #[arg(long, requires = "version")]
    verbose: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the authority (HTTPS) with a configuration file
    Serve(serve::ServeArgs),
    /// Inspect configuration files
    #[command(subcommand)]
    Config(config_check::ConfigCommand),
    /// Create (or reuse) a complete demo site and serve it
    Demo(demo::DemoArgs),
    /// Drills against the authority running on this host (bypass on/off, status)
    #[command(subcommand)]
    Drill(drill::DrillCommand),
    /// Make the authority running on this host re-read its configuration (like SIGHUP)
    Reload(drill::Target),
    /// Client secrets
    #[command(subcommand)]
    Secret(secret::SecretCommand),
    /// The site's certificate authority (server and client certificates)
    Ca(ca::CaArgs),
    /// Signed configuration bundles: keygen, pack, sign, verify, import, status, rollback
    #[command(subcommand)]
    Bundle(bundle::BundleCommand),
    /// The token signing key set: status, rotate, retire (docs/multi-node.md)
    Keys(keys::KeysArgs),
    /// The offline kit: build it (connected side), verify and unpack it (sealed host)
    #[command(subcommand)]
    Kit(kit::KitCommand),
    /// Enforce DPoP and certificate binding in front of resource services (a reverse proxy)
    Guard(guard::GuardArgs),
    /// People: argon2id password hashes, adding users to a bundle source
    #[command(subcommand)]
    User(user::UserCommand),
    /// The clients of a configuration (list, show), and revoking their tokens in an incident
    #[command(subcommand)]
    Client(client::ClientCommand),
    /// Get a token for a client (secret, DPoP, mTLS) and call resources with it, like curl
    /// with DPoP; introspect and revoke tokens
    Token(token::TokenArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell)
    Completions(generate::CompletionsArgs),
    /// Write the man pages (sealkit.1 and one per subcommand) into a directory
    Man(generate::ManArgs),
    /// Benchmark the token endpoint (tokens/s, latency, server CPU per token vs the crypto floor)
    Bench(bench::BenchArgs),
}

/// Runs a parsed command line and turns its outcome into an exit code.
pub fn run(cli: Cli) -> ExitCode {
    let outcome = match cli.command {
        Some(command) => dispatch(command),
        None => {
            // clap requires --version or a subcommand (`arg_required_else_help`).
            version::print(cli.verbose);
            Ok(ExitCode::SUCCESS)
        }
    };
    // Output lost to a write error is a failure of a command that otherwise succeeded.
    let outcome = match (outcome, output::finish()) {
        (Ok(_), Some(lost)) => {
            Err(anyhow::Error::new(lost).context("cannot write to standard output"))
        }
        (outcome, _) => outcome,
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            errln!("sealkit: {}", one_line(&error));
            let store_failed = matches!(
                error.downcast_ref::<crate::server::ServerError>(),
                Some(crate::server::ServerError::StoreFailed(_))
            ) || matches!(
                error.downcast_ref::<crate::guard::GuardError>(),
                Some(crate::guard::GuardError::StoreFailed(_))
            );
            let code = match error.downcast_ref::<crate::config::ConfigError>() {
                Some(_) => EXIT_INVALID_CONFIG,
                None if error.downcast_ref::<UsageError>().is_some() => exit::USAGE,
                None if store_failed => crate::store::health::EXIT_STORE_FAILED,
                None => exit::COULD_NOT_RUN,
            };
            ExitCode::from(code)
        }
    }
}

/// Runs one command.
fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => serve::run(args),
        Command::Config(cmd) => config_check::run(cmd),
        Command::Demo(args) => demo::run(args),
        Command::Secret(cmd) => secret::run(cmd),
        Command::User(cmd) => user::run(cmd),
        Command::Bundle(cmd) => bundle::run(cmd),
        Command::Kit(cmd) => kit::run(cmd),
        Command::Keys(args) => keys::run(args),
        Command::Drill(cmd) => drill::run(cmd),
        Command::Reload(target) => reload::run(target),
        Command::Bench(args) => bench::run(args),
        Command::Guard(args) => guard::run(args),
        Command::Token(args) => token::run(args),
        Command::Client(cmd) => client::run(cmd),
        Command::Completions(args) => generate::completions(args),
        Command::Man(args) => generate::man(args),
        Command::Ca(cmd) => {
            crate::telemetry::init_cli_logging();
            ca::run_audited(cmd).map(|()| ExitCode::SUCCESS)
        }
    }
}

/// An error as one line: each cause of the chain once (a cause whose text its wrapper
/// already shows is not repeated, which is what turned `{:#}` into
/// `No such file or directory (os error 2): No such file or directory (os error 2)`), and
/// no line breaks.
pub fn one_line(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        let part = part.trim();
        if part.is_empty() || text.contains(part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(part);
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A multi-threaded runtime using every core, for the commands that serve or call out.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read {path}: {source}")]
    struct Embeds {
        path: String,
        source: std::io::Error,
    }

    #[test]
    fn an_error_prints_each_cause_once_on_one_line() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let error = anyhow::Error::new(Embeds {
            path: "/etc/x".into(),
            source: io,
        })
        .context("cannot load the site\nconfiguration");
        let line = one_line(&error);
        assert_eq!(
            line,
            "cannot load the site configuration: cannot read /etc/x: entity not found"
        );
    }

    #[test]
    fn the_exit_codes_are_distinct() {
        let mut codes = vec![
            exit::SUCCESS,
            exit::CHECKS_FAILED,
            exit::USAGE,
            exit::INVALID_CONFIG,
            exit::COULD_NOT_RUN,
            exit::NOTHING_TO_DO,
            exit::RELOAD_FAILED,
            exit::STORE_FAILED,
        ];
        let count = codes.len();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), count);
        assert!(codes.iter().all(|c| !(10..30).contains(c)));
    }
}
