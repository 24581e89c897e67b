//! The catalog: products with their blocks and mandatory resources, step-worker tasks, and
//! workflows with their steps and forms. Declared in TOML (see `catalog/default.toml`) and checked
//! once when loaded, so the engine never meets an unknown step or product.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use orca_proto::v1;
use serde::Deserialize;

use crate::form::{DEFAULT_MAX_STRING, Field, FieldKind, Form};
use crate::lifecycle::Lifecycle;
use crate::status::Target;

/// The catalog orca ships: the workshop's UserGroup product and its workflows.
pub const DEFAULT_CATALOG: &str = include_str!("../catalog/default.toml");

/// A catalog file that cannot be used, with the place of the first problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("catalog: {0}")]
pub struct CatalogError(pub String);

/// Type of a resource value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceType {
    /// Text.
    String,
    /// Whole number.
    Int,
    /// true or false.
    Bool,
    /// UUID text.
    Uuid,
}

impl ResourceType {
    /// Whether `value` is of this type.
    pub fn accepts(self, value: &serde_json::Value) -> bool {
        match self {
            ResourceType::String => value.is_string(),
            ResourceType::Int => value.as_i64().is_some(),
            ResourceType::Bool => value.is_boolean(),
            ResourceType::Uuid => value
                .as_str()
                .is_some_and(|s| uuid::Uuid::parse_str(s).is_ok()),
        }
    }

    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "string" => Ok(ResourceType::String),
            "int" => Ok(ResourceType::Int),
            "bool" => Ok(ResourceType::Bool),
            "uuid" => Ok(ResourceType::Uuid),
            other => Err(format!(
                "unknown resource type {other:?} (string, int, bool, uuid)"
            )),
        }
    }
}

/// A product block: a named group of typed resources.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockDef {
    /// Block name, e.g. `user_group`.
    pub name: String,
    /// Resource name → type.
    pub resources: BTreeMap<String, ResourceType>,
}

/// A catalog product.
#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    /// Unique name, e.g. `UserGroup`.
    pub name: String,
    /// Product type.
    pub product_type: String,
    /// Short tag.
    pub tag: String,
    /// Human description.
    pub description: String,
    /// Catalog status (active, phase out, …).
    pub status: String,
    /// Blocks in order.
    pub blocks: Vec<BlockDef>,
    /// Resources (`block`, `resource`) that must be set to be in a lifecycle state.
    pub mandatory: BTreeMap<Lifecycle, Vec<(String, String)>>,
}

impl Product {
    /// The block and type of a resource.
    pub fn resource_type(&self, block: &str, resource: &str) -> Option<ResourceType> {
        self.blocks
            .iter()
            .find(|b| b.name == block)
            .and_then(|b| b.resources.get(resource).copied())
    }
}

/// A task step run by a step worker.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskDef {
    /// Step name; workers take it from `orca.task.<name>`.
    pub name: String,
    /// What it does.
    pub description: String,
}

/// A step the engine runs itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// Marks the start of every workflow.
    Init,
    /// Creates a subscription in lifecycle `initial` (create workflows).
    CreateSubscription,
    /// Records the process against its subscription, which holds the subscription until it ends.
    StoreProcessSubscription(Target),
    /// Copies form values into resources, sets the description, moves to provisioning.
    InitializeSubscription,
    /// Moves the subscription to a lifecycle state (allowed edge, mandatory resources present).
    SetStatus(Lifecycle),
    /// Marks the subscription out of sync while the OSS/BSS change.
    Unsync,
    /// Marks the subscription in sync again.
    Resync,
    /// Marks the end of every workflow.
    Done,
}

