//! The evaluation context: the attributes of one request.

use std::sync::OnceLock;

use serde_json::{Map, Value};

/// The attribute that, when `true`, opts a unit out of experiments.
pub const OPTED_OUT_ATTR: &str = "opted_out";

/// The attributes of one request: unit ids (`user_id`, `device_id`, …),
/// targeting attributes (`country`, `app_version`, …) and `opted_out`.
#[derive(Clone, Debug, Default)]
pub struct Context {
    attrs: Map<String, Value>,
    /// Whether `user_agent` is a known bot's, found on first need: a
    /// request that evaluates several flags with one context checks its
    /// user agent against the bot list once.
    bot: OnceLock<bool>,
}

impl PartialEq for Context {
    fn eq(&self, other: &Self) -> bool {
        self.attrs == other.attrs
    }
}

impl Context {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// A context with `user_id` set.
    pub fn for_user(user_id: impl Into<String>) -> Self {
        let mut ctx = Self::new();
        ctx.insert("user_id", Value::String(user_id.into()));
        ctx
    }

    /// Sets an attribute, replacing any previous value.
    pub fn insert(&mut self, attr: impl Into<String>, value: impl Into<Value>) -> &mut Self {
        self.attrs.insert(attr.into(), value.into());
        self.bot = OnceLock::new();
        self
    }

    /// The cached answer of `f` to whether this context is a known bot.
    pub(crate) fn bot_flag(&self, f: impl FnOnce() -> bool) -> bool {
        *self.bot.get_or_init(f)
    }

    /// The value of an attribute, if present.
    #[inline]
    pub fn get(&self, attr: &str) -> Option<&Value> {
        self.attrs.get(attr)
    }

    /// Whether the unit opted out (`opted_out` is JSON `true`).
    pub fn opted_out(&self) -> bool {
        matches!(self.get(OPTED_OUT_ATTR), Some(Value::Bool(true)))
    }

    /// All attributes.
    pub fn attributes(&self) -> &Map<String, Value> {
        &self.attrs
    }
}

impl From<Map<String, Value>> for Context {
    fn from(attrs: Map<String, Value>) -> Self {
        Self {
            attrs,
            bot: OnceLock::new(),
        }
    }
}

/// Error of building a [`Context`] from a JSON value that is not an object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a context must be a json object, got {found}")]
pub struct NotAnObject {
    /// The JSON type found instead.
    pub found: &'static str,
}

impl TryFrom<Value> for Context {
    type Error = NotAnObject;

    fn try_from(value: Value) -> Result<Self, Self::Error> {
        match value {
            Value::Object(attrs) => Ok(Self::from(attrs)),
            Value::Null => Err(NotAnObject { found: "null" }),
            Value::Bool(_) => Err(NotAnObject { found: "a boolean" }),
            Value::Number(_) => Err(NotAnObject { found: "a number" }),
            Value::String(_) => Err(NotAnObject { found: "a string" }),
            Value::Array(_) => Err(NotAnObject { found: "an array" }),
        }
    }
}
