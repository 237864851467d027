//! What this binary knows about its own build, for `sealkit --version --verbose` and a site
//! checking a kit it received (docs/provenance.md): the version, the commit, the target
//! triple, whether the C runtime is linked statically, the build's `SOURCE_DATE_EPOCH`, the
//! SHA-256 of the `Cargo.lock` it was built from and the SHA-256 of its CycloneDX SBOM.
//!
//! The commit, the date and the SBOM digest are set by `scripts/build-static.sh` through
//! `build.rs`; a plain `cargo build` reports them as `None` (printed `unknown`). The
//! `Cargo.lock` digest is computed from the lockfile compiled into the binary, so it is
//! right for every build. This module neither prints nor reads anything at run time.

/// `Cargo.lock` as it was when this binary was compiled.
const CARGO_LOCK: &[u8] = include_bytes!("../Cargo.lock");

/// Build facts of the running binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// `CARGO_PKG_VERSION`.
    pub version: &'static str,
    /// The commit built (hex, `-dirty` if the tree had changes), when built by
    /// `scripts/build-static.sh`.
    pub commit: Option<&'static str>,
    /// The target triple, e.g. `x86_64-unknown-linux-musl`.
    pub target: &'static str,
    /// Whether the C runtime is linked in (`crt-static`): the musl build is.
    pub static_crt: bool,
    /// The build's `SOURCE_DATE_EPOCH` (the commit's time), in Unix seconds.
    pub source_date_epoch: Option<i64>,
    /// SHA-256 (hex) of the `Cargo.lock` compiled in.
    pub cargo_lock_sha256: String,
    /// SHA-256 (hex) of the CycloneDX SBOM generated for this build.
    pub sbom_sha256: Option<&'static str>,
    /// Whether `memcpy` and `memmove` are sealkit's SSE2 copy ([`crate::memmove`]), as in
    /// the static x86-64 build, rather than the C library's.
    pub own_memcpy: bool,
}

impl BuildInfo {
    /// `static` or `dynamic`.
    pub fn linkage(&self) -> &'static str {
        if self.static_crt {
            "static"
        } else {
            "dynamic"
        }
    }

    /// `SOURCE_DATE_EPOCH` as an RFC 3339 UTC date, if the build had one.
    pub fn source_date(&self) -> Option<String> {
        self.source_date_epoch
            .map(crate::bundle::manifest::format_time)
    }
}

/// The facts of this binary.
pub fn current() -> BuildInfo {
    BuildInfo {
        version: env!("CARGO_PKG_VERSION"),
        commit: option_env!("SEALKIT_BUILT_SEALKIT_BUILD_COMMIT"),
        target: env!("SEALKIT_BUILD_TARGET"),
        static_crt: cfg!(target_feature = "crt-static"),
        source_date_epoch: option_env!("SEALKIT_BUILT_SOURCE_DATE_EPOCH")
            .and_then(|s| s.parse().ok()),
        cargo_lock_sha256: crate::bundle::sha256_hex(CARGO_LOCK),
        sbom_sha256: option_env!("SEALKIT_BUILT_SEALKIT_SBOM_SHA256"),
        own_memcpy: crate::memmove::memcpy_is_sealkits(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cargo_lock_digest_is_that_of_the_lockfile_in_the_tree() {
        let on_disk = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap();
        let info = current();
        assert_eq!(info.cargo_lock_sha256, crate::bundle::sha256_hex(&on_disk));
        assert_eq!(info.cargo_lock_sha256.len(), 64);
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        assert!(info.target.contains("linux"), "{}", info.target);
    }

    #[test]
    fn linkage_and_date_are_spelled_for_people() {
        let mut info = current();
        info.static_crt = true;
        info.source_date_epoch = Some(1_764_547_200);
        assert_eq!(info.linkage(), "static");
        assert_eq!(info.source_date().as_deref(), Some("2025-12-01T00:00:00Z"));
        info.static_crt = false;
        info.source_date_epoch = None;
        assert_eq!(info.linkage(), "dynamic");
        assert_eq!(info.source_date(), None);
    }
}
