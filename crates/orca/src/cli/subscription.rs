//! `orca subscription get|versions|list|set-in-sync`

use std::process::ExitCode;

use anyhow::bail;
use orca::client::OrcaClient;
use orca::render;
use orca_proto::v1;

use crate::Global;

/// Subscriptions are customers' instances of products.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Show a subscription with its resources and processes: its active version (the as-is),
    /// or the one asked for.
    Get {
        /// Subscription UUID.
        id: String,
        /// This version instead (1 and up: `orca subscription versions` lists them).
        #[arg(value_name = "VERSION", conflicts_with_all = ["pending", "as_of"])]
        number: Option<u32>,
        /// The pending version instead: the to-be a running modify or terminate builds.
        #[arg(long, conflicts_with = "as_of")]
        pending: bool,
        /// As it was then: a log position (e.g. `42`) or a time (RFC 3339, e.g.
        /// `2026-12-01T10:00:00Z`). Built from the subscription's own events.
        #[arg(long, value_name = "POSITION|TIME")]
        as_of: Option<String>,
    },
    /// List a subscription's versions, newest first: each one's state (pending, active,
    /// superseded, discarded), lifecycle status and the processes that built and superseded it.
    Versions {
        /// Subscription UUID.
        id: String,
        /// Most to show.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Go on from where an earlier list stopped (its `next_page_token`).
        #[arg(long)]
        page_token: Option<String>,
    },
    /// List subscriptions, newest first.
    List {
        /// Only this lifecycle status (initial, provisioning, active, disabled, terminated).
        #[arg(long)]
        status: Option<String>,
        /// Only this product.
        #[arg(long)]
        product: Option<String>,
        /// Only this customer.
        #[arg(long)]
        customer: Option<String>,
        /// Most to show (a page may hold fewer when its reply would not fit in one NATS
        /// message; the next page then goes on from there).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Go on from where an earlier list stopped (its `next_page_token`).
        #[arg(long)]
        page_token: Option<String>,
    },
    /// Put an out-of-sync subscription back in sync once it agrees with the OSS/BSS again
    /// (refused while a process holds it: finish or abort that first).
    SetInSync {
        /// Subscription UUID.
        id: String,
        /// Why it may be trusted again (kept in the subscription).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        meta: super::process::Meta,
    },
}

pub async fn run(g: &Global, c: Command) -> anyhow::Result<ExitCode> {
    let client = OrcaClient::connect_to(&g.nats()?, &g.prefix).await?;
    match c {
        Command::Get {
            id,
            number,
            pending,
            as_of,
        } => {
            let mut q = v1::GetSubscription {
                subscription_id: id,
                version: number.unwrap_or_default(),
                pending,
                ..Default::default()
            };
            if let Some(at) = as_of {
                match at.parse::<u64>() {
                    Ok(p) if p > 0 => q.as_of_position = p,
                    _ => {
                        let t = chrono::DateTime::parse_from_rfc3339(&at).map_err(|e| {
                            anyhow::anyhow!(
                                "--as-of {at:?} is neither a log position nor an RFC 3339 time: {e}"
                            )
                        })?;
                        q.as_of_time = Some(orca_proto::Timestamp {
                            seconds: t.timestamp(),
                            nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
                        });
                    }
                }
            }
            let reply = client.subscription_at(&q).await?;
            match (reply.subscription, reply.error) {
                (Some(s), _) if g.json => super::print_json(&s)?,
                (Some(s), _) => print!("{}", render::subscription(&s)),
                (None, Some(e)) => return Ok(super::rejected(&e)),
                (None, None) => bail!("empty reply"),
            }
        }
        Command::Versions {
            id,
            limit,
            page_token,
        } => {
            let reply = client
                .subscription_versions(&v1::ListSubscriptionVersions {
                    subscription_id: id,
                    limit,
                    page_token: page_token.unwrap_or_default(),
                    ..Default::default()
                })
                .await?;
            if let Some(e) = &reply.error {
                return Ok(super::rejected(e));
            }
            if g.json {
                super::print_json(&reply)?;
            } else {
                for v in &reply.versions {
                    println!("{}", render::version_line(v));
                }
                if !reply.next_page_token.is_empty() {
                    println!("more: --page-token {}", reply.next_page_token);
                }
            }
        }
        Command::List {
            status,
            product,
            customer,
            limit,
            page_token,
        } => {
            let reply = client
                .subscriptions(&v1::ListSubscriptions {
                    status: status.unwrap_or_default(),
                    product: product.unwrap_or_default(),
                    customer_id: customer.unwrap_or_default(),
                    limit,
                    page_token: page_token.unwrap_or_default(),
                    ..Default::default()
                })
                .await?;
            if let Some(e) = &reply.error {
                return Ok(super::rejected(e));
            }
            if g.json {
                super::print_json(&reply)?;
            } else {
                for s in &reply.subscriptions {
                    println!("{}", render::subscription_line(s));
                }
                super::more(&reply.next_page_token);
            }
        }
        Command::SetInSync { id, reason, meta } => {
            let cmd = v1::SetInSync {
                subscription_id: id,
                reason: reason.unwrap_or_default(),
                command_id: meta.command_id.unwrap_or_default(),
                actor: meta.actor,
            };
            let reply = client.command("cmd.subscription.set_in_sync", &cmd).await?;
            return super::process::settle(g, &client, &reply, false).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}
