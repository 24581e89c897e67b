//! `orca.cmd.transaction.submit`: a business transaction, matched against the catalog's rules.

use orca_proto::v1::{self, event::Body};
use serde_json::{Map, Value as Json};

use super::{Checked, Command, Decide, Decision, Loaded, Meta, StartProcess, shallow};
use crate::catalog::Catalog;
use crate::event::Env;
use crate::ids::TransactionId;
use crate::json;
use crate::rejection::{Code, FieldError, Rejection};

/// A business transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct SubmitTransaction {
    /// Its type, as the catalog declares it.
    pub kind: String,
    /// Its attributes.
    pub attributes: Map<String, Json>,
}

impl TryFrom<&v1::SubmitTransaction> for Checked<Command> {
    type Error = Rejection;

    fn try_from(w: &v1::SubmitTransaction) -> Result<Self, Rejection> {
        if w.r#type.trim().is_empty() {
            return Err(Rejection::fields(
                Code::InvalidArgument,
                "type is required",
                vec![FieldError::new("type", "field required")],
            ));
        }
        Ok(Checked {
            command: Command::SubmitTransaction(SubmitTransaction {
                kind: w.r#type.trim().to_owned(),
                attributes: shallow(
                    "attributes",
                    json::opt_struct_to_json(w.attributes.as_ref()),
                )?,
            }),
            meta: Meta::parse(&w.command_id, &w.actor)?,
        })
    }
}

impl Decide for SubmitTransaction {
    /// Decides a transaction: its attributes checked against its type, the rules of its type
    /// tried in order, and the first that matches starts its workflow in the same decision, the
    /// transaction's attributes in the process state under `transaction`. When none matches, the
    /// transaction is recorded as completed without a workflow. A start the workflow refuses (the
    /// engine paused, …) refuses the transaction: nothing is recorded.
    fn decide(
        &self,
        catalog: &Catalog,
        state: &Loaded,
        env: &mut Env<'_>,
    ) -> Result<Decision, Rejection> {
        let ty = catalog.transaction_type(&self.kind).ok_or_else(|| {
            Rejection::fields(
                Code::UnknownTransactionType,
                format!("no transaction type named {:?} in the catalog", self.kind),
                vec![FieldError::new("type", "unknown transaction type")],
            )
        })?;
        ty.check(&self.attributes).map_err(|errors| {
            Rejection::fields(
                Code::InvalidArgument,
                format!("attributes do not fit transaction type {}", ty.name),
                errors
                    .into_iter()
                    .map(|(f, m)| FieldError::new(format!("attributes.{f}"), m))
                    .collect(),
            )
        })?;
        let id = TransactionId((env.new_id)());
        let stream = id.stream();
        let matched = catalog.match_transaction(&ty.name, &self.attributes);
        let errors: Vec<String> = matched
            .errors
            .iter()
            .map(|(rule, why)| format!("{rule}: {why}"))
            .collect();
        let mut events = vec![env.event(
            stream.clone(),
            1,
            Body::TransactionSubmitted(v1::TransactionSubmitted {
                transaction_id: id.to_string(),
                r#type: ty.name.clone(),
                attributes: Some(json::json_to_struct(&self.attributes)),
            }),
        )];
        let Some(rule) = matched.rule else {
            events.push(env.event(
                stream.clone(),
                2,
                Body::TransactionCompleted(v1::TransactionCompleted {
                    reason: "no rule matched".into(),
                    errors,
                }),
            ));
            return Ok(Decision {
                events,
                expected: vec![(stream, 0)],
                transaction: Some((id, String::new())),
                ..Decision::default()
            });
        };
        let mut transaction = Map::new();
        transaction.insert("id".into(), Json::String(id.to_string()));
        transaction.insert("type".into(), Json::String(ty.name.clone()));
        transaction.insert("rule".into(), Json::String(rule.name.clone()));
        transaction.insert("attributes".into(), Json::Object(self.attributes.clone()));
        let start = StartProcess {
            workflow: rule.workflow.clone(),
            product: None,
            customer_id: None,
            subscription_id: None,
            input: Map::new(),
            workflow_version: None,
            context: Map::from_iter([("transaction".to_owned(), Json::Object(transaction))]),
            order: None,
        };
        let mut started = start.decide(
            catalog,
            &Loaded {
                engine: state.engine.clone(),
                ..Loaded::default()
            },
            env,
        )?;
        let process_id = started
            .process
            .as_ref()
            .map(|p| p.id.to_string())
            .unwrap_or_default();
        events.push(env.event(
            stream.clone(),
            2,
            Body::TransactionMatched(v1::TransactionMatched {
                rule: rule.name.clone(),
                workflow: rule.workflow.clone(),
                process_id,
                errors,
            }),
        ));
        events.append(&mut started.events);
        started.events = events;
        started.expected.push((stream, 0));
        started.transaction = Some((id, rule.name.clone()));
        Ok(started)
    }
}
