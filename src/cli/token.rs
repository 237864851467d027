//! `sealkit token`: what `curl` cannot do for a DPoP site. Gets a token for a client
//! (secret, DPoP proof with a fresh key or a key file, client certificate, or both) and
//! prints it; `token call URL` sends one request to a protected resource with a fresh
//! proof; `token introspect` and `token revoke` are RFC 7662 / RFC 7009 by hand.
//!
//! Where the client, issuer and CA come from, first found wins: the flags, then the
//! `demo.env`-style file named by `--env`, then the process environment (so
//! `set -a; . demo.env; set +a` works too). `--client NAME` names a client by its id or by
//! its `demo.env` prefix (`dpop`, `nonce`, `bearer`, `introspect`, `mtls`).

use super::UsageError;
use crate::client::oauth::{self, ClientSetup, ResourceCall};
use crate::client::ProofKey;
use anyhow::Context;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: Option<TokenCommand>,
    #[command(flatten)]
    get: GetArgs,
}

#[derive(clap::Subcommand)]
enum TokenCommand {
    /// Get a token (what `sealkit token` alone does)
    Get(GetArgs),
    /// Send one request to a protected resource with the token and a fresh DPoP proof
    /// (htm, htu, ath), answering a use_dpop_nonce challenge once; prints the body
    Call(Box<CallArgs>),
    /// Ask the authority whether a token is active (RFC 7662), as a client allowed to
    Introspect(TokenOperand),
    /// Revoke a token (RFC 7009), as the client it was issued to
    Revoke(TokenOperand),
    /// Get tokens for a person with the device grant (RFC 8628) of a public client: prints
    /// where to sign in and the code, waits for the approval; the tokens are DPoP-bound
    Device(DeviceArgs),
}

#[derive(clap::Args)]
struct DeviceArgs {
    /// A demo.env-style file (SEALKIT_ISSUER, SEALKIT_CA_FILE, SEALKIT_CLI_CLIENT_ID)
    #[arg(long, value_name = "FILE")]
    env: Option<PathBuf>,
    /// The public client [default: SEALKIT_CLI_CLIENT_ID]
    #[arg(long, value_name = "ID")]
    client: Option<String>,
    /// The authority's issuer URL [default: SEALKIT_ISSUER]
    #[arg(long, value_name = "URL")]
    issuer: Option<String>,
    /// The site CA certificate [default: SEALKIT_CA_FILE]
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// The private JWK the tokens are bound to (created, 0600, when FILE does not exist);
    /// keep it to use the refresh token. Without it a fresh key is used and forgotten.
    #[arg(long, value_name = "FILE")]
    dpop_key: Option<PathBuf>,
    /// Scopes to ask for (space-separated, as one argument) [default: the client's]
    #[arg(long)]
    scope: Option<String>,
    /// Print the whole token response as JSON instead of the access token
    #[arg(long)]
    json: bool,
}

/// Who asks, and where.
#[derive(clap::Args, Clone, Default)]
struct ClientArgs {
    /// A demo.env-style file (SEALKIT_ISSUER, SEALKIT_CA_FILE, SEALKIT_<NAME>_CLIENT_ID/_SECRET,
    /// SEALKIT_MTLS_CERT/_KEY)
    #[arg(long, value_name = "FILE")]
    env: Option<PathBuf>,
    /// The client: its id, or its demo.env name (dpop, nonce, bearer, introspect, mtls)
    #[arg(long, value_name = "ID|NAME")]
    client: Option<String>,
    /// The authority's issuer URL [default: SEALKIT_ISSUER]
    #[arg(long, value_name = "URL")]
    issuer: Option<String>,
    /// The site CA certificate [default: SEALKIT_CA_FILE]
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// A file holding the client secret [default: SEALKIT_CLIENT_SECRET, or the
    /// SEALKIT_<NAME>_CLIENT_SECRET of the named client]
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS [default: SEALKIT_MTLS_CERT for the mtls client]
    #[arg(long, value_name = "FILE", requires = "cert_key")]
    cert: Option<PathBuf>,
    /// The client certificate's private key (PEM)
    #[arg(long, value_name = "FILE", requires = "cert")]
    cert_key: Option<PathBuf>,
}

