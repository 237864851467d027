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
    /// Address to serve on (also the issuer's host and port) [default: 127.0.0.1:8443, or
    /// the existing site's]. A site is made for one address: another one is refused.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Prepare the site and print how to use it, but do not serve
    #[arg(long)]
    prepare_only: bool,
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let existing = args.dir.join("demo.env").exists();
    let default: SocketAddr = ([127, 0, 0, 1], 8443).into();
    let site = crate::demo::prepare_with_ports(
        &args.dir,
        crate::demo::ports_for(args.listen.unwrap_or(default)),
    )?;
    let settings = Settings::load(&site.config)?;
    if let Some(asked) = args.listen.filter(|a| existing && *a != settings.listen) {
        return Err(super::UsageError::new(format!(
            "{} is a demo site made for {} (issuer {}); it cannot serve on {asked}: \
             leave out --listen, or give a new --dir",
            site.dir.display(),
            settings.listen,
            site.issuer
        ))
        .into());
    }
    outln!("sealkit demo site in {}", site.dir.display());
    outln!("  configuration  {}", site.config.display());
    outln!("  issuer         {}", site.issuer);
    outln!("  CA certificate {}", site.ca_file.display());
    outln!(
        "  metrics        http://{}/metrics (loopback only)",
        settings.metrics_listen
    );
    outln!(
        "  clients and secrets: {}/demo.env (mode 0600)",
        site.dir.display()
    );
    outln!();
    outln!("Try it: every line below runs as printed (`sealkit token` is curl with DPoP):");
    for line in try_it(&site) {
        outln!("  {line}");
    }
    if args.prepare_only {
        return Ok(ExitCode::SUCCESS);
    }
    outln!();
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
        outln!(
            "sealkit guard listening on https://{} (resource: {})",
            guard.addr,
            site.var("SEALKIT_RESOURCE_URL")
        );
        // Show the enforcement working: the verification matrix against this very site.
        let mut plan = crate::drill::DrillPlan::from_env_file(&site.dir.join("demo.env"))?;
        plan.log_dir = Some(settings.logging.directory.clone());
        let report = crate::drill::run(&plan).await;
        outln!(
            "\nVerification matrix (sealkit drill run --env {}/demo.env):\n",
            site.dir.display()
        );
        out!("{}", report.table());
        outln!("\nServing until Ctrl-C.");
        server.serve_until_signal().await?;
        guard.shutdown().await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Quotes `text` for a POSIX shell when it holds anything but safe characters.
fn shell_quote(text: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-:=@+,".contains(c);
    if !text.is_empty() && text.chars().all(safe) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// The ready-to-paste commands `sealkit demo` prints: a token for every tenant, a call
/// through the guard, introspection, revocation, and the incident tools. `#` lines are
/// comments; the rest run in one shell, in order (tests/it/operator.rs runs exactly them).
pub fn try_it(site: &crate::demo::DemoSite) -> Vec<String> {
    let env = shell_quote(&site.dir.join("demo.env").display().to_string());
    let key = shell_quote(&site.dir.join("dpop.jwk").display().to_string());
    let config = shell_quote(&site.config.display().to_string());
    let token = format!("sealkit token --env {env}");
    vec![
        "# The site's variables (issuer, CA, clients, resource URLs):".into(),
        format!("set -a; . {env}; set +a"),
        "# A DPoP-bound token for demo-dpop (its proof key stays in dpop.jwk for the calls below):"
            .into(),
        format!("TOKEN=$({token} --client demo-dpop --dpop-key {key})"),
        "# The nonce tenant: the authority answers use_dpop_nonce first, the command retries:"
            .into(),
        format!("{token} --client demo-nonce --dpop --json"),
        "# A certificate-bound token (tls_client_auth, certs/demo-mtls.crt): cnf.x5t#S256:".into(),
        format!("{token} --client demo-mtls --json"),
        "# A Bearer token for the unconstrained tenant, with curl:".into(),
        "curl -sS -w '\\n' --cacert \"$SEALKIT_CA_FILE\" -u \"$SEALKIT_BEARER_CLIENT_ID:$SEALKIT_BEARER_CLIENT_SECRET\" -d grant_type=client_credentials \"$SEALKIT_TOKEN_URL\"".into(),
        "# Call the resource behind the guard with the DPoP token and a fresh proof (htm, htu, ath):"
            .into(),
        format!("sealkit token call --env {env} --dpop-key {key} --token \"$TOKEN\" \"$SEALKIT_RESOURCE_URL\""),
        "# The guard's nonce route: it answers use_dpop_nonce first, the command retries:".into(),
        format!("sealkit token call --env {env} --client demo-nonce --dpop \"$SEALKIT_RESOURCE_NONCE_URL\""),
        "# Introspect (as demo-resource), revoke (as the token's client), introspect again:"
            .into(),
        format!("sealkit token introspect --env {env} \"$TOKEN\""),
        format!("sealkit token revoke --env {env} \"$TOKEN\""),
        format!("sealkit token introspect --env {env} \"$TOKEN\""),
        "# The clients of the running configuration:".into(),
        format!("sealkit client list --config {config}"),
        format!("sealkit client show --config {config} demo-dpop"),
        "# Incident: revoke every live token of demo-dpop (on this host, as root or the authority's user):"
            .into(),
        format!("TOKEN=$({token} --client demo-dpop --dpop-key {key})"),
        format!("sealkit client revoke-all --config {config} demo-dpop"),
        format!("sealkit token introspect --env {env} \"$TOKEN\""),
    ]
}
