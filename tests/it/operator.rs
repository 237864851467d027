//! The operator's day, as a new operator lives it: `sealkit demo`, then nothing but the
//! commands it prints (run exactly as printed, by a shell, with `sealkit` on the PATH);
//! the client tools and the incident revocation against the running demo.

use crate::harness::BIN;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn free_port_pair() -> u16 {
    // The demo's guard listens on the next port and its metrics listener on the third
    // after it (`demo::ports_for`): find a port whose followers are free too.
    loop {
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        if port < u16::MAX - 3
            && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port + 3)).is_ok()
        {
            return port;
        }
    }
}

/// A running `sealkit demo`, killed when dropped (also when a test fails).
pub(crate) struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `sealkit demo` as a child process; returns it and its standard output up to
/// "Serving until Ctrl-C.".
pub(crate) fn start_demo(dir: &Path) -> (Demo, Vec<String>) {
    let port = free_port_pair();
    let mut demo = Demo(
        Command::new(BIN)
            .args(["demo", "--dir"])
            .arg(dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = demo.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the demo did not come up:\n{}", lines.join("\n")));
        let done = line.starts_with("Serving until Ctrl-C");
        lines.push(line);
        if done {
            return (demo, lines);
        }
    }
}

/// The printed "Try it" block: every indented line after the heading, up to a blank line.
fn try_it(output: &[String]) -> Vec<String> {
    output
        .iter()
        .skip_while(|l| !l.starts_with("Try it"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.strip_prefix("  ").unwrap_or(l).to_string())
        .collect()
}

/// Runs `commands` in one shell, in order, and returns each command's output and status.
fn run_in_shell(commands: &[String]) -> Vec<(String, String, i32)> {
    let runnable: Vec<&String> = commands.iter().filter(|c| !c.starts_with('#')).collect();
    let mut script = String::new();
    for (i, command) in runnable.iter().enumerate() {
        script.push_str(&format!(
            "echo '@@begin {i}'\n{command}\necho \"@@end {i} $?\"\n"
        ));
    }
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("PATH", path)
        .env_remove("SEALKIT_CONFIG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut results = Vec::new();
    for (i, command) in runnable.iter().enumerate() {
        let begin = format!("@@begin {i}\n");
        let start = text
            .find(&begin)
            .map(|p| p + begin.len())
            .unwrap_or_else(|| {
                panic!(
                    "command {i} did not run: {command}\n{text}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        let end_marker = format!("@@end {i} ");
        let end = text[start..].find(&end_marker).unwrap() + start;
        let rc: i32 = text[end + end_marker.len()..]
            .lines()
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        results.push((command.to_string(), text[start..end].to_string(), rc));
    }
    results
}

fn output_of<'a>(results: &'a [(String, String, i32)], needle: &str, nth: usize) -> &'a str {
    let (command, output, rc) = results
        .iter()
        .filter(|(c, _, _)| c.contains(needle))
        .nth(nth)
        .unwrap_or_else(|| panic!("no printed command #{nth} with {needle:?}"));
    assert_eq!(*rc, 0, "{command} exited {rc}:\n{output}");
    output
}

fn sealkit(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_remove("SEALKIT_CONFIG")
        .output()
        .unwrap()
}

#[test]
fn a_fresh_demo_and_nothing_but_its_printed_commands_get_every_kind_of_token() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    let (demo, output) = start_demo(&site);
    let commands = try_it(&output);
    assert!(commands.len() > 10, "{output:#?}");
    let results = run_in_shell(&commands);
    drop(demo);
    for (command, out, rc) in &results {
        assert_eq!(*rc, 0, "{command} exited {rc}:\n{out}");
    }

    // A nonce-tenant token (DPoP-bound), an mTLS token (certificate-bound), Bearer via curl.
    let nonce = output_of(&results, "--client demo-nonce --dpop --json", 0);
    assert!(nonce.contains("\"token_type\": \"DPoP\"") && nonce.contains("\"jkt\""));
    let mtls = output_of(&results, "--client demo-mtls --json", 0);
    assert!(mtls.contains("\"x5t#S256\""), "{mtls}");
    assert!(output_of(&results, "curl ", 0).contains("\"access_token\""));
    // The DPoP token through the guard, with the guard's nonce retry on the nonce route.
    let call = output_of(&results, "token call", 0);
    assert!(
        call.contains("\"x-sealkit-client\":\"demo-dpop\"")
            && call.contains("\"x-sealkit-token-type\":\"DPoP\""),
        "{call}"
    );
    let nonce_call = output_of(&results, "token call", 1);
    assert!(
        nonce_call.contains("\"x-sealkit-client\":\"demo-nonce\""),
        "{nonce_call}"
    );
    // Introspection active, revocation, introspection inactive.
    assert!(output_of(&results, "token introspect", 0).contains("\"active\": true"));
    assert!(output_of(&results, "token revoke", 0).contains("revoked"));
    assert!(output_of(&results, "token introspect", 1).contains("\"active\": false"));
    // The client tools and the incident revocation.
    let show = output_of(&results, "client show", 0);
    assert!(show.contains("policy        dpop") && show.contains("client_secret_basic"));
    assert!(output_of(&results, "client revoke-all", 0).contains("revoked"));
    assert!(output_of(&results, "token introspect", 2).contains("\"active\": false"));
}

#[test]
fn revoking_every_token_of_a_client_makes_each_introspect_inactive() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    let (demo, _) = start_demo(&site);
    let env = site.join("demo.env");
    let env = env.to_str().unwrap();
    let config = site.join("authority.yaml");
    let config = config.to_str().unwrap();

    let show = sealkit(&["client", "show", "--config", config, "demo-dpop", "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(shown["senderConstraint"], "dpop");
    assert_eq!(shown["authMethod"], "client_secret_basic");
    assert_eq!(shown["audience"][0], "https://api.demo.sealkit");

    let token = |client: &str| {
        let out = sealkit(&["token", "--env", env, "--client", client, "--dpop"]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let introspect = |token: &str| {
        let out = sealkit(&["token", "introspect", "--env", env, token]);
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["active"].clone()
    };
    let dpop: Vec<String> = (0..3).map(|_| token("demo-dpop")).collect();
    let other = token("demo-nonce");
    for t in &dpop {
        assert_eq!(introspect(t), true);
    }
    let out = sealkit(&["client", "revoke-all", "--config", config, "demo-dpop"]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{out:?}");
    assert!(said.starts_with("revoked "), "{said}");
    for t in &dpop {
        assert_eq!(introspect(t), false, "a demo-dpop token is still active");
    }
    assert_eq!(
        introspect(&other),
        true,
        "another client's token was revoked"
    );

    // One token by jti; an unknown jti revokes nothing and says so.
    let jti = {
        let out = sealkit(&["token", "introspect", "--env", env, &other]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["jti"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let out = sealkit(&["client", "revoke-jti", "--config", config, &jti]);
    assert!(
        out.status.success(),
        "{:?} {} {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(introspect(&other), false);
    let out = sealkit(&["client", "revoke-jti", "--config", config, "no-such-jti"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    // Each act is audited with the operator's uid.
    let logs: String = std::fs::read_dir(site.join("logs"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut logs = logs;
    while !logs.contains("authority.token.revokedByOperator") {
        assert!(std::time::Instant::now() < deadline, "no audit event");
        std::thread::sleep(Duration::from_millis(100));
        logs = std::fs::read_dir(site.join("logs"))
            .unwrap()
            .flatten()
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect();
    }
    let audit: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("authority.token.revokedByOperator"))
        .collect();
    assert!(
        audit
            .iter()
            .any(|l| l.contains("\"selected\":\"demo-dpop\"") && l.contains("\"operator\":\"uid:")),
        "{audit:#?}"
    );
    assert!(audit.iter().any(|l| l.contains(&jti)), "{audit:#?}");
    drop(demo);
}

/// Every bad input an operator met: one line on stderr naming the file or key and the
/// cause once, no Rust debug text, and the exit code of the README's table.
#[test]
fn every_bad_input_gives_one_line_and_its_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |name: &str| d.join(name).display().to_string();
    // A demo site (not served), a CA whose root key went back to the offline medium, a DER
    // CSR and a file that is no CSR at all.
    let site = d.join("site");
    let port = free_port_pair();
    let out = sealkit(&[
        "demo",
        "--dir",
        site.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--prepare-only",
    ]);
    assert!(out.status.success(), "{out:?}");
    let env = site.join("demo.env").display().to_string();
    let ca_dir = p("ca");
    assert!(sealkit(&["ca", "init", "--dir", &ca_dir, "--name", "T"])
        .status
        .success());
    std::fs::rename(d.join("ca/root.key"), d.join("root.key.offline")).unwrap();
    std::fs::write(d.join("junk.csr"), [0xffu8, 0x00, 0x13, 0x37]).unwrap();
    let der = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(vec!["svc".into()])
        .unwrap()
        .serialize_request(&der)
        .unwrap();
    std::fs::write(d.join("svc.der"), csr.der()).unwrap();

    let other_port = format!("127.0.0.1:{}", free_port_pair());
    let mtls_cert = site.join("certs/demo-mtls.crt").display().to_string();
    let wrong_key = site
        .join("certs/demo-unregistered.key")
        .display()
        .to_string();
    let config = site.join("authority.yaml").display().to_string();
    let ca_file = site.join("ca/root.crt").display().to_string();
    #[rustfmt::skip]
    let a = |args: &[&str]| args.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let repo_kit = concat!(env!("CARGO_MANIFEST_DIR"), "/kit");
    let rows: Vec<(&str, Vec<String>, i32, &str)> = vec![
        (
            "kit build with a dynamically linked binary",
            a(&[
                "kit",
                "build",
                "--out",
                &p("k2.tar.zst"),
                "--secret-key",
                &p("none.key"),
                "--kit-dir",
                repo_kit,
                "--binary",
                BIN,
            ]),
            2,
            "dynamically linked",
        ),
        (
            "missing configuration file",
            a(&["serve", "--config", "/nonexistent/authority.yaml"]),
            3,
            "/nonexistent/authority.yaml",
        ),
        (
            "a file that is no CSR",
            a(&[
                "ca",
                "sign-csr",
                "--dir",
                &ca_dir,
                "--csr",
                &p("junk.csr"),
                "--out",
                &p("o1"),
                "--client-id",
                "c1",
            ]),
            4,
            "neither a PEM nor a DER",
        ),
        (
            "root key on the offline medium",
            a(&["ca", "rotate", "--dir", &ca_dir]),
            4,
            "offline medium",
        ),
        (
            "kit build outside the source tree",
            a(&[
                "kit",
                "build",
                "--out",
                &p("k.tar.zst"),
                "--secret-key",
                &p("none.key"),
                "--kit-dir",
                &p("no-kit"),
            ]),
            2,
            "not a kit directory",
        ),
        (
            "client key of another certificate",
            a(&[
                "token",
                "--env",
                &env,
                "--client",
                "demo-mtls",
                "--cert",
                &mtls_cert,
                "--cert-key",
                &wrong_key,
            ]),
            4,
            "does not match the certificate",
        ),
        (
            "bundle root that does not exist",
            a(&["bundle", "status", "--root", &p("no-root")]),
            1,
            "does not exist",
        ),
        (
            "control socket nobody serves",
            a(&["drill", "status", "--socket", &p("none.sock")]),
            4,
            "cannot reach the authority's control socket",
        ),
        (
            "demo directory made for another address",
            a(&[
                "demo",
                "--dir",
                site.to_str().unwrap(),
                "--listen",
                &other_port,
                "--prepare-only",
            ]),
            2,
            "made for",
        ),
        (
            "token without a client",
            a(&["token", "--env", &env]),
            2,
            "--client",
        ),
        (
            "unknown client",
            a(&["client", "show", "--config", &config, "nobody"]),
            4,
            "no client nobody",
        ),
        (
            "authority not running: the drill's checks fail",
            a(&[
                "drill",
                "run",
                "--target",
                &format!("https://127.0.0.1:{port}"),
                "--ca",
                &ca_file,
            ]),
            1,
            "",
        ),
    ];
    for (what, args, code, needle) in rows {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = sealkit(&args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(code), "{what}: {stderr}");
        for debris in ["KeyMismatch", "Ok(", "Err(", "Some(", "\"chain\""] {
            assert!(!stderr.contains(debris), "{what}: debug text: {stderr}");
        }
        if needle.is_empty() {
            continue; // a drill's failures are its table on stdout
        }
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{what}: not one line: {stderr}");
        assert!(lines[0].starts_with("sealkit: "), "{what}: {stderr}");
        assert!(lines[0].contains(needle), "{what}: {stderr}");
        assert!(
            lines[0].matches("(os error").count() <= 1,
            "{what}: cause twice: {stderr}"
        );
    }
    // A DER CSR is accepted as it is (what `openssl req -outform DER` writes); the root key
    // is back: rotation works again.
    std::fs::rename(d.join("root.key.offline"), d.join("ca/root.key")).unwrap();
    let out = sealkit(&[
        "ca",
        "sign-csr",
        "--dir",
        &ca_dir,
        "--csr",
        &p("svc.der"),
        "--out",
        &p("o2"),
        "--client-id",
        "svc",
    ]);
    assert!(out.status.success(), "{out:?}");
}

/// A kit built with `--allow-dynamic` from this (dynamic, debug) binary carries the
/// runbooks; `kit/install.sh` installs them, the man pages and the shell completions, and a
/// second run changes nothing.
#[test]
fn the_kit_installs_runbooks_man_pages_and_completions() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let secret = d.join("signing.key").display().to_string();
    let public = d.join("signing.pub").display().to_string();
    let out = sealkit(&[
        "bundle",
        "keygen",
        "--unencrypted",
        "--secret-key",
        &secret,
        "--public-key",
        &public,
    ]);
    assert!(out.status.success(), "{out:?}");
    let sbom = d.join("sealkit.cdx.json");
    std::fs::write(
        &sbom,
        br#"{"bomFormat":"CycloneDX","specVersion":"1.5","version":1,"components":[]}"#,
    )
    .unwrap();
    let kit = d.join("kit").display().to_string();
    let repo = env!("CARGO_MANIFEST_DIR");
    let build = |extra: &[&str]| {
        let mut args = vec![
            "kit",
            "build",
            "--dir",
            "--out",
            &kit,
            "--binary",
            BIN,
            "--sbom",
            sbom.to_str().unwrap(),
            "--secret-key",
            &secret,
        ];
        args.extend_from_slice(extra);
        let kit_dir = format!("{repo}/kit");
        let runbooks = format!("{repo}/docs/runbooks");
        args.extend_from_slice(&["--kit-dir", &kit_dir, "--runbooks", &runbooks]);
        sealkit(&args)
    };
    let refused = build(&[]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let out = build(&["--allow-dynamic"]);
    assert!(out.status.success(), "{out:?}");
    let out = sealkit(&["kit", "verify", &kit, "--trusted-keys", &public]);
    assert!(out.status.success(), "{out:?}");
    assert!(Path::new(&kit).join("runbooks/dpop-bypass.md").is_file());

    let root = d.join("root");
    std::fs::create_dir(&root).unwrap();
    let install = || {
        Command::new("sh")
            .arg(Path::new(&kit).join("install.sh"))
            .env("DESTDIR", &root)
            .output()
            .unwrap()
    };
    let first = install();
    assert!(first.status.success(), "{first:?}");
    let share = root.join("usr/local/share");
    for file in [
        "sealkit/runbooks/dpop-bypass.md",
        "man/man1/sealkit.1",
        "man/man1/sealkit-token.1",
        "man/man1/sealkit-client-revoke-all.1",
        "bash-completion/completions/sealkit",
        "zsh/site-functions/_sealkit",
        "fish/vendor_completions.d/sealkit.fish",
    ] {
        assert!(share.join(file).is_file(), "{file} not installed");
    }
    let bash = std::fs::read_to_string(share.join("bash-completion/completions/sealkit")).unwrap();
    assert!(bash.contains("revoke-all") && bash.contains("--dpop-key"));
    let again = install();
    let said = String::from_utf8_lossy(&again.stdout).to_string()
        + &String::from_utf8_lossy(&again.stderr);
    assert!(said.contains("nothing to change"), "{said}");
}

/// The scripting contracts: `drill run --env demo.env --bypass` finds the authority through
/// the file's SEALKIT_CONFIG; `drill status` prints JSON and nothing else, with the bypass
/// end as an RFC 3339 time.
#[test]
fn drill_run_env_reaches_the_bypass_and_drill_status_is_json_only() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    let (demo, _) = start_demo(&site);
    let env = site.join("demo.env").display().to_string();
    let config = site.join("authority.yaml").display().to_string();
    let out = sealkit(&["drill", "run", "--env", &env, "--bypass"]);
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{table}");
    assert!(
        table.contains("bypass on: unbound token") && table.contains(" 0 skipped"),
        "{table}"
    );
    let on = sealkit(&[
        "drill",
        "bypass",
        "--for",
        "2m",
        "--reason",
        "contract test",
        "--config",
        &config,
    ]);
    assert!(on.status.success(), "{on:?}");
    let out = sealkit(&["drill", "status", "--config", &config]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON only ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let until = status["bypass"]["until"].as_str().unwrap();
    assert!(
        time::OffsetDateTime::parse(until, &time::format_description::well_known::Rfc3339).is_ok(),
        "{until}"
    );
    assert!(sealkit(&["drill", "bypass", "--off", "--config", &config])
        .status
        .success());
    drop(demo);
}

/// A reader that goes away early (`sealkit ca list --json | head -1`) is no error: the
/// command exits 0 quietly, without "failed printing to stdout: Broken pipe" (the exit table
/// in `cli::exit`). Output lost to any other write error (a full disk) is exit 4, one line.
#[test]
fn a_reader_that_goes_away_early_is_quiet_and_a_full_disk_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca").display().to_string();
    assert!(sealkit(&["ca", "init", "--dir", &ca, "--name", "Pipe"])
        .status
        .success());
    for id in ["svc-a", "svc-b", "svc-c", "svc-d", "svc-e"] {
        let out_dir = dir.path().join(id).display().to_string();
        let out = sealkit(&[
            "ca",
            "issue",
            "client",
            "--dir",
            &ca,
            "--client-id",
            id,
            "--out",
            &out_dir,
        ]);
        assert!(out.status.success(), "{out:?}");
    }
    let listed = sealkit(&["ca", "list", "--dir", &ca, "--json"]);
    assert!(listed.stdout.len() > 1000, "{listed:?}");

    // The read end is closed before the command starts: its first write fails with EPIPE
    // (Rust ignores SIGPIPE), every time.
    let closed = || {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        Stdio::from(writer)
    };
    for args in [
        vec!["ca", "list", "--dir", &ca, "--json"],
        vec!["ca", "list", "--dir", &ca],
        vec!["completions", "bash"],
        vec!["--help"],
        vec!["ca", "--help"],
        vec!["--version"],
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .stdout(closed())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.trim().is_empty(), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }

    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = Command::new(BIN)
        .args(["ca", "list", "--dir", &ca, "--json"])
        .stdout(full)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("sealkit: cannot write to standard output"),
        "{stderr}"
    );
}