#[derive(clap::Args, Clone, Default)]
struct ProofArgs {
    /// Send a DPoP proof made with a fresh key (forgotten afterwards)
    #[arg(long)]
    dpop: bool,
    /// Send a DPoP proof made with the private JWK in FILE; a new ES256 key is created
    /// there (0600) when FILE does not exist. Use the same FILE for `token call`.
    #[arg(long, value_name = "FILE")]
    dpop_key: Option<PathBuf>,
}

impl ProofArgs {
    fn key(&self) -> anyhow::Result<Option<ProofKey>> {
        Ok(match (&self.dpop_key, self.dpop) {
            (Some(path), _) => Some(ProofKey::load_or_create(path)?),
            (None, true) => Some(ProofKey::es256()?),
            (None, false) => None,
        })
    }
}

#[derive(clap::Args, Clone, Default)]
struct GetArgs {
    #[command(flatten)]
    who: ClientArgs,
    #[command(flatten)]
    proof: ProofArgs,
    /// Scopes to ask for (space-separated, as one argument)
    #[arg(long)]
    scope: Option<String>,
    /// Print the whole token response as JSON (with the token's cnf) instead of the token
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct CallArgs {
    /// The resource's https URL (the proof's htu is this without query and fragment)
    url: String,
    /// The access token; without it, one is got first for --client
    #[arg(long, env = "SEALKIT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    who: ClientArgs,
    #[command(flatten)]
    proof: ProofArgs,
    /// HTTP method
    #[arg(short = 'X', long, default_value = "GET")]
    method: String,
    /// Request body
    #[arg(short = 'd', long)]
    data: Option<String>,
    /// Extra request header, as "Name: value" (repeatable)
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Print the status line and the response headers before the body
    #[arg(short = 'i', long)]
    include: bool,
}

#[derive(clap::Args)]
struct TokenOperand {
    /// The access token (`-` reads it from standard input)
    // Opaque tokens are random base64url and may start with '-': a value, not a flag.
    #[arg(allow_hyphen_values = true)]
    token: String,
    #[command(flatten)]
    who: ClientArgs,
}

/// The variables the flags fall back to: the --env file, then the process environment.
struct Vars(BTreeMap<String, String>);

impl Vars {
    fn load(env: Option<&PathBuf>) -> anyhow::Result<Vars> {
        let mut vars: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("SEALKIT_"))
            .collect();
        if let Some(path) = env {
            vars.extend(oauth::read_env_file(path)?);
        }
        Ok(Vars(vars))
    }

    fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).filter(|v| !v.is_empty()).cloned()
    }

    /// The authority's issuer URL and the site CA: the flags, else SEALKIT_ISSUER and
    /// SEALKIT_CA_FILE.
    fn authority(
        &self,
        issuer: Option<&String>,
        ca: Option<&PathBuf>,
    ) -> anyhow::Result<(String, PathBuf)> {
        let issuer = issuer
            .cloned()
            .or_else(|| self.get("SEALKIT_ISSUER"))
            .ok_or_else(|| UsageError::new("name the authority with --issuer URL or --env FILE"))?;
        let ca_file = ca
            .cloned()
            .or_else(|| self.get("SEALKIT_CA_FILE").map(PathBuf::from))
            .ok_or_else(|| UsageError::new("name the site CA with --ca FILE or --env FILE"))?;
        Ok((issuer, ca_file))
    }

    /// The demo.env prefix whose client id or name is `name` (`dpop`, `demo-dpop`, …).
    fn prefix_of(&self, name: &str) -> Option<String> {
        self.0.iter().find_map(|(key, value)| {
            let prefix = key.strip_prefix("SEALKIT_")?.strip_suffix("_CLIENT_ID")?;
            (value == name || prefix.eq_ignore_ascii_case(name)).then(|| prefix.to_string())
        })
    }
}

