//! Every validation rule, one table per section: a valid configuration with real TLS
//! files (from sealkit's own CA) is changed in one place, and the problem must come back
//! under its key path. The unchanged configuration passes, so each rule can both pass and
//! fail.

use crate::config::{ConfigError, ConfigProblem, Settings};
use serde_yaml::Value;
use std::path::PathBuf;

/// Unix seconds used as "now" (bypass windows are judged against it).
const NOW: i64 = 1_800_000_000;

struct Fixture {
    dir: PathBuf,
    /// A directory with a bundle root's layout (`generations/`, `trusted-keys/`).
    root: PathBuf,
    _tmp: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    FIXTURE.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(tmp.path()).unwrap();
        let pki = crate::bundle::testutil::test_pki();
        std::fs::create_dir_all(dir.join("tls")).unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
        write("tls/server.crt", &pki.server_chain);
        write("tls/server.key", &pki.server_key);
        write("tls/other.key", &pki.other_key);
        write("tls/ca.crt", &pki.ca_bundle);
        write("tls/client.crl", &pki.crl);
        write("tls/garbage", "garbage\n");
        let root = dir.join("bundles");
        std::fs::create_dir_all(root.join("generations")).unwrap();
        std::fs::create_dir_all(root.join("trusted-keys")).unwrap();
        Fixture {
            dir,
            root,
            _tmp: tmp,
        }
    })
}

const BASE: &str = r#"
issuer: https://auth.example
listen: 127.0.0.1:8443
tls:
  certificate: tls/server.crt
  privateKey: tls/server.key
  clientCa: tls/ca.crt
dataDir: data
tenants:
  - id: t1
    senderConstraint: dpop
  - id: nonce
    senderConstraint: dpop
    requireNonce: true
clients:
  - id: c1
    tenant: t1
    secretHash: "sha256:47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
    audience: [api]
"#;

/// Sets `path` (`a.b[0].c`) in `doc` to `value` (YAML text; `~` removes the key).
fn set(doc: &mut Value, path: &str, value: &str) {
    let mut node = doc;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let (key, index) = match part.split_once('[') {
            Some((key, rest)) => (
                key,
                Some(rest.trim_end_matches(']').parse::<usize>().unwrap()),
            ),
            None => (*part, None),
        };
        let last = i == parts.len() - 1 && index.is_none();
        let map = node.as_mapping_mut().unwrap();
        if last {
            if value == "~" {
                assert!(map.remove(key).is_some(), "{path}: nothing to remove");
            } else {
                map.insert(key.into(), serde_yaml::from_str(value).unwrap());
            }
            return;
        }
        if !map.contains_key(key) {
            map.insert(key.into(), Value::Mapping(Default::default()));
        }
        node = map.get_mut(key).unwrap();
        if let Some(index) = index {
            let item = node.as_sequence_mut().unwrap().get_mut(index).unwrap();
            if i == parts.len() - 1 {
                *item = serde_yaml::from_str(value).unwrap();
                return;
            }
            node = item;
        }
    }
}

/// The problems of the base configuration after `edits`.
fn problems(edits: &[(&str, &str)]) -> Vec<ConfigProblem> {
    let fixture = fixture();
    let mut doc: Value = serde_yaml::from_str(BASE).unwrap();
    for (path, value) in edits {
        let value = value.replace("$ROOT", &fixture.root.display().to_string());
        set(&mut doc, path, &value);
    }
    let text = serde_yaml::to_string(&doc).unwrap();
    match Settings::from_yaml(&text, &fixture.dir, NOW) {
        Ok(_) => Vec::new(),
        Err(ConfigError::Invalid { problems, .. }) => problems,
        Err(other) => panic!("{other}"),
    }
}

/// One rule: the edits that break it, the key path and a fragment of the message.
type Rule<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);

