//! `orca order submit|get|list|cancel`

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use orca::client::OrcaClient;
use orca::render;
use orca_proto::v1::{self, command_reply::Outcome};

use crate::Global;

/// Orders (TMF641 service ordering): items that add, modify or delete subscriptions, each run
/// as a process once the items it depends on have completed.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Submit an order. Items are JSON objects, each given with --item or all in a file:
    ///
    ///   orca order submit --customer 6f0e… \
    ///     --item '{"id":"ops","action":"add","product":"UserGroup","input":{"group_name":"Ops"}}' \
    ///     --item '{"id":"dev","action":"add","product":"UserGroup","input":{"group_name":"Dev"},"depends_on":["ops"]}'
    ///
    /// An item's `action` is add (names `product`), modify or delete (name `subscription_id`);
    /// `workflow` picks one when the product has several for the action.
    Submit {
        /// An item as a JSON object (repeatable).
        #[arg(long = "item", value_name = "JSON")]
        items: Vec<String>,
        /// A whole order as JSON (`{"items": […], "customer_id": …}`; `-` reads stdin); --item
        /// values are added to its items.
        #[arg(long, value_name = "FILE")]
        file: Option<String>,
        /// Customer UUID of the subscriptions its adds create.
        #[arg(long = "customer", value_name = "UUID")]
        customer_id: Option<String>,
        /// What the order is for.
        #[arg(long)]
        description: Option<String>,
        /// Wait until the order has ended and print it; exit 0 only if it completed.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        meta: super::process::Meta,
    },
    /// Show an order with its items, their processes and the subscription versions they made.
    Get {
        /// Order UUID.
        id: String,
        /// Wait until the order has ended.
        #[arg(long)]
        wait: bool,
    },
    /// List orders, newest first.
    List {
        /// Only in this TMF641 state: acknowledged, inProgress, pendingCancellation, completed,
        /// partial, failed or cancelled.
        #[arg(long)]
        state: Option<String>,
        /// Most to show.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Go on from where an earlier list stopped (its `next_page_token`).
        #[arg(long)]
        page_token: Option<String>,
    },
    /// Cancel what of an order has not started; items under way finish.
    Cancel {
        /// Order UUID.
        id: String,
        /// Why (recorded on the order).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        meta: super::process::Meta,
    },
}

/// How long `--wait` waits for an order to end.
const WAIT: Duration = Duration::from_secs(300);

pub async fn run(g: &Global, c: Command) -> anyhow::Result<ExitCode> {
    let client = OrcaClient::connect_to(&g.nats()?, &g.prefix).await?;
    match c {
        Command::Submit {
            items,
            file,
            customer_id,
            description,
            wait,
            meta,
        } => {
            let mut cmd = match file.as_deref() {
                Some(path) => {
                    let text = if path == "-" {
                        std::io::read_to_string(std::io::stdin())?
                    } else {
                        std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?
                    };
                    serde_json::from_str::<v1::SubmitOrder>(&text)
                        .with_context(|| format!("{path} is not an order"))?
                }
                None => v1::SubmitOrder::default(),
            };
            for (n, item) in items.iter().enumerate() {
                cmd.items.push(
                    serde_json::from_str(item)
                        .with_context(|| format!("--item {} is not an order item", n + 1))?,
                );
            }
            if let Some(c) = customer_id {
                cmd.customer_id = c;
            }
            if let Some(d) = description {
                cmd.description = d;
            }
            cmd.command_id = meta.command_id.unwrap_or_default();
            cmd.actor = meta.actor;
            let reply = client.command("cmd.order.submit", &cmd).await?;
            let accepted = match &reply.outcome {
                Some(Outcome::Accepted(a)) => a.clone(),
                Some(Outcome::Rejected(r)) => {
                    if g.json {
                        super::print_json(&reply)?;
                    }
                    return Ok(super::rejected(r));
                }
                None => anyhow::bail!("empty reply"),
            };
            if wait {
                let o = client
                    .wait_order(&accepted.order_id, accepted.position, WAIT)
                    .await?;
                return show(g, &o);
            }
            if g.json {
                super::print_json(&reply)?;
            } else {
                println!(
                    "accepted: order {} (position {}); follow it with `orca order get {} --wait`",
                    accepted.order_id, accepted.position, accepted.order_id
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Get { id, wait } => {
            if wait {
                let o = client.wait_order(&id, 0, WAIT).await?;
                return show(g, &o);
            }
            let reply = client.order(&id, 0).await?;
            match (reply.order, reply.error) {
                (Some(o), _) => {
                    if g.json {
                        super::print_json(&o)?;
                    } else {
                        print!("{}", render::order(&o));
                    }
                    Ok(ExitCode::SUCCESS)
                }
                (None, Some(e)) => Ok(super::rejected(&e)),
                (None, None) => anyhow::bail!("empty reply"),
            }
        }
        Command::List {
            state,
            limit,
            page_token,
        } => {
            let reply = client
                .orders(&v1::ListOrders {
                    state: state.unwrap_or_default(),
                    limit,
                    page_token: page_token.unwrap_or_default(),
                    min_position: 0,
                })
                .await?;
            if let Some(e) = &reply.error {
                return Ok(super::rejected(e));
            }
            if g.json {
                super::print_json(&reply)?;
            } else {
                for o in &reply.orders {
                    print!("{}", render::order(o));
                }
                super::more(&reply.next_page_token);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cancel { id, reason, meta } => {
            let cmd = v1::CancelOrder {
                order_id: id,
                reason: reason.unwrap_or_default(),
                command_id: meta.command_id.unwrap_or_default(),
                actor: meta.actor,
            };
            let reply = client.command("cmd.order.cancel", &cmd).await?;
            match &reply.outcome {
                Some(Outcome::Accepted(a)) => {
                    if g.json {
                        super::print_json(&reply)?;
                    } else {
                        println!(
                            "cancelled: order {} (position {})",
                            cmd.order_id, a.position
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Some(Outcome::Rejected(r)) => {
                    if g.json {
                        super::print_json(&reply)?;
                    }
                    Ok(super::rejected(r))
                }
                None => anyhow::bail!("empty reply"),
            }
        }
    }
}

/// Prints an ended order; exit 0 only if it completed.
fn show(g: &Global, o: &v1::Order) -> anyhow::Result<ExitCode> {
    if g.json {
        super::print_json(o)?;
    } else {
        print!("{}", render::order(o));
    }
    Ok(if o.state == "completed" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
