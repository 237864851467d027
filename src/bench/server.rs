//! The authority under test, as a separate child process (`sealkit serve --config`) on a
//! demo site prepared in a temporary directory, so its CPU time and memory can be read from
//! `/proc/<pid>` without the load generator's own work mixed in.

use super::BenchError;
use crate::client::https::TlsTarget;
use crate::demo::DemoSite;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `sealkit serve` child and its site. Dropping it kills the child and removes
/// the temporary directory (unless kept).
pub struct ServerProcess {
    pub pid: u32,
    pub site: DemoSite,
    /// Spawn until `/ready` answered 200.
    pub startup: Duration,
    child: Option<Child>,
    root: PathBuf,
    keep: bool,
}

fn setup(context: &str) -> impl FnOnce(std::io::Error) -> BenchError + '_ {
    move |e| BenchError::Setup(format!("{context}: {e}"))
}

/// A new private directory under the system temporary directory.
fn temp_root() -> Result<PathBuf, BenchError> {
    use std::os::unix::fs::DirBuilderExt;
    let root = std::env::temp_dir().join(format!(
        "sealkit-bench-{}-{}",
        std::process::id(),
        &crate::secret::generate()[..8]
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&root)
        .map_err(setup("cannot create the benchmark directory"))?;
    Ok(root)
}

fn free_loopback_addr() -> Result<std::net::SocketAddr, BenchError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(setup("cannot find a free port"))
}

impl ServerProcess {
    /// Prepares a demo site (its `authority.yaml` first changed by `edit`), starts
    /// `sealkit serve` on it and waits until `/ready` answers 200.
    pub async fn start(
        edit: impl FnOnce(&mut String),
        keep: bool,
    ) -> Result<ServerProcess, BenchError> {
        let root = temp_root()?;
        let mut server = ServerProcess {
            pid: 0,
            site: DemoSite {
                dir: root.clone(),
                config: PathBuf::new(),
                guard_config: PathBuf::new(),
                ca_file: PathBuf::new(),
                issuer: String::new(),
                env: Default::default(),
            },
            startup: Duration::ZERO,
            child: None,
            root: root.clone(),
            keep,
        };
        let listen = free_loopback_addr()?;
        let ports = crate::demo::DemoPorts {
            metrics: free_loopback_addr()?,
            ..crate::demo::ports_for(listen)
        };
        let site = crate::demo::prepare_with_ports(&root.join("site"), ports)
            .map_err(|e| BenchError::Setup(format!("cannot prepare the demo site: {e}")))?;
        let mut yaml = std::fs::read_to_string(&site.config)
            .map_err(setup("cannot read the demo configuration"))?;
        edit(&mut yaml);
        std::fs::write(&site.config, yaml).map_err(setup("cannot write the configuration"))?;
        server.site = site;

        let exe = std::env::current_exe().map_err(setup("cannot find this executable"))?;
        let stderr = std::fs::File::create(root.join("server.stderr"))
            .map_err(setup("cannot create the server's stderr file"))?;
        let target = TlsTarget::new(&server.site.issuer, &server.site.ca_file, None)
            .map_err(|e| BenchError::Setup(format!("TLS client: {e}")))?;
        let spawned = Instant::now();
        let child = Command::new(exe)
            .arg("serve")
            .arg("--config")
            .arg(&server.site.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(setup("cannot start `sealkit serve`"))?;
        server.pid = child.id();
        server.child = Some(child);
        let deadline = spawned + Duration::from_secs(30);
        loop {
            if let Some(status) = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(BenchError::Setup(format!(
                    "the server exited ({status}) before it was ready: {}",
                    server.stderr_tail()
                )));
            }
            if let Ok(mut conn) = target.connect().await {
                if let Ok(reply) = conn.get("/ready").await {
                    if reply.status == http::StatusCode::OK {
                        server.startup = spawned.elapsed();
                        return Ok(server);
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(BenchError::Setup(format!(
                    "the server did not become ready within 30 s: {}",
                    server.stderr_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// The end of what the server wrote to stderr (for error messages).
    pub fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(self.root.join("server.stderr")).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        if tail.is_empty() {
            "(no output on stderr)".into()
        } else {
            tail.join(" | ")
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.site.dir.join("data")
    }

    /// Stops the server with SIGTERM (a clean shutdown), waiting up to 15 s.
    pub fn stop(mut self) -> Result<(), BenchError> {
        self.terminate()
    }

    fn terminate(&mut self) -> Result<(), BenchError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(BenchError::Setup(
                        "the server did not stop within 15 s of SIGTERM; killed".into(),
                    ));
                }
            }
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.terminate();
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// Total size of the regular files under `dir` (the store's footprint on disk).
pub fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// `sealkit guard` on a demo site, in front of the echo upstream this process serves.
pub struct GuardProcess {
    pub pid: u32,
    pub target: TlsTarget,
    /// The resource URL the proofs name (`htu`).
    pub resource_url: String,
    child: Option<Child>,
}

impl GuardProcess {
    /// Serves the demo's echo upstream in this process and starts `sealkit guard` with the
    /// site's guard.yaml; returns when its `/ready` answers 200.
    pub async fn start(site: &DemoSite) -> Result<GuardProcess, BenchError> {
        let echo = crate::guard::echo::bind_unix(&site.dir.join("echo.sock"))
            .map_err(setup("cannot open the echo upstream's socket"))?;
        tokio::spawn(crate::guard::echo::serve_unix(echo));
        let resource_url = site.var("SEALKIT_RESOURCE_URL").to_string();
        let base = url::Url::parse(&resource_url)
            .map(|u| {
                format!(
                    "https://{}:{}",
                    u.host_str().unwrap_or_default(),
                    u.port().unwrap_or(443)
                )
            })
            .map_err(|e| BenchError::Setup(format!("SEALKIT_RESOURCE_URL: {e}")))?;
        let target = TlsTarget::new(&base, &site.ca_file, None)
            .map_err(|e| BenchError::Setup(format!("TLS client: {e}")))?;
        let exe = std::env::current_exe().map_err(setup("cannot find this executable"))?;
        let stderr = std::fs::File::create(site.dir.join("guard.stderr"))
            .map_err(setup("cannot create the guard's stderr file"))?;
        let mut child = Command::new(exe)
            .arg("guard")
            .arg("--config")
            .arg(&site.guard_config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(setup("cannot start `sealkit guard`"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(BenchError::Setup(format!(
                    "the guard exited ({status}) before it was ready: {}",
                    std::fs::read_to_string(site.dir.join("guard.stderr")).unwrap_or_default()
                )));
            }
            if let Ok(mut conn) = target.connect().await {
                if matches!(conn.get("/ready").await, Ok(r) if r.status == http::StatusCode::OK) {
                    break;
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(BenchError::Setup(
                    "the guard did not become ready within 30 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(GuardProcess {
            pid: child.id(),
            target,
            resource_url,
            child: Some(child),
        })
    }
}

impl Drop for GuardProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
