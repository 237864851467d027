//! Every runbook step runs as written (issue 17, build item 6).
//!
//! Each fenced `sh`/`bash`/`console` block of `docs/runbooks/*.md` is run, in the order of
//! its runbook, by `bash -euo pipefail` with `sealkit` (this build) first on the PATH,
//! against a scratch site: a running `sealkit demo` (authority, guard and its upstream) and
//! the variables the runbooks name (docs/runbooks/README.md) pointing into a temporary
//! directory. The blocks of all runbooks share one working directory, in the order an
//! operator meets them (the CA first, then bundles, …), so a later runbook may use what an
//! earlier one made, as on a real site.
//!
//! A block runs unless the line before it is `<!-- runbook-test: skip — WHY -->` (it
//! cannot run on a scratch site: systemd, another host, root); `<!-- runbook-test: exit N
//! — WHY -->` says the block exits N as written (e.g. `openssl verify` of the revoked
//! certificate it shows). A fence without a language fails the test: a step must not hide
//! from it.
//!
//! The scratch site differs from a real one in three ways:
//! - the authority serves the demo's `authority.yaml` (`SEALKIT_CONFIG`), not the scratch
//!   bundle root's `current/`, so a `sealkit reload` after `bundle import` reloads the
//!   demo's configuration;
//! - the offline kit of install-from-kit.md §1 (whose block needs the static build) is
//!   built by the test, just before that runbook, from the artefacts the earlier runbooks
//!   made (signing key, v7 bundle, CA) — with a two-line wrapper as its binary, which runs
//!   this build: a 200 MB debug binary would take minutes to hash and compress;
//! - `DESTDIR` is set, so `install.sh` (§4) stages the installation into the scratch
//!   directory instead of `/`.

use crate::harness::BIN;
use crate::operator::start_demo;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// The runbooks in the order an operator meets them; the rest follow by name.
const ORDER: [&str; 8] = [
    "README.md",
    "ca.md",
    "bundle-import.md",
    "install-from-kit.md",
    "dpop-bypass.md",
    "run-drill.md",
    "guard.md",
    "monitoring.md",
];

/// What the line before a block says the test should do with it.
#[derive(Debug, PartialEq)]
enum Mark {
    Run,
    Exit(i32),
    Skip(String),
}

#[derive(Debug)]
struct Block {
    line: usize,
    script: String,
    mark: Mark,
}

/// The shell blocks of one runbook. Panics on a fence without a language and on a
/// malformed `runbook-test` annotation.
fn shell_blocks(name: &str, text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let trimmed = lines[i].trim_start();
        let Some(lang) = trimmed.strip_prefix("```") else {
            i += 1;
            continue;
        };
        let indent = lines[i].len() - trimmed.len();
        let lang = lang.trim();
        assert!(
            !lang.is_empty(),
            "{name}:{}: a fence without a language (sh, yaml, text, …)",
            i + 1
        );
        let start = i;
        let mut body = Vec::new();
        i += 1;
        while i < lines.len() && lines[i].trim() != "```" {
            // Blocks inside list items are indented with their fence.
            let line = lines[i];
            body.push(
                line.get(indent..)
                    .filter(|_| line.len() >= indent)
                    .unwrap_or(line.trim_start()),
            );
            i += 1;
        }
        assert!(i < lines.len(), "{name}:{}: unclosed fence", start + 1);
        i += 1;
        match lang {
            "sh" | "bash" | "shell" | "console" => {}
            // Files and output, not steps.
            "yaml" | "json" | "toml" | "text" | "ini" | "promql" => continue,
            _ => panic!(
                "{name}:{}: fence language {lang:?}: a shell block is `sh`; add other kinds to this list",
                start + 1
            ),
        }
        let mark = lines[..start]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .and_then(|l| l.trim().strip_prefix("<!-- runbook-test:"))
            .map(|rest| {
                let rest = rest.trim().trim_end_matches("-->").trim();
                let (what, why) = rest.split_once('—').unwrap_or((rest, ""));
                let why = why.trim();
                assert!(
                    !why.is_empty(),
                    "{name}:{}: a runbook-test annotation says why after an em dash",
                    start
                );
                match what.split_whitespace().collect::<Vec<_>>()[..] {
                    ["skip"] => Mark::Skip(why.to_string()),
                    ["exit", code] => Mark::Exit(code.parse().unwrap_or_else(|_| {
                        panic!("{name}:{start}: exit code {code:?} is not a number")
                    })),
                    _ => panic!("{name}:{start}: unknown runbook-test annotation {rest:?}"),
                }
            })
            .unwrap_or(Mark::Run);
        let script = if lang == "console" {
            // A console block shows a session: only `$ ` lines are commands.
            body.iter()
                .filter_map(|l| l.strip_prefix("$ "))
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            body.join("\n")
        };
        blocks.push(Block {
            line: start + 1,
            script,
            mark,
        });
    }
    blocks
}

