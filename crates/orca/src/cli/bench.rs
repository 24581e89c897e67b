//! `orca bench`: create workflows through NATS with the example worker, against raw baselines
//! measured in the same run. Prints numbers; asserts nothing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use orca::client::OrcaClient;
use orca::connect::Nats;
use orca::natsd::NatsServer;
use orca::service::{Service, ServiceOptions};
use orca_proto::{Message, v1};
use orca_worker::{Worker, WorkerOptions};
use serde_json::json;
use tokio::sync::{Semaphore, watch};

use crate::Global;

/// Runs N workflows (create_user_group unless --workflow says another) with C in flight and
/// prints workflows/s, command-ack and completion latency percentiles, events/s and peak RSS,
/// next to raw baselines (sled batched append with fsync, NATS request/reply round trip)
/// measured in the same run.
///
/// A workflow that needs no subscription nor input, such as CloudPortal's
/// `account-activation-retail` (a phase of two tasks side by side), is started directly; with
/// `--transaction TYPE --attr name=value…` each run is a business transaction instead, whose
/// rules pick the workflow (the bench checks that they pick --workflow).
#[derive(clap::Args)]
pub struct Args {
    /// The workflow to run.
    #[arg(long, default_value = "create_user_group")]
    pub workflow: String,
    /// Submit each run as a business transaction of this type (`orca.cmd.transaction.submit`)
    /// instead of starting the workflow.
    #[arg(long, value_name = "TYPE", requires = "attributes")]
    pub transaction: Option<String>,
    /// A transaction attribute: `name=text` or `name:=json`. Repeatable.
    #[arg(long = "attr", value_name = "NAME=VALUE", requires = "transaction")]
    pub attributes: Vec<String>,
    /// Workflows to run.
    #[arg(long, short = 'n', default_value_t = 20_000)]
    pub workflows: usize,
    /// Workflows in flight at once.
    #[arg(long, short = 'c', default_value_t = 256, value_parser = super::parse_concurrency)]
    pub concurrency: usize,
    /// Keep the log here (a temporary directory when not given).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Events written by the raw sled baseline.
    #[arg(long, default_value_t = 200_000)]
    pub baseline_events: usize,
    /// Start workflows at this rate per second (open loop, still at most --concurrency in
    /// flight) instead of as fast as completions allow: latency at a given load.
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Drive an already running service (`orca serve`, with `orca worker example` beside it)
    /// at --nats-url instead of starting one in this process. RSS is then this client's only.
    #[arg(long, requires = "nats_url")]
    pub external: bool,
    /// Instead of the throughput run: build one subscription with N versions (a create, then
    /// N-1 modifies), then measure as-of queries on it (at log positions spread over its
    /// history) next to plain reads, and replaying the whole log into fresh views (events/s)
    /// next to raw sled.
    #[arg(long, value_name = "N", conflicts_with_all = ["external", "rate"])]
    pub as_of_versions: Option<u32>,
    /// sled page cache of the service's log index and views, each, in MiB (as `orca serve`).
    #[arg(long, env = "ORCA_CACHE_MIB", default_value_t = 16)]
    pub cache_mib: u64,
}

/// `--rate`: a finite number of workflows per second, from 0.01 to 1,000,000.
fn parse_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if !(0.01..=1_000_000.0).contains(&r) {
        return Err("must be from 0.01 to 1000000 workflows/s".into());
    }
    Ok(r)
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn hist() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 600_000_000, 3)?)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

