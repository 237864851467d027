//! `sealkit user hash` and `sealkit user add`: argon2id password hashes for the users file,
//! and adding a user to a bundle source directory. The password is read from standard
//! input (without echo on a terminal), never from the command line.

use anyhow::{bail, Context};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum UserCommand {
    /// Read a password from standard input and print its argon2id hash (`passwordHash`)
    Hash,
    /// Add a user to the users file of a bundle source directory (password from stdin)
    Add(AddArgs),
}

#[derive(clap::Args)]
pub struct AddArgs {
    /// The bundle source directory (holds authority.yaml and users.yaml)
    #[arg(long)]
    pub bundle_dir: PathBuf,
    /// The user id (1-128 of A-Z a-z 0-9 - _ . :)
    #[arg(long)]
    pub id: String,
    #[arg(long)]
    pub display_name: Option<String>,
    /// A group (repeat for several); groups map to scopes per client (`groupScopes`)
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// The users file inside the directory
    #[arg(long, default_value = "users.yaml")]
    pub users_file: PathBuf,
}

/// One line from stdin; on a terminal, prompted on stderr with echo off, asked twice.
fn read_password() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let read_line = || -> anyhow::Result<String> {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .context("cannot read the password")?;
        Ok(line.trim_end_matches(['\n', '\r']).to_string())
    };
    if !stdin.is_terminal() {
        let password = read_line()?;
        if password.is_empty() {
            bail!("no password on standard input");
        }
        return Ok(password);
    }
    let fd = std::io::stdin();
    let saved = rustix::termios::tcgetattr(&fd).context("cannot read the terminal settings")?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
    rustix::termios::tcsetattr(&fd, rustix::termios::OptionalActions::Now, &quiet)
        .context("cannot turn the terminal echo off")?;
    let result = (|| {
        eprint!("Password: ");
        let _ = std::io::stderr().flush();
        let first = read_line()?;
        eprint!("\nAgain: ");
        let _ = std::io::stderr().flush();
        let second = read_line()?;
        errln!();
        if first != second {
            bail!("the passwords differ");
        }
        if first.is_empty() {
            bail!("an empty password");
        }
        Ok(first)
    })();
    let _ = rustix::termios::tcsetattr(&fd, rustix::termios::OptionalActions::Now, &saved);
    result
}

fn hash(password: &str) -> anyhow::Result<String> {
    Ok(crate::people::password::hash_password(
        password,
        crate::people::password::STANDARD_MEMORY_KIB,
        crate::people::password::STANDARD_PASSES,
    )?)
}

pub fn run(command: UserCommand) -> anyhow::Result<ExitCode> {
    match command {
        UserCommand::Hash => {
            outln!("{}", hash(&read_password()?)?);
            Ok(ExitCode::SUCCESS)
        }
        UserCommand::Add(args) => {
            let path = args.bundle_dir.join(&args.users_file);
            let existing = match std::fs::read_to_string(&path) {
                Ok(text) => Some(text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
            };
            let user = crate::people::users_file::NewUser {
                id: args.id.clone(),
                display_name: args.display_name,
                password_hash: hash(&read_password()?)?,
                groups: args.groups,
                totp_secret: None,
            };
            let text = crate::people::users_file::add(existing.as_deref(), &user)
                .with_context(|| format!("cannot add `{}` to {}", args.id, path.display()))?;
            crate::ca::fsio::replace(&path, text.as_bytes(), 0o600)
                .with_context(|| format!("cannot write {}", path.display()))?;
            errln!("added user `{}` to {}", args.id, path.display());
            let config = args.bundle_dir.join("authority.yaml");
            if let Ok(yaml) = std::fs::read_to_string(&config) {
                if !yaml.contains("users:") {
                    errln!(
                        "note: {} does not name a users file yet; add `people: {{users: {}}}`",
                        config.display(),
                        args.users_file.display()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
