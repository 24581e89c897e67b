//! `orca process watch`: a process's events, live, until it ends.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::push};
use futures::StreamExt;
use orca::client::OrcaClient;
use orca_proto::v1::{self, event::Body};
use orca_proto::{Message, Timestamp};

use crate::Global;

/// One line for an event of the process whose steps are named `steps`.
fn line(e: &v1::Event, steps: &[String]) -> String {
    let step_name = |i: u32| {
        usize::try_from(i)
            .ok()
            .and_then(|i| steps.get(i))
            .map_or("", String::as_str)
    };
    let at = e
        .occurred_at
        .as_ref()
        .map(|t: &Timestamp| orca::render::clock(t))
        .unwrap_or_default();
    let what = match &e.body {
        Some(Body::ProcessStarted(s)) => format!(
            "started {} v{} by {}",
            s.workflow, s.workflow_version, e.actor
        ),
        Some(Body::StepCompleted(s)) if s.error.is_empty() => {
            format!("step {} {} {}", s.index, s.name, s.status)
        }
        Some(Body::StepCompleted(s)) if s.kind.is_empty() => {
            format!("step {} {} {}: {}", s.index, s.name, s.status, s.error)
        }
        Some(Body::StepCompleted(s)) => format!(
            "step {} {} {} ({}): {}",
            s.index, s.name, s.status, s.kind, s.error
        ),
        Some(Body::TaskScheduled(t)) => format!(
            "step {} {} handed to workers (attempt {})",
            t.index, t.name, t.attempt
        ),
        Some(Body::StepSuspended(s)) => format!(
            "step {} {} waits for input{}: orca process resume {}",
            s.index,
            s.name,
            s.deadline
                .as_ref()
                .map(|d| format!(" until {}", orca::render::clock(d)))
                .unwrap_or_default(),
            stream_id(e)
        ),
        Some(Body::CallbackAwaited(c)) => format!(
            "step {} {} awaits a callback: orca process callback {} --token {}",
            c.index,
            c.name,
            stream_id(e),
            c.token
        ),
        Some(Body::ProcessResumed(r)) => {
            format!("resumed at step {} {} by {}", r.index, r.name, e.actor)
        }
        Some(Body::ProcessRetried(r)) if r.steps.is_empty() => format!("retried by {}", e.actor),
        Some(Body::ProcessRetried(r)) => {
            let reset: Vec<String> = r
                .steps
                .iter()
                .map(|i| format!("step {i} {}", step_name(*i)))
                .collect();
            format!("{} reset by {}", reset.join(", "), e.actor)
        }
        Some(Body::TimerSet(t)) if t.what == "retry" => format!(
            "step {} {} waits until {} to try attempt {}",
            t.index,
            step_name(t.index),
            t.due.as_ref().map(orca::render::clock).unwrap_or_default(),
            t.attempt
        ),
        Some(Body::TimerSet(t)) => format!(
            "step {} attempt {} now times out at {}",
            t.index,
            t.attempt,
            t.due.as_ref().map(orca::render::clock).unwrap_or_default()
        ),
        Some(Body::TimerFired(t)) if t.what == "retry" => {
            format!("step {} backoff over", t.index)
        }
        Some(Body::TimerFired(t)) => format!("step {} attempt {} timed out", t.index, t.attempt),
        Some(Body::TaskHeartbeat(h)) if h.progress.is_empty() => {
            format!("step {} attempt {} alive", h.index, h.attempt)
        }
        Some(Body::TaskHeartbeat(h)) => {
            format!(
                "step {} attempt {} alive: {}",
                h.index, h.attempt, h.progress
            )
        }
        Some(Body::ProcessFailed(f)) => {
            let status = if f.status.is_empty() {
                "failed"
            } else {
                f.status.as_str()
            };
            format!(
                "{status} at step {} {}: {} (orca process retry|abort {})",
                f.index,
                f.name,
                f.error,
                stream_id(e)
            )
        }
        Some(Body::ProcessAborted(a)) => format!("aborted by {}: {}", e.actor, a.reason),
        Some(Body::ProcessCompleted(_)) => "completed".into(),
        Some(other) => orca_domain::event_name(other).into(),
        None => "unknown event".into(),
    };
    format!("{at}  {:>4}  {what}", e.version)
}

fn stream_id(e: &v1::Event) -> &str {
    e.stream.split_once('-').map_or("", |(_, id)| id)
}

/// Prints the process's events from its first, then live, until it completes or is aborted.
pub async fn run(g: &Global, client: &OrcaClient, id: &str) -> anyhow::Result<ExitCode> {
    let reply = client.process(id, 0).await?;
    if let Some(e) = reply.error {
        return Ok(super::rejected(&e));
    }
    let Some(process) = reply.process else {
        bail!("empty reply");
    };
    let js = jetstream::new(client.nats().clone());
    let stream = js
        .get_stream(orca_nats::streams::events_stream(&g.prefix))
        .await
        .context("finding the event stream (has `orca serve` run against this NATS?)")?;
    // Ordered and pushed: every event of the process from its first, in order, and live after.
    let consumer = stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: client.nats().new_inbox(),
            filter_subject: format!("{}.evt.process.{}.>", g.prefix, process.process_id),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .context("creating the watch consumer")?;
    let mut messages = consumer.messages().await?;
    let mut steps: Vec<String> = Vec::new();
    loop {
        let next = tokio::select! {
            m = messages.next() => m,
            _ = super::signal() => return Ok(ExitCode::SUCCESS),
        };
        let Some(m) = next else {
            bail!("the event stream ended");
        };
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                eprintln!("(stream interrupted: {e}; resuming)");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let event = match v1::Event::decode(m.payload.as_ref()) {
            Ok(e) => e,
            Err(err) => {
                eprintln!("undecodable event on {}: {err}", m.subject);
                continue;
            }
        };
        if let Some(Body::ProcessStarted(s)) = &event.body {
            steps = s.steps.iter().map(|d| d.name.clone()).collect();
        }
        if g.json {
            println!("{}", serde_json::to_string(&event)?);
        } else {
            println!("{}", line(&event, &steps));
        }
        match event.body {
            Some(Body::ProcessCompleted(_)) => return Ok(ExitCode::SUCCESS),
            Some(Body::ProcessAborted(_)) => return Ok(ExitCode::FAILURE),
            _ => {}
        }
    }
}
