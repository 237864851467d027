//! The command line: one clap command tree, one file per command group, and the exit
//! codes. This is the only layer that prints or uses `anyhow`.
//!
//! Exit codes: 0 success, 1 failure at run time, 2 usage error (clap), 3 invalid
//! configuration, 75 (`serve`) the store failed and only a new process can reopen it
//! (`store::health::EXIT_STORE_FAILED`; the supervisor restarts the service).

mod bench;
mod bundle;
mod ca;
mod config_check;
mod demo;
mod drill;
mod guard;
mod keys;
mod kit;
mod reload;
mod secret;
mod serve;
mod version;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_INVALID_CONFIG: u8 = 3;

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
    /// Benchmark the token endpoint (tokens/s, latency, server CPU per token vs the crypto floor)
    Bench(bench::BenchArgs),
}

/// Runs a parsed command line and turns its outcome into an exit code.
pub fn run(cli: Cli) -> ExitCode {
    let Some(command) = cli.command else {
        // clap requires --version or a subcommand (`arg_required_else_help`).
        version::print(cli.verbose);
        return ExitCode::SUCCESS;
    };
    let outcome = match command {
        Command::Serve(args) => serve::run(args),
        Command::Config(cmd) => config_check::run(cmd),
        Command::Demo(args) => demo::run(args),
        Command::Secret(cmd) => secret::run(cmd),
        Command::Bundle(cmd) => bundle::run(cmd),
        Command::Kit(cmd) => kit::run(cmd),
        Command::Keys(args) => keys::run(args),
        Command::Drill(cmd) => drill::run(cmd),
        Command::Reload(target) => reload::run(target),
        Command::Bench(args) => bench::run(args),
        Command::Guard(args) => guard::run(args),
        Command::Ca(cmd) => {
            crate::telemetry::init_cli_logging();
            ca::run_audited(cmd).map(|()| ExitCode::SUCCESS)
        }
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("sealkit: {error:#}");
            let store_failed = matches!(
                error.downcast_ref::<crate::server::ServerError>(),
                Some(crate::server::ServerError::StoreFailed(_))
            ) || matches!(
                error.downcast_ref::<crate::guard::GuardError>(),
                Some(crate::guard::GuardError::StoreFailed(_))
            );
            let code = match error.downcast_ref::<crate::config::ConfigError>() {
                Some(_) => EXIT_INVALID_CONFIG,
                None if store_failed => crate::store::health::EXIT_STORE_FAILED,
                None => EXIT_FAILURE,
            };
            ExitCode::from(code)
        }
    }
}

/// A multi-threaded runtime using every core, for the commands that serve or call out.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
