//! Invariant 10: whatever bytes arrive, decoding and deciding end in a structured outcome —
//! a command, a rejection with a stable code — never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use orca_domain::{Catalog, Checked, Command, Env, Loaded};
use orca_nats::codec::{Encoding, decode};
use orca_proto::{Message, v1};
use proptest::prelude::*;
use serde_json::Value as Json;

fn json_value() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::from),
        any::<f64>().prop_map(Json::from),
        ".{0,40}".prop_map(Json::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

fn decide(wire: &v1::StartProcess) {
    let Ok(cmd) = Checked::<Command>::try_from(wire) else {
        return;
    };
    let catalog = Catalog::default_catalog().unwrap();
    let mut n = 0u128;
    let mut new_id = move || {
        n += 1;
        uuid::Uuid::from_u128(n)
    };
    let mut env = Env {
        now: orca_proto::Timestamp::default(),
        actor: "p",
        command_id: "c",
        new_id: &mut new_id,
    };
    match orca_domain::decide(&catalog, &Loaded::default(), &cmd.command, &mut env) {
        Ok(d) => {
            assert!(!d.events.is_empty());
            for e in &d.events {
                reads_back(e);
            }
        }
        Err(r) => assert!(!r.code.as_str().is_empty()),
    }
}

/// What is accepted is written; what is written must decode again (replay, views, outbox).
fn reads_back(e: &v1::Event) {
    let bytes = orca_proto::encode_stored_event(e);
    let back = orca_proto::decode_stored_event(&bytes, e.position, &e.stream, e.version);
    assert!(
        back.as_ref() == Ok(e),
        "an accepted event does not read back"
    );
}

/// JSON nesting anywhere from 0 to 60 levels deep, well past what orca takes and past what
/// protobuf decodes, each level an object or an array.
fn deep_json_value() -> impl Strategy<Value = Json> {
    (prop::collection::vec(any::<bool>(), 0..60), any::<i64>()).prop_map(|(levels, leaf)| {
        levels.into_iter().fold(Json::from(leaf), |inner, array| {
            if array {
                Json::Array(vec![inner])
            } else {
                serde_json::json!({ "k": inner })
            }
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for enc in [Encoding::Proto, Encoding::Json] {
            if let Ok(w) = decode::<v1::StartProcess>(&bytes, enc, 1024) {
                decide(&w);
            }
            if let Ok(w) = decode::<v1::CompleteTask>(&bytes, enc, 1024) {
                let _ = Checked::<Command>::try_from(&w);
            }
            if let Ok(w) = decode::<v1::FailTask>(&bytes, enc, 1024) {
                let _ = Checked::<Command>::try_from(&w);
            }
            let _ = decode::<v1::ListSubscriptions>(&bytes, enc, 1024);
        }
        prop_assert!(decode::<v1::StartProcess>(&bytes, Encoding::Proto, 0).is_err() || bytes.is_empty());
    }

    #[test]
    fn arbitrary_form_input_is_accepted_or_rejected_with_field_errors(
        input in prop::collection::btree_map("[a-z_]{1,12}", json_value(), 0..5),
        workflow in prop_oneof![Just("create_user_group".to_owned()), Just("terminate_user_group".to_owned()), "[a-z_]{0,20}"],
        customer in prop_oneof![Just(uuid::Uuid::from_u128(7).to_string()), ".{0,40}"],
    ) {
        let map = input.into_iter().collect();
        let wire = v1::StartProcess {
            workflow,
            customer_id: customer,
            input: Some(orca_proto::json::json_to_struct(&map)),
            ..Default::default()
        };
        // Through the wire too: what a client sends is what gets decided.
        let bytes = wire.encode_to_vec();
        let back = decode::<v1::StartProcess>(&bytes, Encoding::Proto, 1 << 20).unwrap();
        decide(&back);
    }

    #[test]
    fn arbitrary_task_results_are_refused_as_too_deep_or_read_back_once_recorded(
        result in prop::collection::btree_map("[a-z]{1,3}", deep_json_value(), 0..3),
    ) {
        let map = result.into_iter().collect();
        let wire = v1::CompleteTask {
            process_id: uuid::Uuid::from_u128(7).to_string(),
            step_index: 4,
            attempt: 1,
            result: Some(orca_proto::json::json_to_struct(&map)),
            ..Default::default()
        };
        let too_deep = orca_domain::json::object_depth(&map) > orca_domain::json::MAX_DEPTH;
        let back = match decode::<v1::CompleteTask>(&wire.encode_to_vec(), Encoding::Proto, 1 << 20) {
            Ok(back) => back,
            Err(r) => {
                // Past protobuf's own nesting limit: refused before orca looks at it.
                prop_assert_eq!(r.code, orca_domain::Code::MalformedRequest);
                prop_assert!(too_deep);
                return Ok(());
            }
        };
        match Checked::<Command>::try_from(&back) {
            Ok(c) => {
                let Command::Report(report) = c.command else {
                    panic!("a report");
                };
                let result = report.outcome.unwrap();
                prop_assert!(!too_deep);
                reads_back(&v1::Event {
                    event_id: "e".into(),
                    body: Some(v1::event::Body::StepCompleted(v1::StepCompleted {
                        index: 4,
                        result: Some(orca_proto::json::json_to_struct(&result)),
                        ..Default::default()
                    })),
                    ..Default::default()
                });
            }
            Err(r) => {
                prop_assert_eq!(r.code, orca_domain::Code::InvalidArgument);
                prop_assert_eq!(r.field_errors[0].field.as_str(), "result");
                prop_assert!(too_deep);
            }
        }
    }
}
