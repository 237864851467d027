//! `sealkit demo`: creates (or reuses) a complete demo site and serves it.

use crate::config::Settings;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Where the demo site lives (created when missing, reused when present)
    #[arg(long, default_value = "./demo-site")]
    dir: PathBuf,
    /// Address to serve on (also the issuer's host and port)
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Prepare the site and print how to use it, but do not serve
    #[arg(long)]
    prepare_only: bool,
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let site = crate::demo::prepare(&args.dir, args.listen)?;
    let settings = Settings::load(&site.config)?;
    println!("sealkit demo site in {}", site.dir.display());
    println!("  configuration  {}", site.config.display());
    println!("  issuer         {}", site.issuer);
    println!("  CA certificate {}", site.ca_file.display());
    println!(
        "  clients and secrets: {}/demo.env (mode 0600)",
        site.dir.display()
    );
    println!();
    println!("Get a Bearer token for the unconstrained tenant:");
    println!("  set -a; . {}/demo.env; set +a", site.dir.display());
    println!("  curl --cacert \"$SEALKIT_CA_FILE\" -u \"$SEALKIT_BEARER_CLIENT_ID:$SEALKIT_BEARER_CLIENT_SECRET\" \\");
    println!("       -d grant_type=client_credentials \"$SEALKIT_TOKEN_URL\"");
    println!("The DPoP tenants answer 400 use_dpop_nonce without a proof; any RFC 9449 client");
    println!("(e.g. oauth4webapi, see tests/external) gets a DPoP-bound token with cnf.jkt.");
    if args.prepare_only {
        return Ok(ExitCode::SUCCESS);
    }
    println!();
    super::serve::serve(settings, site.config.clone())?;
    Ok(ExitCode::SUCCESS)
}