pub async fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    if let Some(n) = a.as_of_versions {
        return as_of_bench(g, &a, n).await;
    }
    if a.workflows == 0 {
        bail!("--workflows must be at least 1");
    }
    let (nats, target, tmp, data_dir) = place(g, &a).await?;

    let catalog = Arc::new(orca::load_catalog(None)?);
    let start = Arc::new(Start::new(&catalog, &a)?);
    let client = OrcaClient::connect_to(&target, &g.prefix).await?;
    let mut local = None;
    if !a.external {
        orca::service::refuse_a_second_service(
            &target,
            &g.prefix,
            "pass --external to drive it (with `orca worker example` beside it), or give the \
             bench a server or a --prefix of its own",
        )
        .await?;
        local = Some(start_local(g, &a, &target, &data_dir, catalog).await?);
    }

    // Completion = the process_completed event on NATS.
    let done_sub = client
        .nats()
        .subscribe(format!("{}.evt.process.*.process_completed", g.prefix))
        .await?;
    client.nats().flush().await?;

    eprintln!("warming up…");
    run_creates(
        &client,
        &start,
        done_sub,
        200.min(a.workflows),
        a.concurrency,
        None,
        None,
    )
    .await
    .map(|_| ())?;
    let done_sub = client
        .nats()
        .subscribe(format!("{}.evt.process.*.process_completed", g.prefix))
        .await?;
    client.nats().flush().await?;

    let head0 = client.info().await?.log_head;
    let rss0 = rss_kib("VmRSS:");
    eprintln!(
        "running {} {} workflows, {} in flight…",
        a.workflows, a.workflow, a.concurrency
    );
    let fsyncs_before = local
        .as_ref()
        .map(|(service, _, _)| service.log.fsync_micros())
        .transpose()?;
    let started = Instant::now();
    let (acks, completions, rss_samples) = run_creates(
        &client,
        &start,
        done_sub,
        a.workflows,
        a.concurrency,
        Some(4),
        a.rate,
    )
    .await?;
    let elapsed = started.elapsed().as_secs_f64();
    let events = client.info().await?.log_head - head0;

    // The log's fsyncs during the run: what every acknowledgement waited for.
    let mut fsyncs = None;
    if let (Some((service, _, _)), Some(before)) = (&local, &fsyncs_before) {
        let mut h = service.log.fsync_micros()?;
        h.subtract(before)?;
        fsyncs = Some(h);
    }
    if let Some((service, stop_worker, worker)) = local {
        let _ = stop_worker.send(true);
        let _ = worker.await;
        service.stop(Duration::from_secs(10)).await?;
    }
    // Read before the baselines run: the memory they hold is not the workload's.
    let peak_rss = rss_kib("VmHWM:");

    // Raw baselines after the workload, which has stopped: nothing else of orca's runs in this
    // process now (an --external service may still be catching up on its views).
    eprintln!("measuring the raw baselines…");
    let sled_eps = sled_baseline(&tmp.path().join("raw"), a.baseline_events).await?;
    let fsync = fsync_baseline(&tmp.path().join("fsync.bin")).await?;
    let rtt = nats_baseline(&target).await?;
    drop(nats);

    let wps = a.workflows as f64 / elapsed;
    let eps = events as f64 / elapsed;
    let report = json!({
        "workflow": a.workflow,
        "transaction": a.transaction,
        "workflows": a.workflows,
        "concurrency": a.concurrency,
        "rate": a.rate,
        "external": a.external,
        "seconds": elapsed,
        "workflows_per_sec": wps,
        "events_per_sec": eps,
        "events_per_workflow": events as f64 / a.workflows as f64,
        "ack_ms": {"p50": ms(&acks, 0.5), "p99": ms(&acks, 0.99), "max": acks.max() as f64 / 1000.0},
        "completion_ms": {"p50": ms(&completions, 0.5), "p99": ms(&completions, 0.99), "max": completions.max() as f64 / 1000.0},
        "log_fsync_ms": fsyncs.as_ref().map(|h| json!({
            "count": h.len(),
            "p50": ms(h, 0.5),
            "p99": ms(h, 0.99),
            "max": h.max() as f64 / 1000.0,
            "over_10ms": h.count_between(10_001, u64::MAX),
        })),
        "rss_kib": {"before": rss0, "samples": rss_samples, "peak": peak_rss},
        "baseline": {
            "sled_batched_append_events_per_sec": sled_eps,
            "fsync_4k_ms": {"p50": ms(&fsync, 0.5), "p99": ms(&fsync, 0.99)},
            "nats_request_reply_ms": {"p50": ms(&rtt, 0.5), "p99": ms(&rtt, 0.99)},
        },
        "ratios": {
            "events_per_sec_vs_raw_sled": eps / sled_eps,
            "ack_p50_vs_nats_rtt_p50": ms(&acks, 0.5) / ms(&rtt, 0.5).max(0.001),
            "ack_p99_vs_fsync_p99": ms(&acks, 0.99) / ms(&fsync, 0.99).max(0.001),
        },
    });
    if g.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "orca bench — {} {} workflows{}, at most {} in flight{}, {}",
            a.workflows,
            a.workflow,
            a.transaction
                .as_ref()
                .map(|t| format!(" (as {t} transactions)"))
                .unwrap_or_default(),
            a.concurrency,
            a.rate
                .map(|r| format!(", offered {r}/s"))
                .unwrap_or_default(),
            if a.external {
                "against a running service"
            } else {
                "service and example worker in this process"
            }
        );
        println!("  workflows/s            {wps:>10.0}   ({elapsed:.2} s)");
        println!(
            "  events/s               {eps:>10.0}   ({:.1} per workflow)",
            events as f64 / a.workflows as f64
        );
        println!(
            "  command ack   p50/p99  {:>7.2} / {:.2} ms",
            ms(&acks, 0.5),
            ms(&acks, 0.99)
        );
        println!(
            "  completion    p50/p99  {:>7.2} / {:.2} ms",
            ms(&completions, 0.5),
            ms(&completions, 0.99)
        );
        if let Some(h) = &fsyncs {
            println!(
                "  log fsync     p50/p99  {:>7.2} / {:.2} ms, max {:.1} ms ({} group commits, {} over 10 ms)",
                ms(h, 0.5),
                ms(h, 0.99),
                h.max() as f64 / 1000.0,
                h.len(),
                h.count_between(10_001, u64::MAX)
            );
        }
        println!(
            "  RSS before / quarters  {} MiB / {:?} MiB, peak {} MiB",
            rss0 / 1024,
            rss_samples.iter().map(|k| k / 1024).collect::<Vec<_>>(),
            peak_rss / 1024
        );
        println!("baselines, same run:");
        println!(
            "  fsync of a 4 KiB write p50/p99 {:>7.3} / {:.3} ms   → orca ack p99 is {:.1}× the disk's p99",
            ms(&fsync, 0.5),
            ms(&fsync, 0.99),
            ms(&acks, 0.99) / ms(&fsync, 0.99).max(0.001)
        );
        println!(
            "  sled batched append (100/batch, fsync)  {sled_eps:>10.0} events/s   → orca events/s is {:.2}× of it",
            eps / sled_eps
        );
        println!(
            "  NATS request/reply p50/p99     {:>7.3} / {:.3} ms   → orca ack p50 is {:.1}× of it",
            ms(&rtt, 0.5),
            ms(&rtt, 0.99),
            ms(&acks, 0.5) / ms(&rtt, 0.5).max(0.001)
        );
    }
    Ok(ExitCode::SUCCESS)
}

