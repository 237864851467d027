//! `sealkit --version [--verbose]`: the version line (as clap printed it before), and with
//! `--verbose` the build facts of [`crate::build_info`], one `name: value` per line so a
//! site can compare them with what it rebuilt (docs/provenance.md).

use crate::build_info::{self, BuildInfo};

/// Prints the version, and the provenance with `verbose`.
pub fn print(verbose: bool) {
    let info = build_info::current();
    out!("{}", render(&info, verbose));
}

fn render(info: &BuildInfo, verbose: bool) -> String {
    if !verbose {
        // One line: the version, the commit (when built by scripts/build-static.sh), the
        // target and the linkage.
        return format!(
            "sealkit {} ({}, {}, {})\n",
            info.version,
            info.commit
                .map(|c| format!("commit {c}"))
                .unwrap_or_else(|| "commit unknown".into()),
            info.target,
            info.linkage()
        );
    }
    let mut out = format!("sealkit {}\n", info.version);
    let unknown = || "unknown".to_string();
    let date = match (info.source_date(), info.source_date_epoch) {
        (Some(date), Some(epoch)) => format!("{date} (SOURCE_DATE_EPOCH={epoch})"),
        _ => unknown(),
    };
    let rows = [
        (
            "commit",
            info.commit.map(str::to_string).unwrap_or_else(unknown),
        ),
        ("target", info.target.to_string()),
        ("linkage", info.linkage().to_string()),
        ("source date", date),
        ("Cargo.lock", format!("sha256:{}", info.cargo_lock_sha256)),
        (
            "SBOM",
            info.sbom_sha256
                .map(|d| format!("sha256:{d}"))
                .unwrap_or_else(unknown),
        ),
        (
            "memcpy",
            if info.own_memcpy {
                "sealkit's SSE2 copy".to_string()
            } else {
                "the C library's".to_string()
            },
        ),
    ];
    for (name, value) in rows {
        out.push_str(&format!("{:<12} {value}\n", format!("{name}:")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbose_names_every_fact_and_unknown_when_not_built_by_the_script() {
        let info = BuildInfo {
            version: "0.1.0",
            commit: None,
            target: "x86_64-unknown-linux-gnu",
            static_crt: false,
            source_date_epoch: None,
            cargo_lock_sha256: "ab".repeat(32),
            sbom_sha256: None,
            own_memcpy: false,
        };
        assert_eq!(
            render(&info, false),
            "sealkit 0.1.0 (commit unknown, x86_64-unknown-linux-gnu, dynamic)\n"
        );
        let text = render(&info, true);
        assert!(text.starts_with("sealkit 0.1.0\n"), "{text}");
        assert!(text.contains("commit:      unknown\n"), "{text}");
        assert!(text.contains("linkage:     dynamic\n"), "{text}");
        assert!(
            text.contains(&format!("Cargo.lock:  sha256:{}\n", "ab".repeat(32))),
            "{text}"
        );
        assert!(text.contains("SBOM:        unknown\n"), "{text}");
        assert!(text.contains("memcpy:      the C library's\n"), "{text}");

        let built = BuildInfo {
            commit: Some("5baca33f00000000000000000000000000000000"),
            static_crt: true,
            source_date_epoch: Some(1_764_547_200),
            sbom_sha256: Some("cd0000000000000000000000000000000000000000000000000000000000000c"),
            own_memcpy: true,
            ..info
        };
        let text = render(&built, true);
        assert!(
            text.contains("commit:      5baca33f00000000000000000000000000000000\n"),
            "{text}"
        );
        assert!(text.contains("linkage:     static\n"), "{text}");
        assert!(
            text.contains("memcpy:      sealkit's SSE2 copy\n"),
            "{text}"
        );
        assert!(
            text.contains("source date: 2025-12-01T00:00:00Z (SOURCE_DATE_EPOCH=1764547200)\n"),
            "{text}"
        );
        assert!(text.contains("SBOM:        sha256:cd00"), "{text}");
    }
}