impl ClientArgs {
    /// Resolves the client: `--client`, else `default` (a demo.env name or a client id).
    fn setup(&self, default: Option<&str>) -> anyhow::Result<ClientSetup> {
        let vars = Vars::load(self.env.as_ref())?;
        let (issuer, ca_file) = vars.authority(self.issuer.as_ref(), self.ca.as_ref())?;
        let name = self
            .client
            .clone()
            .or_else(|| default.map(str::to_string))
            .ok_or_else(|| UsageError::new("name the client with --client ID|NAME"))?;
        let prefix = vars.prefix_of(&name);
        let client_id = match &prefix {
            Some(p) => vars
                .get(&format!("SEALKIT_{p}_CLIENT_ID"))
                .unwrap_or(name.clone()),
            None => name.clone(),
        };
        let secret = match &self.secret_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?
                    .trim()
                    .to_string(),
            ),
            None => prefix
                .as_ref()
                .and_then(|p| vars.get(&format!("SEALKIT_{p}_CLIENT_SECRET")))
                .or_else(|| {
                    prefix
                        .is_none()
                        .then(|| vars.get("SEALKIT_CLIENT_SECRET"))
                        .flatten()
                }),
        };
        let identity = match (&self.cert, &self.cert_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            _ => prefix
                .as_ref()
                .and_then(|p| {
                    Some((
                        vars.get(&format!("SEALKIT_{p}_CERT"))?,
                        vars.get(&format!("SEALKIT_{p}_KEY"))?,
                    ))
                })
                .map(|(c, k)| (PathBuf::from(c), PathBuf::from(k))),
        };
        if secret.is_none() && identity.is_none() {
            return Err(UsageError::new(format!(
                "client {client_id} has neither a secret nor a certificate: give --secret-file FILE \
                 (or SEALKIT_CLIENT_SECRET) or --cert FILE --cert-key FILE"
            ))
            .into());
        }
        Ok(ClientSetup {
            issuer,
            ca_file,
            client_id,
            secret,
            identity,
        })
    }
}