type Runs = (Histogram<u64>, Histogram<u64>, Vec<u64>);

/// How the bench starts one run of its workflow: the subject and what it sends.
enum Start {
    /// `create_user_group` for a new customer.
    Create,
    /// A workflow that needs neither subscription nor input.
    Plain(String),
    /// A business transaction of this type with these attributes.
    Transaction(String, serde_json::Map<String, serde_json::Value>),
}

impl Start {
    /// Checks that the catalog can run `a.workflow` as asked.
    fn new(catalog: &orca_domain::Catalog, a: &Args) -> anyhow::Result<Self> {
        let wf = catalog
            .workflow(&a.workflow, None)
            .with_context(|| format!("no workflow {:?} in the catalog", a.workflow))?;
        if let Some(kind) = &a.transaction {
            let attributes = super::process::parse_inputs("attr", &a.attributes, None)?;
            let matched = catalog.match_transaction(kind, &attributes);
            let picked = matched.rule.map(|r| r.workflow.as_str());
            if picked != Some(wf.name.as_str()) {
                bail!(
                    "the rules start {} for such a {kind} transaction, not {}",
                    picked.unwrap_or("no workflow"),
                    wf.name
                );
            }
            return Ok(Start::Transaction(kind.clone(), attributes));
        }
        if wf.name == "create_user_group" {
            return Ok(Start::Create);
        }
        let asks =
            wf.form.fields.iter().any(|f| {
                f.required && !matches!(f.kind, orca_domain::form::FieldKind::Label { .. })
            });
        if wf.on_subscription() || wf.target == orca_domain::Target::Create || asks {
            bail!(
                "the bench runs create_user_group, or a workflow that needs neither subscription nor input; {} needs {}",
                wf.name,
                if asks { "input" } else { "a subscription" }
            );
        }
        Ok(Start::Plain(wf.name.clone()))
    }

