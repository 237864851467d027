//! Where the paths of a configuration really lead, judged after resolution.
//!
//! Every path is resolved the way the kernel will reach it — symbolic links in each
//! existing component followed, `.` and `..` applied, the part that does not exist yet
//! appended — before any rule looks at it, so no spelling (`<root>/current/…`, a symlink,
//! `a/../b`) changes a verdict. The rules:
//!
//! - **host-only** paths (`dataDir`, `logging.directory`, `tls.privateKey`,
//!   `storage.passwordFile`) must not lead into a bundle root: generations are read-only
//!   and deleted by later imports, and bundles are signed, not encrypted;
//! - for a configuration that itself lives in a bundle root, **shippable** files
//!   (certificates, CAs, CRLs) are either inside its own bundle tree or outside the bundle
//!   root (never in another generation, which a later import deletes), and a relative path
//!   must stay inside the tree (staging and the generation are at different depths).
//!
//! A bundle root is recognised by its layout (`generations/` and `trusted-keys/`), so a
//! file checked by `config check` in place is judged as the import judged it.

use super::Problems;
use std::path::{Component, Path, PathBuf};

/// How a path may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// A directory the authority writes (data, logs): never in a bundle.
    HostDirectory,
    /// A secret (private key, password file): never in a bundle.
    HostSecret,
    /// A public file that may travel in a bundle.
    Shippable,
}

/// Where the configuration file itself lies.
#[derive(Debug, Clone)]
pub struct Placement {
    /// The bundle root and the bundle tree the configuration is in, resolved, if any.
    bundle: Option<(PathBuf, PathBuf)>,
}

impl Placement {
    /// The placement of a configuration whose relative paths are relative to `base`.
    pub fn of(base: &Path) -> Placement {
        let tree = resolve(base);
        let bundle = enclosing_bundle_root(&tree).map(|root| (root, tree));
        Placement { bundle }
    }

    /// The bundle tree the configuration is in, resolved.
    pub fn bundle_tree(&self) -> Option<&Path> {
        self.bundle.as_ref().map(|(_, tree)| tree.as_path())
    }
}

/// `path` made absolute (against the current directory) and resolved: the longest prefix
/// that exists is canonicalised (symlinks followed), the rest appended lexically.
pub fn resolve(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(path)
    };
    let mut rest: Vec<Component<'_>> = Vec::new();
    let mut prefix = absolute.as_path();
    loop {
        if let Ok(real) = std::fs::canonicalize(prefix) {
            let mut out = real;
            for component in rest.iter().rev() {
                match component {
                    Component::ParentDir => {
                        out.pop();
                    }
                    Component::CurDir => {}
                    other => out.push(other.as_os_str()),
                }
            }
            return out;
        }
        let Some(parent) = prefix.parent() else {
            return lexical(&absolute);
        };
        if let Some(last) = prefix.components().next_back() {
            rest.push(last);
        }
        prefix = parent;
    }
}

/// `.` and `..` applied without looking at the file system (nothing of it exists).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The bundle root `resolved` lies in (itself or an ancestor with the root's layout).
pub fn enclosing_bundle_root(resolved: &Path) -> Option<PathBuf> {
    resolved
        .ancestors()
        .find(|dir| crate::bundle::BundleRoot::has_layout(dir))
        .map(Path::to_path_buf)
}

/// Judges one configured path (`configured` as written, `joined` relative to the file's
/// directory) and records a problem under `key` when its use is not allowed there.
pub(super) fn judge(
    key: &str,
    configured: &Path,
    joined: &Path,
    usage: Use,
    placement: &Placement,
    problems: &mut Problems,
) {
    let resolved = resolve(joined);
    let shown = if resolved == joined {
        format!("{}", configured.display())
    } else {
        format!(
            "{} (resolves to {})",
            configured.display(),
            resolved.display()
        )
    };
    match usage {
        Use::HostDirectory | Use::HostSecret => {
            let root = enclosing_bundle_root(&resolved)
                .or_else(|| placement.bundle.as_ref().map(|(root, _)| root.clone()))
                .filter(|root| resolved.starts_with(root));
            if let Some(root) = root {
                let why = if usage == Use::HostDirectory {
                    "generations are read-only and a later import deletes them; use a host \
                     path outside the bundle root, such as /var/lib/sealkit/data"
                } else {
                    "a secret must not be served from a bundle (bundles are signed, not \
                     encrypted); use a host path such as /etc/sealkit/tls/server.key"
                };
                problems.add(
                    key,
                    format!(
                        "{shown} is inside the bundle root {}: {why}",
                        root.display()
                    ),
                );
            }
        }
        Use::Shippable => {
            let Some((root, tree)) = &placement.bundle else {
                return;
            };
            if resolved.starts_with(tree) {
                return;
            }
            if configured.is_relative() {
                problems.add(
                    key,
                    format!("{shown}: a relative path must stay inside the bundle"),
                );
            } else if resolved.starts_with(root) {
                problems.add(
                    key,
                    format!(
                        "{shown} points into the bundle root {} outside this bundle (another \
                         generation, which a later import deletes); ship the file in the bundle \
                         with a relative path, or use a host path",
                        root.display()
                    ),
                );
            }
        }
    }
}

/// Judges the paths of another configuration file that travels in bundles (the guard's
/// `guard.yaml`) by the same rules: `(key, path as written, use)`, relative to `base`.
pub fn judge_all(base: &Path, entries: &[(&str, Option<&Path>, Use)]) -> Vec<super::ConfigProblem> {
    let placement = Placement::of(base);
    let mut problems = Problems(Vec::new());
    for (key, configured, usage) in entries {
        if let Some(configured) = configured {
            let joined = if configured.is_absolute() {
                configured.to_path_buf()
            } else {
                base.join(configured)
            };
            judge(key, configured, &joined, *usage, &placement, &mut problems);
        }
    }
    problems.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_follows_symlinks_and_appends_what_does_not_exist() {
        let tmp = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(tmp.path()).unwrap();
        std::fs::create_dir(real.join("a")).unwrap();
        std::os::unix::fs::symlink(real.join("a"), real.join("link")).unwrap();
        assert_eq!(resolve(&real.join("link/x/y")), real.join("a/x/y"));
        assert_eq!(resolve(&real.join("a/../link/./z")), real.join("a/z"));
        assert_eq!(resolve(&real.join("missing/../b")), real.join("b"));
    }
}
