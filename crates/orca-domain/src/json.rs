//! JSON helpers over the wire's `Struct`/`Value`.

use orca_proto::Value;
use orca_proto::google::protobuf::value::Kind;
pub use orca_proto::json::{
    json_to_struct, json_to_value, opt_struct_to_json, struct_to_json, value_to_json,
};

/// How deeply objects and arrays may nest in a form's input or a step's result. A process's
/// state and step log carry these values inside events and views, whose protobuf encoding adds
/// two message levels per JSON level; this keeps the deepest of them far under the decoder's
/// limit of 100, so that whatever is accepted can always be read back.
pub const MAX_DEPTH: usize = 16;

/// How deeply objects and arrays nest in `v`: 0 for a scalar, 1 for `{}` or `[1]`.
///
/// Recursive: the values it sees were decoded from the wire, whose decoders bound the nesting.
pub fn depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(o) => object_depth(o),
        _ => 0,
    }
}

/// How deeply objects and arrays nest in the object `o`, itself one level.
pub fn object_depth(o: &serde_json::Map<String, serde_json::Value>) -> usize {
    1 + o.values().map(depth).max().unwrap_or(0)
}

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
