//! The `sealkit` binary: parses the command line and hands over to `sealkit::cli`.
use clap::Parser;

fn main() -> std::process::ExitCode {
    sealkit::cli::run(sealkit::cli::Cli::parse())
}