impl Builtin {
    /// Name as written in workflows.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Init => "init",
            Builtin::CreateSubscription => "create_subscription",
            Builtin::StoreProcessSubscription(_) => "store_process_subscription",
            Builtin::InitializeSubscription => "initialize_subscription",
            Builtin::SetStatus(_) => "set_status",
            Builtin::Unsync => "unsync",
            Builtin::Resync => "resync",
            Builtin::Done => "done",
        }
    }

    /// The argument, if the builtin takes one.
    pub fn argument(self) -> Option<&'static str> {
        match self {
            Builtin::StoreProcessSubscription(t) => Some(t.as_str()),
            Builtin::SetStatus(l) => Some(l.as_str()),
            _ => None,
        }
    }

    /// Parses a name and optional argument.
    pub fn parse(name: &str, argument: Option<&str>) -> Result<Option<Self>, String> {
        let need = |what: &str| format!("{name} needs an argument ({what})");
        let b = match name {
            "init" => Builtin::Init,
            "create_subscription" => Builtin::CreateSubscription,
            "store_process_subscription" => Builtin::StoreProcessSubscription(Target::from_str(
                argument.ok_or_else(|| need("a target"))?,
            )?),
            "initialize_subscription" => Builtin::InitializeSubscription,
            "set_status" => Builtin::SetStatus(Lifecycle::from_str(
                argument.ok_or_else(|| need("a lifecycle state"))?,
            )?),
            "unsync" => Builtin::Unsync,
            "resync" => Builtin::Resync,
            "done" => Builtin::Done,
            _ => return Ok(None),
        };
        // initialize_subscription's recorded argument is its description template.
        if b.argument().is_none() && argument.is_some() && b != Builtin::InitializeSubscription {
            return Err(format!("{name} takes no argument"));
        }
        Ok(Some(b))
    }
}

/// How a step runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    /// In the engine.
    Builtin(Builtin),
    /// By a step worker.
    Task,
}

/// One step of a workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepDef {
    /// Step name.
    pub name: String,
    /// How it runs.
    pub kind: StepKind,
}

impl StepDef {
    /// The kind's name on the wire and in views: `builtin` or `task`.
    pub fn kind_name(kind: &StepKind) -> &'static str {
        match kind {
            StepKind::Builtin(_) => "builtin",
            StepKind::Task => "task",
        }
    }

    /// The form recorded in `ProcessStarted`.
    pub fn to_proto(&self) -> v1::StepDef {
        match &self.kind {
            StepKind::Builtin(b) => v1::StepDef {
                name: self.name.clone(),
                kind: "builtin".into(),
                argument: b.argument().unwrap_or_default().into(),
            },
            StepKind::Task => v1::StepDef {
                name: self.name.clone(),
                kind: "task".into(),
                argument: String::new(),
            },
        }
    }

    /// Reads a step recorded in `ProcessStarted`.
    pub fn from_proto(p: &v1::StepDef) -> Result<Self, String> {
        let kind = match p.kind.as_str() {
            "builtin" => {
                let arg = (!p.argument.is_empty()).then_some(p.argument.as_str());
                StepKind::Builtin(
                    Builtin::parse(&p.name, arg)?
                        .ok_or_else(|| format!("unknown builtin step {:?}", p.name))?,
                )
            }
            "task" => StepKind::Task,
            other => return Err(format!("unknown step kind {other:?}")),
        };
        Ok(Self {
            name: p.name.clone(),
            kind,
        })
    }
}

impl fmt::Display for StepDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            StepKind::Builtin(b) => match b.argument() {
                Some(a) => write!(f, "{}({a})", self.name),
                None => f.write_str(&self.name),
            },
            StepKind::Task => write!(f, "{} [task]", self.name),
        }
    }
}

/// A workflow definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Workflow {
    /// Unique name, e.g. `create_user_group`.
    pub name: String,
    /// What it does to a subscription.
    pub target: Target,
    /// Product it applies to.
    pub product: String,
    /// Definition version, recorded by every process that runs it.
    pub version: u32,
    /// Human description; the form's title.
    pub description: String,
    /// Steps in order, from `init` to `done`.
    pub steps: Vec<StepDef>,
    /// Initial input form.
    pub form: Form,
    /// Template for the description set by `initialize_subscription`.
    pub subscription_description: Option<String>,
    /// Lifecycle states the subscription must be in to start (not for create).
    pub usable_when: Vec<Lifecycle>,
}