    /// The subject and request of run `i`.
    fn request(&self, i: usize) -> (&'static str, Bytes) {
        match self {
            Start::Create => {
                let cmd = v1::StartProcess {
                    workflow: "create_user_group".into(),
                    customer_id: uuid::Uuid::new_v4().to_string(),
                    input: Some(orca_proto::json::json_to_struct(
                        &serde_json::Map::from_iter([(
                            "group_name".to_owned(),
                            json!(format!("bench-{i}")),
                        )]),
                    )),
                    actor: "bench".into(),
                    ..Default::default()
                };
                ("cmd.process.start", Bytes::from(cmd.encode_to_vec()))
            }
            Start::Plain(workflow) => {
                let cmd = v1::StartProcess {
                    workflow: workflow.clone(),
                    actor: "bench".into(),
                    ..Default::default()
                };
                ("cmd.process.start", Bytes::from(cmd.encode_to_vec()))
            }
            Start::Transaction(kind, attributes) => {
                let cmd = v1::SubmitTransaction {
                    r#type: kind.clone(),
                    attributes: Some(orca_proto::json::json_to_struct(attributes)),
                    actor: "bench".into(),
                    ..Default::default()
                };
                ("cmd.transaction.submit", Bytes::from(cmd.encode_to_vec()))
            }
        }
    }
}

async fn run_creates(
    client: &OrcaClient,
    start: &Arc<Start>,
    mut done_sub: async_nats::Subscriber,
    n: usize,
    concurrency: usize,
    samples: Option<usize>,
    rate: Option<f64>,
) -> anyhow::Result<Runs> {
    #[derive(Default)]
    struct Track {
        started: HashMap<String, Instant>,
        finished: HashMap<String, Instant>,
    }
    let track = Arc::new(Mutex::new(Track::default()));
    let completions = Arc::new(Mutex::new(hist()?));
    let acks = Arc::new(Mutex::new(hist()?));
    let permits = Arc::new(Semaphore::new(concurrency));
    let remaining = Arc::new(std::sync::atomic::AtomicUsize::new(n));
    let (all_done_tx, mut all_done) = watch::channel(false);

    let record = {
        let (completions, permits, remaining) =
            (completions.clone(), permits.clone(), remaining.clone());
        move |started: Instant, finished: Instant| {
            if let Ok(mut h) = completions.lock() {
                let _ = h.record(
                    u64::try_from(finished.duration_since(started).as_micros()).unwrap_or(u64::MAX),
                );
            }
            permits.add_permits(1);
            if remaining.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
                let _ = all_done_tx.send(true);
            }
        }
    };
    let record = Arc::new(record);

    let watcher = {
        let (track, record) = (track.clone(), record.clone());
        tokio::spawn(async move {
            while let Some(msg) = done_sub.next().await {
                let now = Instant::now();
                let Ok(e) = v1::Event::decode(msg.payload.as_ref()) else {
                    continue;
                };
                let pid = e.stream.trim_start_matches("process-").to_owned();
                let started = {
                    let Ok(mut t) = track.lock() else { continue };
                    match t.started.remove(&pid) {
                        Some(s) => Some(s),
                        None => {
                            t.finished.insert(pid.clone(), now);
                            None
                        }
                    }
                };
                if let Some(s) = started {
                    record(s, now);
                }
            }
        })
    };

    let sample_every = samples.map(|s| (n / s).max(1));
    let mut rss = Vec::new();
    let mut pace = rate.filter(|r| *r > 0.0).map(|r| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    for i in 0..n {
        if let Some(p) = pace.as_mut() {
            p.tick().await;
        }
        let permit = permits.clone().acquire_owned().await?;
        permit.forget();
        if sample_every.is_some_and(|e| i > 0 && i % e == 0) {
            rss.push(rss_kib("VmRSS:"));
        }
        let (client, track, acks, record) =
            (client.clone(), track.clone(), acks.clone(), record.clone());
        let (subject, request) = start.request(i);
        tokio::spawn(async move {
            let t0 = Instant::now();
            let reply = client.raw(subject, request, false).await;
            let t1 = Instant::now();
            let outcome = reply.map_err(|e| e.to_string()).and_then(|b| {
                v1::CommandReply::decode(b.as_ref())
                    .map_err(|e| format!("undecodable reply: {e}"))
                    .map(|r| r.outcome)
            });
            let pid = match outcome {
                Ok(Some(v1::command_reply::Outcome::Accepted(a))) => a.process_id,
                failed => {
                    match failed {
                        Ok(Some(v1::command_reply::Outcome::Rejected(r))) => {
                            eprintln!("start refused: {} {}", r.code, r.message);
                        }
                        Err(e) => eprintln!("start failed: {e}"),
                        _ => eprintln!("start failed: a reply without an outcome"),
                    }
                    record(t0, t1);
                    return;
                }
            };
            if let Ok(mut h) = acks.lock() {
                let _ = h.record(u64::try_from((t1 - t0).as_micros()).unwrap_or(u64::MAX));
            }
            let finished = {
                let Ok(mut t) = track.lock() else { return };
                match t.finished.remove(&pid) {
                    Some(f) => Some(f),
                    None => {
                        t.started.insert(pid.clone(), t0);
                        None
                    }
                }
            };
            if let Some(f) = finished {
                record(t0, f);
            }
        });
    }
    tokio::time::timeout(Duration::from_secs(600), all_done.wait_for(|d| *d))
        .await
        .context("workflows did not all complete within 10 minutes")??;
    watcher.abort();
    rss.push(rss_kib("VmRSS:"));
    let acks = acks
        .lock()
        .map(|h| h.clone())
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    let completions = completions
        .lock()
        .map(|h| h.clone())
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    Ok((acks, completions, rss))
}

