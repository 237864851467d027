//! Provenance as a user meets it, through the real binary: `sealkit --version [--verbose]`,
//! and `kit verify` refusing a kit whose SBOM was removed or altered (exit 22 and one line
//! saying which file), while the intact kit verifies and names its SBOM's digest.

use crate::harness::BIN;
use std::path::Path;
use std::process::{Command, Output};

fn sealkit(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("SEALKIT_BUNDLE_PASSPHRASE")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn sha256_hex(bytes: &[u8]) -> String {
    sealkit::bundle::sha256_hex(bytes)
}

#[test]
fn version_verbose_names_the_build_and_the_cargo_lock_digest() {
    let plain = ok(sealkit(&["--version"]));
    assert!(
        plain.starts_with(&format!("sealkit {} (commit ", env!("CARGO_PKG_VERSION")))
            && plain.trim_end().ends_with(", dynamic)")
            && plain.lines().count() == 1,
        "{plain}"
    );

    let verbose = ok(sealkit(&["--version", "--verbose"]));
    let lock = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap();
    let field = |name: &str| -> String {
        verbose
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no `{name}:` line in\n{verbose}"))
            .trim()
            .to_string()
    };
    assert!(
        verbose.starts_with(&format!("sealkit {}\n", env!("CARGO_PKG_VERSION"))),
        "{verbose}"
    );
    assert_eq!(field("Cargo.lock"), format!("sha256:{}", sha256_hex(&lock)));
    assert!(field("target").ends_with("-linux-gnu") || field("target").ends_with("-linux-musl"));
    assert!(["static", "dynamic"].contains(&field("linkage").as_str()));
    for name in ["commit", "source date", "SBOM"] {
        assert!(!field(name).is_empty(), "{name} is empty in\n{verbose}");
    }
    // The glibc build under test copies with the C library's memcpy; the static build's
    // line ("sealkit's SSE2 copy") is checked by scripts/build-static.sh.
    assert_eq!(field("memcpy"), "the C library's", "{verbose}");

    // --verbose alone is a usage error, not a silent version print.
    let out = sealkit(&["--verbose"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

/// A kit directory built by the real `kit build`, with a pretend binary and a small SBOM.
struct Kit {
    _dir: tempfile::TempDir,
    out: std::path::PathBuf,
    public: String,
    sbom: Vec<u8>,
}

fn key_and_binary(dir: &Path) -> (String, String, String) {
    let secret = dir.join("signing.key").display().to_string();
    let public = dir.join("signing.pub").display().to_string();
    ok(sealkit(&[
        "bundle",
        "keygen",
        "--unencrypted",
        "--secret-key",
        &secret,
        "--public-key",
        &public,
    ]));
    let binary = dir.join("sealkit");
    std::fs::write(&binary, b"\x7fELF pretend static binary\n").unwrap();
    (secret, public, binary.display().to_string())
}

fn built_kit() -> Kit {
    let dir = tempfile::tempdir().unwrap();
    let (secret, public, binary) = key_and_binary(dir.path());
    let sbom = br#"{"bomFormat":"CycloneDX","specVersion":"1.5","version":1,"components":[]}"#;
    let sbom_path = dir.path().join("sealkit.cdx.json");
    std::fs::write(&sbom_path, sbom).unwrap();
    let out = dir.path().join("kit");
    let kit_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/kit");
    ok(sealkit(&[
        "kit",
        "build",
        "--dir",
        "--out",
        &out.display().to_string(),
        "--binary",
        &binary,
        "--kit-dir",
        kit_dir,
        "--secret-key",
        &secret,
    ]));
    Kit {
        out,
        public,
        sbom: sbom.to_vec(),
        _dir: dir,
    }
}

#[test]
fn a_kit_carries_its_sbom_and_is_refused_without_it_or_with_an_altered_one() {
    let kit = built_kit();
    let kit_path = kit.out.display().to_string();
    let verify = || sealkit(&["kit", "verify", &kit_path, "--trusted-keys", &kit.public]);

    // Intact: verifies and names the SBOM's digest.
    let shipped = kit.out.join("sealkit.cdx.json");
    assert_eq!(std::fs::read(&shipped).unwrap(), kit.sbom);
    let sums = std::fs::read_to_string(kit.out.join("SHA256SUMS")).unwrap();
    let digest = sha256_hex(&kit.sbom);
    assert!(
        sums.contains(&format!("{digest}  sealkit.cdx.json\n")),
        "{sums}"
    );
    let stdout = ok(verify());
    assert!(
        stdout.contains(&format!("SBOM: sealkit.cdx.json sha256:{digest}")),
        "{stdout}"
    );

    // Removed: exit 22 (content mismatch), naming the file.
    std::fs::remove_file(&shipped).unwrap();
    let out = verify();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(22), "{stderr}");
    assert!(
        stderr.contains("sealkit.cdx.json is listed in SHA256SUMS but missing from the kit"),
        "{stderr}"
    );
    assert!(stderr.contains("do not use this kit"), "{stderr}");

    // Altered (one byte added): exit 22, the digest does not match.
    let mut altered = kit.sbom.clone();
    altered.push(b'\n');
    std::fs::write(&shipped, &altered).unwrap();
    let out = verify();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(22), "{stderr}");
    assert!(
        stderr.contains("sealkit.cdx.json: sha256")
            && stderr.contains("does not match SHA256SUMS")
            && stderr.contains("altered"),
        "{stderr}"
    );

    // Put back: verifies again.
    std::fs::write(&shipped, &kit.sbom).unwrap();
    ok(verify());
}

#[test]
fn kit_build_takes_the_sbom_beside_the_binary_and_refuses_to_build_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, _public, binary) = key_and_binary(dir.path());
    let kit_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/kit");
    let build = |out: &str| {
        sealkit(&[
            "kit",
            "build",
            "--out",
            out,
            "--binary",
            &binary,
            "--kit-dir",
            kit_dir,
            "--secret-key",
            &secret,
            "--level",
            "1",
        ])
    };
    let first = dir.path().join("a.tar.zst").display().to_string();
    let out = build(&first);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("cannot read the SBOM") && stderr.contains("sealkit.cdx.json"),
        "{stderr}"
    );
    assert!(!Path::new(&first).exists());

    // Where scripts/build-static.sh writes it: <binary>.cdx.json.
    std::fs::write(
        format!("{binary}.cdx.json"),
        br#"{"bomFormat":"CycloneDX","specVersion":"1.5","version":1}"#,
    )
    .unwrap();
    let second = dir.path().join("b.tar.zst").display().to_string();
    let stdout = ok(build(&second));
    assert!(stdout.contains("sealkit.cdx.json"), "{stdout}");
}