/// Products, tasks and workflows by name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Catalog {
    /// Products by name.
    pub products: BTreeMap<String, Product>,
    /// Task steps by name.
    pub tasks: BTreeMap<String, TaskDef>,
    /// Workflows by name.
    pub workflows: BTreeMap<String, Workflow>,
}

/// orchestrator-core's default: which lifecycle states a workflow target may start from.
fn default_usable_when(target: Target) -> Vec<Lifecycle> {
    match target {
        Target::Create => vec![],
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
    task: Vec<RawTask>,
    #[serde(default)]
    workflow: Vec<RawWorkflow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProduct {
    name: String,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlock {
    name: String,
    #[serde(default)]
    resources: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    name: String,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkflow {
    name: String,
    target: String,
    product: String,
    #[serde(default = "one")]
    version: u32,
    #[serde(default)]
    description: String,
    steps: Vec<String>,
    #[serde(default)]
    form: Vec<RawField>,
    subscription_description: Option<String>,
    usable_when: Option<Vec<String>>,
}

fn one() -> u32 {
    1
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

impl Catalog {
    /// The default catalog.
    pub fn default_catalog() -> Result<Self, CatalogError> {
        Self::from_toml(DEFAULT_CATALOG)
    }

    /// Parses and checks a catalog file's text.
    pub fn from_toml(text: &str) -> Result<Self, CatalogError> {
        let raw: RawCatalog = toml::from_str(text).map_err(|e| CatalogError(e.to_string()))?;
        let mut catalog = Catalog::default();
        for p in raw.product {
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
                tag: p.tag,
                description: p.description,
                status: p.status,
                blocks,
                mandatory: BTreeMap::new(),
            };
            for (state, refs) in p.mandatory {
                let state = Lifecycle::from_str(&state).map_err(|e| {
                    CatalogError(format!("product {}: mandatory: {e}", product.name))
                })?;
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
            if catalog.products.contains_key(&product.name) {
                return Err(CatalogError(format!(
                    "product {} declared twice",
                    product.name
                )));
            }
            catalog.products.insert(product.name.clone(), product);
        }
        for t in raw.task {
            valid_name("task", &t.name)?;
            if Builtin::parse(&t.name, None).ok().flatten().is_some()
                || matches!(t.name.as_str(), "store_process_subscription" | "set_status")
            {
                return Err(CatalogError(format!(
                    "task {} has a builtin step's name",
                    t.name
                )));
            }
            catalog.tasks.insert(
                t.name.clone(),
                TaskDef {
                    name: t.name,
                    description: t.description,
                },
            );
        }
        for w in raw.workflow {
            let wf = catalog.workflow_from_raw(w)?;
            if catalog.workflows.contains_key(&wf.name) {
                return Err(CatalogError(format!("workflow {} declared twice", wf.name)));
            }
            catalog.workflows.insert(wf.name.clone(), wf);
        }
        Ok(catalog)
    }

    fn workflow_from_raw(&self, w: RawWorkflow) -> Result<Workflow, CatalogError> {
        valid_name("workflow", &w.name)?;
        let err = |msg: String| CatalogError(format!("workflow {}: {msg}", w.name));
        let target = Target::from_str(&w.target).map_err(err)?;
        if !self.products.contains_key(&w.product) {
            return Err(err(format!("unknown product {:?}", w.product)));
        }
        let mut steps = Vec::new();
        for text in &w.steps {
            let (name, arg) = split_step(text).map_err(err)?;
            let kind = match Builtin::parse(name, arg).map_err(err)? {
                Some(b) => StepKind::Builtin(b),
                None if self.tasks.contains_key(name) && arg.is_none() => StepKind::Task,
                None => {
                    return Err(err(format!(
                        "step {text:?} is neither a builtin nor a declared [[task]]"
                    )));
                }
            };
            steps.push(StepDef {
                name: name.to_owned(),
                kind,
            });
        }
        let is =
            |i: usize, b: Builtin| steps.get(i).is_some_and(|s| s.kind == StepKind::Builtin(b));
        if !is(0, Builtin::Init) || !is(steps.len().wrapping_sub(1), Builtin::Done) {
            return Err(err("steps must begin with init and end with done".into()));
        }
        let position = |pred: &dyn Fn(&StepKind) -> bool| steps.iter().position(|s| pred(&s.kind));
        let first_task = position(&|k| *k == StepKind::Task).unwrap_or(steps.len());
        let store =
            position(&|k| matches!(k, StepKind::Builtin(Builtin::StoreProcessSubscription(_))));
        let create = position(&|k| *k == StepKind::Builtin(Builtin::CreateSubscription));
        match target {
            Target::Create => {
                let create = create
                    .ok_or_else(|| err("a create workflow needs create_subscription".into()))?;
                if store.is_some_and(|s| s < create) {
                    return Err(err(
                        "store_process_subscription must follow create_subscription".into(),
                    ));
                }
            }
            _ => {
                if create.is_some() {
                    return Err(err("only create workflows may create_subscription".into()));
                }
                // The lock on the subscription must be taken in the same decision as the start.
                if store.is_none_or(|s| s > first_task) {
                    return Err(err(
                        "store_process_subscription must come before the first task step".into(),
                    ));
                }
            }
        }
        let mut fields = Vec::new();
        for f in w.form {
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
                other => return Err(err(format!("field {}: unknown type {other:?}", f.name))),
            };
            fields.push(Field {
                title: if f.title.is_empty() {
                    f.name.clone()
                } else {
                    f.title
                },
                name: f.name,
                kind,
                required: f.required,
            });
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
            product: w.product,
            version: w.version,
            description: w.description,
            steps,
            form: Form { fields },
            subscription_description: w.subscription_description,
            usable_when,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_catalog_has_the_seed_workflows_exactly() {
        let c = Catalog::default_catalog().unwrap();
        let steps = |w: &str| -> Vec<String> {
            c.workflows[w]
                .steps
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(
            steps("create_user_group"),
            [
                "init",
                "create_subscription",
                "store_process_subscription(create)",
                "initialize_subscription",
                "provision_user_group [task]",
                "set_status(active)",
                "resync",
                "done"
            ]
        );
        assert_eq!(
            steps("terminate_user_group"),
            [
                "init",
                "store_process_subscription(terminate)",
                "unsync",
                "deprovision_user_group [task]",
                "set_status(terminated)",
                "resync",
                "done"
            ]
        );
        let p = &c.products["UserGroup"];
        assert_eq!(
            p.resource_type("user_group", "group_id"),
            Some(ResourceType::Int)
        );
        assert_eq!(p.mandatory[&Lifecycle::Active].len(), 2);
    }

    #[test]
    fn rejects_unknown_steps_and_misplaced_locks() {
        let base = r#"
            [[product]]
            name = "P"
            [[task]]
            name = "t"
        "#;
        let wf = |steps: &str, target: &str| {
            format!(
                "{base}\n[[workflow]]\nname = \"w\"\ntarget = \"{target}\"\nproduct = \"P\"\nsteps = [{steps}]"
            )
        };
        let e = Catalog::from_toml(&wf(r#""init", "nope", "done""#, "create")).unwrap_err();
        assert!(e.0.contains("neither a builtin"), "{e}");
        let e = Catalog::from_toml(&wf(
            r#""init", "t", "store_process_subscription(terminate)", "done""#,
            "terminate",
        ))
        .unwrap_err();
        assert!(e.0.contains("before the first task"), "{e}");
        let e = Catalog::from_toml(&wf(r#""init", "set_status(gone)", "done""#, "terminate"))
            .unwrap_err();
        assert!(e.0.contains("unknown lifecycle"), "{e}");
        let e = Catalog::from_toml(&wf(r#""create_subscription", "done""#, "create")).unwrap_err();
        assert!(e.0.contains("begin with init"), "{e}");
        assert!(Catalog::from_toml(&wf(r#""init", "create_subscription", "store_process_subscription(create)", "t", "done""#, "create")).is_ok());
        assert!(Catalog::from_toml("[[bogus]]").is_err());
    }
}
