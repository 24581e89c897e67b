//! Test harness: a real nats-server on a free port with its own JetStream directory, and the real
//! `orca` binary as child processes (so they can be killed with -9). Everything is cleaned up on
//! drop; waits poll against a deadline, never a fixed sleep. Shared by several test targets, each
//! of which uses only some of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orca::client::OrcaClient;
pub use orca::natsd::NatsServer;
use orca_proto::v1;

/// The orca binary under test.
pub fn orca_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_orca"))
}

/// A child process killed on drop. Its log goes to a file that is printed if the test fails.
pub struct Proc {
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(args: &[&str], log: PathBuf) -> Self {
        Self::spawn_env(args, &[], log)
    }

    /// `orca <args>` with `env` set, logging to `log`.
    pub fn spawn_env(args: &[&str], env: &[(&str, &str)], log: PathBuf) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = Command::new(orca_bin())
            .args(args)
            .env("ORCA_LOG", "info,orca_worker=debug,orca_nats=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn orca");
        Self {
            child: Some(child),
            log,
        }
    }

    /// The process id (0 once it exited).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// kill -9
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits up to `limit` for the process to exit on its own; its status, if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            eprintln!("---- last lines of {} ----", self.log.display());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// `orca serve` on `nats` with `data_dir`; returns once it answers queries.
pub async fn serve(nats: &str, data_dir: &Path) -> Proc {
    serve_with(nats, data_dir, TEST_MAX_PAYLOAD).await
}

/// Requests the tests' services take: small, so that limits are quick to reach.
const TEST_MAX_PAYLOAD: &str = "65536";

/// [`serve`] with its own `--max-payload`.
pub async fn serve_with(nats: &str, data_dir: &Path, max_payload: &str) -> Proc {
    let proc = spawn_serve_with(nats, data_dir, max_payload);
    answering(nats).await;
    proc
}

/// `orca serve` with `extra` arguments; returns once it answers queries.
pub async fn serve_args(nats: &str, data_dir: &Path, extra: &[&str]) -> Proc {
    let mut args = vec!["--max-payload", TEST_MAX_PAYLOAD];
    args.extend_from_slice(extra);
    let proc = spawn_serve_args(nats, data_dir, &args);
    answering(nats).await;
    proc
}

/// `orca serve` on `nats` with `data_dir`, started and left alone.
pub fn spawn_serve(nats: &str, data_dir: &Path) -> Proc {
    spawn_serve_with(nats, data_dir, TEST_MAX_PAYLOAD)
}

fn spawn_serve_with(nats: &str, data_dir: &Path, max_payload: &str) -> Proc {
    spawn_serve_args(nats, data_dir, &["--max-payload", max_payload])
}

/// `orca serve` on `nats` with `data_dir` and `extra` arguments, logging beside `data_dir`.
fn spawn_serve_args(nats: &str, data_dir: &Path, extra: &[&str]) -> Proc {
    let dir = data_dir.to_string_lossy().into_owned();
    let mut args = vec!["serve", "--nats-url", nats, "--data-dir", &dir];
    args.extend_from_slice(extra);
    Proc::spawn(&args, data_dir.with_extension("serve.log"))
}

/// `orca worker example` on `nats`, logging into `dir`.
pub fn worker(nats: &str, dir: &Path) -> Proc {
    worker_with(nats, dir, &[])
}

/// `orca worker example` with more arguments, e.g. `--fail provision_user_group:1`.
pub fn worker_with(nats: &str, dir: &Path, extra: &[&str]) -> Proc {
    let mut args = vec!["worker", "example", "--nats-url", nats];
    args.extend_from_slice(extra);
    Proc::spawn(&args, dir.join("worker.log"))
}

/// `orca serve` with the catalog file `catalog`; returns once it answers queries.
pub async fn serve_catalog(nats: &str, data_dir: &Path, catalog: &Path) -> Proc {
    let catalog = catalog.to_string_lossy().into_owned();
    let proc = spawn_serve_args(nats, data_dir, &["--catalog", &catalog]);
    answering(nats).await;
    proc
}

/// Waits until a service answers queries on `nats`.
async fn answering(nats: &str) {
    let client = OrcaClient::connect(nats, "orca").await.expect("connect");
    wait_until(Duration::from_secs(20), || {
        let c = client.clone();
        async move { c.info().await.is_ok() }
    })
    .await;
}

