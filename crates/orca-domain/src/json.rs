//! JSON helpers over the wire's `Struct`/`Value`.

use orca_proto::Value;
use orca_proto::google::protobuf::value::Kind;
pub use orca_proto::json::{
    json_to_struct, json_to_value, opt_struct_to_json, struct_to_json, value_to_json,
};

/// A string `Value`.
pub fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    }
}

/// The text of a string `Value`.
pub fn as_str(v: &Value) -> Option<&str> {
    match &v.kind {
        Some(Kind::StringValue(s)) => Some(s),
        _ => None,
    }
}
