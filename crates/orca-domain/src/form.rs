//! Input forms: validation of submitted values and their JSON Schema.
//!
//! A form is a list of fields. Label fields (the terminate confirmation "Are you sure you want to
//! remove …?") show text and take no input; submitting the form is the confirmation, cancelling
//! it starts nothing. Unknown fields are refused, as orchestrator-core's forms forbid extras.

use orca_proto::v1;
use serde_json::{Map, Value as Json, json};

use crate::rejection::FieldError;

/// Longest string a form accepts when the field sets no `max_length`.
pub const DEFAULT_MAX_STRING: usize = 4096;

/// What a field holds.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldKind {
    /// Text, at most `max_length` characters.
    String {
        /// Longest accepted value.
        max_length: usize,
    },
    /// A whole number.
    Int,
    /// true or false.
    Bool,
    /// A UUID in text form.
    Uuid,
    /// Read-only text shown to the user; `{…}` placeholders are filled in.
    Label {
        /// Template, e.g. `Are you sure you want to remove {subscription.description}?`.
        text: String,
    },
    /// One of a few strings, e.g. an approval's `approve` or `reject`.
    Choice {
        /// The values accepted.
        options: Vec<String>,
    },
}

/// One field of a form.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// Key in the submitted input.
    pub name: String,
    /// Shown to the user.
    pub title: String,
    /// Type and constraints.
    pub kind: FieldKind,
    /// Whether a value must be given.
    pub required: bool,
    /// Where a value not given comes from, e.g. `subscription.user_group.group_name`: a modify
    /// form starts from the subscription as it is.
    pub prefill: Option<String>,
}

/// A workflow's initial input form.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Form {
    /// Fields in display order.
    pub fields: Vec<Field>,
}

impl Form {
    /// Checks `input` and returns the accepted values (labels dropped), or every field error.
    pub fn validate(
        &self,
        input: &Map<String, Json>,
    ) -> Result<Map<String, Json>, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut out = Map::new();
        for key in input.keys() {
            if !self.fields.iter().any(|f| &f.name == key) {
                errors.push(FieldError::new(
                    format!("input.{key}"),
                    "extra fields not permitted",
                ));
            }
        }
        for field in &self.fields {
            let path = format!("input.{}", field.name);
            let value = input.get(&field.name).filter(|v| !v.is_null());
            if let FieldKind::Label { .. } = field.kind {
                continue;
            }
            let Some(value) = value else {
                if field.required {
                    errors.push(FieldError::new(path, "field required"));
                }
                continue;
            };
            match check(&field.kind, value) {
                Ok(v) => {
                    if field.required && v.as_str().is_some_and(str::is_empty) {
                        errors.push(FieldError::new(path, "must not be empty"));
                    } else {
                        out.insert(field.name.clone(), v);
                    }
                }
                Err(msg) => errors.push(FieldError::new(path, msg)),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    /// Fills fields the input leaves out from their `prefill` source (`lookup` finds it), as
    /// text or, when it reads as such, a number or boolean.
    pub fn prefilled(
        &self,
        input: &Map<String, Json>,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Map<String, Json> {
        let mut out = input.clone();
        for f in &self.fields {
            if out.get(&f.name).is_some_and(|v| !v.is_null()) {
                continue;
            }
            if let Some(value) = f.prefill.as_deref().and_then(lookup) {
                out.insert(f.name.clone(), typed(&f.kind, value));
            }
        }
        out
    }

    /// JSON Schema (draft 2020-12) of the form; `lookup` fills label placeholders and prefilled
    /// defaults.
    pub fn json_schema(&self, title: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Json {
        let mut properties = Map::new();
        let mut required = Vec::new();
        for f in &self.fields {
            let schema = match &f.kind {
                FieldKind::String { max_length } => {
                    json!({"type": "string", "title": f.title, "minLength": u8::from(f.required), "maxLength": max_length})
                }
                FieldKind::Int => json!({"type": "integer", "title": f.title}),
                FieldKind::Bool => json!({"type": "boolean", "title": f.title}),
                FieldKind::Uuid => json!({"type": "string", "format": "uuid", "title": f.title}),
                FieldKind::Label { text } => json!({
                    "type": "string", "format": "label", "title": f.title,
                    "default": render(text, lookup), "readOnly": true,
                }),
                FieldKind::Choice { options } => {
                    json!({"type": "string", "enum": options, "title": f.title})
                }
            };
            let mut schema = schema;
            if let (Some(value), Json::Object(o)) =
                (f.prefill.as_deref().and_then(lookup), &mut schema)
            {
                o.insert("default".into(), typed(&f.kind, value));
            }
            if f.required && !matches!(f.kind, FieldKind::Label { .. }) {
                required.push(Json::String(f.name.clone()));
            }
            properties.insert(f.name.clone(), schema);
        }
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": title,
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false,
        })
    }

    /// The label texts with placeholders filled, in order (what a confirmation shows).
    pub fn labels(&self, lookup: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
        self.fields
            .iter()
            .filter_map(|f| match &f.kind {
                FieldKind::Label { text } => Some(render(text, lookup)),
                _ => None,
            })
            .collect()
    }
}

fn check(kind: &FieldKind, value: &Json) -> Result<Json, String> {
    match kind {
        FieldKind::String { max_length } => match value {
            Json::String(s) => {
                let s = s.trim();
                if s.chars().count() > *max_length {
                    Err(format!(
                        "ensure this value has at most {max_length} characters"
                    ))
                } else if s.chars().any(char::is_control) {
                    Err("must not contain control characters".into())
                } else {
                    Ok(Json::String(s.to_owned()))
                }
            }
            other => Err(format!("str type expected, got {}", type_name(other))),
        },
        FieldKind::Int => match value.as_i64() {
            Some(i) => Ok(Json::from(i)),
            None => Err(format!("value is not a valid integer, got {value}")),
        },
        FieldKind::Bool => match value {
            Json::Bool(b) => Ok(Json::Bool(*b)),
            other => Err(format!(
                "value could not be parsed to a boolean, got {}",
                type_name(other)
            )),
        },
        FieldKind::Uuid => match value.as_str().map(|s| uuid::Uuid::parse_str(s.trim())) {
            Some(Ok(u)) => Ok(Json::String(u.to_string())),
            _ => Err("value is not a valid uuid".into()),
        },
        FieldKind::Label { .. } => Ok(Json::Null),
        FieldKind::Choice { options } => match value.as_str().map(str::trim) {
            Some(v) if options.iter().any(|o| o == v) => Ok(Json::String(v.to_owned())),
            _ => Err(format!("must be one of {}", options.join(", "))),
        },
    }
}

/// A prefilled text as the field's type holds it.
fn typed(kind: &FieldKind, value: String) -> Json {
    match kind {
        FieldKind::Int => value.parse::<i64>().map_or(Json::String(value), Json::from),
        FieldKind::Bool => value
            .parse::<bool>()
            .map_or(Json::String(value), Json::Bool),
        _ => Json::String(value),
    }
}

impl Form {
    /// The definition as a process records it.
    pub fn to_proto(&self) -> v1::FormDef {
        v1::FormDef {
            fields: self
                .fields
                .iter()
                .map(|f| {
                    let mut def = v1::FieldDef {
                        name: f.name.clone(),
                        title: f.title.clone(),
                        required: f.required,
                        prefill: f.prefill.clone().unwrap_or_default(),
                        ..Default::default()
                    };
                    def.r#type = match &f.kind {
                        FieldKind::String { max_length } => {
                            def.max_length = u32::try_from(*max_length).unwrap_or(u32::MAX);
                            "string"
                        }
                        FieldKind::Int => "int",
                        FieldKind::Bool => "bool",
                        FieldKind::Uuid => "uuid",
                        FieldKind::Label { text } => {
                            def.text.clone_from(text);
                            "label"
                        }
                        FieldKind::Choice { options } => {
                            def.options.clone_from(options);
                            "choice"
                        }
                    }
                    .into();
                    def
                })
                .collect(),
        }
    }

    /// Reads a definition a process recorded.
    pub fn from_proto(p: &v1::FormDef) -> Result<Self, String> {
        let mut fields = Vec::new();
        for f in &p.fields {
            let kind = match f.r#type.as_str() {
                "string" => FieldKind::String {
                    max_length: usize::try_from(f.max_length).unwrap_or(DEFAULT_MAX_STRING),
                },
                "int" => FieldKind::Int,
                "bool" => FieldKind::Bool,
                "uuid" => FieldKind::Uuid,
                "label" => FieldKind::Label {
                    text: f.text.clone(),
                },
                "choice" => FieldKind::Choice {
                    options: f.options.clone(),
                },
                other => return Err(format!("field {}: unknown type {other:?}", f.name)),
            };
            fields.push(Field {
                name: f.name.clone(),
                title: f.title.clone(),
                kind,
                required: f.required,
                prefill: (!f.prefill.is_empty()).then(|| f.prefill.clone()),
            });
        }
        Ok(Self { fields })
    }
}

