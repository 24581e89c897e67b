//! The catalog: products with their blocks and mandatory resources, the steps that wait for
//! something outside (tasks, inputs, callbacks), and workflows with their steps and forms.
//! Declared in TOML (see `catalog/default.toml` and `catalog/cloudportal.toml`) and checked once when loaded, so the engine
//! never meets an unknown step or product. Several versions of a product or workflow may stand
//! side by side; a start takes the newest unless it names one, and the process records the
//! definition and product rules it runs with.

mod product;
mod retry;
mod rules;
mod schedule;
mod step;

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use serde::Deserialize;

pub use product::{BlockDef, NO_PRODUCT, Product, ResourceType};
pub use retry::{MAX_ATTEMPTS, RetryPolicy};
pub use rules::{Matched, Predicate, Rule, TransactionType, first_match};
pub use schedule::{ScheduleDef, When};
pub use step::{Builtin, InputDef, StepDef, StepKind};

use crate::form::{DEFAULT_MAX_STRING, Field, FieldKind, Form};
use crate::lifecycle::Lifecycle;
use crate::status::{FailureKind, Target};

/// The catalog orca ships: the workshop's UserGroup product and its workflows, then
/// CloudPortal's business transactions, rules and tenant workflows.
pub const DEFAULT_CATALOG: &str = concat!(
    include_str!("../../catalog/default.toml"),
    "\n",
    include_str!("../../catalog/cloudportal.toml")
);

/// A catalog file that cannot be used, with the place of the first problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("catalog: {0}")]
pub struct CatalogError(pub String);

/// A declared step that waits for something outside the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredStep {
    /// Step name; a task's workers take it from `orca.task.<name>`.
    pub name: String,
    /// Task, input or callback.
    pub kind: StepKind,
    /// What it does.
    pub description: String,
}

/// A workflow definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Workflow {
    /// Name, e.g. `create_user_group`; several versions may share it.
    pub name: String,
    /// What it does to a subscription.
    pub target: Target,
    /// Product it applies to; empty for a tenant workflow, which has none.
    pub product: String,
    /// Version of the product rules its processes run with.
    pub product_version: u32,
    /// Definition version, recorded by every process that runs it.
    pub version: u32,
    /// Human description; the form's title.
    pub description: String,
    /// Steps in order, from `init` to `done`, each in its phase (see [`StepDef::phase`]).
    pub steps: Vec<StepDef>,
    /// The phases' names, by phase (the first is phase 1); empty for a phase left unnamed.
    pub phases: Vec<String>,
    /// Initial input form.
    pub form: Form,
    /// Template for the description set by `initialize_subscription` and `modify_subscription`.
    pub subscription_description: Option<String>,
    /// Lifecycle states the subscription must be in to start (not for create).
    pub usable_when: Vec<Lifecycle>,
}

impl Workflow {
    /// Its steps as a process records them when it starts: each with its phase's name, and the
    /// description template as the argument of the builtins that take it.
    pub fn recorded_steps(&self) -> Vec<orca_proto::v1::StepDef> {
        self.steps
            .iter()
            .map(|s| {
                let mut def = s.to_proto();
                let phase = usize::try_from(s.phase.saturating_sub(1)).unwrap_or(usize::MAX);
                def.phase_name = self.phases.get(phase).cloned().unwrap_or_default();
                if let StepKind::Builtin(b) = s.kind
                    && b.takes_description()
                {
                    def.argument = self.subscription_description.clone().unwrap_or_default();
                }
                def
            })
            .collect()
    }

    /// Whether a start names a subscription: every workflow but a create, and a system workflow
    /// that stores none (housekeeping of orca's own, run without one).
    pub fn on_subscription(&self) -> bool {
        self.target != Target::Create
            && self.steps.iter().any(|s| {
                matches!(
                    s.kind,
                    StepKind::Builtin(Builtin::StoreProcessSubscription(_))
                )
            })
    }
}

/// Products, declared steps and workflows, every version.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Catalog {
    products: BTreeMap<(String, u32), Product>,
    /// Declared steps by name.
    pub steps: BTreeMap<String, DeclaredStep>,
    workflows: BTreeMap<(String, u32), Workflow>,
    schedules: BTreeMap<String, ScheduleDef>,
    transaction_types: BTreeMap<String, TransactionType>,
    /// In the order declared: the first that matches wins.
    rules: Vec<Rule>,
}

