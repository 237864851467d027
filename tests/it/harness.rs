//! Starting a real authority for a test: a demo site in a temporary directory, served
//! in-process on a free port, and a client that talks to it over TLS.

use sealkit::client::https::{basic_auth, Connection, Reply, TlsTarget};
use sealkit::client::ProofKey;
use sealkit::clock::Clock;
use sealkit::config::Settings;
use sealkit::demo::DemoSite;
use sealkit::server::{RunningServer, StartOptions};
use serde_json::Value;
use tokio::net::TcpListener;

pub struct Site {
    pub server: RunningServer,
    /// The port the demo's guard.yaml names, bound and waiting (see `guard::GuardSite`).
    pub guard_listener: Option<TcpListener>,
    pub demo: DemoSite,
    pub target: TlsTarget,
    pub clock: Clock,
    _dir: tempfile::TempDir,
}

impl Site {
    pub async fn start() -> Site {
        Self::start_with(|_| {}).await
    }

    /// Starts a demo site whose authority.yaml was first changed by `edit`.
    pub async fn start_with(edit: impl FnOnce(&mut String)) -> Site {
        Self::start_prepared(|_, yaml| edit(yaml)).await
    }

    /// Starts a demo site after `prepare` could change its files and authority.yaml.
    pub async fn start_prepared(prepare: impl FnOnce(&DemoSite, &mut String)) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let guard_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let demo = sealkit::demo::prepare_with_guard(
            &dir.path().join("site"),
            addr,
            guard_listener.local_addr().unwrap(),
        )
        .unwrap();
        let mut yaml = std::fs::read_to_string(&demo.config).unwrap();
        prepare(&demo, &mut yaml);
        std::fs::write(&demo.config, yaml).unwrap();
        let settings = Settings::load(&demo.config).unwrap();
        let clock = Clock::system();
        let server = sealkit::server::start(
            settings,
            listener,
            StartOptions {
                clock: clock.clone(),
                config_path: Some(demo.config.clone()),
            },
        )
        .await
        .unwrap();
        let target = TlsTarget::new(&demo.issuer, &demo.ca_file, None).unwrap();
        Site {
            server,
            guard_listener: Some(guard_listener),
            demo,
            target,
            clock,
            _dir: dir,
        }
    }

    pub async fn conn(&self) -> Connection {
        self.target.connect().await.unwrap()
    }

    pub fn token_url(&self) -> String {
        self.demo.var("SEALKIT_TOKEN_URL").to_string()
    }

    /// Basic credentials of the demo client with this env prefix (DPOP, NONCE, BEARER, INTROSPECT).
    pub fn auth(&self, prefix: &str) -> String {
        basic_auth(
            self.demo.var(&format!("SEALKIT_{prefix}_CLIENT_ID")),
            self.demo.var(&format!("SEALKIT_{prefix}_CLIENT_SECRET")),
        )
    }

    /// A client_credentials request for client `prefix`, with these DPoP header values.
    pub async fn token(&self, conn: &mut Connection, prefix: &str, proofs: &[&str]) -> Reply {
        let auth = self.auth(prefix);
        let mut headers = vec![("authorization", auth.as_str())];
        for proof in proofs {
            headers.push(("dpop", proof));
        }
        conn.post_form("/token", &[("grant_type", "client_credentials")], &headers)
            .await
            .unwrap()
    }

    /// A fresh, valid proof for the token endpoint.
    pub fn proof(&self, key: &ProofKey, nonce: Option<&str>) -> String {
        key.proof("POST", &self.token_url(), nonce, None).unwrap()
    }

    /// A proof dated by the site's (possibly advanced) clock.
    pub fn proof_at(&self, key: &ProofKey, nonce: Option<&str>) -> String {
        key.proof_at("POST", &self.token_url(), nonce, None, self.clock.now())
            .unwrap()
    }

    pub async fn introspect(&self, conn: &mut Connection, token: &str) -> Value {
        let auth = self.auth("INTROSPECT");
        let reply = conn
            .post_form(
                "/introspect",
                &[("token", token)],
                &[("authorization", auth.as_str())],
            )
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        reply.json()
    }

    /// `/metrics` from the authority's loopback metrics listener (plain HTTP).
    pub async fn metrics(&self) -> String {
        scrape(self.server.metrics_addr).await
    }

    pub async fn stop(self) {
        self.server.shutdown().await.unwrap();
    }

    /// Stops the authority but keeps the site's files (returned: dropping them deletes).
    pub async fn stop_keeping_files(self) -> tempfile::TempDir {
        self.server.shutdown().await.unwrap();
        self._dir
    }
}

/// The claims of a JWT (not verified: the tests check the server's output).
pub fn jwt_claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// The protected header of a JWT (`kid`, `alg`, `typ`).
pub fn jwt_header(token: &str) -> Value {
    use base64::Engine;
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap()
}

/// The value of one sample in a Prometheus exposition (0 when absent).
pub fn metric(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// `GET /metrics` on an authority's loopback metrics listener (plain HTTP); must be 200.
pub async fn scrape(metrics_addr: std::net::SocketAddr) -> String {
    let reply = sealkit::client::https::connect_plain(metrics_addr)
        .await
        .unwrap()
        .get("/metrics")
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    String::from_utf8(reply.body.to_vec()).unwrap()
}

/// The `sealkit` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_sealkit");

/// Starts `sealkit serve ARGS` as a separate process and waits for its "listening" line.
pub fn spawn_serve(args: &[&std::ffi::OsStr]) -> std::process::Child {
    spawn_listening("serve", args)
}

/// Starts `sealkit serve ARGS`; returns it and its loopback metrics listener's address (from
/// the "listening" line: the demo's `metrics.listen` port is 0, chosen at start).
pub fn spawn_serve_with_metrics(
    args: &[&std::ffi::OsStr],
) -> (std::process::Child, std::net::SocketAddr) {
    let (child, line) = spawn_listening_line("serve", args);
    let addr = line
        .split("(metrics: http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no metrics address in {line:?}"));
    (child, addr)
}

/// Starts `sealkit COMMAND ARGS` (`serve` or `guard`) and waits for its "listening" line.
pub fn spawn_listening(command: &str, args: &[&std::ffi::OsStr]) -> std::process::Child {
    spawn_listening_line(command, args).0
}

/// [`spawn_listening`], also returning the "listening" line.
fn spawn_listening_line(command: &str, args: &[&std::ffi::OsStr]) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(BIN)
        .arg(command)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the server did not start");
    assert!(line.contains("listening"), "{line}");
    (child, line)
}
