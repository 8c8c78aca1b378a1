//! A real `redis-server` (the OS package) for the tests: a unix socket in a temporary
//! directory (no TCP port at all, so no port races and nothing off the machine), no
//! persistence, killed and removed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Where the server binary is looked for, then `PATH`.
const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// A running `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    dir: PathBuf,
    socket: PathBuf,
}

impl RedisServer {
    /// Starts a server and waits (bounded) until it answers `PING`.
    pub fn start() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        // Short: a unix socket path must fit in 108 bytes.
        let dir = std::env::temp_dir().join(format!(
            "dlg-redis-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("redis.sock");
        let binary = if std::path::Path::new(REDIS_SERVER).exists() { REDIS_SERVER } else { "redis-server" };
        let child = Command::new(binary)
            .args(["--port", "0", "--unixsocket"])
            .arg(&socket)
            .args(["--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir)
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}); install it with `apt-get install -y redis-server`")
            });
        let server = Self { child: Some(child), dir, socket };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if server
                .connection()
                .ok()
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).ok())
                .is_some()
            {
                return server;
            }
            assert!(Instant::now() < deadline, "redis-server did not answer PING within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The URL for `[vault.cache.redis] url`.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn connection(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url().as_str())?.get_connection()
    }

    /// Kills the server (SIGKILL: an outage, not a shutdown) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every key with its value (string values; other types are listed with an empty value)
    /// and its remaining time to live in milliseconds (-1: none).
    pub fn dump(&self) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
        let mut c = self.connection().unwrap();
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
        keys.into_iter()
            .map(|k| {
                let value: Option<Vec<u8>> = redis::cmd("GET").arg(&k).query(&mut c).unwrap_or(None);
                let ttl: i64 = redis::cmd("PTTL").arg(&k).query(&mut c).unwrap();
                (k, value.unwrap_or_default(), ttl)
            })
            .collect()
    }

    /// Sets `key` to `value` (for tampering tests).
    pub fn set(&self, key: &[u8], value: &[u8]) {
        let mut c = self.connection().unwrap();
        let () = redis::cmd("SET").arg(key).arg(value).query(&mut c).unwrap();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
