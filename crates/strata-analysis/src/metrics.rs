//! The metric registry: metric definitions in JSON or YAML.
//!
//! A registry document is `{"metrics": [METRIC, ...], "bot_detection":
//! {...}}`; see `docs/data-model.md` for the format, the per-unit semantics
//! of each metric type and the bot detection's limits (optional: on, with
//! the defaults of [`strata_model::bots`], when absent). The definitions and their validation are the platform's
//! ([`strata_model`], shared with the control plane); this module reads
//! registry files and reports the model's errors against the document.

use std::ops::Deref;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use strata_model::{
    BotDetection, Direction, EventTypes, Filter, Metric, MetricType, Operators, Predicate, Scalar,
    SubMetric,
};

use crate::error::{Error, Result};

/// A validated set of metric definitions, read from a registry document,
/// with the organisation's bot detection limits.
///
/// Dereferences to the platform's [`strata_model::MetricRegistry`] (its
/// `metrics` and `get`); this type adds reading and validating a document
/// and its `bot_detection`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "Document", into = "Document")]
pub struct MetricRegistry {
    metrics: strata_model::MetricRegistry,
    bot_detection: BotDetection,
}

/// A registry document as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    metrics: Vec<Metric>,
    #[serde(default)]
    bot_detection: BotDetection,
}

impl From<Document> for MetricRegistry {
    fn from(d: Document) -> Self {
        MetricRegistry {
            metrics: strata_model::MetricRegistry { metrics: d.metrics },
            bot_detection: d.bot_detection,
        }
    }
}

impl From<MetricRegistry> for Document {
    fn from(r: MetricRegistry) -> Self {
        Document {
            metrics: r.metrics.metrics,
            bot_detection: r.bot_detection,
        }
    }
}

impl MetricRegistry {
    /// Parses a registry from JSON or YAML text; `name` is used in messages
    /// and its extension (`.yaml`/`.yml`) selects YAML.
    pub fn from_str_named(text: &str, name: &Path) -> Result<Self> {
        let reg: MetricRegistry = parse_document(text, name)?;
        reg.validate(&name.display().to_string())?;
        Ok(reg)
    }

    /// Reads and validates a registry file.
    pub fn from_path(path: &Path) -> Result<Self> {
        let text = read(path)?;
        Self::from_str_named(&text, path)
    }

    /// Checks the definitions; `doc` names the document in messages.
    pub fn validate(&self, doc: &str) -> Result<()> {
        self.metrics
            .validate()
            .and_then(|()| {
                self.bot_detection
                    .validate()
                    .map_err(|e| e.at("bot_detection"))
            })
            .map_err(|e| Error::invalid(doc, e.field(), e.reason()))
    }

    /// The platform's registry.
    pub fn into_inner(self) -> strata_model::MetricRegistry {
        self.metrics
    }

    /// The bot detection limits every analysis with this registry applies.
    pub fn bot_detection(&self) -> &BotDetection {
        &self.bot_detection
    }

    /// The same registry with other bot detection limits (validate the
    /// registry again before use).
    pub fn with_bot_detection(self, bot_detection: BotDetection) -> Self {
        Self {
            bot_detection,
            ..self
        }
    }
}

impl Deref for MetricRegistry {
    type Target = strata_model::MetricRegistry;

    fn deref(&self) -> &Self::Target {
        &self.metrics
    }
}

impl From<strata_model::MetricRegistry> for MetricRegistry {
    /// Wraps a registry as is, with the default bot detection (the
    /// platform stores no limits of its own yet); call
    /// [`MetricRegistry::validate`] before use.
    fn from(reg: strata_model::MetricRegistry) -> Self {
        MetricRegistry {
            metrics: reg,
            bot_detection: BotDetection::default(),
        }
    }
}

pub(crate) fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses JSON or YAML (chosen by the extension of `name`, else by content).
pub(crate) fn parse_document<T: serde::de::DeserializeOwned>(text: &str, name: &Path) -> Result<T> {
    let ext = name
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let yaml = match ext.as_deref() {
        Some("yaml" | "yml") => true,
        Some("json") => false,
        _ => !text.trim_start().starts_with(['{', '[']),
    };
    if yaml {
        serde_norway::from_str(text).map_err(|e| Error::Parse {
            path: name.to_path_buf(),
            location: e
                .location()
                .map(|l| format!("line {} column {}: ", l.line(), l.column()))
                .unwrap_or_default(),
            message: strip_location(&e.to_string()),
        })
    } else {
        serde_json::from_str(text).map_err(|e| Error::Parse {
            path: name.to_path_buf(),
            location: format!("line {} column {}: ", e.line(), e.column()),
            message: strip_location(&e.to_string()),
        })
    }
}

/// Removes a trailing " at line L column C" that the parsers append.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}
