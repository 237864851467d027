//! The Redis-backed store over a real `redis-server` (started by each test on a free
//! loopback port, without persistence, killed at the end): two authority nodes sharing one
//! Redis, outages failing closed, keys expiring by themselves, TLS to Redis, and the
//! `storage:` configuration block.

use crate::durability::{check_all, Load};
use crate::harness::metric;
use sealkit::client::https::{basic_auth, Connection, Reply, TlsTarget};
use sealkit::client::ProofKey;
use sealkit::clock::Clock;
use sealkit::config::{ConfigError, RedisSettings, Settings, StorageKind};
use sealkit::demo::DemoSite;
use sealkit::server::{RunningServer, StartOptions};
use sealkit::store::redis_store::RedisStore;
use sealkit::store::{Claim, PreviousShutdown, SenderStore, StoreError, TokenId, TokenRecord};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const REDIS_PASSWORD: &str = "correct-horse-battery-staple";

// ---------------------------------------------------------------------------------------
// A redis-server of the test's own
// ---------------------------------------------------------------------------------------

/// A `redis-server` child process on a free loopback port; killed on drop.
struct RedisServer {
    port: u16,
    args: Vec<String>,
    tls: bool,
    /// `redis-cli` arguments that authenticate the test as an administrator (empty: the
    /// `default` user without a password).
    cli_auth: Vec<String>,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    /// Plain TCP, no persistence, with a least-privilege ACL user `sealkit` for `site`
    /// (the one docs/multi-node.md recommends).
    async fn start(site: &str) -> RedisServer {
        Self::start_with(site, &[]).await
    }

