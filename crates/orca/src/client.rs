//! A typed client for orca's NATS endpoints: what the CLI, the demo, the bench and the tests use.
//! Any NATS client can do the same with the subjects in the README.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use orca_proto::{Message, v1};

/// Talks to an orca service over NATS.
#[derive(Clone)]
pub struct OrcaClient {
    nats: async_nats::Client,
    prefix: String,
    timeout: Duration,
}

impl OrcaClient {
    /// Connects to NATS at `url` (credentials, if any, in it).
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        Self::connect_to(&crate::connect::Nats::parse(url)?, prefix).await
    }

    /// Connects to `nats`.
    pub async fn connect_to(nats: &crate::connect::Nats, prefix: &str) -> anyhow::Result<Self> {
        Ok(Self::new(nats.connect("orca-client").await?, prefix))
    }

    /// A client over an existing connection.
    pub fn new(nats: async_nats::Client, prefix: &str) -> Self {
        Self {
            nats,
            prefix: prefix.to_owned(),
            timeout: Duration::from_secs(10),
        }
    }

    /// The NATS connection.
    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    /// The subject prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Sends raw bytes to `<prefix>.<suffix>` and returns the reply's bytes.
    pub async fn raw(&self, suffix: &str, payload: Bytes, json: bool) -> anyhow::Result<Bytes> {
        let mut headers = async_nats::HeaderMap::new();
        if json {
            headers.insert("Content-Type", "application/json");
        }
        let subject = format!("{}.{suffix}", self.prefix);
        let request = async_nats::Request::new()
            .payload(payload)
            .headers(headers)
            .timeout(Some(self.timeout));
        let reply = self
            .nats
            .send_request(subject.clone(), request)
            .await
            .with_context(|| format!("request to {subject} (is `orca serve` running?)"))?;
        Ok(reply.payload)
    }

    async fn call<Req: Message, Resp: Message + Default>(
        &self,
        suffix: &str,
        req: &Req,
    ) -> anyhow::Result<Resp> {
        let bytes = self
            .raw(suffix, Bytes::from(req.encode_to_vec()), false)
            .await?;
        Resp::decode(bytes.as_ref()).with_context(|| format!("decoding the reply of {suffix}"))
    }

    /// `cmd.process.start`
    pub async fn start(&self, cmd: &v1::StartProcess) -> anyhow::Result<v1::CommandReply> {
        self.call("cmd.process.start", cmd).await
    }

    /// Any command: `cmd` to `<prefix>.<suffix>`, e.g. `cmd.process.retry`.
    pub async fn command<M: Message>(
        &self,
        suffix: &str,
        cmd: &M,
    ) -> anyhow::Result<v1::CommandReply> {
        self.call(suffix, cmd).await
    }

    /// `query.process.get`
    pub async fn process(&self, id: &str, min_position: u64) -> anyhow::Result<v1::ProcessReply> {
        self.call(
            "query.process.get",
            &v1::GetProcess {
                process_id: id.to_owned(),
                min_position,
            },
        )
        .await
    }

    /// `query.subscription.get`
    pub async fn subscription(
        &self,
        id: &str,
        min_position: u64,
    ) -> anyhow::Result<v1::SubscriptionReply> {
        self.call(
            "query.subscription.get",
            &v1::GetSubscription {
                subscription_id: id.to_owned(),
                min_position,
                ..Default::default()
            },
        )
        .await
    }

    /// `query.subscription.get` for a version, the pending one, or as of a position or time.
    pub async fn subscription_at(
        &self,
        q: &v1::GetSubscription,
    ) -> anyhow::Result<v1::SubscriptionReply> {
        self.call("query.subscription.get", q).await
    }

    /// `query.subscription.versions`
    pub async fn subscription_versions(
        &self,
        q: &v1::ListSubscriptionVersions,
    ) -> anyhow::Result<v1::SubscriptionVersionList> {
        self.call("query.subscription.versions", q).await
    }

    /// `query.subscription.list`
    pub async fn subscriptions(
        &self,
        q: &v1::ListSubscriptions,
    ) -> anyhow::Result<v1::SubscriptionList> {
        self.call("query.subscription.list", q).await
    }

    /// `query.process.list`
    pub async fn processes(&self, q: &v1::ListProcesses) -> anyhow::Result<v1::ProcessList> {
        self.call("query.process.list", q).await
    }

    /// `query.workflow.form` of the newest version.
    pub async fn form(
        &self,
        workflow: &str,
        subscription_id: &str,
    ) -> anyhow::Result<v1::WorkflowForm> {
        self.form_at(workflow, 0, subscription_id).await
    }

    /// `query.workflow.form` of `version` (the newest when 0).
    pub async fn form_at(
        &self,
        workflow: &str,
        version: u32,
        subscription_id: &str,
    ) -> anyhow::Result<v1::WorkflowForm> {
        self.call(
            "query.workflow.form",
            &v1::GetWorkflowForm {
                workflow: workflow.to_owned(),
                subscription_id: subscription_id.to_owned(),
                workflow_version: version,
            },
        )
        .await
    }

    /// `query.catalog.workflows`
    pub async fn workflows(&self) -> anyhow::Result<v1::WorkflowList> {
        self.call("query.catalog.workflows", &v1::ListWorkflows {})
            .await
    }

    /// `query.transaction.get`
    pub async fn transaction(
        &self,
        id: &str,
        min_position: u64,
    ) -> anyhow::Result<v1::TransactionReply> {
        self.call(
            "query.transaction.get",
            &v1::GetTransaction {
                transaction_id: id.into(),
                min_position,
            },
        )
        .await
    }

    /// `query.transaction.list`
    pub async fn transactions(
        &self,
        q: &v1::ListTransactions,
    ) -> anyhow::Result<v1::TransactionList> {
        self.call("query.transaction.list", q).await
    }

    /// `query.order.get`
    pub async fn order(&self, id: &str, min_position: u64) -> anyhow::Result<v1::OrderReply> {
        self.call(
            "query.order.get",
            &v1::GetOrder {
                order_id: id.into(),
                min_position,
            },
        )
        .await
    }

    /// `query.order.list`
    pub async fn orders(&self, q: &v1::ListOrders) -> anyhow::Result<v1::OrderList> {
        self.call("query.order.list", q).await
    }

    /// Polls an order until it has ended (or `timeout` passes): what `--wait` shows.
    pub async fn wait_order(
        &self,
        id: &str,
        min_position: u64,
        timeout: Duration,
    ) -> anyhow::Result<v1::Order> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(2);
        loop {
            let reply = self.order(id, min_position).await?;
            if let Some(o) = reply.order {
                let ended = orca_domain::order::OrderStatus::parse(&o.state)
                    .is_some_and(orca_domain::order::OrderStatus::is_final);
                if ended {
                    return Ok(o);
                }
                if Instant::now() > deadline {
                    bail!("order {id} is still {} after {timeout:?}", o.state);
                }
            } else if let Some(e) = reply.error.filter(|_| Instant::now() > deadline) {
                bail!("{}: {}", e.code, e.message);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// `query.log.read`
    pub async fn read_log(&self, q: &v1::ReadLog) -> anyhow::Result<v1::LogPage> {
        self.call("query.log.read", q).await
    }

    /// `query.schedule.list`
    pub async fn schedules(&self) -> anyhow::Result<v1::ScheduleList> {
        self.call("query.schedule.list", &v1::ListSchedules {})
            .await
    }

    /// `query.service.info`
    pub async fn info(&self) -> anyhow::Result<v1::ServiceInfo> {
        self.call("query.service.info", &v1::GetServiceInfo {})
            .await
    }

    /// Polls until the process stops moving by itself — completed, or waiting for someone
    /// (failed, suspended, awaiting a callback, …) — or `timeout` passes.
    pub async fn wait_process(
        &self,
        id: &str,
        min_position: u64,
        timeout: Duration,
    ) -> anyhow::Result<v1::Process> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(2);
        loop {
            let reply = self.process(id, min_position).await?;
            if let Some(p) = reply.process {
                if !orca_domain::view::goes_on_by_itself(&p) {
                    return Ok(p);
                }
                if Instant::now() > deadline {
                    bail!("process {id} is still {} after {timeout:?}", p.status);
                }
            } else if let Some(e) = reply.error.filter(|_| Instant::now() > deadline) {
                bail!("{}: {}", e.code, e.message);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
}

/// The accepted part of a reply, or an error carrying the rejection.
pub fn accepted(reply: &v1::CommandReply) -> anyhow::Result<&v1::Accepted> {
    match &reply.outcome {
        Some(v1::command_reply::Outcome::Accepted(a)) => Ok(a),
        Some(v1::command_reply::Outcome::Rejected(r)) => Err(Rejected(r.clone()).into()),
        None => bail!("empty reply"),
    }
}

/// A rejection as an error, with its field errors in the message.
#[derive(Debug, thiserror::Error)]
pub struct Rejected(pub v1::Rejected);

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rejected {}: {}", self.0.code, self.0.message)?;
        for fe in &self.0.field_errors {
            write!(f, "\n  {}: {}", fe.field, fe.message)?;
        }
        Ok(())
    }
}
