//! Starts the processes of schedule runs: for each run the engine hands on, the schedule's
//! workflow on every subscription it matches, as the views hold them at the firing (or once, for
//! a system workflow that runs without a subscription). Each start carries a command id made of
//! the schedule, the run's due time and the subscription, so a run handed on again after a
//! restart starts nothing twice; the run is then finished with the
//! engine's `FinishScheduleRun`. Which subscriptions may start (in sync, not held, in a state the
//! workflow accepts) is the domain's start decision, as for any start.

use std::sync::Arc;
use std::time::Duration;

use orca_domain::command::{FinishScheduleRun, StartProcess};
use orca_domain::ids::SubscriptionId;
use orca_domain::{Catalog, Checked, Command, Meta};
use orca_engine::{EngineHandle, ScheduleRun};
use orca_proto::v1::command_reply::Outcome;
use orca_views::{SubscriptionFilter, Views};
use tokio::sync::{mpsc, watch};

/// Subscriptions read from the views at once.
const PAGE: usize = 500;

/// Wait before a run that could not finish (the engine paused, the views failing) is tried again.
const RETRY: Duration = Duration::from_secs(2);

/// Starts the processes of every run received, until `shutdown` turns true (a run cut short is
/// handed on again at the next start) or the engine is gone.
pub async fn run_schedules(
    mut runs: mpsc::UnboundedReceiver<ScheduleRun>,
    engine: EngineHandle,
    views: Views,
    catalog: Arc<Catalog>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let run = tokio::select! {
            r = runs.recv() => r,
            _ = shutdown.wait_for(|s| *s) => None,
        };
        let Some(run) = run else { return };
        // Until it is finished: what started already is not started again (its command ids).
        loop {
            let outcome = tokio::select! {
                r = start_run(&run, &engine, &views, &catalog) => r,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            let Err(e) = outcome else { break };
            tracing::warn!(schedule = %run.name, error = %e, "schedule run not finished; trying it again");
            tokio::select! {
                () = tokio::time::sleep(RETRY) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}

async fn start_run(
    run: &ScheduleRun,
    engine: &EngineHandle,
    views: &Views,
    catalog: &Catalog,
) -> Result<(), String> {
    let Some(def) = catalog.schedule(&run.name) else {
        return Err("no longer in the catalog".into());
    };
    // The subscriptions as of the firing: the views include it.
    while !views.wait_for(run.position, Duration::from_secs(5)).await {
        tracing::warn!(schedule = %run.name, position = run.position, "waiting for the views to reach the schedule's firing");
    }
    let (mut started, mut refused) = (0u32, 0u32);
    let due = format!("{}.{:09}", run.due.seconds, run.due.nanos);
    // A start refused because the engine is paused ends this try: the run goes on after the
    // resume, so that no subscription misses it.
    let mut count = |outcome: Option<Outcome>, subject: &str| -> Result<(), String> {
        match outcome {
            Some(Outcome::Accepted(_)) => started += 1,
            Some(Outcome::Rejected(r)) if r.code == "ENGINE_PAUSED" => {
                return Err("the engine is paused".into());
            }
            Some(Outcome::Rejected(r)) => {
                tracing::info!(schedule = %run.name, subject, code = %r.code, message = %r.message, "scheduled start refused");
                refused += 1;
            }
            None => refused += 1,
        }
        Ok(())
    };
    let start = |subscription_id: Option<SubscriptionId>| Checked {
        command: Command::Start(StartProcess {
            workflow: def.workflow.clone(),
            product: None,
            customer_id: None,
            subscription_id,
            input: Default::default(),
            workflow_version: None,
            context: Default::default(),
            order: None,
        }),
        meta: Meta {
            command_id: Some(match subscription_id {
                Some(id) => format!("schedule:{}:{due}:{id}", run.name),
                None => format!("schedule:{}:{due}", run.name),
            }),
            actor: format!("schedule:{}", run.name),
        },
    };
    if !def.on_subscriptions {
        // A system workflow that needs no subscription: once per due time.
        let reply = engine
            .submit(start(None))
            .await
            .map_err(|e| e.to_string())?;
        count(reply.outcome, "-")?;
    }
    let statuses = if def.on_subscriptions {
        &def.statuses[..]
    } else {
        &[]
    };
    for status in statuses {
        let filter = SubscriptionFilter {
            status: status.as_str().into(),
            product: def.product.clone(),
            customer_id: String::new(),
        };
        let mut token = String::new();
        loop {
            let page = views
                .list_subscriptions(&filter, PAGE, &token)
                .map_err(|e| e.to_string())?;
            for sub in &page.items {
                let Ok(id) = SubscriptionId::parse("subscription_id", &sub.subscription_id) else {
                    continue;
                };
                let reply = engine
                    .submit(start(Some(id)))
                    .await
                    .map_err(|e| e.to_string())?;
                count(reply.outcome, &sub.subscription_id)?;
            }
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
    }
    tracing::info!(schedule = %run.name, started, refused, "schedule run started its processes");
    let finish = Checked {
        command: Command::FinishScheduleRun(FinishScheduleRun {
            name: run.name.clone(),
            due: run.due,
            started,
            refused,
        }),
        meta: Meta {
            command_id: None,
            actor: format!("schedule:{}", run.name),
        },
    };
    engine.submit(finish).await.map_err(|e| e.to_string())?;
    Ok(())
}