/// `orca views verify` on a stopped service's data: its views equal those the log replays to
/// (invariant 3).
pub fn assert_views_verify(data_dir: &Path) {
    let out = Command::new(orca_bin())
        .args(["views", "verify", "--json", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("orca views verify");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["equal"], true, "{report}");
    assert!(out.status.success());
}

/// Polls `check` until it holds; panics after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(5);
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// A started NATS plus a client and a data dir.
pub struct Env {
    pub nats: NatsServer,
    pub dir: tempfile::TempDir,
    pub client: OrcaClient,
}

impl Env {
    pub async fn new() -> Self {
        let nats = NatsServer::start(None).expect("nats-server");
        let client = OrcaClient::connect(&nats.url(), "orca")
            .await
            .expect("connect");
        Self {
            nats,
            dir: tempfile::tempdir().expect("tempdir"),
            client,
        }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub async fn serve(&self) -> Proc {
        serve(&self.nats.url(), &self.data()).await
    }

    pub fn worker(&self) -> Proc {
        worker(&self.nats.url(), self.dir.path())
    }

    /// `orca worker example` with more arguments, e.g. `--fail provision_user_group:1`.
    pub fn worker_with(&self, extra: &[&str]) -> Proc {
        worker_with(&self.nats.url(), self.dir.path(), extra)
    }

    pub async fn head(&self) -> u64 {
        self.client.info().await.expect("info").log_head
    }
}

pub fn input(pairs: &[(&str, serde_json::Value)]) -> Option<orca_proto::Struct> {
    let map = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    Some(orca_proto::json::json_to_struct(&map))
}

pub fn create_cmd(name: &str) -> v1::StartProcess {
    v1::StartProcess {
        workflow: "create_user_group".into(),
        customer_id: uuid::Uuid::new_v4().to_string(),
        input: input(&[("group_name", serde_json::json!(name))]),
        actor: "test".into(),
        ..Default::default()
    }
}

pub fn terminate_cmd(sub: &str) -> v1::StartProcess {
    v1::StartProcess {
        workflow: "terminate_user_group".into(),
        subscription_id: sub.to_owned(),
        actor: "test".into(),
        ..Default::default()
    }
}

pub fn accepted(r: &v1::CommandReply) -> v1::Accepted {
    match &r.outcome {
        Some(v1::command_reply::Outcome::Accepted(a)) => a.clone(),
        other => panic!("expected accepted, got {other:?}"),
    }
}

pub fn rejected(r: &v1::CommandReply) -> v1::Rejected {
    match &r.outcome {
        Some(v1::command_reply::Outcome::Rejected(a)) => a.clone(),
        other => panic!("expected rejected, got {other:?}"),
    }
}

pub fn steps(p: &v1::Process) -> Vec<(String, String)> {
    p.steps
        .iter()
        .map(|s| (s.name.clone(), s.status.clone()))
        .collect()
}

pub fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

/// A step worker in this test's process, running `handler` for provision_user_group until the
/// returned sender is dropped or says stop.
pub async fn provision_worker(
    env: &Env,
    handler: impl orca_worker::Handler,
) -> tokio::sync::watch::Sender<bool> {
    let worker = orca_worker::Worker::new(
        async_nats::connect(env.nats.url()).await.expect("connect"),
        orca_worker::WorkerOptions::default(),
    )
    .handle("provision_user_group", handler);
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(worker.run(shutdown));
    stop
}

/// `{"deep": {"deep": … 1}}`, objects nesting `levels` deep.
pub fn nested_json(levels: usize) -> serde_json::Value {
    (0..levels).fold(
        serde_json::json!(1),
        |v, _| serde_json::json!({ "deep": v }),
    )
}

/// Waits until no worker pulls tasks of `step` any more: a stopped worker's open pull would
/// otherwise take a task and give it back only after its ack wait.
pub async fn wait_no_pull(env: &Env, step: &str) {
    let js = async_nats::jetstream::new(env.client.nats().clone());
    let name = format!("worker-{step}");
    wait_until(Duration::from_secs(30), || {
        let (js, name) = (js.clone(), name.clone());
        async move {
            let Ok(stream) = js.get_stream("ORCA_TASKS").await else {
                return false;
            };
            let Ok(mut consumer) = stream
                .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&name)
                .await
            else {
                return false;
            };
            consumer
                .info()
                .await
                .map(|i| i.num_waiting == 0)
                .unwrap_or(false)
        }
    })
    .await;
}

/// Waits until the process is in `status`, reading views that include everything the log held
/// when the wait began (so a view from before the last command does not count); returns it.
pub async fn wait_status(client: &OrcaClient, id: &str, status: &str) -> v1::Process {
    let found = Arc::new(Mutex::new(None));
    let head = client.info().await.unwrap().log_head;
    wait_until(Duration::from_secs(30), || {
        let (c, found, id) = (client.clone(), found.clone(), id.to_owned());
        let status = status.to_owned();
        async move {
            let Ok(reply) = c.process(&id, head).await else {
                return false;
            };
            let done = reply.process.as_ref().is_some_and(|p| p.status == status);
            *found.lock().unwrap() = reply.process;
            done
        }
    })
    .await;
    let p = found.lock().unwrap().clone();
    p.unwrap()
}
