//! The `sealkit` binary: parses the command line and hands over to `sealkit::cli`.
use clap::Parser;

/// mimalloc, with large blocks from the kernel: see `sealkit::allocator`.
#[global_allocator]
static ALLOCATOR: sealkit::allocator::Allocator = sealkit::allocator::Allocator;

fn main() -> std::process::ExitCode {
    sealkit::allocator::route_openssl_allocations();
    sealkit::cli::run(sealkit::cli::Cli::parse())
}