/// The entry of `name` at `version`, or the newest of that name when `version` is `None`.
fn versioned<'a, T>(
    map: &'a BTreeMap<(String, u32), T>,
    name: &str,
    version: Option<u32>,
) -> Option<&'a T> {
    match version {
        Some(v) => map.get(&(name.to_owned(), v)),
        None => map
            .range((name.to_owned(), 0)..=(name.to_owned(), u32::MAX))
            .next_back()
            .map(|(_, t)| t),
    }
}

/// orchestrator-core's default: which lifecycle states a workflow target may start from.
fn default_usable_when(target: Target) -> Vec<Lifecycle> {
    match target {
        Target::Create | Target::Tenant => vec![],
        Target::Terminate => vec![Lifecycle::Active, Lifecycle::Provisioning],
        Target::Modify | Target::Validate | Target::System => vec![Lifecycle::Active],
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    #[serde(default)]
    product: Vec<RawProduct>,
    #[serde(default)]
    step: Vec<RawStep>,
    #[serde(default)]
    workflow: Vec<RawWorkflow>,
    #[serde(default)]
    schedule: Vec<RawSchedule>,
    #[serde(default)]
    transaction_type: Vec<RawTransactionType>,
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTransactionType {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    transaction: String,
    when: Option<String>,
    workflow: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    name: String,
    #[serde(default)]
    description: String,
    cron: Option<String>,
    every: Option<String>,
    workflow: String,
    statuses: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProduct {
    name: String,
    #[serde(default = "one")]
    version: u32,
    #[serde(default)]
    product_type: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    description: String,
    #[serde(default = "active")]
    status: String,
    #[serde(default)]
    block: Vec<RawBlock>,
    #[serde(default)]
    mandatory: BTreeMap<String, Vec<String>>,
}

fn active() -> String {
    "active".into()
}

fn task() -> String {
    "task".into()
}

fn one() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlock {
    name: String,
    #[serde(default)]
    resources: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: String,
    #[serde(default = "task")]
    kind: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    approval: bool,
    #[serde(default)]
    form: Vec<RawField>,
    #[serde(flatten)]
    retry: RawRetry,
}

/// A task step's retry policy as written; what is left out takes [`RetryPolicy::default`]'s.
/// Durations are written like `500ms`, `30s` or `5m`; `timeout` and `heartbeat` may be `none`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    max_attempts: Option<u32>,
    initial_backoff: Option<String>,
    backoff_factor: Option<f64>,
    max_backoff: Option<String>,
    non_retryable: Option<Vec<String>>,
    timeout: Option<String>,
    heartbeat: Option<String>,
}

impl RawRetry {
    fn is_empty(&self) -> bool {
        self.max_attempts.is_none()
            && self.initial_backoff.is_none()
            && self.backoff_factor.is_none()
            && self.max_backoff.is_none()
            && self.non_retryable.is_none()
            && self.timeout.is_none()
            && self.heartbeat.is_none()
    }

    /// A duration as written, or `None` for `none`.
    fn optional_duration(field: &str, text: &str) -> Result<Option<std::time::Duration>, String> {
        if text.trim() == "none" {
            Ok(None)
        } else {
            duration(field, text).map(Some)
        }
    }

    fn policy(self) -> Result<RetryPolicy, String> {
        let optional = Self::optional_duration;
        let mut p = RetryPolicy::default();
        if let Some(n) = self.max_attempts {
            p.max_attempts = n;
        }
        if let Some(t) = &self.initial_backoff {
            p.initial_backoff = duration("initial_backoff", t)?;
        }
        if let Some(f) = self.backoff_factor {
            p.backoff_factor = f;
        }
        if let Some(t) = &self.max_backoff {
            p.max_backoff = duration("max_backoff", t)?;
        }
        if let Some(kinds) = &self.non_retryable {
            p.non_retryable = kinds
                .iter()
                .map(|k| match k.trim() {
                    "" => Err("non_retryable: a kind may not be empty".to_owned()),
                    k => FailureKind::parse(k).map_err(|r| format!("non_retryable: {}", r.message)),
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(t) = &self.timeout {
            p.timeout = optional("timeout", t)?;
        }
        if let Some(t) = &self.heartbeat {
            p.heartbeat = optional("heartbeat", t)?;
        }
        p.check()?;
        Ok(p)
    }
}

/// One phase of a workflow as written in its `steps`: a step alone (`"init"`), steps side by
/// side (`["a", "b"]`), or a named phase (`{ phase = "Billing", steps = ["a", "b"] }`).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawPhase {
    One(String),
    Many(Vec<String>),
    Named(RawNamedPhase),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNamedPhase {
    phase: String,
    steps: Vec<String>,
}

/// A duration as written: `500ms`, `30s`, `5m`, `2d`.
fn duration(field: &str, text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{field} {text:?}: {e} (write e.g. 500ms, 30s, 5m)"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkflow {
    name: String,
    target: String,
    product: Option<String>,
    product_version: Option<u32>,
    #[serde(default = "one")]
    version: u32,
    #[serde(default)]
    description: String,
    steps: Vec<RawPhase>,
    #[serde(default)]
    form: Vec<RawField>,
    subscription_description: Option<String>,
    usable_when: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    required: bool,
    max_length: Option<usize>,
    text: Option<String>,
    #[serde(default)]
    options: Vec<String>,
    prefill: Option<String>,
}

fn valid_name(what: &str, name: &str) -> Result<(), CatalogError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(CatalogError(format!(
            "{what} name {name:?} must be 1..=128 characters of A-Z, a-z, 0-9, _ or -"
        )))
    }
}

/// Splits `name(arg)` into name and argument.
fn split_step(text: &str) -> Result<(&str, Option<&str>), String> {
    let text = text.trim();
    match text.split_once('(') {
        Some((name, rest)) => {
            let arg = rest
                .strip_suffix(')')
                .ok_or_else(|| format!("step {text:?} lacks a closing parenthesis"))?;
            Ok((name.trim(), Some(arg.trim())))
        }
        None => Ok((text, None)),
    }
}

fn form_from_raw(
    raw: Vec<RawField>,
    err: &dyn Fn(String) -> CatalogError,
) -> Result<Form, CatalogError> {
    let mut fields = Vec::new();
    for f in raw {
        valid_name("form field", &f.name)?;
        let kind = match f.kind.as_str() {
            "string" => FieldKind::String {
                max_length: f.max_length.unwrap_or(DEFAULT_MAX_STRING),
            },
            "int" => FieldKind::Int,
            "bool" => FieldKind::Bool,
            "uuid" => FieldKind::Uuid,
            "label" => FieldKind::Label {
                text: f
                    .text
                    .clone()
                    .ok_or_else(|| err(format!("label field {} needs text", f.name)))?,
            },
            "choice" if f.options.is_empty() => {
                return Err(err(format!("choice field {} needs options", f.name)));
            }
            "choice" => FieldKind::Choice {
                options: f.options.clone(),
            },
            other => return Err(err(format!("field {}: unknown type {other:?}", f.name))),
        };
        if fields.iter().any(|g: &Field| g.name == f.name) {
            return Err(err(format!("form field {} declared twice", f.name)));
        }
        fields.push(Field {
            title: if f.title.is_empty() {
                f.name.clone()
            } else {
                f.title
            },
            name: f.name,
            kind,
            required: f.required,
            prefill: f.prefill,
        });
    }
    Ok(Form { fields })
}

impl Catalog {
    /// The default catalog.
    pub fn default_catalog() -> Result<Self, CatalogError> {
        Self::from_toml(DEFAULT_CATALOG)
    }

    /// A product at `version`, or its newest.
    pub fn product(&self, name: &str, version: Option<u32>) -> Option<&Product> {
        versioned(&self.products, name, version)
    }

    /// A workflow at `version`, or its newest.
    pub fn workflow(&self, name: &str, version: Option<u32>) -> Option<&Workflow> {
        versioned(&self.workflows, name, version)
    }

    /// Every version of every workflow, by name then version.
    pub fn workflows(&self) -> impl Iterator<Item = &Workflow> {
        self.workflows.values()
    }

    /// The workflow that does `target` to a subscription of `product` (its newest version),
    /// when the catalog has exactly one: what an order item runs when it names none. Otherwise
    /// why not, naming the candidates.
    pub fn workflow_for(&self, product: &str, target: Target) -> Result<&Workflow, String> {
        let names: BTreeSet<&str> = self
            .workflows
            .values()
            .filter(|w| w.product == product && w.target == target)
            .map(|w| w.name.as_str())
            .collect();
        let mut names = names.into_iter();
        match (names.next(), names.next()) {
            (Some(name), None) => self
                .workflow(name, None)
                .ok_or_else(|| format!("no workflow {name}")),
            (None, _) => Err(format!(
                "product {product} has no {} workflow",
                target.as_str()
            )),
            (Some(a), Some(b)) => Err(format!(
                "product {product} has several {} workflows ({a}, {b}, …): name one",
                target.as_str()
            )),
        }
    }

    /// A schedule by name.
    pub fn schedule(&self, name: &str) -> Option<&ScheduleDef> {
        self.schedules.get(name)
    }

    /// Every schedule, by name.
    pub fn schedules(&self) -> impl Iterator<Item = &ScheduleDef> {
        self.schedules.values()
    }

    /// A transaction type by name.
    pub fn transaction_type(&self, name: &str) -> Option<&TransactionType> {
        self.transaction_types.get(name)
    }

    /// Every transaction type, by name.
    pub fn transaction_types(&self) -> impl Iterator<Item = &TransactionType> {
        self.transaction_types.values()
    }

    /// The rules, in the order they are tried.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The first rule a transaction of `kind` with `attributes` matches.
    pub fn match_transaction(
        &self,
        kind: &str,
        attributes: &serde_json::Map<String, serde_json::Value>,
    ) -> Matched<'_> {
        first_match(&self.rules, kind, attributes)
    }

    /// Every version of every product, by name then version.
    pub fn products(&self) -> impl Iterator<Item = &Product> {
        self.products.values()
    }

    /// Parses and checks a catalog file's text.
    pub fn from_toml(text: &str) -> Result<Self, CatalogError> {
        let raw: RawCatalog = toml::from_str(text).map_err(|e| CatalogError(e.to_string()))?;
        let mut catalog = Catalog::default();
        for p in raw.product {
            let product = Self::product_from_raw(p)?;
            let key = (product.name.clone(), product.version);
            if catalog.products.contains_key(&key) {
                return Err(CatalogError(format!(
                    "product {} version {} declared twice",
                    product.name, product.version
                )));
            }
            catalog.products.insert(key, product);
        }
        for mut s in raw.step {
            valid_name("step", &s.name)?;
            let err = |msg: String| CatalogError(format!("step {}: {msg}", s.name));
            if Builtin::reserved(&s.name) {
                return Err(err("has a builtin step's name".into()));
            }
            // An input or callback step takes only a `timeout`: how long it waits.
            let wait_timeout = if s.kind == "task" {
                None
            } else {
                let timeout = s.retry.timeout.take();
                if !s.retry.is_empty() {
                    return Err(err(
                        "only task steps take a retry policy (max_attempts, initial_backoff, backoff_factor, max_backoff, non_retryable, heartbeat); an input or callback step takes a timeout"
                            .into(),
                    ));
                }
                let timeout = match timeout {
                    Some(t) => RawRetry::optional_duration("timeout", &t).map_err(err)?,
                    None => None,
                };
                if timeout.is_some_and(|t| t.is_zero() || t.subsec_nanos() % 1_000_000 != 0) {
                    return Err(err(
                        "timeout must be whole milliseconds longer than 0 (leave it out for none)"
                            .into(),
                    ));
                }
                timeout
            };
            let kind = match s.kind.as_str() {
                "task" => StepKind::Task(Some(s.retry.policy().map_err(err)?)),
                "callback" => StepKind::Callback {
                    timeout: wait_timeout,
                },
                "input" if s.approval => {
                    if !s.form.is_empty() {
                        return Err(err(
                            "an approval's form is decision and reason; declare no form".into(),
                        ));
                    }
                    StepKind::Input(InputDef::approval(wait_timeout))
                }
                "input" => {
                    if s.form.iter().any(|f| f.prefill.is_some()) {
                        return Err(err("an input step's form fields take no prefill".into()));
                    }
                    StepKind::Input(InputDef {
                        form: form_from_raw(s.form, &err)?,
                        approval: false,
                        timeout: wait_timeout,
                    })
                }
                other => {
                    return Err(err(format!(
                        "unknown kind {other:?} (task, input, callback)"
                    )));
                }
            };
            if !matches!(kind, StepKind::Input(_)) && (s.approval) {
                return Err(err("only input steps are approvals".into()));
            }
            if catalog.steps.contains_key(&s.name) {
                return Err(err("declared twice".into()));
            }
            catalog.steps.insert(
                s.name.clone(),
                DeclaredStep {
                    name: s.name,
                    kind,
                    description: s.description,
                },
            );
        }
        for w in raw.workflow {
            let wf = catalog.workflow_from_raw(w)?;
            let key = (wf.name.clone(), wf.version);
            if catalog.workflows.contains_key(&key) {
                return Err(CatalogError(format!(
                    "workflow {} version {} declared twice",
                    wf.name, wf.version
                )));
            }
            catalog.workflows.insert(key, wf);
        }
        for t in raw.transaction_type {
            valid_name("transaction type", &t.name)?;
            let mut attributes = BTreeMap::new();
            for (name, ty) in t.attributes {
                valid_name("attribute", &name)?;
                let ty = ResourceType::parse(&ty).map_err(|e| {
                    CatalogError(format!("transaction type {}: {name}: {e}", t.name))
                })?;
                attributes.insert(name, ty);
            }
            if catalog.transaction_types.contains_key(&t.name) {
                return Err(CatalogError(format!(
                    "transaction type {} declared twice",
                    t.name
                )));
            }
            catalog.transaction_types.insert(
                t.name.clone(),
                TransactionType {
                    name: t.name,
                    description: t.description,
                    attributes,
                },
            );
        }
        for r in raw.rule {
            let rule = catalog.rule_from_raw(r)?;
            if catalog.rules.iter().any(|o| o.name == rule.name) {
                return Err(CatalogError(format!("rule {} declared twice", rule.name)));
            }
            catalog.rules.push(rule);
        }
        for s in raw.schedule {
            let def = catalog.schedule_from_raw(s)?;
            if catalog.schedules.contains_key(&def.name) {
                return Err(CatalogError(format!(
                    "schedule {} declared twice",
                    def.name
                )));
            }
            catalog.schedules.insert(def.name.clone(), def);
        }
        Ok(catalog)
    }

    fn rule_from_raw(&self, r: RawRule) -> Result<Rule, CatalogError> {
        valid_name("rule", &r.name)?;
        let err = |msg: String| CatalogError(format!("rule {}: {msg}", r.name));
        if !self.transaction_types.contains_key(&r.transaction) {
            return Err(err(format!(
                "unknown transaction type {:?} (declare it as [[transaction_type]])",
                r.transaction
            )));
        }
        let wf = self
            .workflow(&r.workflow, None)
            .ok_or_else(|| err(format!("unknown workflow {:?}", r.workflow)))?;
        if wf.target == Target::Create || wf.on_subscription() {
            return Err(err(format!(
                "workflow {} needs a subscription; a transaction starts workflows that need none",
                wf.name
            )));
        }
        let when = match &r.when {
            Some(text) => Some(Predicate::compile(text).map_err(|e| err(format!("when: {e}")))?),
            None => None,
        };
        Ok(Rule {
            name: r.name,
            transaction: r.transaction,
            when,
            workflow: wf.name.clone(),
        })
    }

    fn schedule_from_raw(&self, s: RawSchedule) -> Result<ScheduleDef, CatalogError> {
        valid_name("schedule", &s.name)?;
        let err = |msg: String| CatalogError(format!("schedule {}: {msg}", s.name));
        let when = match (&s.cron, &s.every) {
            (Some(c), None) => When::cron(c).map_err(err)?,
            (None, Some(e)) => {
                let d = humantime::parse_duration(e.trim())
                    .map_err(|x| err(format!("every {e:?}: {x} (write e.g. 30s, 1h)")))?;
                if d < std::time::Duration::from_secs(1) {
                    return Err(err("every must be at least 1s".into()));
                }
                When::Every(d)
            }
            _ => return Err(err("give either cron or every".into())),
        };
        let wf = self
            .workflow(&s.workflow, None)
            .ok_or_else(|| err(format!("unknown workflow {:?}", s.workflow)))?;
        if wf.target == Target::Create {
            return Err(err(
                "a schedule runs a workflow on existing subscriptions; a create workflow has none"
                    .into(),
            ));
        }
        if wf.form.fields.iter().any(|f| {
            f.required && f.prefill.is_none() && !matches!(f.kind, FieldKind::Label { .. })
        }) {
            return Err(err(format!(
                "workflow {} asks for input that nobody would give a scheduled run",
                wf.name
            )));
        }
        let statuses = match s.statuses {
            Some(_) if !wf.on_subscription() => {
                return Err(err(format!(
                    "workflow {} runs without a subscription; a schedule of it takes no statuses",
                    wf.name
                )));
            }
            Some(list) => list
                .iter()
                .map(|t| Lifecycle::from_str(t).map_err(err))
                .collect::<Result<Vec<_>, _>>()?,
            None if wf.on_subscription() => wf.usable_when.clone(),
            None => Vec::new(),
        };
        Ok(ScheduleDef {
            name: s.name,
            description: s.description,
            when,
            workflow: wf.name.clone(),
            product: wf.product.clone(),
            statuses,
            on_subscriptions: wf.on_subscription(),
        })
    }

    fn product_from_raw(p: RawProduct) -> Result<Product, CatalogError> {
        valid_name("product", &p.name)?;
        let mut blocks = Vec::new();
        for b in p.block {
            valid_name("block", &b.name)?;
            let mut resources = BTreeMap::new();
            for (name, ty) in b.resources {
                valid_name("resource", &name)?;
                let ty = ResourceType::parse(&ty).map_err(|e| {
                    CatalogError(format!("product {}: block {}: {name}: {e}", p.name, b.name))
                })?;
                resources.insert(name, ty);
            }
            blocks.push(BlockDef {
                name: b.name,
                resources,
            });
        }
        let mut product = Product {
            product_type: if p.product_type.is_empty() {
                p.name.clone()
            } else {
                p.product_type
            },
            name: p.name,
            version: p.version,
            tag: p.tag,
            description: p.description,
            status: p.status,
            blocks,
            mandatory: BTreeMap::new(),
        };
        for (state, refs) in p.mandatory {
            let state = Lifecycle::from_str(&state)
                .map_err(|e| CatalogError(format!("product {}: mandatory: {e}", product.name)))?;
            let mut list = Vec::new();
            for r in refs {
                let (block, resource) = r.split_once('.').ok_or_else(|| {
                    CatalogError(format!(
                        "product {}: mandatory resource {r:?} must be written block.resource",
                        product.name
                    ))
                })?;
                if product.resource_type(block, resource).is_none() {
                    return Err(CatalogError(format!(
                        "product {}: mandatory resource {r:?} is not declared in a block",
                        product.name
                    )));
                }
                list.push((block.to_owned(), resource.to_owned()));
            }
            product.mandatory.insert(state, list);
        }
        Ok(product)
    }

    fn workflow_from_raw(&self, w: RawWorkflow) -> Result<Workflow, CatalogError> {
        valid_name("workflow", &w.name)?;
        let err = |msg: String| CatalogError(format!("workflow {} v{}: {msg}", w.name, w.version));
        let target = Target::from_str(&w.target).map_err(err)?;
        let product = match (&w.product, target) {
            (Some(_), Target::Tenant) => {
                return Err(err(
                    "a tenant workflow acts on a tenant; it names no product".into(),
                ));
            }
            (None, Target::Tenant) => None,
            (None, _) => {
                return Err(err(format!(
                    "a {target} workflow needs a product (only tenant workflows go without)"
                )));
            }
            (Some(name), _) => Some(self.product(name, w.product_version).ok_or_else(|| {
                err(match w.product_version {
                    Some(v) => format!("unknown product {name:?} version {v}"),
                    None => format!("unknown product {name:?}"),
                })
            })?),
        };
        let mut steps = Vec::new();
        let mut phases = Vec::new();
        for raw in &w.steps {
            let (phase_name, texts) = match raw {
                RawPhase::One(text) => (String::new(), std::slice::from_ref(text)),
                RawPhase::Many(texts) => (String::new(), texts.as_slice()),
                RawPhase::Named(p) => (p.phase.trim().to_owned(), p.steps.as_slice()),
            };
            phases.push(phase_name);
            let phase = u32::try_from(phases.len()).unwrap_or(u32::MAX);
            if texts.is_empty() {
                return Err(err(format!("phase {phase} has no step")));
            }
            for text in texts {
                let (name, arg) = split_step(text).map_err(err)?;
                let kind = match Builtin::parse(name, arg).map_err(err)? {
                    Some(_) if texts.len() > 1 => {
                        return Err(err(format!(
                            "builtin step {name} runs alone: it cannot share phase {phase}"
                        )));
                    }
                    Some(b) => StepKind::Builtin(b),
                    None => match self.steps.get(name) {
                        Some(declared) if arg.is_none() => declared.kind.clone(),
                        _ => {
                            return Err(err(format!(
                                "step {text:?} is neither a builtin nor a declared [[step]]"
                            )));
                        }
                    },
                };
                if steps
                    .iter()
                    .any(|s: &StepDef| s.phase == phase && s.name == name)
                {
                    return Err(err(format!("step {name} appears twice in phase {phase}")));
                }
                steps.push(StepDef {
                    name: name.to_owned(),
                    kind,
                    phase,
                });
            }
        }
        let is =
            |i: usize, b: Builtin| steps.get(i).is_some_and(|s| s.kind == StepKind::Builtin(b));
        if !is(0, Builtin::Init) || !is(steps.len().wrapping_sub(1), Builtin::Done) {
            return Err(err("steps must begin with init and end with done".into()));
        }
        let position = |pred: &dyn Fn(&StepKind) -> bool| steps.iter().position(|s| pred(&s.kind));
        let first_wait = position(&|k| !matches!(k, StepKind::Builtin(_))).unwrap_or(steps.len());
        let store =
            position(&|k| matches!(k, StepKind::Builtin(Builtin::StoreProcessSubscription(_))));
        let create = position(&|k| *k == StepKind::Builtin(Builtin::CreateSubscription));
        let modify = position(&|k| *k == StepKind::Builtin(Builtin::ModifySubscription));
        match target {
            Target::Create => {
                let create = create
                    .ok_or_else(|| err("a create workflow needs create_subscription".into()))?;
                if store.is_some_and(|s| s < create) {
                    return Err(err(
                        "store_process_subscription must follow create_subscription".into(),
                    ));
                }
                // The new subscription's id is made when the workflow starts: its creation and
                // its lock belong to the start's decision.
                if create > first_wait || store.is_some_and(|s| s > first_wait) {
                    return Err(err(
                        "create_subscription and store_process_subscription must come before the first task, input or callback step"
                            .into(),
                    ));
                }
            }
            Target::Tenant | Target::System if target == Target::Tenant || store.is_none() => {
                // Runs without a subscription: only steps that need none.
                if let Some(s) = steps.iter().find(|s| {
                    matches!(s.kind, StepKind::Builtin(b) if !matches!(b, Builtin::Init | Builtin::Done))
                }) {
                    return Err(err(format!(
                        "a {target} workflow{} runs without a subscription; {} needs one",
                        if target == Target::System {
                            " without store_process_subscription"
                        } else {
                            ""
                        },
                        s.name
                    )));
                }
            }
            _ => {
                if create.is_some() {
                    return Err(err("only create workflows may create_subscription".into()));
                }
                // The lock on the subscription must be taken in the same decision as the start.
                if store.is_none_or(|s| s > first_wait) {
                    return Err(err(
                        "store_process_subscription must come before the first task, input or callback step"
                            .into(),
                    ));
                }
            }
        }
        if modify.is_some() && target != Target::Modify {
            return Err(err("only modify workflows may modify_subscription".into()));
        }
        let form = form_from_raw(w.form, &err)?;
        for f in &form.fields {
            if let Some(p) = &f.prefill
                && !p.starts_with("subscription.")
            {
                return Err(err(format!(
                    "field {}: prefill must name subscription.<field> or subscription.<block>.<resource>",
                    f.name
                )));
            }
        }
        let usable_when = match w.usable_when {
            Some(list) => list
                .iter()
                .map(|s| Lifecycle::from_str(s).map_err(err))
                .collect::<Result<_, _>>()?,
            None => default_usable_when(target),
        };
        Ok(Workflow {
            name: w.name,
            target,
            product: product.map(|p| p.name.clone()).unwrap_or_default(),
            product_version: product.map_or(0, |p| p.version),
            version: w.version,
            description: w.description,
            steps,
            phases,
            form,
            subscription_description: w.subscription_description,
            usable_when,
        })
    }
}

#[cfg(test)]
mod tests;