/// Raw sled, the store the log's index lives in: 300-byte events under sequential keys in
/// batches of 100, each batch flushed and its database file fsynced.
async fn sled_baseline(dir: &std::path::Path, events: usize) -> anyhow::Result<f64> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
        let db = sled::Config::new().path(&dir).flush_every_ms(None).open()?;
        let tree = db.open_tree("raw")?;
        let file = std::fs::File::open(dir.join("db"))?;
        let payload = vec![7u8; 300];
        let batches = (events / 100).max(1);
        let t = Instant::now();
        for b in 0..batches {
            let mut batch = sled::Batch::default();
            for i in 0..100u64 {
                batch.insert(&(b as u64 * 100 + i).to_be_bytes(), payload.as_slice());
            }
            tree.apply_batch(batch)?;
            db.flush()?;
            file.sync_data()?;
        }
        Ok((batches * 100) as f64 / t.elapsed().as_secs_f64())
    })
    .await?
}

/// The disk's floor for an acknowledged write: write 4 KiB and fdatasync, 1,000 times.
async fn fsync_baseline(path: &std::path::Path) -> anyhow::Result<Histogram<u64>> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Histogram<u64>> {
        use std::io::Write;
        let mut file = std::fs::File::create(&path)?;
        let block = [7u8; 4096];
        let mut h = hist()?;
        for _ in 0..1000 {
            let t = Instant::now();
            file.write_all(&block)?;
            file.sync_data()?;
            h.record(
                u64::try_from(t.elapsed().as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1),
            )?;
        }
        Ok(h)
    })
    .await?
}

/// NATS request/reply round trip against an echo responder on the same server.
async fn nats_baseline(target: &Nats) -> anyhow::Result<Histogram<u64>> {
    let server = target.connect("orca-bench-echo").await?;
    let client = target.connect("orca-bench").await?;
    let mut sub = server.subscribe("orca-bench.echo").await?;
    // The server must know the subscription before the first request, or it has no responders.
    server.flush().await?;
    let responder = tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if let Some(reply) = m.reply {
                let _ = server.publish(reply, m.payload).await;
            }
        }
    });
    let mut h = hist()?;
    let mut lost = 0;
    while h.len() < 3000 {
        let t = Instant::now();
        match client
            .request("orca-bench.echo", Bytes::from_static(b"ping"))
            .await
        {
            Ok(_) => h.record(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX))?,
            // A responder connection that the busy server dropped is back within moments
            // (async-nats subscribes again): such a round trip is not measured.
            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders && lost < 100 => {
                lost += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    responder.abort();
    Ok(h)
}

/// Where a run takes place: a local nats-server unless --nats-url names one (dropped, it stops),
/// how to reach it, a temporary directory, and the data directory (--data-dir, else in the
/// temporary one).
async fn place(
    g: &Global,
    a: &Args,
) -> anyhow::Result<(
    Option<NatsServer>,
    Nats,
    tempfile::TempDir,
    std::path::PathBuf,
)> {
    let nats = match &g.nats_url {
        Some(_) => None,
        None => Some(tokio::task::spawn_blocking(|| NatsServer::start(None)).await??),
    };
    let target = match &nats {
        Some(server) => Nats::parse(&server.url())?,
        None => g.nats()?,
    };
    let tmp = tempfile::Builder::new().prefix("orca-bench-").tempdir()?;
    let data_dir = a
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().join("data"));
    Ok((nats, target, tmp, data_dir))
}

