//! Business transactions and the ordered rules that pick a workflow for them (CloudPortal's
//! `transactionWorkflowMap.xml`): a transaction type declares its attributes; a rule names a
//! type, a predicate over the attributes in CEL, and the workflow to start. The first rule that
//! matches wins; when none does, the transaction completes without a workflow.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Map, Value as Json};

use super::ResourceType;

/// A type of business transaction, e.g. `tenantStateChange`.
#[derive(Debug, Clone, PartialEq)]
pub struct TransactionType {
    /// Name, as transactions name it.
    pub name: String,
    /// What it is.
    pub description: String,
    /// Its attributes and their types; a transaction may leave any out.
    pub attributes: BTreeMap<String, ResourceType>,
}

impl TransactionType {
    /// Checks a transaction's attributes: each one declared, of its type.
    pub fn check(&self, attributes: &Map<String, Json>) -> Result<(), Vec<(String, String)>> {
        let errors: Vec<(String, String)> = attributes
            .iter()
            .filter_map(|(name, value)| match self.attributes.get(name) {
                None => Some((
                    name.clone(),
                    format!("{} has no attribute {name}", self.name),
                )),
                Some(ty) if !value.is_null() && !ty.accepts(value) => {
                    Some((name.clone(), format!("must be {}", ty.as_str())))
                }
                Some(_) => None,
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// A rule's condition: a CEL expression over `type` and `attributes`, compiled when the catalog
/// is loaded.
#[derive(Clone)]
pub struct Predicate {
    text: String,
    program: Arc<cel::Program>,
}

impl Predicate {
    /// Compiles `text`; the error names the position of the first problem.
    pub fn compile(text: &str) -> Result<Self, String> {
        let program = cel::Program::compile(text).map_err(|errors| {
            errors
                .errors
                .first()
                .map(|e| {
                    format!(
                        "{} at line {}, column {}",
                        e.msg,
                        e.pos.0.max(1),
                        e.pos.1.max(1)
                    )
                })
                .unwrap_or_else(|| errors.to_string())
        })?;
        Ok(Self {
            text: text.to_owned(),
            program: Arc::new(program),
        })
    }

    /// As written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether a transaction of `kind` with `attributes` satisfies it: `Err` when it cannot be
    /// evaluated on them (an attribute it reads is missing: guard it with `has(...)`) or does
    /// not give a boolean.
    pub fn holds(&self, kind: &str, attributes: &Map<String, Json>) -> Result<bool, String> {
        let mut context = cel::Context::default();
        context.add_variable_from_value("type", kind.to_owned());
        context.add_variable_from_value("attributes", to_cel(&Json::Object(attributes.clone())));
        match self.program.execute(&context) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("gives {other:?}, not true or false")),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl PartialEq for Predicate {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl std::fmt::Debug for Predicate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Predicate({:?})", self.text)
    }
}

/// A JSON value as CEL sees it.
fn to_cel(v: &Json) -> cel::Value {
    match v {
        Json::Null => cel::Value::Null,
        Json::Bool(b) => cel::Value::Bool(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            _ => cel::Value::Float(n.as_f64().unwrap_or_default()),
        },
        Json::String(s) => cel::Value::String(Arc::new(s.clone())),
        Json::Array(items) => cel::Value::List(Arc::new(items.iter().map(to_cel).collect())),
        Json::Object(fields) => {
            let map: HashMap<String, cel::Value> =
                fields.iter().map(|(k, v)| (k.clone(), to_cel(v))).collect();
            cel::Value::from(map)
        }
    }
}

/// One rule: transactions of type `transaction` satisfying `when` start `workflow`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Name, unique in the catalog (the reply says which rule matched).
    pub name: String,
    /// The transaction type it applies to.
    pub transaction: String,
    /// The condition; none: every transaction of the type.
    pub when: Option<Predicate>,
    /// The workflow it starts.
    pub workflow: String,
}

/// How a transaction was matched against the rules.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Matched<'a> {
    /// The first rule that matched, if any.
    pub rule: Option<&'a Rule>,
    /// Rules of the type before it that could not be evaluated on the transaction, with why
    /// (they did not match).
    pub errors: Vec<(String, String)>,
}

/// The first of `rules` that a transaction of `kind` with `attributes` matches.
pub fn first_match<'a>(
    rules: &'a [Rule],
    kind: &str,
    attributes: &Map<String, Json>,
) -> Matched<'a> {
    let mut matched = Matched::default();
    for rule in rules.iter().filter(|r| r.transaction == kind) {
        let holds = match &rule.when {
            None => Ok(true),
            Some(p) => p.holds(kind, attributes),
        };
        match holds {
            Ok(true) => {
                matched.rule = Some(rule);
                break;
            }
            Ok(false) => {}
            Err(why) => matched.errors.push((rule.name.clone(), why)),
        }
    }
    matched
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn a_compile_error_names_the_column_where_it_is() {
        // Columns count from 1: the `)` is the 5th character.
        let e = super::Predicate::compile("1 + )").unwrap_err();
        assert!(e.ends_with("at line 1, column 5"), "{e}");
    }
}
