//! proto3 JSON mapping of the well-known types: `Struct` is a JSON object, `Value` any JSON value,
//! `Timestamp` an RFC 3339 string.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::google::protobuf::{ListValue, Struct, Timestamp, Value, value::Kind};

impl Serialize for Struct {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.fields.iter())
    }
}

impl<'de> Deserialize<'de> for Struct {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Object(map) => Ok(crate::json::json_to_struct(&map)),
            other => Err(D::Error::custom(format!(
                "expected a JSON object for google.protobuf.Struct, got {other}"
            ))),
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::json::value_to_json(self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(crate::json::json_to_value(&serde_json::Value::deserialize(
            d,
        )?))
    }
}

impl Serialize for ListValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.values.iter())
    }
}

impl<'de> Deserialize<'de> for ListValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self {
            values: Vec::<Value>::deserialize(d)?,
        })
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let nanos = u32::try_from(self.nanos).map_err(serde::ser::Error::custom)?;
        let dt = chrono::DateTime::from_timestamp(self.seconds, nanos)
            .ok_or_else(|| serde::ser::Error::custom("timestamp out of range"))?;
        s.serialize_str(&dt.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let dt = chrono::DateTime::parse_from_rfc3339(&s).map_err(D::Error::custom)?;
        Ok(Self {
            seconds: dt.timestamp(),
            nanos: i32::try_from(dt.timestamp_subsec_nanos()).map_err(D::Error::custom)?,
        })
    }
}

impl Kind {
    /// JSON type name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Kind::NullValue(_) => "null",
            Kind::NumberValue(_) => "number",
            Kind::StringValue(_) => "string",
            Kind::BoolValue(_) => "boolean",
            Kind::StructValue(_) => "object",
            Kind::ListValue(_) => "array",
        }
    }
}
