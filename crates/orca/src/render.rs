//! Human-readable output.

use std::fmt::Write;

use orca_proto::{Timestamp, v1};

/// The time of day (UTC) of `t`, to the millisecond.
pub fn clock(t: &Timestamp) -> String {
    let nanos = u32::try_from(t.nanos).unwrap_or(0);
    let secs = t.seconds.rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60,
        nanos / 1_000_000
    )
}

fn time(t: Option<&Timestamp>) -> String {
    t.map_or_else(|| "-".into(), clock)
}

/// A process with its step log.
pub fn process(p: &v1::Process) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "process {}  {} v{} ({})  status {} (CloudPortal: {})  actor {}",
        p.process_id,
        p.workflow,
        p.workflow_version,
        p.target,
        p.status,
        p.cloudportal_state,
        p.actor
    );
    if !p.subscription_id.is_empty() {
        let _ = writeln!(s, "  subscription {}", p.subscription_id);
    }
    if !p.failed_reason.is_empty() {
        let label = if p.status == "aborted" {
            "aborted"
        } else {
            "stopped"
        };
        let _ = writeln!(s, "  {label}: {}", p.failed_reason);
    }
    if let Some(next) = &p.next_attempt_at {
        let _ = writeln!(
            s,
            "  waiting: tries again at {} by itself (or now: orca process retry {})",
            clock(next),
            p.process_id
        );
    } else if p
        .status
        .parse::<orca_domain::ProcessStatus>()
        .is_ok_and(orca_domain::ProcessStatus::retryable)
    {
        let _ = writeln!(
            s,
            "  next: orca process retry {0}   or   orca process abort {0} --reason …",
            p.process_id
        );
    }
    let inputs = p.steps.iter().filter(|st| st.form.is_some()).count();
    for st in &p.steps {
        if let Some(form) = &st.form {
            let schema = serde_json::Value::Object(orca_proto::json::struct_to_json(form));
            let fields: Vec<String> = schema["properties"]
                .as_object()
                .map(|props| {
                    props
                        .iter()
                        .map(|(name, f)| match f["enum"].as_array() {
                            Some(options) => format!(
                                "{name}={}",
                                options
                                    .iter()
                                    .filter_map(serde_json::Value::as_str)
                                    .collect::<Vec<_>>()
                                    .join("|")
                            ),
                            None => format!("{name}=…"),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let step = if inputs > 1 {
                format!(" --step {}", st.index)
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "  waits for input at step {} ({}): orca process resume {}{step} {}",
                st.index,
                st.name,
                p.process_id,
                fields
                    .iter()
                    .map(|f| format!("--input {f}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        if matches!(st.status.as_str(), "failed" | "abort")
            && st.phase > 1
            && p.status != "aborted"
            && phased(p)
        {
            let _ = writeln!(
                s,
                "  step {} ({}) is {}: reset it with orca process reset {} {}",
                st.index, st.name, st.cloudportal_state, p.process_id, st.index
            );
        }
        if st.status == "pending" && (st.deadline.is_some() || !st.progress.is_empty()) {
            let progress = if st.progress.is_empty() {
                String::new()
            } else {
                format!(": {}", st.progress)
            };
            let _ = writeln!(
                s,
                "  step {} ({}) attempt {} running{progress}; times out at {}",
                st.index,
                st.name,
                st.attempts,
                time(st.deadline.as_ref())
            );
        }
        for f in st
            .failures
            .iter()
            .filter(|_| st.failures.len() > 1 || st.status != "failed")
        {
            let _ = writeln!(
                s,
                "  step {} ({}) attempt {} failed at {}: {}",
                st.index,
                st.name,
                f.attempt,
                time(f.at.as_ref()),
                f.error
            );
        }
        if !st.callback_token.is_empty() {
            let _ = writeln!(
                s,
                "  awaits a callback at step {} ({}): orca process callback {} --token {}",
                st.index, st.name, p.process_id, st.callback_token
            );
        }
    }
    let _ = writeln!(
        s,
        "  {:>2}  {:<40} {:<8} {:<18} {:<11} {:>3}  {:<12} error",
        "#", "step", "kind", "status", "CloudPortal", "try", "completed"
    );
    let phased = phased(p);
    let mut phase = 0;
    for st in &p.steps {
        if phased && st.phase != phase {
            phase = st.phase;
            let siblings = p.steps.iter().filter(|o| o.phase == phase).count();
            if siblings > 1 || !st.phase_name.is_empty() {
                let name = if st.phase_name.is_empty() {
                    "phase"
                } else {
                    st.phase_name.as_str()
                };
                let together = if siblings > 1 {
                    format!(" ({siblings} activities side by side)")
                } else {
                    String::new()
                };
                let _ = writeln!(s, "      ── {name}{together}");
            }
        }
        let name = if st.argument.is_empty()
            || st.kind != "builtin"
            || matches!(
                st.name.as_str(),
                "initialize_subscription" | "modify_subscription"
            ) {
            st.name.clone()
        } else {
            format!("{}({})", st.name, st.argument)
        };
        let _ = writeln!(
            s,
            "  {:>2}  {:<40} {:<8} {:<18} {:<11} {:>3}  {:<12} {}",
            st.index,
            name,
            st.kind,
            st.status,
            st.cloudportal_state,
            st.attempts.max(u32::from(st.completed_at.is_some())),
            time(st.completed_at.as_ref()),
            st.error
        );
    }
    s
}

/// Whether the workflow is one of phases: a phase holds several steps, or phases have names.
fn phased(p: &v1::Process) -> bool {
    p.steps.iter().any(|st| !st.phase_name.is_empty())
        || p.steps
            .windows(2)
            .any(|w| w[0].phase == w[1].phase && w[0].phase > 0)
}

/// What the rules made of a submitted transaction, as its reply says.
pub fn transaction_accepted(a: &v1::Accepted) -> String {
    if a.rule.is_empty() {
        format!(
            "transaction {}: no rule matched; completed without a workflow",
            a.transaction_id
        )
    } else {
        format!(
            "transaction {}: rule {} matched and started process {}",
            a.transaction_id, a.rule, a.process_id
        )
    }
}

/// One line for a business transaction: what its rules made of it and how its workflow stands.
pub fn transaction_line(t: &v1::Transaction) -> String {
    let matched = if t.rule.is_empty() {
        "no rule matched".to_owned()
    } else {
        format!(
            "rule {} started {} process {}",
            t.rule, t.workflow, t.process_id
        )
    };
    format!(
        "transaction {}  {}  {} (CloudPortal: {})  {matched}",
        t.transaction_id, t.r#type, t.status, t.cloudportal_state
    )
}

/// An order and its items, each with its process and the subscription versions it made.
pub fn order(o: &v1::Order) -> String {
    let mut s = String::new();
    let _ = write!(s, "order {}  {}", o.order_id, o.state);
    if !o.description.is_empty() {
        let _ = write!(s, "  {}", o.description);
    }
    if !o.cancel_reason.is_empty() {
        let _ = write!(s, "  (cancelled: {})", o.cancel_reason);
    }
    s.push('\n');
    for i in &o.items {
        let on = if i.action == "add" {
            i.product.clone()
        } else {
            format!("subscription {}", i.subscription_id)
        };
        let _ = write!(
            s,
            "  {:<12} {:<6} {:<44} {:<12}",
            i.id, i.action, on, i.state
        );
        if !i.depends_on.is_empty() {
            let _ = write!(s, "  after {}", i.depends_on.join(", "));
        }
        if !i.process_id.is_empty() {
            let _ = write!(s, "  {} process {}", i.workflow, i.process_id);
        }
        if i.action == "add" && !i.subscription_id.is_empty() {
            let _ = write!(s, "  subscription {}", i.subscription_id);
        }
        if i.activated_version > 0 {
            let _ = write!(s, "  activated v{}", i.activated_version);
        }
        if i.terminated_version > 0 {
            let _ = write!(s, "  terminated v{}", i.terminated_version);
        }
        if !i.error.is_empty() {
            let _ = write!(s, "\n      {}", i.error);
        }
        s.push('\n');
    }
    s
}

/// One state-change notification on a line: sequence, type, resource and transition.
pub fn notification(sequence: u64, n: &v1::StateChangeEvent) -> String {
    let r = n.resource.clone().unwrap_or_default();
    let what = match r.r#type.as_str() {
        "service" => format!("subscription {} v{}", r.id, r.version),
        "serviceOrderItem" => format!("order {} item {}", r.id, r.item_id),
        _ => format!("order {}", r.id),
    };
    let from = |s: &str| {
        if s.is_empty() {
            "(new)".to_owned()
        } else {
            s.to_owned()
        }
    };
    let mut line = format!(
        "{sequence:>8}  {:<30} {what}  {} -> {}",
        n.event_type,
        from(&n.previous_state),
        n.state
    );
    if !n.lifecycle.is_empty() {
        let _ = write!(
            line,
            "  lifecycle {} -> {}",
            from(&n.previous_lifecycle),
            n.lifecycle
        );
    }
    line
}

/// A subscription with its resources.
pub fn subscription(sub: &v1::Subscription) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "subscription {}  {}  version {} ({})",
        sub.subscription_id, sub.product, sub.version, sub.version_state
    );
    if sub.pending_version > 0 && u64::from(sub.pending_version) != sub.version {
        let _ = writeln!(
            s,
            "  to-be        version {} (pending: built by {})",
            sub.pending_version, sub.locked_by_process_id
        );
    }
    let _ = writeln!(s, "  description  {}", sub.description);
    let _ = writeln!(s, "  status       {}", sub.status);
    let _ = writeln!(s, "  in sync      {}", sub.in_sync);
    if !sub.sync_reason.is_empty() {
        let _ = writeln!(s, "  sync reason  {}", sub.sync_reason);
    }
    if !sub.note.is_empty() {
        let _ = writeln!(s, "  note         {}", sub.note);
    }
    let _ = writeln!(s, "  customer     {}", sub.customer_id);
    for b in &sub.blocks {
        let values =
            serde_json::Value::Object(orca_proto::json::opt_struct_to_json(b.resources.as_ref()));
        let _ = writeln!(s, "  {:<12} {}", b.name, values);
    }
    if !sub.locked_by_process_id.is_empty() {
        let _ = writeln!(s, "  held by      {}", sub.locked_by_process_id);
    }
    for l in &sub.processes {
        let _ = writeln!(
            s,
            "  process      {} {} ({})",
            l.process_id, l.workflow, l.target
        );
    }
    s
}

/// One line for a version of a subscription: its part, lifecycle status and who built and
/// superseded it.
pub fn version_line(v: &v1::Subscription) -> String {
    let by = |p: &str| {
        if p.is_empty() {
            "-".to_owned()
        } else {
            p.to_owned()
        }
    };
    format!(
        "version {:<4} {:<11} {:<13} activator {}  terminator {}  {}",
        v.version,
        v.version_state,
        v.status,
        by(&v.activator_process_id),
        by(&v.terminator_process_id),
        v.description
    )
}

/// One line per subscription.
pub fn subscription_line(sub: &v1::Subscription) -> String {
    format!(
        "{}  {:<12} {:<13} {:<5} {}",
        sub.subscription_id,
        sub.product,
        sub.status,
        if sub.in_sync { "sync" } else { "unsync" },
        sub.description
    )
}

/// One line per process.
pub fn process_line(p: &v1::Process) -> String {
    format!(
        "{}  {:<24} {:<10} {}",
        p.process_id, p.workflow, p.status, p.subscription_id
    )
}