/// The demo's `authority.yaml` as a bundle source: every host path absolute (a bundle
/// generation is read-only, and a `dataDir` inside it is refused).
fn bundle_source(demo: &Path, scratch: &Path, source: &Path) {
    std::fs::create_dir_all(source).unwrap();
    let mut yaml = std::fs::read_to_string(demo.join("authority.yaml")).unwrap();
    let d = demo.display();
    let s = scratch.display();
    for (from, to) in [
        (
            "  certificate: tls/server.crt\n".to_string(),
            format!("  certificate: {d}/tls/server.crt\n"),
        ),
        (
            "  privateKey: tls/server.key\n".to_string(),
            format!("  privateKey: {d}/tls/server.key\n"),
        ),
        (
            "  clientCa: ca/root.crt\n".to_string(),
            format!("  clientCa: {d}/ca/root.crt\n"),
        ),
        (
            "dataDir: data\n".to_string(),
            format!("dataDir: {s}/var/lib/sealkit/data\n"),
        ),
        (
            "  directory: logs\n".to_string(),
            format!("  directory: {s}/var/log/sealkit\n"),
        ),
    ] {
        assert!(
            yaml.contains(&from),
            "the demo's authority.yaml lacks {from:?}"
        );
        yaml = yaml.replace(&from, &to);
    }
    std::fs::write(source.join("authority.yaml"), yaml).unwrap();
    std::fs::copy(demo.join("users.yaml"), source.join("users.yaml")).unwrap();
}

