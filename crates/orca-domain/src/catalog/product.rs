//! Products: their blocks of typed resources and which resources each lifecycle state needs.

use std::collections::BTreeMap;
use std::str::FromStr;

use orca_proto::v1;

use crate::lifecycle::Lifecycle;

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

    /// The catalog and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::String => "string",
            ResourceType::Int => "int",
            ResourceType::Bool => "bool",
            ResourceType::Uuid => "uuid",
        }
    }

    /// Parses a catalog or wire name.
    pub fn parse(s: &str) -> Result<Self, String> {
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
    /// Name, e.g. `UserGroup`; several versions may share it.
    pub name: String,
    /// Version of these rules; a process records the version it runs with.
    pub version: u32,
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

/// The product of a workflow that has none (a tenant workflow): no blocks, no resources.
pub static NO_PRODUCT: Product = Product {
    name: String::new(),
    version: 0,
    product_type: String::new(),
    tag: String::new(),
    description: String::new(),
    status: String::new(),
    blocks: Vec::new(),
    mandatory: BTreeMap::new(),
};

impl Product {
    /// The type of a resource, if the product has it.
    pub fn resource_type(&self, block: &str, resource: &str) -> Option<ResourceType> {
        self.blocks
            .iter()
            .find(|b| b.name == block)
            .and_then(|b| b.resources.get(resource).copied())
    }

    /// The block holding a resource of this name, if any.
    pub fn block_of(&self, resource: &str) -> Option<&BlockDef> {
        self.blocks
            .iter()
            .find(|b| b.resources.contains_key(resource))
    }

    /// The rules as a process records them.
    pub fn to_proto(&self) -> v1::ProductDef {
        v1::ProductDef {
            name: self.name.clone(),
            version: self.version,
            blocks: self
                .blocks
                .iter()
                .map(|b| v1::BlockDef {
                    name: b.name.clone(),
                    resources: b
                        .resources
                        .iter()
                        .map(|(name, ty)| v1::ResourceDef {
                            name: name.clone(),
                            r#type: ty.as_str().into(),
                        })
                        .collect(),
                })
                .collect(),
            mandatory: self
                .mandatory
                .iter()
                .map(|(state, list)| v1::MandatoryDef {
                    lifecycle: state.as_str().into(),
                    resources: list.iter().map(|(b, r)| format!("{b}.{r}")).collect(),
                })
                .collect(),
        }
    }

    /// Reads the rules a process recorded.
    pub fn from_proto(p: &v1::ProductDef) -> Result<Self, String> {
        let mut blocks = Vec::new();
        for b in &p.blocks {
            let mut resources = BTreeMap::new();
            for r in &b.resources {
                resources.insert(r.name.clone(), ResourceType::parse(&r.r#type)?);
            }
            blocks.push(BlockDef {
                name: b.name.clone(),
                resources,
            });
        }
        let mut mandatory = BTreeMap::new();
        for m in &p.mandatory {
            let list = m
                .resources
                .iter()
                .map(|r| {
                    r.split_once('.')
                        .map(|(b, r)| (b.to_owned(), r.to_owned()))
                        .ok_or_else(|| format!("mandatory resource {r:?} is not block.resource"))
                })
                .collect::<Result<_, _>>()?;
            mandatory.insert(Lifecycle::from_str(&m.lifecycle)?, list);
        }
        Ok(Self {
            name: p.name.clone(),
            version: p.version,
            product_type: p.name.clone(),
            tag: String::new(),
            description: String::new(),
            status: String::new(),
            blocks,
            mandatory,
        })
    }
}
