//! `sealkit demo`: creates (or reuses) a complete demo site and serves it.

use crate::config::Settings;
use anyhow::Context;
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
    println!();
    println!(
        "Resources behind the guard ({}):",
        site.var("SEALKIT_RESOURCE_URL")
    );
    println!(
        "  a DPoP-bound token with a proof for GET $SEALKIT_RESOURCE_URL (htm, htu, ath) → 200,"
    );
    println!("  the echo shows X-Sealkit-Client/-Tenant/-Scope/-Token-Type/-Cnf; the same proof again → 401.");
    if args.prepare_only {
        return Ok(ExitCode::SUCCESS);
    }
    println!();
    let _logs = crate::telemetry::init_logging(&settings.logging)?;
    let runtime = super::runtime()?;
    runtime.block_on(async {
        let server = crate::server::bind_and_start(settings.clone(), site.config.clone()).await?;
        // The guard, in front of the built-in echo upstream (a Unix socket in the site).
        let echo = crate::guard::echo::bind_unix(&site.dir.join("echo.sock"))?;
        tokio::spawn(crate::guard::echo::serve_unix(echo));
        let guard_settings = crate::guard::config::GuardSettings::load(&site.guard_config)?;
        let guard_listener = tokio::net::TcpListener::bind(guard_settings.listen)
            .await
            .with_context(|| format!("cannot listen on {} for the guard", guard_settings.listen))?;
        let guard = crate::guard::start(
            guard_settings,
            guard_listener,
            crate::guard::GuardOptions {
                config_path: Some(site.guard_config.clone()),
                ..Default::default()
            },
        )
        .await?;
        println!(
            "sealkit guard listening on https://{} (resource: {})",
            guard.addr,
            site.var("SEALKIT_RESOURCE_URL")
        );
        // Show the enforcement working: the verification matrix against this very site.
        let mut plan = crate::drill::DrillPlan::from_env_file(&site.dir.join("demo.env"))?;
        plan.log_dir = Some(settings.logging.directory.clone());
        let report = crate::drill::run(&plan).await;
        println!(
            "\nVerification matrix (sealkit drill run --env {}/demo.env):\n",
            site.dir.display()
        );
        print!("{}", report.table());
        println!("\nServing until Ctrl-C.");
        server.serve_until_signal().await?;
        guard.shutdown().await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