/// The service and the example worker the bench runs in its own process.
type Local = (
    Service,
    watch::Sender<bool>,
    tokio::task::JoinHandle<Result<(), orca_worker::Error>>,
);

/// Starts the service on `data_dir` and the example worker beside it, both on `target`.
async fn start_local(
    g: &Global,
    a: &Args,
    target: &Nats,
    data_dir: &std::path::Path,
    catalog: Arc<orca_domain::Catalog>,
) -> anyhow::Result<Local> {
    let mut options = ServiceOptions::new(target.clone(), data_dir, catalog);
    options.bus.prefix = g.prefix.clone();
    options.cache_bytes = a.cache_mib.saturating_mul(1024 * 1024);
    let service = Service::start(options).await?;
    let (stop_worker, shutdown) = watch::channel(false);
    let worker = orca_worker::example::register(
        Worker::new(
            target.connect("orca-worker").await?,
            WorkerOptions {
                prefix: g.prefix.clone(),
                concurrency: a.concurrency.max(16),
                ..WorkerOptions::default()
            },
        ),
        &[],
        &[],
    );
    Ok((service, stop_worker, tokio::spawn(worker.run(shutdown))))
}

/// `--as-of-versions N`: as-of latency on a subscription with N versions, and replay events/s.
async fn as_of_bench(g: &Global, a: &Args, versions: u32) -> anyhow::Result<ExitCode> {
    if versions == 0 {
        bail!("--as-of-versions must be at least 1");
    }
    let (nats, target, tmp, data_dir) = place(g, a).await?;
    let catalog = Arc::new(orca::load_catalog(None)?);
    let (service, stop_worker, worker) = start_local(g, a, &target, &data_dir, catalog).await?;
    let client = OrcaClient::connect_to(&target, &g.prefix).await?;

    eprintln!("building a subscription with {versions} versions…");
    let limit = Duration::from_secs(60);
    let reply = client
        .start(&v1::StartProcess {
            workflow: "create_user_group".into(),
            customer_id: uuid::Uuid::new_v4().to_string(),
            input: Some(orca_proto::json::json_to_struct(
                &serde_json::Map::from_iter([("group_name".to_owned(), json!("v1"))]),
            )),
            actor: "bench".into(),
            ..Default::default()
        })
        .await?;
    let created = orca::client::accepted(&reply)?.clone();
    let id = created.subscription_id.clone();
    let mut p = client
        .wait_process(&created.process_id, created.position, limit)
        .await?;
    let mut positions = vec![p.position];
    for n in 2..=versions {
        let reply = client
            .start(&v1::StartProcess {
                workflow: "modify_user_group".into(),
                subscription_id: id.clone(),
                input: Some(orca_proto::json::json_to_struct(
                    &serde_json::Map::from_iter([(
                        "group_name".to_owned(),
                        json!(format!("v{n}")),
                    )]),
                )),
                actor: "bench".into(),
                ..Default::default()
            })
            .await?;
        let started = orca::client::accepted(&reply)?.clone();
        p = client
            .wait_process(&started.process_id, started.position, limit)
            .await?;
        if p.status != "completed" {
            bail!("modify {n} ended {}", p.status);
        }
        positions.push(p.position);
    }
    let current = client.subscription(&id, p.position).await?;
    let version = current.subscription.map_or(0, |s| s.version);

    eprintln!("measuring as-of and plain reads…");
    let samples = 500usize;
    let (mut as_of, mut plain) = (hist()?, hist()?);
    for i in 0..samples {
        let position = positions[(i * 7919) % positions.len()];
        let t = Instant::now();
        let reply = client
            .subscription_at(&v1::GetSubscription {
                subscription_id: id.clone(),
                as_of_position: position,
                ..Default::default()
            })
            .await?;
        as_of.record(
            u64::try_from(t.elapsed().as_micros())
                .unwrap_or(u64::MAX)
                .max(1),
        )?;
        if let Some(e) = reply.error {
            bail!("as of {position}: {}: {}", e.code, e.message);
        }
        let t = Instant::now();
        client.subscription(&id, 0).await?;
        plain.record(
            u64::try_from(t.elapsed().as_micros())
                .unwrap_or(u64::MAX)
                .max(1),
        )?;
    }
    let events_in_stream = client
        .subscription(&id, 0)
        .await?
        .subscription
        .map_or(0, |s| s.stream_version);
    let _ = stop_worker.send(true);
    let _ = worker.await;
    service.stop(Duration::from_secs(10)).await?;

    eprintln!("replaying the log into fresh views…");
    let (replayed, replay_secs) = {
        let data_dir = data_dir.clone();
        let into = tmp.path().join("replayed-views");
        tokio::task::spawn_blocking(move || -> anyhow::Result<(u64, f64)> {
            let log = orca::service::open_log(&data_dir, 64 * 1024 * 1024)?;
            let views = orca_views::Views::open(&into, 64 * 1024 * 1024)?;
            let t = Instant::now();
            let at = orca_views::rebuild(&log, &views)?;
            views.flush()?;
            Ok((at, t.elapsed().as_secs_f64()))
        })
        .await??
    };
    let replay_eps = replayed as f64 / replay_secs.max(1e-9);
    let sled_eps = sled_baseline(&tmp.path().join("raw"), a.baseline_events).await?;
    let rtt = nats_baseline(&target).await?;
    drop(nats);

    let report = json!({
        "versions": version,
        "stream_events": events_in_stream,
        "as_of_ms": {"p50": ms(&as_of, 0.5), "p99": ms(&as_of, 0.99), "max": as_of.max() as f64 / 1000.0},
        "get_ms": {"p50": ms(&plain, 0.5), "p99": ms(&plain, 0.99)},
        "replay": {"events": replayed, "seconds": replay_secs, "events_per_sec": replay_eps},
        "baseline": {
            "sled_batched_append_events_per_sec": sled_eps,
            "nats_request_reply_ms": {"p50": ms(&rtt, 0.5), "p99": ms(&rtt, 0.99)},
        },
        "ratios": {
            "as_of_p50_vs_get_p50": ms(&as_of, 0.5) / ms(&plain, 0.5).max(0.001),
            "replay_vs_raw_sled": replay_eps / sled_eps,
        },
    });
    if g.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "orca bench — as-of queries on a subscription with {version} versions ({events_in_stream} events in its stream)"
        );
        println!(
            "  as-of read    p50/p99  {:>7.2} / {:.2} ms  ({samples} reads at positions over its history)",
            ms(&as_of, 0.5),
            ms(&as_of, 0.99)
        );
        println!(
            "  plain read    p50/p99  {:>7.2} / {:.2} ms  → as-of p50 is {:.1}× a plain read's",
            ms(&plain, 0.5),
            ms(&plain, 0.99),
            ms(&as_of, 0.5) / ms(&plain, 0.5).max(0.001)
        );
        println!(
            "  replay        {replay_eps:>10.0} events/s  ({replayed} events into fresh views in {replay_secs:.2} s)"
        );
        println!("baselines, same run:");
        println!(
            "  sled batched append (100/batch, fsync)  {sled_eps:>10.0} events/s   → replay is {:.2}× of it",
            replay_eps / sled_eps
        );
        println!(
            "  NATS request/reply p50/p99     {:>7.3} / {:.3} ms",
            ms(&rtt, 0.5),
            ms(&rtt, 0.99)
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_rate;
    use crate::cli::parse_concurrency;

    #[test]
    fn rates_and_concurrency_outside_what_the_runtime_can_pace_are_refused() {
        for bad in ["inf", "NaN", "0", "-5", "1e-320", "2e6", "fast"] {
            assert!(parse_rate(bad).is_err(), "--rate {bad}");
        }
        assert_eq!(parse_rate("1000"), Ok(1000.0));
        for bad in ["0", "65537", "18446744073709551615", "-1", "many"] {
            assert!(parse_concurrency(bad).is_err(), "--concurrency {bad}");
        }
        assert_eq!(parse_concurrency("65536"), Ok(65_536));
        assert_eq!(parse_concurrency("1"), Ok(1));
    }
}
