//! `orca demo`: the seed's story end to end on a local NATS.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use orca::client::{OrcaClient, accepted};
use orca::natsd::NatsServer;
use orca::render;
use orca::service::{Service, ServiceOptions};
use orca_proto::v1;
use orca_worker::{Worker, WorkerOptions};
use serde_json::json;
use tokio::sync::watch;

use crate::Global;

/// Creates a UserGroup through `create_user_group`, terminates it through
/// `terminate_user_group`, and prints each process's step log and the subscription.
///
/// Starts a local nats-server with JetStream (installing the Debian package if needed) unless
/// --nats-url is given, the orca service and the example step worker.
#[derive(clap::Args)]
pub struct Args {
    /// Keep the event log and views here (a temporary directory when not given).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Name of the user group to create.
    #[arg(long, default_value = "Ops")]
    pub group_name: String,
}

pub async fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let nats = match &g.nats_url {
        Some(_) => None,
        None => {
            let server = tokio::task::spawn_blocking(|| NatsServer::start(None)).await??;
            println!("started nats-server with JetStream at {}", server.url());
            Some(server)
        }
    };
    let url = nats.as_ref().map_or_else(|| g.url(), NatsServer::url);
    let tmp = tempfile::Builder::new().prefix("orca-demo-").tempdir()?;
    let data_dir = a
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let catalog = Arc::new(orca::load_catalog(None)?);
    let mut options = ServiceOptions::new(url.clone(), &data_dir, catalog);
    options.bus.prefix = g.prefix.clone();
    let service = Service::start(options).await?;
    println!("started the orca service (data in {})", data_dir.display());

    let worker_conn = async_nats::connect(&url)
        .await
        .context("connecting the worker")?;
    let (stop_worker, shutdown) = watch::channel(false);
    let worker = orca_worker::example::register(Worker::new(
        worker_conn,
        WorkerOptions {
            prefix: g.prefix.clone(),
            actor: "worker:example".into(),
            ..WorkerOptions::default()
        },
    ));
    let worker = tokio::spawn(worker.run(shutdown));
    println!("started the example step worker\n");

    let client = OrcaClient::connect(&url, &g.prefix).await?;
    let outcome = story(&client, &a.group_name, g.json).await;

    let _ = stop_worker.send(true);
    let _ = worker.await;
    let published = *service.published.borrow();
    service.stop(Duration::from_secs(5)).await?;
    drop(nats);
    let ok = outcome?;
    if !g.json {
        println!(
            "{published} events were published to JetStream ({}.evt.>)",
            g.prefix
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn story(client: &OrcaClient, group_name: &str, json_out: bool) -> anyhow::Result<bool> {
    let customer = uuid::Uuid::new_v4().to_string();
    let mut input = serde_json::Map::new();
    input.insert("group_name".into(), json!(group_name));
    if !json_out {
        println!(
            "$ orca process start create_user_group --customer {customer} --input group_name={group_name}"
        );
    }
    let reply = client
        .start(&v1::StartProcess {
            workflow: "create_user_group".into(),
            customer_id: customer,
            input: Some(orca_proto::json::json_to_struct(&input)),
            actor: "demo".into(),
            ..Default::default()
        })
        .await?;
    let created = accepted(&reply)?.clone();
    let p = client
        .wait_process(
            &created.process_id,
            created.position,
            Duration::from_secs(30),
        )
        .await?;
    show_process(&p, json_out)?;
    if p.status != "completed" {
        bail!("create_user_group ended {}", p.status);
    }
    let sub = subscription(client, &created.subscription_id, p.position).await?;
    show_subscription(&sub, json_out)?;

    let form = client
        .form("terminate_user_group", &created.subscription_id)
        .await?;
    let schema = orca_proto::json::opt_struct_to_json(form.schema.as_ref());
    let question = schema["properties"]["are_you_sure"]["default"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if !json_out {
        println!(
            "$ orca process start terminate_user_group --subscription {}",
            created.subscription_id
        );
        println!("{question} [Cancel] [Submit] → Submit");
    }
    let reply = client
        .start(&v1::StartProcess {
            workflow: "terminate_user_group".into(),
            subscription_id: created.subscription_id.clone(),
            actor: "demo".into(),
            ..Default::default()
        })
        .await?;
    let terminated = accepted(&reply)?.clone();
    let p = client
        .wait_process(
            &terminated.process_id,
            terminated.position,
            Duration::from_secs(30),
        )
        .await?;
    show_process(&p, json_out)?;
    let sub = subscription(client, &created.subscription_id, p.position).await?;
    show_subscription(&sub, json_out)?;
    Ok(p.status == "completed" && sub.status == "terminated" && sub.in_sync)
}

async fn subscription(client: &OrcaClient, id: &str, at: u64) -> anyhow::Result<v1::Subscription> {
    let reply = client.subscription(id, at).await?;
    reply
        .subscription
        .with_context(|| format!("subscription {id}: {:?}", reply.error))
}

fn show_process(p: &v1::Process, json_out: bool) -> anyhow::Result<()> {
    if json_out {
        println!("{}", serde_json::to_string(p)?);
    } else {
        println!("{}", render::process(p));
    }
    Ok(())
}

fn show_subscription(s: &v1::Subscription, json_out: bool) -> anyhow::Result<()> {
    if json_out {
        println!("{}", serde_json::to_string(s)?);
    } else {
        println!("{}", render::subscription(s));
    }
    Ok(())
}
