//! Conversions between `google.protobuf.Struct` and `serde_json`.
//!
//! A `Struct` holds numbers as `f64`; integral numbers within ±2^53 come back as JSON integers so
//! that `group_id: 4711` stays `4711`, not `4711.0`.

use crate::google::protobuf::{ListValue, Struct, Value, value::Kind};
use serde_json::{Map, Number, Value as Json};

/// The largest integer an `f64` holds exactly.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

/// Converts a protobuf `Struct` into a JSON object.
pub fn struct_to_json(s: &Struct) -> Map<String, Json> {
    s.fields
        .iter()
        .map(|(k, v)| (k.clone(), value_to_json(v)))
        .collect()
}

/// Converts an optional `Struct` field into a JSON object; absent is empty.
pub fn opt_struct_to_json(s: Option<&Struct>) -> Map<String, Json> {
    s.map(struct_to_json).unwrap_or_default()
}

/// Converts a protobuf `Value` into JSON.
pub fn value_to_json(v: &Value) -> Json {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::NumberValue(n)) => number_to_json(*n),
        Some(Kind::StringValue(s)) => Json::String(s.clone()),
        Some(Kind::ListValue(l)) => Json::Array(l.values.iter().map(value_to_json).collect()),
        Some(Kind::StructValue(s)) => Json::Object(struct_to_json(s)),
    }
}

fn number_to_json(n: f64) -> Json {
    if n.fract() == 0.0 && n.abs() <= MAX_EXACT {
        // Exact: |n| <= 2^53 and integral.
        #[allow(clippy::cast_possible_truncation)]
        return Json::Number(Number::from(n as i64));
    }
    Number::from_f64(n).map_or(Json::Null, Json::Number)
}

/// Converts a JSON object into a protobuf `Struct`.
pub fn json_to_struct(map: &Map<String, Json>) -> Struct {
    Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

/// Converts JSON into a protobuf `Value`.
pub fn json_to_value(v: &Json) -> Value {
    let kind = match v {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        Json::Object(o) => Kind::StructValue(json_to_struct(o)),
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integral_numbers_round_trip_as_integers() {
        let obj = json!({"group_id": 4711, "ratio": 0.5, "name": "Ops", "tags": ["a", true, null]});
        let map = obj.as_object().cloned().unwrap_or_default();
        let back = struct_to_json(&json_to_struct(&map));
        assert_eq!(Json::Object(back), obj);
        assert_eq!(
            serde_json::to_string(&struct_to_json(&json_to_struct(&map))["group_id"]).unwrap(),
            "4711"
        );
    }
}

#[cfg(test)]
mod wire_tests {
    use crate::v1::{StartProcess, Subscription};
    use crate::{Message, Timestamp};

    #[test]
    fn start_process_accepts_proto3_json_with_an_input_object() {
        let cmd: StartProcess = serde_json::from_str(
            r#"{"workflow":"create_user_group","customerId":"c","input":{"group_name":"Ops","n":3}}"#,
        )
        .unwrap();
        assert_eq!(cmd.workflow, "create_user_group");
        let input = super::opt_struct_to_json(cmd.input.as_ref());
        assert_eq!(input["group_name"], "Ops");
        assert_eq!(input["n"], 3);
        // snake_case field names are accepted too.
        let cmd: StartProcess = serde_json::from_str(r#"{"customer_id":"c"}"#).unwrap();
        assert_eq!(cmd.customer_id, "c");
    }

    #[test]
    fn encoding_is_deterministic_and_json_is_readable() {
        let mut map = serde_json::Map::new();
        for i in 0..50 {
            map.insert(format!("k{i}"), serde_json::json!(i));
        }
        let s = super::json_to_struct(&map);
        let sub = Subscription {
            subscription_id: "x".into(),
            blocks: vec![crate::v1::Block {
                name: "b".into(),
                resources: Some(s.clone()),
            }],
            start_date: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 5_000,
            }),
            ..Default::default()
        };
        let a = sub.encode_to_vec();
        let b = Subscription::decode(a.as_slice()).unwrap().encode_to_vec();
        assert_eq!(a, b);
        let json = serde_json::to_value(&sub).unwrap();
        assert_eq!(json["startDate"], "2023-11-14T22:13:20.000005Z");
        assert_eq!(json["blocks"][0]["resources"]["k7"], 7);
        let back: Subscription = serde_json::from_value(json).unwrap();
        assert_eq!(back, sub);
    }
}
