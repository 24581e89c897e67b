//! Invariant 10 under fuzzing: every endpoint's decoding, and every command's decision on
//! several states (nothing yet, a create waiting for its task, an active subscription, a paused
//! engine), fed arbitrary bytes, valid requests mutated byte by byte, and JSON objects made of the
//! contract's own field names, in both encodings. Each ends in a structured outcome, never a
//! panic; what is decided is recorded and reads back. `ORCA_FUZZ_CASES` sets how many cases each
//! property runs (default 2,000; by hand:
//! `ORCA_FUZZ_CASES=1000000 cargo test --release -p orca-nats --test fuzz`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use orca_domain::{Catalog, Checked, Command, Decision, Env, Loaded};
use orca_nats::codec::Encoding;
use orca_proto::{Message, v1};
use proptest::prelude::*;
use serde_json::{Value as Json, json};

fn cases() -> u32 {
    std::env::var("ORCA_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

const MAX: usize = 64 * 1024;

/// Deterministic ids: process, subscription and event ids count up from `from`.
fn decide_on(
    catalog: &Catalog,
    state: &Loaded,
    cmd: &Command,
    from: u128,
) -> Result<Decision, orca_domain::Rejection> {
    let mut n = from;
    let mut new_id = move || {
        n += 1;
        uuid::Uuid::from_u128(n)
    };
    let mut env = Env {
        now: orca_proto::Timestamp {
            seconds: 1_800_000_000,
            nanos: 0,
        },
        actor: "fuzz",
        command_id: "c",
        new_id: &mut new_id,
    };
    orca_domain::decide(catalog, state, cmd, &mut env)
}

fn command(w: impl Into<WireCommand>) -> Command {
    w.into().checked().command
}

/// A wire command, checked the way its endpoint checks it.
enum WireCommand {
    Start(v1::StartProcess),
    Complete(v1::CompleteTask),
    Pause(v1::PauseEngine),
}

impl WireCommand {
    fn checked(self) -> Checked<Command> {
        match self {
            WireCommand::Start(w) => Checked::try_from(&w).unwrap(),
            WireCommand::Complete(w) => Checked::try_from(&w).unwrap(),
            WireCommand::Pause(w) => Checked::try_from(&w).unwrap(),
        }
    }
}

impl From<v1::StartProcess> for WireCommand {
    fn from(w: v1::StartProcess) -> Self {
        WireCommand::Start(w)
    }
}
impl From<v1::CompleteTask> for WireCommand {
    fn from(w: v1::CompleteTask) -> Self {
        WireCommand::Complete(w)
    }
}
impl From<v1::PauseEngine> for WireCommand {
    fn from(w: v1::PauseEngine) -> Self {
        WireCommand::Pause(w)
    }
}

fn structure(j: Json) -> Option<orca_proto::Struct> {
    Some(orca_proto::json::json_to_struct(j.as_object().unwrap()))
}

/// The states commands are decided on, and the ids they hold.
struct World {
    catalog: Catalog,
    states: Vec<Loaded>,
    process: String,
    subscription: String,
}

/// Built once: every case decides on the same states.
fn world() -> &'static World {
    static WORLD: std::sync::OnceLock<World> = std::sync::OnceLock::new();
    WORLD.get_or_init(build_world)
}

fn build_world() -> World {
    let catalog = Catalog::default_catalog().unwrap();
    let customer = uuid::Uuid::from_u128(99).to_string();
    let create = command(v1::StartProcess {
        workflow: "create_user_group".into(),
        customer_id: customer,
        input: structure(json!({"group_name": "Ops"})),
        ..Default::default()
    });
    let created = decide_on(&catalog, &Loaded::default(), &create, 1000).unwrap();
    let waiting = Loaded {
        process: created.process.clone(),
        subscription: created.subscription.clone(),
        ..Default::default()
    };
    let process = created.process.as_ref().unwrap().id.to_string();
    let subscription = created.subscription.as_ref().unwrap().id.to_string();
    let complete = command(v1::CompleteTask {
        process_id: process.clone(),
        step_index: 4,
        attempt: 1,
        result: structure(json!({"subscription": {"user_group": {"group_id": 7}}})),
        ..Default::default()
    });
    let done = decide_on(&catalog, &waiting, &complete, 2000).unwrap();
    let active = Loaded {
        process: done.process.clone(),
        subscription: done.subscription.clone(),
        ..Default::default()
    };
    let pause = command(v1::PauseEngine {
        reason: "fuzz".into(),
        ..Default::default()
    });
    let paused = decide_on(&catalog, &Loaded::default(), &pause, 3000).unwrap();
    let paused = Loaded {
        engine: paused.engine.unwrap(),
        subscription: done.subscription,
        ..Default::default()
    };
    World {
        catalog,
        states: vec![Loaded::default(), waiting, active, paused],
        process,
        subscription,
    }
}

/// Valid requests of every command endpoint, on the world's ids: seeds to mutate.
fn seeds(w: &World) -> Vec<(&'static str, Vec<u8>)> {
    let (p, s) = (w.process.clone(), w.subscription.clone());
    vec![
        (
            "cmd.process.start",
            v1::StartProcess {
                workflow: "create_user_group".into(),
                customer_id: uuid::Uuid::from_u128(5).to_string(),
                input: structure(json!({"group_name": "A"})),
                command_id: "x".into(),
                actor: "a".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "cmd.process.start",
            v1::StartProcess {
                workflow: "modify_user_group".into(),
                subscription_id: s.clone(),
                input: structure(json!({"group_name": "B"})),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "cmd.task.complete",
            v1::CompleteTask {
                process_id: p.clone(),
                step_index: 4,
                attempt: 1,
                result: structure(json!({"subscription": {"user_group": {"group_id": 7}}})),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "cmd.task.fail",
            v1::FailTask {
                process_id: p.clone(),
                step_index: 4,
                attempt: 1,
                error: "e".into(),
                kind: "retryable".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "cmd.task.heartbeat",
            v1::HeartbeatTask {
                process_id: p.clone(),
                step_index: 4,
                attempt: 1,
                progress: "1/2".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "cmd.process.retry",
            v1::RetryProcess {
                process_id: p.clone(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "cmd.process.abort",
            v1::AbortProcess {
                process_id: p.clone(),
                reason: "r".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "cmd.process.resume",
            v1::ResumeProcess {
                process_id: p.clone(),
                input: structure(json!({"decision": "approve"})),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "cmd.process.callback",
            v1::CallbackProcess {
                process_id: p,
                token: "t".into(),
                result: structure(json!({"ok": true})),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "cmd.subscription.set_in_sync",
            v1::SetInSync {
                subscription_id: s.clone(),
                reason: "r".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "cmd.engine.pause",
            v1::PauseEngine {
                reason: "r".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "cmd.engine.resume",
            v1::ResumeEngine::default().encode_to_vec(),
        ),
        (
            "cmd.schedule.run",
            v1::RunSchedule {
                name: "nightly_validate".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "cmd.transaction.submit",
            v1::SubmitTransaction {
                r#type: "tenantStateChange".into(),
                attributes: structure(json!({"state": "ACTIVE", "account_type": "MANUAL"})),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "cmd.order.submit",
            v1::SubmitOrder {
                customer_id: uuid::Uuid::from_u128(6).to_string(),
                items: vec![
                    v1::OrderItem {
                        id: "a".into(),
                        action: "add".into(),
                        product: "UserGroup".into(),
                        input: structure(json!({"group_name": "C"})),
                        ..Default::default()
                    },
                    v1::OrderItem {
                        id: "b".into(),
                        action: "modify".into(),
                        subscription_id: s,
                        depends_on: vec!["a".into()],
                        input: structure(json!({"group_name": "D"})),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "cmd.order.cancel",
            v1::CancelOrder {
                order_id: uuid::Uuid::from_u128(8).to_string(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
    ]
}

/// What is accepted is recorded; what is recorded must decode again (replay, views, outbox).
fn reads_back(e: &v1::Event) {
    let bytes = orca_proto::encode_stored_event(e);
    let back = orca_proto::decode_stored_event(&bytes, e.position, &e.stream, e.version);
    assert!(back.as_ref() == Ok(e), "event does not read back: {e:?}");
}

/// Sends `payload` to the endpoint at `subject` as the service would, and decides what it
/// decodes to on every state.
fn exercise(w: &World, subject: &str, payload: &[u8], enc: Encoding) {
    let outcome = orca_nats::decode_request(subject, payload, enc, MAX).expect("an endpoint");
    let cmd = match outcome {
        Ok(Some(cmd)) => cmd,
        Ok(None) => return,
        Err(r) => {
            assert!(!r.code.as_str().is_empty());
            return;
        }
    };
    // What an authenticated sender's command becomes, too.
    let cmd = cmd.sent_by("fuzz-user").unwrap();
    assert!(cmd.dedup_key().is_none_or(|k| !k.is_empty()));
    for state in &w.states {
        match decide_on(&w.catalog, state, &cmd.command, 10_000) {
            Ok(d) => {
                for e in &d.events {
                    reads_back(e);
                }
                let reply = d.accepted(1);
                assert!(matches!(
                    reply.outcome,
                    Some(v1::command_reply::Outcome::Accepted(_))
                ));
            }
            Err(r) => {
                assert!(!r.code.as_str().is_empty());
                let _ = r.to_reply().encode_to_vec();
            }
        }
    }
}

/// The contract's field names (proto3 JSON), for JSON requests that reach past decoding.
const FIELDS: &[&str] = &[
    "workflow",
    "customerId",
    "subscriptionId",
    "processId",
    "product",
    "input",
    "result",
    "stepIndex",
    "attempt",
    "error",
    "kind",
    "commandId",
    "actor",
    "reason",
    "token",
    "progress",
    "items",
    "id",
    "action",
    "dependsOn",
    "orderId",
    "type",
    "attributes",
    "name",
    "workflowVersion",
    "description",
    "context",
    "minPosition",
    "limit",
    "pageToken",
    "version",
    "asOfPosition",
    "asOfTime",
    "from",
    "stream",
    "status",
    "state",
    "pending",
];

fn json_value(ids: Vec<String>) -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::from),
        (0u32..12).prop_map(Json::from),
        any::<f64>().prop_map(Json::from),
        ".{0,24}".prop_map(Json::String),
        prop::sample::select(ids).prop_map(Json::String),
        prop::sample::select(vec![
            "create_user_group",
            "modify_user_group",
            "terminate_user_group",
            "validate_user_group",
            "UserGroup",
            "add",
            "modify",
            "delete",
            "retryable",
            "permanent",
            "approve",
            "reject",
            "nightly_validate",
            "tenantStateChange",
            "ACTIVE",
            "MANUAL",
            "1970-01-01T00:00:00Z",
        ])
        .prop_map(|s| Json::String(s.to_owned())),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..4)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_to_every_endpoint_end_in_a_structured_outcome(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        pick in any::<prop::sample::Index>(),
    ) {
        let w = world();
        let subjects: Vec<&str> = orca_nats::endpoint_subjects().map(|(s, _)| s).collect();
        let subject = subjects[pick.index(subjects.len())];
        for enc in [Encoding::Proto, Encoding::Json] {
            exercise(w, subject, &bytes, enc);
        }
    }

    #[test]
    fn valid_requests_mutated_end_in_a_structured_outcome(
        pick in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let w = world();
        let seeds = seeds(w);
        let (subject, mut bytes) = seeds[pick.index(seeds.len())].clone();
        if !bytes.is_empty() {
            for (at, b) in flips {
                let i = at.index(bytes.len());
                bytes[i] ^= b;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
        }
        exercise(w, subject, &bytes, Encoding::Proto);
    }

    #[test]
    fn json_requests_of_the_contracts_fields_end_in_a_structured_outcome(
        fields in prop::collection::btree_map(prop::sample::select(FIELDS), json_value(vec![
            "00000000-0000-0000-0000-0000000003e9".into(),
            "00000000-0000-0000-0000-0000000003ea".into(),
            uuid::Uuid::from_u128(5).to_string(),
            "not-a-uuid".into(),
        ]), 0..8),
        pick in any::<prop::sample::Index>(),
    ) {
        let w = world();
        let subjects: Vec<&str> = orca_nats::endpoint_subjects().map(|(s, _)| s).collect();
        let subject = subjects[pick.index(subjects.len())];
        let body: serde_json::Map<String, Json> =
            fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let bytes = serde_json::to_vec(&Json::Object(body)).unwrap();
        exercise(w, subject, &bytes, Encoding::Json);
    }
}

#[test]
fn the_seeds_cover_every_command_endpoint_and_are_accepted_somewhere() {
    let w = world();
    let seeds = seeds(w);
    for (subject, command) in orca_nats::endpoint_subjects() {
        if command {
            assert!(
                seeds.iter().any(|(s, _)| *s == subject),
                "no seed for {subject}"
            );
        }
    }
    // The world's ids are the ones the seeds name, so mutations start from requests that decide.
    let mut accepted = 0;
    for (subject, bytes) in &seeds {
        let Some(Ok(Some(cmd))) = orca_nats::decode_request(subject, bytes, Encoding::Proto, MAX)
        else {
            panic!("seed for {subject} does not decode");
        };
        accepted += w
            .states
            .iter()
            .filter(|s| decide_on(&w.catalog, s, &cmd.command, 10_000).is_ok())
            .count();
    }
    assert!(
        accepted >= seeds.len(),
        "most seeds decide on some state: {accepted}"
    );
}