/// The kit install-from-kit.md §1 would build (`sealkit-kit-site-a-v7.tar.zst` in the
/// working directory), from what ca.md and bundle-import.md left there.
fn build_kit(work: &Path, scratch: &Path, env: &BTreeMap<String, String>) {
    let stage = scratch.join("kit-build");
    let drill = stage.join("drill");
    std::fs::create_dir_all(&drill).unwrap();
    // The drill credentials the kit carries (run-drill.md): the demo's env file.
    std::fs::copy(
        Path::new(&env["SEALKIT_CONFIG"]).with_file_name("demo.env"),
        drill.join("drill.env"),
    )
    .unwrap();
    let binary = stage.join("sealkit");
    std::fs::write(&binary, format!("#!/bin/sh\nexec '{BIN}' \"$@\"\n")).unwrap();
    std::fs::set_permissions(&binary, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let sbom = stage.join("sealkit.cdx.json");
    std::fs::write(
        &sbom,
        br#"{"bomFormat":"CycloneDX","specVersion":"1.5","version":1,"components":[]}"#,
    )
    .unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ca_cert = format!("{}/root.crt", env["SEALKIT_CA_DIR"]);
    let p = |p: &Path| p.display().to_string();
    run(
        &[
            "kit",
            "build",
            "--out",
            "sealkit-kit-site-a-v7.tar.zst",
            "--binary",
            &p(&binary),
            "--sbom",
            &p(&sbom),
            "--kit-dir",
            &p(&repo.join("kit")),
            "--runbooks",
            &p(&repo.join("docs/runbooks")),
            "--bundle",
            "site-a-v7.bundle.tar.zst",
            "--ca-cert",
            &ca_cert,
            "--drill-dir",
            &p(&drill),
            "--secret-key",
            "bundle-signing.key",
            "--level",
            "1",
        ],
        env,
        work,
    );
}

fn run(args: &[&str], env: &BTreeMap<String, String>, cwd: &Path) {
    let out = Command::new(BIN)
        .args(args)
        .envs(env)
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sealkit {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_runbook_step_runs_as_written_against_a_scratch_site() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path();
    let demo_dir = t.join("demo");
    let (demo, _) = start_demo(&demo_dir);

    // The variables of docs/runbooks/README.md: demo.env's, and the host paths.
    let mut env: BTreeMap<String, String> = std::fs::read_to_string(demo_dir.join("demo.env"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let path = |p: &str| t.join(p).display().to_string();
    for (key, value) in [
        ("SEALKIT_CA_DIR", path("srv/sealkit-ca")),
        ("SEALKIT_TLS_DIR", path("etc/sealkit/tls")),
        ("SEALKIT_OFFLINE_DIR", path("media/ca-usb")),
        ("SEALKIT_BUNDLE_ROOT", path("var/lib/sealkit/bundles")),
        ("SEALKIT_KIT_DIR", path("root/kit-v7")),
        ("SEALKIT_GUARD_LOG_DIR", env["SEALKIT_LOG_DIR"].clone()),
        (
            "SEALKIT_BUNDLE_PASSPHRASE",
            "runbook test passphrase".into(),
        ),
        // install.sh (install-from-kit.md §4) stages into the scratch directory.
        ("DESTDIR", path("destdir")),
    ] {
        env.insert(key.to_string(), value);
    }
    for d in [
        "etc/sealkit/tls",
        "media/ca-usb",
        "var/lib/sealkit/data",
        "var/log/sealkit",
        "work",
        "destdir",
        "root",
    ] {
        std::fs::create_dir_all(t.join(d)).unwrap();
    }
    let bundles = t.join("var/lib/sealkit/bundles");
    std::fs::create_dir_all(&bundles).unwrap();
    std::fs::set_permissions(
        &bundles,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let work = t.join("work");
    // The connected side's site source (bundle-import.md §2 packs it).
    bundle_source(&demo_dir, t, &work.join("bundles/site-a"));
    // The host already runs version 6, signed by an earlier key, so a rollback has a
    // generation to go back to (bundle-import.md §4).
    let fixture = t.join("fixture");
    std::fs::create_dir_all(&fixture).unwrap();
    let f = |p: &str| fixture.join(p).display().to_string();
    run(
        &[
            "bundle",
            "keygen",
            "--unencrypted",
            "--secret-key",
            &f("v6.key"),
            "--public-key",
            &f("v6.pub"),
        ],
        &env,
        &fixture,
    );
    run(&["bundle", "trust", "add", &f("v6.pub")], &env, &fixture);
    let source = work.join("bundles/site-a").display().to_string();
    let v6 = f("site-a-v6.bundle.tar.zst");
    run(
        &[
            "bundle",
            "pack",
            &source,
            "--site",
            "site-a",
            "--version",
            "6",
            "--expires",
            "30d",
            "-o",
            &v6,
        ],
        &env,
        &fixture,
    );
    run(
        &["bundle", "sign", &v6, "--secret-key", &f("v6.key")],
        &env,
        &fixture,
    );
    run(
        &["bundle", "import", &v6, "--site", "site-a"],
        &env,
        &fixture,
    );

    let bin_dir = Path::new(BIN).parent().unwrap();
    env.insert(
        "PATH".into(),
        format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    );

    let runbooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/runbooks");
    let mut names: Vec<String> = std::fs::read_dir(&runbooks)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".md"))
        .collect();
    names.sort_by_key(|n| {
        (
            ORDER.iter().position(|o| o == n).unwrap_or(ORDER.len()),
            n.clone(),
        )
    });
    let mut failures = Vec::new();
    let mut summary = Vec::new();
    let (mut total_ran, mut total_skipped) = (0, 0);
    for name in &names {
        if name == "install-from-kit.md" {
            build_kit(&work, t, &env);
        }
        let text = std::fs::read_to_string(runbooks.join(name)).unwrap();
        let blocks = shell_blocks(name, &text);
        let (mut ran, mut skipped) = (0, 0);
        for block in &blocks {
            // Never let a block install into the real root of the machine running the test.
            assert!(env["DESTDIR"].starts_with(&*t.to_string_lossy()));
            let expected = match &block.mark {
                Mark::Skip(_) => {
                    skipped += 1;
                    continue;
                }
                Mark::Exit(code) => *code,
                Mark::Run => 0,
            };
            ran += 1;
            let out = Command::new("bash")
                .args(["-euo", "pipefail", "-c", &block.script])
                .env_clear()
                .envs(&env)
                .env("HOME", t)
                .current_dir(&work)
                .output()
                .unwrap();
            let code = out.status.code().unwrap_or(-1);
            if code != expected {
                failures.push(format!(
                    "{name}:{} exited {code}, the runbook says {expected}:\n{}\n--- stdout\n{}--- stderr\n{}",
                    block.line,
                    block.script,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        assert_eq!(ran + skipped, blocks.len());
        total_ran += ran;
        total_skipped += skipped;
        summary.push(format!("{name}: {ran} ran, {skipped} skipped"));
    }
    drop(demo);
    println!("runbook blocks:\n  {}", summary.join("\n  "));
    println!("total: {total_ran} ran, {total_skipped} skipped");
    assert!(
        failures.is_empty(),
        "{} runbook step(s) failed as written:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert!(total_ran > 20, "too few runbook blocks ran: {total_ran}");
}

#[test]
fn the_block_reader_finds_marks_and_refuses_fences_without_a_language() {
    let text = "x\n\n<!-- runbook-test: skip — needs systemd -->\n```sh\nsystemctl reload sealkit\n```\n\n  ```sh\n  echo a\n  ```\n<!-- runbook-test: exit 2 — revoked -->\n```bash\nfalse\n```\n```yaml\na: 1\n```\n```console\n$ echo b\nb\n```\n";
    let blocks = shell_blocks("t.md", text);
    let marks: Vec<&Mark> = blocks.iter().map(|b| &b.mark).collect();
    assert_eq!(
        marks,
        [
            &Mark::Skip("needs systemd".into()),
            &Mark::Run,
            &Mark::Exit(2),
            &Mark::Run
        ]
    );
    assert_eq!(blocks[1].script, "echo a");
    assert_eq!(blocks[3].script, "echo b");
    for hidden in ["```\necho hidden\n```\n", "```zsh\necho hidden\n```\n"] {
        let refused = std::panic::catch_unwind(|| shell_blocks("t.md", hidden));
        assert!(refused.is_err(), "{hidden}");
    }
}