fn type_name(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

/// Fills `{name}` placeholders from `lookup`; unknown names are left as written.
pub fn render(template: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) => {
                let key = &after[..end];
                match lookup(key) {
                    Some(v) => out.push_str(&v),
                    None => {
                        out.push('{');
                        out.push_str(key);
                        out.push('}');
                    }
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form() -> Form {
        Form {
            fields: vec![
                Field {
                    name: "group_name".into(),
                    title: "Group name".into(),
                    kind: FieldKind::String { max_length: 10 },
                    required: true,
                    prefill: None,
                },
                Field {
                    name: "size".into(),
                    title: "Size".into(),
                    kind: FieldKind::Int,
                    required: false,
                    prefill: None,
                },
                Field {
                    name: "sure".into(),
                    title: "".into(),
                    kind: FieldKind::Label {
                        text: "Remove {subscription.description}?".into(),
                    },
                    required: false,
                    prefill: None,
                },
            ],
        }
    }

    fn input(v: Json) -> Map<String, Json> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn accepts_valid_input_and_trims_strings() {
        let out = form()
            .validate(&input(json!({"group_name": " Ops ", "size": 3})))
            .unwrap();
        assert_eq!(Json::Object(out), json!({"group_name": "Ops", "size": 3}));
    }

    #[test]
    fn reports_every_bad_field() {
        let errs = form()
            .validate(&input(json!({"size": 1.5, "colour": "red"})))
            .unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["input.colour", "input.group_name", "input.size"]);
        let errs = form()
            .validate(&input(json!({"group_name": ""})))
            .unwrap_err();
        assert_eq!(errs[0].message, "must not be empty");
        let errs = form()
            .validate(&input(json!({"group_name": "x".repeat(11)})))
            .unwrap_err();
        assert!(errs[0].message.contains("at most 10"));
        let errs = form()
            .validate(&input(json!({"group_name": 5})))
            .unwrap_err();
        assert!(errs[0].message.contains("str type expected"));
    }

    #[test]
    fn schema_fills_labels() {
        let lookup =
            |k: &str| (k == "subscription.description").then(|| "User group Ops".to_owned());
        let schema = form().json_schema("Terminate", &lookup);
        assert_eq!(
            schema["properties"]["sure"]["default"],
            "Remove User group Ops?"
        );
        assert_eq!(schema["required"], json!(["group_name"]));
        assert_eq!(render("{a} and {b", &|_| None), "{a} and {b");
    }
}