    /// As [`RedisServer::start`], with more `redis-server` arguments (later ones win).
    async fn start_with(site: &str, more: &[&str]) -> RedisServer {
        let port = free_port();
        let mut args: Vec<String> = ["--port", &port.to_string()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(
            [
                "--user",
                "sealkit",
                "on",
                &format!(">{REDIS_PASSWORD}"),
                &format!("~sealkit:{site}:*"),
                "resetchannels",
                "-@all",
                "+get",
                "+set",
                "+hincrby",
                "+hgetall",
                "+hdel",
                "+evalsha",
                "+eval",
                "+script|load",
                "+ping",
                "+select",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        args.extend(more.iter().map(|s| s.to_string()));
        Self::spawn_with(port, args, false).await
    }

    /// TLS only (`--port 0`), with this certificate and key.
    async fn start_tls(cert: &Path, key: &Path, ca: &Path) -> RedisServer {
        let port = free_port();
        let args = [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &cert.display().to_string(),
            "--tls-key-file",
            &key.display().to_string(),
            "--tls-ca-cert-file",
            &ca.display().to_string(),
            "--tls-auth-clients",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Self::spawn_with(port, args, true).await
    }

    async fn spawn_with(port: u16, extra: Vec<String>, tls: bool) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = [
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            &dir.path().display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra);
        let mut server = RedisServer {
            port,
            args,
            tls,
            cli_auth: Vec::new(),
            child: None,
            _dir: dir,
        };
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is needed: apt-get install redis-server (scripts/test.sh does)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers().await {
            assert!(
                Instant::now() < deadline,
                "redis-server did not come up on {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the server accepts connections (and, over plain TCP, answers PING).
    async fn answers(&self) -> bool {
        let Ok(mut tcp) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        if self.tls {
            return true;
        }
        let mut buf = [0u8; 64];
        tcp.write_all(b"PING\r\n").await.is_ok()
            && matches!(tcp.read(&mut buf).await, Ok(n) if buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"))
    }

    /// SIGKILL: Redis dies without a word, as in a crash.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills it and starts it again on the same port, empty (no persistence).
    async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success());
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// `redis-cli` as the (unrestricted) default user.
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(&self.cli_auth)
            .args(args)
            .output()
            .expect("redis-cli comes with redis-server");
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn scan(&self, pattern: &str) -> Vec<String> {
        self.cli(&["--scan", "--pattern", pattern])
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect()
    }

    fn pttl(&self, key: &str) -> i64 {
        self.cli(&["PTTL", key]).parse().unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------
// Authority nodes sharing that Redis
// ---------------------------------------------------------------------------------------

struct Node {
    server: RunningServer,
    target: TlsTarget,
    /// This node's own clock (tests move nodes' clocks apart).
    clock: Clock,
}

impl Node {
    async fn conn(&self) -> Connection {
        self.target.connect().await.unwrap()
    }

    async fn ready(&self) -> Reply {
        self.conn().await.get("/ready").await.unwrap()
    }
}

/// A demo site whose nodes share one Redis, one issuer and one signing key. Node B listens
/// on another port under the same issuer (as behind a load balancer): proofs carry the
/// issuer's token URL as `htu` whichever node they are sent to.
struct MultiSite {
    demo: DemoSite,
    site: String,
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

/// DPoP timing of a test site (the demo's are 60s / 5s / 5m).
#[derive(Clone, Copy)]
struct Timing {
    proof_lifetime: &'static str,
    clock_skew: &'static str,
    replay_window: &'static str,
}

/// Short windows, so fences end quickly.
const QUICK: Timing = Timing {
    proof_lifetime: "1s",
    clock_skew: "1s",
    replay_window: "3s",
};

/// A proof stays acceptable (by its `iat`) for 15 s: long enough to be replayed after a
/// Redis restart, so that only the replay claims (or the fence) can refuse it. The window
/// is the least the configuration allows (lifetime + 2 × skew), so a site's first-start
/// fence is over after 17 s.
const REPLAYABLE: Timing = Timing {
    proof_lifetime: "15s",
    clock_skew: "1s",
    replay_window: "17s",
};

impl MultiSite {
    /// Starts node A and waits out the fence of a site's first start (see below).
    async fn start(redis: &RedisServer, site: &str) -> MultiSite {
        Self::start_timed(redis, site, QUICK).await
    }

    async fn start_timed(redis: &RedisServer, site: &str, timing: Timing) -> MultiSite {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let demo = sealkit::demo::prepare(&dir.path().join("site"), listener.local_addr().unwrap())
            .unwrap();
        let password_file = demo.dir.join("redis.password");
        std::fs::write(&password_file, format!("{REDIS_PASSWORD}\n")).unwrap();
        std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let original = std::fs::read_to_string(&demo.config).unwrap();
        let yaml = original
            .replace(
                "proofLifetime: 60s",
                &format!("proofLifetime: {}", timing.proof_lifetime),
            )
            .replace(
                "allowedClockSkew: 5s",
                &format!("allowedClockSkew: {}", timing.clock_skew),
            )
            .replace(
                "replayWindow: 5m",
                &format!("replayWindow: {}", timing.replay_window),
            )
            + &format!(
                "storage:\n  kind: redis\n  url: {}\n  site: {site}\n  username: sealkit\n  passwordFile: redis.password\n",
                redis.url()
            );
        assert!(
            yaml.contains(&format!("replayWindow: {}\n", timing.replay_window))
                && yaml.contains(&format!("proofLifetime: {}\n", timing.proof_lifetime)),
            "the demo configuration changed: the timing edit did not apply"
        );
        std::fs::write(&demo.config, &yaml).unwrap();
        let config = demo.config.clone();
        let a = Self::start_node(&demo, &config, listener).await;

        // An empty Redis cannot be told from one that lost its data: the first start of a
        // site raises the nonce fence for one replay window.
        let ready = a.ready().await;
        assert_eq!(ready.status, 200, "{:?}", ready.body);
        assert_eq!(ready.json()["restartFence"], true);
        let deadline = Instant::now() + Duration::from_secs(40);
        while a.ready().await.json()["restartFence"] == true {
            assert!(
                Instant::now() < deadline,
                "the first-start fence never ended"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        MultiSite {
            demo,
            site: site.to_string(),
            nodes: vec![a],
            _dir: dir,
        }
    }

    /// Adds a node: the same configuration except dataDir, logs and listen, and a copy of
    /// node A's signing key set (0600) in its own dataDir.
    async fn add_node(&mut self) {
        self.add_node_with(true).await
    }

    /// [`add_node`](Self::add_node); without `copy_keys` the node makes a key set of its
    /// own (the mistake docs/multi-node.md warns about).
    async fn add_node_with(&mut self, copy_keys: bool) {
        let name = format!("node{}", self.nodes.len());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let data_dir = self.demo.dir.join(format!("data-{name}"));
        std::fs::create_dir_all(&data_dir).unwrap();
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        if copy_keys {
            Self::copy_key_set(&self.demo.dir.join("data"), &data_dir);
        }
        let yaml = std::fs::read_to_string(&self.demo.config)
            .unwrap()
            .replace("dataDir: data\n", &format!("dataDir: data-{name}\n"))
            .replace("directory: logs\n", &format!("directory: logs-{name}\n"))
            .replace(
                &format!("listen: {}\n", self.nodes[0].server.addr),
                &format!("listen: {}\n", listener.local_addr().unwrap()),
            );
        let config = self.demo.dir.join(format!("authority-{name}.yaml"));
        std::fs::write(&config, yaml).unwrap();
        let node = Self::start_node(&self.demo, &config, listener).await;
        self.nodes.push(node);
    }

    /// The whole key set (docs/multi-node.md): the roles file and every key file, 0600.
    fn copy_key_set(source: &Path, data_dir: &Path) {
        std::fs::copy(
            source.join(sealkit::keyset::SET_FILE),
            data_dir.join(sealkit::keyset::SET_FILE),
        )
        .unwrap();
        let keys = data_dir.join(sealkit::keyset::KEYS_DIR);
        std::fs::create_dir_all(&keys).unwrap();
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o700)).unwrap();
        for entry in std::fs::read_dir(source.join(sealkit::keyset::KEYS_DIR)).unwrap() {
            let entry = entry.unwrap();
            let key = keys.join(entry.file_name());
            std::fs::copy(entry.path(), &key).unwrap();
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }

    async fn start_node(demo: &DemoSite, config: &Path, listener: TcpListener) -> Node {
        let addr = listener.local_addr().unwrap();
        let settings = Settings::load(config).unwrap();
        assert_eq!(settings.issuer, demo.issuer, "one issuer for every node");
        let clock = Clock::system();
        let server = sealkit::server::start(
            settings,
            listener,
            StartOptions {
                clock: clock.clone(),
                config_path: Some(config.to_path_buf()),
            },
        )
        .await
        .unwrap();
        let target = TlsTarget::new(&format!("https://{addr}"), &demo.ca_file, None).unwrap();
        Node {
            server,
            target,
            clock,
        }
    }

    fn token_url(&self) -> String {
        self.demo.var("SEALKIT_TOKEN_URL").to_string()
    }

    fn auth(&self, prefix: &str) -> String {
        basic_auth(
            self.demo.var(&format!("SEALKIT_{prefix}_CLIENT_ID")),
            self.demo.var(&format!("SEALKIT_{prefix}_CLIENT_SECRET")),
        )
    }

    fn proof(&self, key: &ProofKey, nonce: Option<&str>) -> String {
        key.proof("POST", &self.token_url(), nonce, None).unwrap()
    }

    async fn stop(self) {
        for node in self.nodes {
            node.server.shutdown().await.unwrap();
        }
    }
}

async fn token(conn: &mut Connection, auth: &str, proofs: &[&str]) -> Reply {
    let mut headers = vec![("authorization", auth)];
    for proof in proofs {
        headers.push(("dpop", proof));
    }
    conn.post_form("/token", &[("grant_type", "client_credentials")], &headers)
        .await
        .unwrap()
}

async fn introspect(site: &MultiSite, conn: &mut Connection, token: &str) -> serde_json::Value {
    let auth = site.auth("INTROSPECT");
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

fn access_token(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.json()["access_token"].as_str().unwrap().to_string()
}

// ---------------------------------------------------------------------------------------
// Two nodes, one Redis
// ---------------------------------------------------------------------------------------

/// Two nodes with different key sets: `/ready` fails on the one whose set differs from
/// the site's (the first node recorded it in Redis); after a rotation on A the site's set
/// is A's new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_key_set_is_not_ready() {
    let redis = RedisServer::start("key-sets").await;
    let mut site = MultiSite::start(&redis, "key-sets").await;
    let a_ready = site.nodes[0].ready().await;
    assert_eq!(a_ready.status, 200, "{:?}", a_ready.body);
    site.add_node_with(false).await;
    let (a, b) = (&site.nodes[0], &site.nodes[1]);
    let b_ready = b.ready().await;
    let body = b_ready.json();
    assert_eq!(b_ready.status, 503, "{body}");
    assert_eq!(body["ready"], false);
    assert_ne!(body["keySet"], body["siteKeySet"], "{body}");
    assert_eq!(body["siteKeySet"], a_ready.json()["keySet"]);
    assert_eq!(a.ready().await.status, 200, "the first node stays ready");

    // A rotation on A records A's new set as the site's: A stays ready, B still is not.
    let operator = sealkit::telemetry::audit::Operator::current();
    let set = a.server.authority.rotate_keys(&operator).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let body = a.ready().await.json();
        if body["siteKeySet"] == set.fingerprint().as_str() {
            assert_eq!(body["ready"], true, "{body}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::task::yield_now().await;
    }
    assert_eq!(b.ready().await.status, 503);
}

/// A key schedule on a multi-node site: planned on node A with `sealkit keys schedule`,
/// the set copied once to node B (private keys host to host, never through Redis or a
/// bundle). Both nodes switch to the planned key at its activation by their own clocks,
/// 30 seconds apart, and stay ready: the fingerprint in Redis is the schedule's, not the
/// roles of the moment. Each node's tokens verify on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_with_one_copied_schedule_switch_keys_together_and_stay_ready() {
    let redis = RedisServer::start("schedule").await;
    let mut site = MultiSite::start(&redis, "schedule").await;
    let out = std::process::Command::new(crate::harness::BIN)
        .args([
            "keys", "schedule", "--every", "1h", "--ahead", "3", "--config",
        ])
        .arg(&site.demo.config)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("3 key(s) still to activate"), "{said}");
    let set = site.nodes[0].server.authority.core.signing_key.set();
    let schedule = set.schedule.clone().expect("a schedule");
    let (old, planned) = (schedule.keys[0].kid.clone(), schedule.keys[1].kid.clone());
    // A published the schedule's fingerprint as the site's.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while site.nodes[0].ready().await.json()["siteKeySet"] != set.fingerprint().as_str() {
        assert!(std::time::Instant::now() < deadline, "not published");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    site.add_node().await;
    let (a, b) = (&site.nodes[0], &site.nodes[1]);
    let bearer = site.auth("BEARER");
    let kid = |reply: &Reply| {
        crate::harness::jwt_header(reply.json()["access_token"].as_str().unwrap())["kid"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (mut conn_a, mut conn_b) = (a.conn().await, b.conn().await);
    assert_eq!(kid(&token(&mut conn_a, &bearer, &[]).await), old);
    assert_eq!(kid(&token(&mut conn_b, &bearer, &[]).await), old);

    // The activation: A's clock passes it first, B's (30 s behind) later: same file,
    // other clocks.
    let activates = schedule.keys[1].activates;
    a.clock.advance(activates - a.clock.now());
    b.clock.advance(activates - 30 - b.clock.now());
    let from_a = token(&mut conn_a, &bearer, &[]).await;
    assert_eq!(kid(&from_a), planned, "A switched at the activation");
    let before = token(&mut conn_b, &bearer, &[]).await;
    assert_eq!(kid(&before), old, "B not yet");
    let before = access_token(&before);
    b.clock.advance(30);
    let from_b = token(&mut conn_b, &bearer, &[]).await;
    assert_eq!(kid(&from_b), planned, "B switched at its activation");
    for node in [a, b] {
        let ready = node.ready().await;
        let body = ready.json();
        assert_eq!(ready.status, 200, "{body}");
        assert_eq!(body["keySet"], set.fingerprint().as_str(), "{body}");
        assert_eq!(body["signingKey"], planned.as_str(), "{body}");
    }
    // Every token verifies on both nodes: the old key is previous, the new one current.
    for token in [before, access_token(&from_a), access_token(&from_b)] {
        for conn in [&mut conn_a, &mut conn_b] {
            assert_eq!(introspect(&site, conn, &token).await["active"], true);
        }
    }
    let jwks_a = conn_a.get("/jwks").await.unwrap().json();
    assert_eq!(jwks_a, conn_b.get("/jwks").await.unwrap().json());
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_replay_claims_nonces_and_revocations() {
    let redis = RedisServer::start("two-nodes").await;
    let mut site = MultiSite::start(&redis, "two-nodes").await;
    site.add_node().await;
    // B starts against an initialised site: no fence.
    assert_eq!(site.nodes[1].ready().await.json()["restartFence"], false);
    let (a, b) = (&site.nodes[0], &site.nodes[1]);
    let (mut conn_a, mut conn_b) = (a.conn().await, b.conn().await);
    let dpop = site.auth("DPOP");

    // A proof accepted by A is a replay on B.
    let key = ProofKey::es256().unwrap();
    let proof = site.proof(&key, None);
    let first = token(&mut conn_a, &dpop, &[&proof]).await;
    let issued = access_token(&first);
    let again = token(&mut conn_b, &dpop, &[&proof]).await;
    assert_eq!(again.status, 401, "{:?}", again.body);
    assert_eq!(again.json()["error"], "invalid_dpop_proof");
    assert!(again
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_dpop_proof"));
    // Both nodes sign with the one key: B's JWKS verifies what A issued.
    let jwks_a = conn_a.get("/jwks").await.unwrap().json();
    let jwks_b = conn_b.get("/jwks").await.unwrap().json();
    assert_eq!(jwks_a, jwks_b);
    assert_eq!(
        a.ready().await.json()["keySet"],
        b.ready().await.json()["keySet"],
        "the same key set on both nodes"
    );

    // A nonce handed out by A is accepted by B (client of a nonce-requiring tenant).
    let nonce_client = site.auth("NONCE");
    let key = ProofKey::ed25519().unwrap();
    let refused = token(&mut conn_a, &nonce_client, &[&site.proof(&key, None)]).await;
    assert_eq!(refused.status, 400, "{:?}", refused.body);
    assert_eq!(refused.json()["error"], "use_dpop_nonce");
    let nonce = refused.header("dpop-nonce").unwrap().to_string();
    let accepted = token(
        &mut conn_b,
        &nonce_client,
        &[&site.proof(&key, Some(&nonce))],
    )
    .await;
    access_token(&accepted);
    // An unknown nonce is not.
    let unknown = token(
        &mut conn_b,
        &nonce_client,
        &[&site.proof(&key, Some("not-a-nonce-of-this-site"))],
    )
    .await;
    assert_eq!(unknown.status, 400);
    assert_eq!(unknown.json()["error"], "use_dpop_nonce");

    // A token revoked on A is inactive on B; its record keeps its expiry.
    assert_eq!(
        introspect(&site, &mut conn_b, &issued).await["active"],
        true
    );
    let record_key = format!(
        "sealkit:{}:token:{}",
        site.site,
        hex(&TokenId::of(&issued).0)
    );
    let ttl_before = redis.pttl(&record_key);
    assert!(ttl_before > 0 && ttl_before <= 300_000, "{ttl_before}");
    let reply = conn_a
        .post_form(
            "/revoke",
            &[("token", &issued)],
            &[("authorization", &dpop)],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(
        introspect(&site, &mut conn_b, &issued).await,
        serde_json::json!({"active": false})
    );
    let ttl_after = redis.pttl(&record_key);
    assert!(
        ttl_after > 0 && ttl_after <= ttl_before,
        "a revocation keeps the record's TTL: {ttl_before} then {ttl_after}"
    );

    // The same proof fired at both nodes at once, 10 times each: exactly one token.
    let mut conns = Vec::new();
    for i in 0..20 {
        conns.push(site.nodes[i % 2].conn().await);
    }
    let key = ProofKey::es256().unwrap();
    let proof = site.proof(&key, None);
    let mut tasks = Vec::new();
    for mut conn in conns {
        let (dpop, proof) = (dpop.clone(), proof.clone());
        tasks.push(tokio::spawn(async move {
            token(&mut conn, &dpop, &[&proof]).await
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap().status.as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        19,
        "{statuses:?}"
    );

    // Everything sealkit wrote is in the site's namespace (the ACL user could not do
    // otherwise), and everything but the marker, the site's key set fingerprint and the
    // size counters expires by itself.
    let keys = redis.scan("*");
    assert!(!keys.is_empty());
    let prefix = format!("sealkit:{}:", site.site);
    for key in &keys {
        assert!(key.starts_with(&prefix), "{key}");
        let durable = key == &format!("{prefix}meta:state")
            || key == &format!("{prefix}meta:keyset")
            || key.starts_with(&format!("{prefix}meta:count:"));
        if !durable {
            assert!(redis.pttl(key) > 0, "{key} has no TTL");
        }
    }
    site.stop().await;
}

// ---------------------------------------------------------------------------------------
// Outage: fail closed, then resume without restarting sealkit
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_fails_closed_and_service_resumes_by_itself() {
    let mut redis = RedisServer::start("outage").await;
    let site = MultiSite::start(&redis, "outage").await;
    let node = &site.nodes[0];
    let mut conn = node.conn().await;
    let dpop = site.auth("DPOP");
    let key = ProofKey::es256().unwrap();

    let used = site.proof(&key, None);
    access_token(&token(&mut conn, &dpop, &[&used]).await);

    // Redis dies: every token request is refused with 503, DPoP or not; /ready says so.
    redis.kill();
    let errors_before = metric(
        &crate::harness::scrape(node.server.metrics_addr).await,
        "authority_store_errors_total",
    );
    for proofs in [vec![site.proof(&key, None)], vec![]] {
        let auth = if proofs.is_empty() {
            site.auth("BEARER")
        } else {
            dpop.clone()
        };
        let proofs: Vec<&str> = proofs.iter().map(String::as_str).collect();
        let reply = token(&mut conn, &auth, &proofs).await;
        assert_eq!(reply.status, 503, "{:?}", reply.body);
        assert_eq!(reply.json()["error"], "temporarily_unavailable");
        assert_eq!(reply.header("retry-after"), Some("1"));
    }
    let ready = node.ready().await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["ready"], false);
    let exposition = crate::harness::scrape(node.server.metrics_addr).await;
    assert!(
        metric(&exposition, "authority_store_errors_total") >= errors_before + 2.0,
        "the outage is counted"
    );

    // Redis comes back on the same port, empty (no persistence): the claim of `used` is
    // gone. It must not be accepted again: the node notices the new Redis process and
    // raises the restart fence (proofs need a nonce minted after the loss, for one replay
    // window); clients that follow use_dpop_nonce get tokens again at once, without a
    // restart of sealkit.
    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut answers = Vec::new();
    let mut nonce: Option<String> = None;
    let resumed = loop {
        let replay = token(&mut conn, &dpop, &[&used]).await;
        assert_ne!(
            replay.status, 200,
            "a proof used before the loss was accepted again"
        );
        let reply = token(&mut conn, &dpop, &[&site.proof(&key, nonce.as_deref())]).await;
        if reply.status == 200 {
            break reply;
        }
        let error = reply.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match (reply.status.as_u16(), error.as_str()) {
            (503, "temporarily_unavailable") => {}
            (400, "use_dpop_nonce") => nonce = reply.header("dpop-nonce").map(str::to_string),
            other => panic!("unexpected answer {other:?}"),
        }
        answers.push(format!("{} {error}", reply.status.as_u16()));
        assert!(Instant::now() < deadline, "service never resumed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    access_token(&resumed);
    assert!(
        answers.iter().any(|a| a == "400 use_dpop_nonce"),
        "the loss of Redis's claims must raise the fence: {answers:?}"
    );
    assert_eq!(node.ready().await.status, 200);
    // Replay protection works again after recovery (the fence is still up: with the nonce).
    let proof = site.proof(&key, nonce.as_deref());
    access_token(&token(&mut conn, &dpop, &[&proof]).await);
    assert_eq!(token(&mut conn, &dpop, &[&proof]).await.status, 401);
    site.stop().await;
}

/// The Redis setups docs/multi-node.md describes, each with what a `kill -9` of Redis
/// does to the claims it held.
struct Setup {
    name: &'static str,
    args: &'static [&'static str],
    /// redis-cli authentication (an administrator user where `default` is off or has a
    /// password).
    cli_auth: &'static [&'static str],
    /// Whether plain writes (token records) survive a kill -9 of the Redis process.
    keeps_records: bool,
}

const SETUPS: [Setup; 5] = [
    // The recommended one: AOF, fsync always, `default` with a password of its own.
    Setup {
        name: "aof-always",
        args: &[
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--user",
            "default",
            "on",
            ">default-password",
            "~*",
            "&*",
            "+@all",
        ],
        cli_auth: &[
            "--user",
            "default",
            "--pass",
            "default-password",
            "--no-auth-warning",
        ],
        keeps_records: true,
    },
    // The setup the documentation used to recommend: Redis 7.0 drops every MULTI/EXEC of
    // the AOF on reload (redis/redis#14541), i.e. every jti claim.
    Setup {
        name: "aof-always-default-off",
        args: &[
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--user",
            "default",
            "off",
            "--user",
            "admin",
            "on",
            ">admin-password",
            "~*",
            "&*",
            "+@all",
        ],
        cli_auth: &[
            "--user",
            "admin",
            "--pass",
            "admin-password",
            "--no-auth-warning",
        ],
        keeps_records: true,
    },
    Setup {
        name: "aof-everysec",
        args: &["--appendonly", "yes", "--appendfsync", "everysec"],
        cli_auth: &[],
        keeps_records: true,
    },
    // RDB snapshots only: everything since the last snapshot is gone.
    Setup {
        name: "rdb",
        args: &["--appendonly", "no", "--save", "1 1"],
        cli_auth: &[],
        keeps_records: false,
    },
    Setup {
        name: "no-persistence",
        args: &[],
        cli_auth: &[],
        keeps_records: false,
    },
];

/// Two nodes on one real redis-server in `setup`: DPoP load on node A, `kill -9` of Redis
/// while it runs, Redis restarted from whatever it persisted; then every proof node A
/// answered 200 (before and after the restart) is replayed on node B while its `iat` is
/// still acceptable: none may get a token, and both nodes serve again by themselves.
async fn a_redis_kill_9_reopens_no_proof_on_the_other_node(setup: &Setup) {
    let site_name = format!("kill-{}", setup.name);
    let mut redis = RedisServer::start_with(&site_name, setup.args).await;
    redis.cli_auth = setup.cli_auth.iter().map(|s| s.to_string()).collect();
    let mut site = MultiSite::start_timed(&redis, &site_name, REPLAYABLE).await;
    site.add_node().await;
    assert_eq!(site.nodes[1].ready().await.json()["restartFence"], false);
    let (a, b) = (&site.nodes[0], &site.nodes[1]);
    let dpop = site.auth("DPOP");

    let mut load = Load::start(&a.target, &site.token_url(), &dpop, 3);
    load.wait_for(150).await;
    let claims_before = redis.scan(&format!("sealkit:{site_name}:jti:*")).len();
    redis.kill();
    let killed = Instant::now();
    redis.spawn().await;
    let claims_after = redis.scan(&format!("sealkit:{site_name}:jti:*")).len();
    // Node A serves again by itself: 150 more tokens after the restart.
    load.wait_for(300).await;
    let resumed_in = killed.elapsed();
    let report = load.stop().await;

    let checked = check_all(&b.target, &report.answered, &dpop, &site.auth("INTROSPECT")).await;
    let oldest = report
        .answered
        .first()
        .map(|a| {
            crate::harness::jwt_claims(&a.token)["iat"]
                .as_i64()
                .unwrap()
        })
        .unwrap();
    let age = sealkit::clock::unix_now() - oldest;
    eprintln!(
        "{}: {} proofs answered on A ({} before the kill); jti claims in Redis before/after the restart {claims_before}/{claims_after}; A served 150 more tokens {resumed_in:?} after the kill; on B: {} of {} tokens active, {} replays accepted, answers {:?}; oldest proof {age} s old",
        setup.name,
        report.answered.len(),
        150,
        checked.active,
        checked.tokens,
        checked.replays_accepted,
        checked.replay_errors,
    );
    assert!(
        age < 15,
        "the replays came too late to test anything ({age} s)"
    );
    assert_eq!(
        checked.replays_accepted, 0,
        "{}: a used proof got a second token",
        setup.name
    );
    assert!(
        !checked.replay_errors.contains_key("400 invalid_dpop_proof"),
        "{}: replays were refused for their age, not for their claims: {:?}",
        setup.name,
        checked.replay_errors
    );
    if setup.keeps_records {
        assert_eq!(
            checked.active, checked.tokens,
            "{}: token records lost",
            setup.name
        );
    }
    // Node B serves again by itself too (after its fence answer, with a nonce).
    let key = ProofKey::es256().unwrap();
    let mut conn = b.conn().await;
    let mut nonce: Option<String> = None;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply = token(&mut conn, &dpop, &[&site.proof(&key, nonce.as_deref())]).await;
        if reply.status == 200 {
            break;
        }
        if reply.json()["error"] == "use_dpop_nonce" {
            nonce = reply.header("dpop-nonce").map(str::to_string);
        }
        assert!(
            Instant::now() < deadline,
            "node B never resumed: {:?}",
            reply.body
        );
    }
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_kill_9_with_aof_always_reopens_no_proof() {
    a_redis_kill_9_reopens_no_proof_on_the_other_node(&SETUPS[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_kill_9_with_aof_always_and_default_user_off_reopens_no_proof() {
    a_redis_kill_9_reopens_no_proof_on_the_other_node(&SETUPS[1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_kill_9_with_aof_everysec_reopens_no_proof() {
    a_redis_kill_9_reopens_no_proof_on_the_other_node(&SETUPS[2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_kill_9_with_rdb_snapshots_reopens_no_proof() {
    a_redis_kill_9_reopens_no_proof_on_the_other_node(&SETUPS[3]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_kill_9_without_persistence_reopens_no_proof() {
    a_redis_kill_9_reopens_no_proof_on_the_other_node(&SETUPS[4]).await;
}

// ---------------------------------------------------------------------------------------
// Keys expire by themselves
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jti_claims_expire_in_redis_after_the_replay_window() {
    let redis = RedisServer::start("expiry").await;
    let site = MultiSite::start(&redis, "expiry").await;
    let mut conn = site.nodes[0].conn().await;
    let key = ProofKey::es256().unwrap();
    let dpop = site.auth("DPOP");
    for _ in 0..3 {
        access_token(&token(&mut conn, &dpop, &[&site.proof(&key, None)]).await);
    }
    let pattern = format!("sealkit:{}:jti:*", site.site);
    let claims = redis.scan(&pattern);
    assert_eq!(claims.len(), 3, "{claims:?}");
    for claim in &claims {
        let ttl = redis.pttl(claim);
        assert!(ttl > 0 && ttl <= 3_000, "replayWindow is 3s: {ttl}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !redis.scan(&pattern).is_empty() {
        assert!(
            Instant::now() < deadline,
            "jti claims outlived the replay window"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    site.stop().await;
}

// ---------------------------------------------------------------------------------------
// The store itself
// ---------------------------------------------------------------------------------------

fn redis_settings(url: String, site: &str) -> RedisSettings {
    RedisSettings {
        url,
        site: site.to_string(),
        username: None,
        password_file: None,
        ca_file: None,
        timeout: Duration::from_millis(250),
    }
}

fn record(exp: i64) -> TokenRecord {
    TokenRecord {
        client_id: "c".into(),
        tenant: "t".into(),
        scope: "s".into(),
        audience: vec!["a".into()],
        iat: exp - 300,
        exp,
        jti: "j".into(),
        token_type: "DPoP".into(),
        cnf_jkt: Some("k".into()),
        sender_certificate: None,
        revoked: false,
        subject: None,
        family: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_claims_once_remembers_and_fences_after_a_loss() {
    let redis = RedisServer::start("unit").await;
    let settings = redis_settings(redis.url(), "unit");
    let now = sealkit::clock::unix_now();

    // The first start sees an empty Redis (fence); a node started later sees the marker.
    let store = RedisStore::open(&settings, Duration::ZERO).await.unwrap();
    assert_eq!(store.begin_run().await.unwrap(), PreviousShutdown::Unclean);
    let other = std::sync::Arc::new(
        RedisStore::open(&settings, Duration::from_secs(120))
            .await
            .unwrap(),
    );
    assert_eq!(other.begin_run().await.unwrap(), PreviousShutdown::Clean);

    // Claims: once per (key, jti), shared by every store on this Redis.
    assert_eq!(
        store.claim_jti("k", "j", now + 60, now).await.unwrap(),
        Claim::Fresh
    );
    assert_eq!(
        other.claim_jti("k", "j", now + 60, now).await.unwrap(),
        Claim::Replayed
    );
    assert_eq!(
        other.claim_jti("k2", "j", now + 60, now).await.unwrap(),
        Claim::Fresh
    );
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let s = other.clone();
        tasks.push(tokio::spawn(async move {
            s.claim_jti("k", "race", now + 60, now).await.unwrap()
        }));
    }
    let mut fresh = 0;
    for t in tasks {
        if t.await.unwrap() == Claim::Fresh {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 1);

    // Nonces: valid until their expiry, by either store.
    store.put_nonce("n1", now + 30).await.unwrap();
    assert!(other.nonce_is_valid("n1", now).await.unwrap());
    assert!(!other.nonce_is_valid("n1", now + 30).await.unwrap());
    assert!(!other.nonce_is_valid("unknown", now).await.unwrap());

    // Token records and revocation.
    let id = TokenId::of("token");
    store.put_token(id, &record(now + 300)).await.unwrap();
    assert_eq!(other.get_token(id).await.unwrap(), Some(record(now + 300)));
    assert_eq!(
        other.revoke_token(id).await.unwrap(),
        Some(record(now + 300))
    );
    assert!(store.get_token(id).await.unwrap().unwrap().revoked);
    let ttl = redis.pttl(&format!("sealkit:unit:token:{}", hex(&id.0)));
    assert!(ttl > 0 && ttl <= 300_000, "{ttl}");
    assert_eq!(
        store.revoke_token(TokenId::of("unknown")).await.unwrap(),
        None
    );

    // The incident tools' scan: every live record of this site, with its id, on any node;
    // revoking a client's tokens through it revokes exactly those.
    let mut second = record(now + 300);
    second.jti = "j2".into();
    second.client_id = "d".into();
    other
        .put_token(TokenId::of("token2"), &second)
        .await
        .unwrap();
    let mut live = store.live_tokens(now).await.unwrap();
    live.sort_by(|a, b| a.1.jti.cmp(&b.1.jti));
    assert_eq!(live.len(), 2, "{live:?}");
    assert_eq!(live[0].0, id);
    assert_eq!(live[1].0, TokenId::of("token2"));
    assert!(store.live_tokens(now + 300).await.unwrap().is_empty());
    let done = sealkit::core::incident::revoke(
        other.as_ref(),
        &sealkit::core::incident::Selection::Client("d".into()),
        now,
    )
    .await
    .unwrap();
    assert_eq!(done.jtis, ["j2"]);
    assert!(
        store
            .get_token(TokenId::of("token2"))
            .await
            .unwrap()
            .unwrap()
            .revoked
    );

    // Sizes: refreshed by sweep, which removes nothing itself.
    assert_eq!(store.sweep(now).await.unwrap(), 0);
    let size = store.size();
    assert_eq!(
        (size.jti_claims, size.nonces, size.tokens),
        (3, 1, 2), // the two token records above
        "{size:?}"
    );
    store.probe().await.unwrap();

    // Redis loses its data (FLUSHALL): the next claim finds the site marker gone and
    // reports the loss once, without making the claim (the authority then raises its
    // fence); later claims proceed. A store started meanwhile reports an unclean state.
    redis.cli(&["FLUSHALL"]);
    assert!(matches!(
        other.claim_jti("k", "after-loss", now + 60, now).await,
        Err(StoreError::ClaimsLost(_))
    ));
    assert_eq!(
        other
            .claim_jti("k", "after-loss", now + 60, now)
            .await
            .unwrap(),
        Claim::Fresh,
        "the claim refused with the report was not made"
    );
    let late = RedisStore::open(&settings, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(late.begin_run().await.unwrap(), PreviousShutdown::Unclean);
    // The store that did not claim since the loss notices it in its sweep and reports it
    // from its next call.
    assert_eq!(store.sweep(now).await.unwrap(), 0);
    assert!(matches!(
        store.nonce_is_valid("n1", now).await,
        Err(StoreError::ClaimsLost(_))
    ));
    assert!(!store.nonce_is_valid("n1", now).await.unwrap());

    // Redis restarts or fails over with its keys intact (an AOF): its script cache is
    // empty then, which `SCRIPT FLUSH` reproduces here. The first claim finds it, starts a
    // new epoch and reports the loss; every nonce minted before is invalid on every node,
    // and each other node reports the loss once too.
    other.put_nonce("n2", now + 30).await.unwrap();
    assert!(store.nonce_is_valid("n2", now).await.unwrap());
    redis.cli(&["SCRIPT", "FLUSH"]);
    assert!(matches!(
        store.claim_jti("k", "after-restart", now + 60, now).await,
        Err(StoreError::ClaimsLost(_))
    ));
    assert!(!store.nonce_is_valid("n2", now).await.unwrap());
    assert!(matches!(
        other.nonce_is_valid("n2", now).await,
        Err(StoreError::ClaimsLost(_))
    ));
    assert!(!other.nonce_is_valid("n2", now).await.unwrap());
    assert!(matches!(
        late.claim_jti("k", "after-restart", now + 60, now).await,
        Err(StoreError::ClaimsLost(_))
    ));
    // Then claims are shared as before.
    assert_eq!(
        other
            .claim_jti("k", "after-restart", now + 60, now)
            .await
            .unwrap(),
        Claim::Fresh
    );
    assert_eq!(
        store
            .claim_jti("k", "after-restart", now + 60, now)
            .await
            .unwrap(),
        Claim::Replayed
    );
    assert_eq!(
        late.claim_jti("k", "after-restart", now + 60, now)
            .await
            .unwrap(),
        Claim::Replayed
    );
    assert!(store.health().claims_lost >= 2, "{:?}", store.health());

    // A hung Redis: calls fail within the timeout instead of hanging.
    redis.signal("-STOP");
    let started = Instant::now();
    let result = store.probe().await;
    let hung_for = started.elapsed();
    redis.signal("-CONT");
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
    eprintln!("probe against a stopped Redis failed after {hung_for:?}");
    store.probe().await.unwrap();
    store.end_run().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_refuses_to_open_without_redis() {
    let port = free_port();
    let settings = redis_settings(format!("redis://127.0.0.1:{port}/0"), "none");
    assert!(matches!(
        RedisStore::open(&settings, Duration::from_secs(3)).await,
        Err(StoreError::Unavailable(_))
    ));
    // A wrong password is refused too.
    let redis = RedisServer::start("auth").await;
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("pw");
    std::fs::write(&password_file, "wrong\n").unwrap();
    let settings = RedisSettings {
        username: Some("sealkit".into()),
        password_file: Some(password_file.clone()),
        ..redis_settings(redis.url(), "auth")
    };
    assert!(RedisStore::open(&settings, Duration::from_secs(3))
        .await
        .is_err());
    std::fs::write(&password_file, format!("{REDIS_PASSWORD}\n")).unwrap();
    let store = RedisStore::open(&settings, Duration::from_secs(3))
        .await
        .unwrap();
    store.begin_run().await.unwrap();
}

/// rediss:// with the site CA, through the redis crate's rustls (ring provider).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_redis_is_verified_against_the_site_ca() {
    let dir = tempfile::tempdir().unwrap();
    let demo = sealkit::demo::prepare(&dir.path().join("site"), "127.0.0.1:8443".parse().unwrap())
        .unwrap();
    let other =
        sealkit::demo::prepare(&dir.path().join("other"), "127.0.0.1:8443".parse().unwrap())
            .unwrap();
    let redis = RedisServer::start_tls(
        &demo.dir.join("tls/server.crt"),
        &demo.dir.join("tls/server.key"),
        &demo.ca_file,
    )
    .await;
    let url = format!("rediss://127.0.0.1:{}/0", redis.port);
    let settings = RedisSettings {
        ca_file: Some(demo.ca_file.clone()),
        ..redis_settings(url.clone(), "tls")
    };
    let store = RedisStore::open(&settings, Duration::from_secs(3))
        .await
        .unwrap();
    store.begin_run().await.unwrap();
    let now = sealkit::clock::unix_now();
    assert_eq!(
        store.claim_jti("k", "j", now + 60, now).await.unwrap(),
        Claim::Fresh
    );
    assert_eq!(
        store.claim_jti("k", "j", now + 60, now).await.unwrap(),
        Claim::Replayed
    );
    // A Redis whose certificate another CA signed is refused.
    let settings = RedisSettings {
        ca_file: Some(other.ca_file.clone()),
        ..redis_settings(url, "tls")
    };
    assert!(RedisStore::open(&settings, Duration::from_secs(3))
        .await
        .is_err());
}

// ---------------------------------------------------------------------------------------
// The storage: block
// ---------------------------------------------------------------------------------------

/// Loads the demo configuration with `storage` appended; the problems about `storage.*`.
fn storage_problems(demo: &DemoSite, storage: &str) -> Result<Settings, Vec<String>> {
    let base = std::fs::read_to_string(demo.dir.join("authority.yaml.orig")).unwrap();
    let path: PathBuf = demo.dir.join("authority-storage.yaml");
    std::fs::write(&path, format!("{base}storage:\n{storage}")).unwrap();
    match Settings::load(&path) {
        Ok(settings) => Ok(settings),
        Err(ConfigError::Invalid { problems, .. }) => Err(problems
            .iter()
            .filter(|p| p.path.starts_with("storage"))
            .map(|p| p.to_string())
            .collect()),
        Err(other) => panic!("{other}"),
    }
}

#[test]
fn the_storage_block_is_validated() {
    let dir = tempfile::tempdir().unwrap();
    let demo = sealkit::demo::prepare(&dir.path().join("site"), "127.0.0.1:8443".parse().unwrap())
        .unwrap();
    std::fs::copy(&demo.config, demo.dir.join("authority.yaml.orig")).unwrap();
    let secret = demo.dir.join("redis.password");
    std::fs::write(&secret, "pw\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Valid: defaults filled in, the site derived from the issuer's host.
    let settings = storage_problems(
        &demo,
        "  kind: redis\n  url: redis://10.0.0.5:6379/0\n  passwordFile: redis.password\n",
    )
    .unwrap();
    assert_eq!(settings.storage, StorageKind::Redis);
    let redis = settings.storage_settings.redis.unwrap();
    assert_eq!(redis.site, "127.0.0.1");
    assert_eq!(redis.timeout, Duration::from_millis(250));
    assert_eq!(redis.password_file, Some(secret.clone()));
    let settings = storage_problems(
        &demo,
        "  kind: redis\n  url: unix:///run/redis/redis.sock?db=2\n  site: plant-7\n  timeout: 1s\n",
    )
    .unwrap();
    assert_eq!(
        settings.storage_settings.redis.unwrap().timeout,
        Duration::from_secs(1)
    );
    let sled = storage_problems(&demo, "  kind: sled\n").unwrap();
    assert_eq!(sled.storage_settings.redis, None);

    let refused = |storage: &str, path: &str, words: &str| {
        let problems = storage_problems(&demo, storage).expect_err(storage);
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with(&format!("{path}:")) && p.contains(words)),
            "{storage}: expected `{path}: …{words}…`, got {problems:?}"
        );
    };
    refused(
        "  kind: redis\n  url: redis://10.0.0.5:6379/0\n  password: hunter2\n",
        "storage.password",
        "never written in the configuration",
    );
    refused("  kind: redis\n", "storage.url", "needs a url");
    refused(
        "  kind: redis\n  url: redis://:hunter2@10.0.0.5:6379/0\n",
        "storage.url",
        "passwordFile",
    );
    refused(
        "  kind: redis\n  url: rediss://10.0.0.5:6380/0\n",
        "storage.caFile",
        "site CA",
    );
    refused(
        "  kind: redis\n  url: rediss://10.0.0.5:6380/0#insecure\n  caFile: ca/root.crt\n",
        "storage.url",
        "#fragment",
    );
    refused(
        "  kind: redis\n  url: http://10.0.0.5/\n",
        "storage.url",
        "not redis://",
    );
    refused(
        "  kind: redis\n  url: redis://10.0.0.5/0\n  site: \"a:b\"\n",
        "storage.site",
        "key namespace",
    );
    refused(
        "  kind: redis\n  url: redis://10.0.0.5/0\n  timeout: 1m\n",
        "storage.timeout",
        "between 10ms and 10s",
    );
    refused(
        "  kind: sled\n  url: redis://10.0.0.5/0\n",
        "storage.url",
        "only used with storage.kind: redis",
    );
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    refused(
        "  kind: redis\n  url: redis://10.0.0.5/0\n  passwordFile: redis.password\n",
        "storage.passwordFile",
        "readable by every user",
    );
}

/// `sealkit bench --scenario redis` against a redis-server of its own: every token
/// answered 200, and with `--redis-pid` the report gives the CPU on each side of the store,
/// the authority's and the redis-server's (issue 19: "CPU per token on each side").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_benchmark_reports_the_cpu_on_each_side() {
    let redis = RedisServer::start("unused").await;
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let pid = redis.child.as_ref().unwrap().id().to_string();
    let (json, stdout) = tokio::task::block_in_place(|| {
        crate::process::bench_json(&[
            "--scenario",
            "redis",
            "--requests",
            "2000",
            "--connections",
            "4",
            "--warmup",
            "0s",
            "--redis-url",
            &url,
            "--redis-pid",
            &pid,
        ])
    });
    let report = &json["reports"][0];
    assert_eq!(report["store"], "redis", "{stdout}");
    assert_eq!(report["ok"], 2000, "{report}");
    assert_eq!(report["non_200"], 0, "{report}");
    assert!(
        report["server"]["cpu_us_per_request"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    // 2,000 tokens are some tens of milliseconds of redis-server CPU: several ticks.
    let store = report["redis_cpu_us_per_request"].as_f64();
    assert!(store.is_some_and(|us| us > 0.0), "{report}");
}