fn operand(token: &str) -> anyhow::Result<String> {
    if token != "-" {
        return Ok(token.trim().to_string());
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
        .context("cannot read the token from standard input")?;
    Ok(text.trim().to_string())
}

async fn get(args: &GetArgs) -> anyhow::Result<(oauth::IssuedToken, Option<ProofKey>)> {
    let setup = args.who.setup(None)?;
    let key = args.proof.key()?;
    let token = oauth::get_token(&setup, key.as_ref(), args.scope.as_deref())
        .await
        .with_context(|| format!("no token for {}", setup.client_id))?;
    Ok((token, key))
}

pub fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match args.command {
            None => print_token(args.get).await,
            Some(TokenCommand::Get(get)) => print_token(get).await,
            Some(TokenCommand::Call(call)) => call_resource(*call).await,
            Some(TokenCommand::Introspect(operand_args)) => {
                let token = operand(&operand_args.token)?;
                let setup = operand_args.who.setup(Some("introspect"))?;
                let answer = oauth::introspect(&setup, &token)
                    .await
                    .context("introspection failed")?;
                outln!("{}", serde_json::to_string_pretty(&answer)?);
                Ok(ExitCode::SUCCESS)
            }
            Some(TokenCommand::Device(device)) => device_flow(device).await,
            Some(TokenCommand::Revoke(operand_args)) => {
                let token = operand(&operand_args.token)?;
                // The client the token was issued to (RFC 7009 §2.1), from its claims.
                let owner = oauth::unverified_claims(&token)["client_id"]
                    .as_str()
                    .map(str::to_string);
                let setup = operand_args.who.setup(owner.as_deref())?;
                oauth::revoke(&setup, &token)
                    .await
                    .context("revocation failed")?;
                outln!("revoked");
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

async fn print_token(args: GetArgs) -> anyhow::Result<ExitCode> {
    let (token, _) = get(&args).await?;
    if args.json {
        let mut body = token.response.clone();
        let cnf = oauth::unverified_claims(&token.access_token)["cnf"].clone();
        if !cnf.is_null() {
            body["cnf"] = cnf;
        }
        outln!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        outln!("{}", token.access_token);
    }
    Ok(ExitCode::SUCCESS)
}

async fn call_resource(args: CallArgs) -> anyhow::Result<ExitCode> {
    let (token, key) = match &args.token {
        Some(token) => (operand(token)?, args.proof.key()?),
        None => {
            let get_args = GetArgs {
                who: args.who.clone(),
                proof: args.proof.clone(),
                ..Default::default()
            };
            let (issued, key) = get(&get_args).await?;
            (issued.access_token, key)
        }
    };
    if key.is_none() && !oauth::unverified_claims(&token)["cnf"]["jkt"].is_null() {
        return Err(UsageError::new(
            "this token is DPoP-bound: give the key it is bound to with --dpop-key FILE",
        )
        .into());
    }
    let vars = Vars::load(args.who.env.as_ref())?;
    let ca_file = args
        .who
        .ca
        .clone()
        .or_else(|| vars.get("SEALKIT_CA_FILE").map(PathBuf::from))
        .ok_or_else(|| UsageError::new("name the site CA with --ca FILE or --env FILE"))?;
    let identity = match (&args.who.cert, &args.who.cert_key) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        _ => None,
    };
    let mut headers = Vec::new();
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| UsageError::new(format!("write -H as \"Name: value\", not {header}")))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let reply = oauth::call(&ResourceCall {
        method: &args.method,
        url: &args.url,
        ca_file: &ca_file,
        identity: identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        token: &token,
        key: key.as_ref(),
        body: args.data.map(|d| bytes::Bytes::from(d.into_bytes())),
        headers,
    })
    .await
    .with_context(|| format!("cannot call {}", args.url))?;
    let mut out = super::output::Stdout;
    if args.include {
        writeln!(out, "HTTP/1.1 {}", reply.status)?;
        for (name, value) in &reply.headers {
            writeln!(out, "{name}: {}", value.to_str().unwrap_or("<binary>"))?;
        }
        writeln!(out)?;
    }
    out.write_all(&reply.body)?;
    if !reply.body.ends_with(b"\n") && !reply.body.is_empty() {
        writeln!(out)?;
    }
    if reply.status.is_success() {
        Ok(ExitCode::SUCCESS)
    } else {
        let www = reply
            .header("www-authenticate")
            .map(|w| format!(" ({w})"))
            .unwrap_or_default();
        errln!("sealkit: the resource answered {}{www}", reply.status);
        Ok(ExitCode::from(super::exit::CHECKS_FAILED))
    }
}

/// `sealkit token device`: the device grant of a public client, run by
/// `client::device::run`; the person's instructions go to stderr, the token to stdout.
async fn device_flow(args: DeviceArgs) -> anyhow::Result<ExitCode> {
    let vars = Vars::load(args.env.as_ref())?;
    let (issuer, ca_file) = vars.authority(args.issuer.as_ref(), args.ca.as_ref())?;
    let client_id = args
        .client
        .clone()
        .or_else(|| vars.get("SEALKIT_CLI_CLIENT_ID"))
        .ok_or_else(|| UsageError::new("name the public client with --client ID"))?;
    let key = match &args.dpop_key {
        Some(path) => ProofKey::load_or_create(path)?,
        None => ProofKey::es256()?,
    };
    let mut conn = crate::client::https::TlsTarget::new(&issuer, &ca_file, None)?
        .connect()
        .await
        .with_context(|| format!("cannot reach {issuer}"))?;
    let tokens = crate::client::device::run(
        &mut conn,
        issuer.trim_end_matches('/'),
        &client_id,
        args.scope.as_deref(),
        &key,
        |codes| {
            errln!(
                "To sign in, open {}\n  (or {} and enter the code {}); the code expires in {} s.",
                codes.verification_uri_complete,
                codes.verification_uri,
                codes.user_code,
                codes.expires_in
            );
        },
    )
    .await
    .with_context(|| format!("no token for {client_id}"))?;
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "access_token": tokens.access_token,
                "token_type": tokens.token_type,
                "expires_in": tokens.expires_in,
                "scope": tokens.scope,
                "refresh_token": tokens.refresh_token,
                "cnf": oauth::unverified_claims(&tokens.access_token)["cnf"],
            }))?
        );
    } else {
        outln!("{}", tokens.access_token);
    }
    Ok(ExitCode::SUCCESS)
}