fn check(rules: &[Rule<'_>]) {
    assert_eq!(problems(&[]), Vec::new(), "the base configuration is valid");
    for (edits, path, fragment) in rules {
        let found = problems(edits);
        assert!(
            found
                .iter()
                .any(|p| p.path == *path && p.message.contains(fragment)),
            "{edits:?}: expected `{path}: …{fragment}…`, got {found:?}"
        );
    }
}

#[test]
fn schema_problems_have_their_full_key_paths() {
    check(&[
        (&[("tokenz", "{}")], "tokenz", "unknown key"),
        (
            &[("tokens.lifetimes", "5m")],
            "tokens.lifetimes",
            "unknown key",
        ),
        (
            &[("tokens.lifetime", "five minutes")],
            "tokens.lifetime",
            "not a duration",
        ),
        (
            &[("limits.maxBodyBytes", "lots")],
            "limits.maxBodyBytes",
            "invalid type",
        ),
        (&[("issuer", "~")], "issuer", "is required"),
        (
            &[("tls.certificate", "~")],
            "tls.certificate",
            "is required",
        ),
        (
            &[("clients[0].tenant", "~")],
            "clients[0].tenant",
            "is required",
        ),
        (
            &[("tenants[0].senderConstraint", "bogus")],
            "tenants[0].senderConstraint",
            "unknown variant",
        ),
        (
            &[(
                "security.senderConstraints.dpop.allowTemporaryBypass",
                "[1]",
            )],
            "security.senderConstraints.dpop.allowTemporaryBypass",
            "must be false, or",
        ),
    ]);
    // Four problems, four entries, no echo of the placeholders.
    let found = problems(&[
        ("issuer", "http://auth.example"),
        ("tokens.lifetime", "soon"),
        ("listen", "~"),
        ("tenants[1].requireNonse", "true"),
    ]);
    let paths: Vec<&str> = found.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(found.len(), 4, "{found:?}");
    for path in [
        "issuer",
        "tokens.lifetime",
        "listen",
        "tenants[1].requireNonse",
    ] {
        assert!(paths.contains(&path), "{path} missing from {paths:?}");
    }
}

#[test]
fn every_server_rule_can_fail() {
    check(&[
        (&[("issuer", "http://auth.example")], "issuer", "https"),
        (
            &[("issuer", "https://auth.example/?x=1")],
            "issuer",
            "query",
        ),
        (&[("issuer", "not a url")], "issuer", "not a URL"),
        (&[("listen", "localhost")], "listen", "IP:PORT"),
        (
            &[("security.freshAuth.window", "5s")],
            "security.freshAuth.window",
            "between",
        ),
        (
            &[("tokens.lifetime", "5s")],
            "tokens.lifetime",
            "between 10s and 24h",
        ),
        (
            &[("tokens.lifetime", "2d")],
            "tokens.lifetime",
            "between 10s and 24h",
        ),
        (
            &[("tokens.signingAlgorithm", "RS256")],
            "tokens.signingAlgorithm",
            "only ES256",
        ),
    ]);
}

#[test]
fn every_tls_file_and_path_rule_can_fail() {
    check(&[
        (
            &[("tls.clientCa", "~"), ("tls.clientCrl", "tls/client.crl")],
            "tls.clientCrl",
            "needs tls.clientCa",
        ),
        (
            &[("tls.trustedProxies", "[nonsense]")],
            "tls.trustedProxies[0]",
            "IP address",
        ),
        (
            &[("tls.clientCa", "~"), ("tls.trustedProxies", "[10.0.0.1]")],
            "tls.trustedProxies",
            "clientCa",
        ),
        (
            &[("tls.certificate", "tls/missing")],
            "tls.certificate",
            "not a readable file",
        ),
        (
            &[("tls.certificate", "tls/garbage")],
            "tls.certificate",
            "holds no PEM certificate",
        ),
        (
            &[("tls.certificate", "tls/ca.crt")],
            "tls.certificate",
            "not issued by certificate #2",
        ),
        (
            &[("tls.privateKey", "tls/garbage")],
            "tls.privateKey",
            "holds no PEM private key",
        ),
        (
            &[("tls.privateKey", "tls/other.key")],
            "tls.privateKey",
            "does not match",
        ),
        (
            &[("tls.clientCa", "tls/garbage")],
            "tls.clientCa",
            "holds no PEM certificate",
        ),
        (
            &[("tls.clientCrl", "tls/garbage")],
            "tls.clientCrl",
            "holds no PEM CRL",
        ),
        (
            &[("tls.clientCrl", "tls/ca.crt")],
            "tls.clientCrl",
            "holds no PEM CRL",
        ),
        (
            &[("dataDir", "$ROOT/generations/1-x/data")],
            "dataDir",
            "inside the bundle root",
        ),
        (
            &[("dataDir", "$ROOT/trusted-keys")],
            "dataDir",
            "inside the bundle root",
        ),
        (
            &[("logging.directory", "$ROOT/current/logs")],
            "logging.directory",
            "inside the bundle root",
        ),
        (
            &[("tls.privateKey", "$ROOT/../bundles/x.key")],
            "tls.privateKey",
            "inside the bundle root",
        ),
    ]);
    // A valid CRL of the client CA passes (the CRL rule can pass).
    assert_eq!(problems(&[("tls.clientCrl", "tls/client.crl")]), Vec::new());
}

#[test]
fn every_logging_limits_and_metrics_rule_can_fail() {
    check(&[
        (
            &[("logging.rotation", "weekly")],
            "logging.rotation",
            "hourly, daily or never",
        ),
        (
            &[("logging.retention", "0")],
            "logging.retention",
            "at least one",
        ),
        (
            &[("logging.level", "'[['")],
            "logging.level",
            "tracing filter",
        ),
        // tracing-subscriber's parser panicked on this (the `config` fuzz target's crash).
        (
            &[("logging.level", "'info, liµ=x'")],
            "logging.level",
            "tracing filter",
        ),
        (
            &[("limits.maxHeaderBytes", "10")],
            "limits.maxHeaderBytes",
            "between",
        ),
        (
            &[("limits.maxBodyBytes", "10")],
            "limits.maxBodyBytes",
            "between",
        ),
        (
            &[("limits.maxConnections", "0")],
            "limits.maxConnections",
            "at least 1",
        ),
        (
            &[("limits.headerReadTimeout", "0s")],
            "limits.headerReadTimeout",
            "between",
        ),
        (
            &[("limits.bodyReadTimeout", "10m")],
            "limits.bodyReadTimeout",
            "between",
        ),
        (
            &[("limits.handshakeTimeout", "10m")],
            "limits.handshakeTimeout",
            "between",
        ),
        (
            &[("metrics.listen", "10.0.0.1:9464")],
            "metrics.listen",
            "loopback",
        ),
        (
            &[("metrics.listen", "nonsense")],
            "metrics.listen",
            "IP:PORT",
        ),
    ]);
}

#[test]
fn every_storage_rule_can_fail() {
    const R: (&str, &str) = ("storage.kind", "redis");
    check(&[
        (
            &[("storage.url", "redis://h/0")],
            "storage.url",
            "only used with storage.kind: redis",
        ),
        (
            &[("storage.password", "hunter2")],
            "storage.password",
            "never written",
        ),
        (&[R], "storage.url", "needs a url"),
        (
            &[R, ("storage.url", "redis://u:p@h/0")],
            "storage.url",
            "password",
        ),
        (
            &[R, ("storage.url", "redis://u@h/0")],
            "storage.url",
            "user name",
        ),
        (
            &[R, ("storage.url", "redis://h/0#insecure")],
            "storage.url",
            "fragment",
        ),
        (
            &[R, ("storage.url", "redis://h/x")],
            "storage.url",
            "database number",
        ),
        (
            &[R, ("storage.url", "redis://h/0?a=b")],
            "storage.url",
            "query",
        ),
        (
            &[R, ("storage.url", "unix://relative")],
            "storage.url",
            "absolute path",
        ),
        (
            &[R, ("storage.url", "unix:///r.sock?x=1")],
            "storage.url",
            "?db=",
        ),
        (&[R, ("storage.url", "http://h")], "storage.url", "scheme"),
        (
            &[R, ("storage.url", "redis://h/0"), ("storage.site", "a:b")],
            "storage.site",
            "key namespace",
        ),
        (
            &[
                R,
                ("storage.url", "redis://h/0"),
                ("storage.username", "a b"),
            ],
            "storage.username",
            "without spaces",
        ),
        (
            &[
                R,
                ("storage.url", "redis://h/0"),
                ("storage.passwordFile", "tls/missing"),
            ],
            "storage.passwordFile",
            "not a readable file",
        ),
        (
            &[
                R,
                ("storage.url", "redis://h/0"),
                ("storage.caFile", "tls/ca.crt"),
            ],
            "storage.caFile",
            "only used with rediss",
        ),
        (
            &[R, ("storage.url", "rediss://h/0")],
            "storage.caFile",
            "needs caFile",
        ),
        (
            &[
                R,
                ("storage.url", "rediss://h/0"),
                ("storage.caFile", "tls/garbage"),
            ],
            "storage.caFile",
            "holds no PEM certificate",
        ),
        (
            &[
                R,
                ("storage.url", "redis://h/0"),
                ("storage.timeout", "1ms"),
            ],
            "storage.timeout",
            "between 10ms and 10s",
        ),
    ]);
    assert_eq!(
        problems(&[
            R,
            ("storage.url", "rediss://h/0"),
            ("storage.caFile", "tls/ca.crt")
        ]),
        Vec::new()
    );
}

#[test]
fn every_dpop_rule_can_fail() {
    const D: &str = "security.senderConstraints.dpop";
    let key = |k: &str| format!("{D}.{k}");
    let (algs, lifetime, skew, window, ttl, store, bypass) = (
        key("allowedAlgorithms"),
        key("proofLifetime"),
        key("allowedClockSkew"),
        key("replayWindow"),
        key("nonce.ttl"),
        key("nonce.store"),
        key("allowTemporaryBypass"),
    );
    let (algs0, algs1, reason, until) = (
        format!("{algs}[0]"),
        format!("{algs}[1]"),
        format!("{bypass}.reason"),
        format!("{bypass}.until"),
    );
    check(&[
        (&[(&algs, "[none]")], &algs0, "can never be allowed"),
        (&[(&algs, "[HS256]")], &algs0, "can never be allowed"),
        (&[(&algs, "[XX1]")], &algs0, "unknown algorithm"),
        (&[(&algs, "[ES256, ES256]")], &algs1, "listed twice"),
        (&[(&algs, "[]")], &algs, "at least one"),
        (&[(&lifetime, "0s")], &lifetime, "between 1s and 10m"),
        (&[(&skew, "10m")], &skew, "at most 5m"),
        (&[(&window, "30s")], &window, "proofLifetime + 2"),
        (&[(&window, "2h")], &window, "at most 1h"),
        (&[(&ttl, "1s")], &ttl, "between 10s and 24h"),
        (&[(&store, "redis")], &store, "authority's storage"),
        (
            &[(&bypass, "{until: '2027-01-15T08:00:00Z', reason: ' '}")],
            &reason,
            "say why",
        ),
        (
            &[(&bypass, "{until: '2030-01-01T00:00:00Z', reason: drill}")],
            &until,
            "at most",
        ),
        (
            &[(&bypass, "{until: tomorrow, reason: drill}")],
            &until,
            "RFC 3339",
        ),
    ]);
}

#[test]
fn every_tenant_and_client_rule_can_fail() {
    check(&[
        (&[("tenants[0].id", "a b")], "tenants[0].id", "must be 1-128"),
        (&[("tenants[1].id", "t1")], "tenants[1].id", "duplicate tenant"),
        (&[("security.senderConstraints.dpop.enabled", "false")], "tenants[0].senderConstraint", "requires DPoP"),
        (&[("clients[0].id", "''")], "clients[0].id", "must be 1-128"),
        (&[("clients[0].tenant", "nowhere")], "clients[0].tenant", "unknown tenant"),
        (&[("clients[0].audience", "[]")], "clients[0].audience", "at least one audience"),
        (&[("clients[0].scopes", "['a b']")], "clients[0].scopes[0]", "scope token"),
        (&[("clients[0].senderConstraint", "none")], "clients[0].senderConstraint", "would loosen"),
        (&[("clients[0].tenant", "nonce"), ("clients[0].requireNonce", "false")], "clients[0].requireNonce", "may not turn them off"),
        (&[("clients[0].senderConstraint", "dpop-and-mtls"), ("tls.clientCa", "~")], "clients[0].senderConstraint", "needs client certificates"),
        (&[("clients[0].secretHash", "plain")], "clients[0].secretHash", ""),
        (&[("clients[0].secretHash", "~")], "clients[0].secretHash", "needs a credential"),
        (&[("clients[0].authMethod", "magic")], "clients[0].authMethod", "unknown method"),
        (&[("clients[0].tlsClientAuthSanUri", "urn:x")], "clients[0].authMethod", "certificate fields need"),
        (&[("clients[0].authMethod", "tls_client_auth")], "clients[0].secretHash", "not a secret"),
        (&[("clients[0].authMethod", "tls_client_auth"), ("clients[0].secretHash", "~")], "clients[0].authMethod", "exactly one of"),
        (&[("clients[0].authMethod", "tls_client_auth"), ("clients[0].secretHash", "~"), ("tls.clientCa", "~"), ("clients[0].tlsClientAuthSanUri", "urn:x")], "clients[0].authMethod", "set tls.clientCa"),
        (&[("clients[0].authMethod", "tls_client_auth"), ("clients[0].secretHash", "~"), ("clients[0].tlsClientAuthSubjectDn", "CN=a,XX=b")], "clients[0].tlsClientAuthSubjectDn", "not an RFC 4514 name"),
        (&[("clients[0].authMethod", "self_signed_tls_client_auth"), ("clients[0].secretHash", "~"), ("clients[0].certificateThumbprints", "[short]")], "clients[0].certificateThumbprints", "43 base64url"),
        (&[("clients", "[{id: a, tenant: t1, secretHash: 'sha256:47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU', audience: [x]}, {id: b, tenant: t1, secretHash: 'sha256:47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU', audience: [x]}]")], "clients[1].secretHash", "registered twice"),
        (&[("clients", "[{id: a, tenant: t1, secretHash: 'sha256:47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU', audience: [x]}, {id: a, tenant: t1, secretHash: 'sha256:AAAQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU', audience: [x]}]")], "clients[1].id", "duplicate client"),
    ]);
    // A subject DN written as openssl prints it is accepted.
    assert_eq!(
        problems(&[
            ("clients[0].authMethod", "tls_client_auth"),
            ("clients[0].secretHash", "~"),
            (
                "clients[0].tlsClientAuthSubjectDn",
                "'CN=caf\\C3\\A9,O=a=b\\, Inc'"
            ),
        ]),
        Vec::new()
    );
}
