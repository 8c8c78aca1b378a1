//! A real OCI registry on loopback: the CNCF distribution server (`docker-registry`, Debian
//! package `docker-registry`), filesystem storage in a temporary directory, plain HTTP on a free
//! 127.0.0.1 port. Killed on drop; [`Registry::stop`] and [`Registry::start_again`] take it
//! down and bring it back on the same port and storage.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary (override with `DELEGATE_DOCKER_REGISTRY`).
pub fn binary() -> PathBuf {
    std::env::var_os("DELEGATE_DOCKER_REGISTRY")
        .map_or_else(|| PathBuf::from("/usr/bin/docker-registry"), PathBuf::from)
}

/// A running distribution server.
pub struct Registry {
    addr: SocketAddr,
    dir: PathBuf,
    child: Option<Child>,
    /// Basic credentials the registry requires (htpasswd), if any.
    htpasswd: bool,
}

/// The user of [`Registry::start_with_credentials`].
pub const USERNAME: &str = "ci";
/// Its password (a test fixture: the bcrypt hash below is of this value).
pub const PASSWORD: &str = "registry-test-password-0123";
/// bcrypt (cost 4, fast for tests) of [`PASSWORD`], as distribution's htpasswd auth reads it.
const PASSWORD_BCRYPT: &str = "$2b$04$nIiT7BwyZDUsNMEs0yvQXOBMzA55hHp/M7LM7WVu.ZEjYz1N6Lxwa";

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

impl Registry {
    /// Starts a registry with its storage and config under `dir` (created).
    pub async fn start(dir: &Path) -> Self {
        Self::start_inner(dir, false).await
    }

    /// Like [`Registry::start`], requiring basic credentials ([`USERNAME`], [`PASSWORD`]) for
    /// every request: distribution's htpasswd auth, which answers `401` with a `Basic` challenge.
    pub async fn start_with_credentials(dir: &Path) -> Self {
        Self::start_inner(dir, true).await
    }

    async fn start_inner(dir: &Path, htpasswd: bool) -> Self {
        std::fs::create_dir_all(dir.join("storage")).unwrap();
        // The port is free now; if another process takes it before the registry binds, the
        // readiness check fails and we try another one.
        for _ in 0..5 {
            let mut registry = Self { addr: free_port(), dir: dir.to_owned(), child: None, htpasswd };
            if registry.spawn().await {
                return registry;
            }
        }
        panic!("docker-registry did not start (see {}/registry.log)", dir.display());
    }

    async fn spawn(&mut self) -> bool {
        let config = self.dir.join("config.yml");
        let auth = if self.htpasswd {
            let file = self.dir.join("htpasswd");
            std::fs::write(&file, format!("{USERNAME}:{PASSWORD_BCRYPT}\n")).unwrap();
            format!("auth:\n  htpasswd:\n    realm: delegate-test\n    path: {}\n", file.display())
        } else {
            String::new()
        };
        std::fs::write(
            &config,
            auth + &format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {}\n",
                self.dir.join("storage").display(),
                self.addr
            ),
        )
        .unwrap();
        let log = std::fs::File::create(self.dir.join("registry.log")).unwrap();
        let child = Command::new(binary())
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {} (apt-get install docker-registry): {e}", binary().display())
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        let client = reqwest::Client::new();
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return false;
            }
            // With htpasswd auth, an anonymous /v2/ answers 401: up all the same.
            let ok = client
                .get(format!("http://{}/v2/", self.addr))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200 || (self.htpasswd && r.status() == 401));
            if ok {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.stop();
        false
    }

    /// `127.0.0.1:<port>`, as `oci://` references and `[oci] plain_http` name it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Kills the registry (its storage stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the registry again on the same port and storage.
    pub async fn start_again(&mut self) {
        self.stop();
        assert!(self.spawn().await, "docker-registry did not restart");
    }

    /// The file holding blob `digest` (`sha256:<hex>`) in the registry's filesystem storage.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir.join("storage/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}
