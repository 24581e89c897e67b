//! A local `nats-server` with JetStream: what `orca demo`, `orca bench` and the tests start when
//! no NATS is given. Killed when dropped.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A nats-server child process on a free loopback port.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
    /// A configuration file (`-c`) and the environment it reads, if any.
    config: Option<(PathBuf, Vec<(String, String)>)>,
    _tmp: Option<tempfile::TempDir>,
}

/// Where nats-server is, if installed.
pub fn find_binary() -> Option<PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/sbin", "/usr/local/bin", "/usr/bin"].map(PathBuf::from));
    candidates
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

/// Finds nats-server, installing the Debian package when it is missing and we may.
pub fn ensure_installed() -> anyhow::Result<PathBuf> {
    if let Some(p) = find_binary() {
        return Ok(p);
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if is_root && Path::new("/usr/bin/apt-get").exists() {
        eprintln!(
            "nats-server not found; installing the Debian package (apt-get install nats-server)…"
        );
        let ok = Command::new("apt-get")
            .args(["install", "-y", "-qq", "nats-server"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let _ = Command::new("apt-get").args(["update", "-qq"]).status();
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "nats-server"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .context("running apt-get")?;
        }
        if let Some(p) = find_binary() {
            return Ok(p);
        }
    }
    bail!(
        "nats-server is not installed. Install it (Debian/Ubuntu: `apt-get install nats-server`, \
         or see https://docs.nats.io) or point orca at a running server with --nats-url"
    )
}

/// A port that is free now, picked below the kernel's ephemeral range where it can: a server
/// restarted on its port (clients reconnect to their URL) must not find it taken meanwhile by
/// an outgoing connection or by another `bind(0)`.
fn free_port() -> anyhow::Result<u16> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok());
    if let Some(low) = ephemeral_low.filter(|low| *low > 20_000 + 1_000) {
        for _ in 0..64 {
            let port = 20_000 + random_below(low - 20_000);
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A random number below `n` (which is not 0).
fn random_below(n: u16) -> u16 {
    let r = uuid::Uuid::new_v4().as_u128();
    (r % u128::from(n)) as u16
}

impl NatsServer {
    /// Starts nats-server with JetStream on a free port, storing in `store` (a temporary
    /// directory when `None`).
    pub fn start(store: Option<PathBuf>) -> anyhow::Result<Self> {
        let (store, tmp) = match store {
            Some(p) => (p, None),
            None => {
                let t = tempfile::Builder::new().prefix("orca-nats-").tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let mut s = Self {
            child: None,
            port: free_port()?,
            store,
            config: None,
            _tmp: tmp,
        };
        s.spawn()?;
        Ok(s)
    }

    /// A server run with the configuration file `config` (e.g. a copy of
    /// `deploy/nats-auth.conf`), with `env` set for the variables it reads, on a free loopback
    /// port (the command line wins over the file). The JetStream store is the file's.
    pub fn start_configured(config: &Path, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let t = tempfile::Builder::new().prefix("orca-nats-").tempdir()?;
        let mut s = Self {
            child: None,
            port: free_port()?,
            store: t.path().to_path_buf(),
            config: Some((
                config.to_path_buf(),
                env.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )),
            _tmp: Some(t),
        };
        s.spawn()?;
        Ok(s)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        // A free port can be taken by someone else before the server binds it: retry on another.
        let mut last = None;
        for _ in 0..5 {
            match self.try_spawn() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    last = Some(e);
                    self.port = free_port()?;
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("nats-server did not start")))
    }

    /// Starts again on the same port (clients reconnect to their URL): retries start for 15 s
    /// while the old server's socket is released (a try itself may wait 10 s for an answer).
    fn respawn(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            match self.try_spawn() {
                Ok(()) => return Ok(()),
                Err(e) if started.elapsed() > Duration::from_secs(15) => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn try_spawn(&mut self) -> anyhow::Result<()> {
        let bin = ensure_installed()?;
        // Unique, so that the greeting check never takes another server on this port for ours.
        let name = format!(
            "orca-local-{}-{}-{}",
            std::process::id(),
            self.port,
            random_below(u16::MAX)
        );
        let mut command = Command::new(bin);
        match &self.config {
            Some((config, env)) => {
                command
                    .arg("-c")
                    .arg(config)
                    .envs(env.iter().map(|(k, v)| (k, v)));
            }
            None => {
                command.arg("-sd").arg(&self.store);
            }
        }
        let mut child = command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-n",
                &name,
                "-js",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nats-server")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "nats-server exited at start ({status}); port {} may be taken",
                    self.port
                );
            }
            // Ours, not another server that took the port: its INFO names it.
            if Self::greets_as(self.port, &name) {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "nats-server did not answer on port {} within 10 s",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child = Some(child);
        Ok(())
    }

    fn greets_as(port: u16, name: &str) -> bool {
        use std::io::{BufRead, BufReader};
        let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).is_ok()
            && line.starts_with("INFO")
            && line.contains(&format!("\"server_name\":\"{name}\""))
    }

    /// `nats://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (kill -9), keeping its store.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server gracefully (SIGTERM: JetStream flushes its store), keeping its store.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops it gracefully and starts it again on the same port and store.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.respawn()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
