//! Targeting rules: a tree of `all` / `any` / `not` over attribute conditions.
//!
//! Rules are compiled once, when the snapshot is loaded, so that evaluation
//! never parses JSON, never allocates and never fails: every condition is a
//! total function of the context. [`validate`] runs the same compiler on a
//! lone rule tree, for those who edit rules outside a snapshot. The semantics (see `docs/assignment-spec.md`):
//!
//! - a condition on a missing (or null) attribute is false, except `exists`
//!   (false) and anything under `not` (which negates that false);
//! - numbers compare as numbers, strings as strings (byte order), booleans only
//!   with `eq`/`neq`/`in`/`not_in`; a type mismatch makes the condition false;
//! - `semver_*` parse the attribute as a version; an unparseable one is false.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::Context;

/// Rules deeper than this are rejected: they are surely a mistake and would
/// otherwise risk the stack.
pub const MAX_DEPTH: usize = 32;

/// A compiled targeting rule.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Rule {
    All(Vec<Rule>),
    Any(Vec<Rule>),
    Not(Box<Rule>),
    Cond { attr: String, op: Op },
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Scalar {
    Str(String),
    Num(f64),
    Bool(bool),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Cmp {
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Cmp {
    fn holds(self, ord: Ordering) -> bool {
        match self {
            Cmp::Gt => ord == Ordering::Greater,
            Cmp::Gte => ord != Ordering::Less,
            Cmp::Lt => ord == Ordering::Less,
            Cmp::Lte => ord != Ordering::Greater,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Op {
    Eq(Scalar),
    Neq(Scalar),
    In(Vec<Scalar>),
    NotIn(Vec<Scalar>),
    Compare(Cmp, Scalar),
    Contains(Scalar),
    StartsWith(String),
    Exists,
    Semver(Cmp, Version),
}

/// Why a targeting rule tree is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetingError {
    /// A rule of the tree is malformed: not an object, an unknown field or
    /// op, a missing or ill-typed value, a combinator that is not alone or
    /// not over an array, or nesting deeper than [`MAX_DEPTH`].
    #[error("targeting{path}: {reason}")]
    Malformed {
        /// Where in the tree, from the root: `""` for the root itself,
        /// `.all[2].any[0]` for a rule below it, `.not` for a negated rule.
        path: String,
        /// What is wrong there.
        reason: String,
    },
}

impl TargetingError {
    /// Where in the tree the error is, e.g. `.all[2].any[0]` (`""` for the root).
    pub fn path(&self) -> &str {
        match self {
            TargetingError::Malformed { path, .. } => path,
        }
    }

    /// What is wrong there.
    pub fn reason(&self) -> &str {
        match self {
            TargetingError::Malformed { reason, .. } => reason,
        }
    }
}

fn err(path: &str, reason: impl Into<String>) -> TargetingError {
    TargetingError::Malformed {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Checks a targeting rule tree as it would appear in an experiment's
/// `targeting` field: `null` (everyone) is valid, and anything else must be
/// a well-formed tree of `all` / `any` / `not` over conditions (section 4 of
/// `docs/assignment-spec.md`).
///
/// This runs the very compiler that [`crate::CompiledSnapshot::compile`]
/// applies to each experiment, so a rule accepted here never makes a snapshot
/// invalid, and a rejected one is reported with the same path and reason
/// (there as [`crate::SnapshotError::InvalidTargeting`]). Editors of rules,
/// such as the control plane, validate with it instead of compiling a
/// snapshot around the rule.
pub fn validate(rule: &Value) -> Result<(), TargetingError> {
    compile(rule).map(drop)
}

/// Compiles a targeting document; `null` means "everyone" and yields `None`.
pub(crate) fn compile(value: &Value) -> Result<Option<Rule>, TargetingError> {
    if value.is_null() {
        return Ok(None);
    }
    compile_at(value, "", 0).map(Some)
}

fn compile_at(value: &Value, path: &str, depth: usize) -> Result<Rule, TargetingError> {
    if depth >= MAX_DEPTH {
        return Err(err(
            path,
            format!("rules nest deeper than {MAX_DEPTH} levels"),
        ));
    }
    let Value::Object(obj) = value else {
        return Err(err(path, "a rule must be an object"));
    };
    for combinator in ["all", "any", "not"] {
        if let Some(inner) = obj.get(combinator) {
            if obj.len() != 1 {
                return Err(err(
                    path,
                    format!("a {combinator:?} rule must have no other fields"),
                ));
            }
            let here = format!("{path}.{combinator}");
            return match (combinator, inner) {
                ("not", inner) => Ok(Rule::Not(Box::new(compile_at(inner, &here, depth + 1)?))),
                (_, Value::Array(items)) => {
                    let rules = items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| compile_at(item, &format!("{here}[{i}]"), depth + 1))
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(if combinator == "all" {
                        Rule::All(rules)
                    } else {
                        Rule::Any(rules)
                    })
                }
                _ => Err(err(&here, "must be an array of rules")),
            };
        }
    }
    compile_condition(obj, path)
}

fn compile_condition(obj: &Map<String, Value>, path: &str) -> Result<Rule, TargetingError> {
    for field in obj.keys() {
        if !matches!(field.as_str(), "attr" | "op" | "value" | "values") {
            return Err(err(
                path,
                format!("unknown field {field:?} (a condition has attr, op, value or values)"),
            ));
        }
    }
    let attr = match obj.get("attr") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err(err(path, "attr must be a non-empty string")),
        None => return Err(err(path, "missing attr (or all/any/not)")),
    };
    let op_name = match obj.get("op") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(err(path, "op must be a string")),
        None => return Err(err(path, "missing op")),
    };
    let value = obj.get("value");
    let values = obj.get("values");
    let single = |allow: &dyn Fn(&Scalar) -> bool| -> Result<Scalar, TargetingError> {
        if values.is_some() {
            return Err(err(path, format!("op {op_name:?} takes value, not values")));
        }
        let Some(v) = value else {
            return Err(err(path, format!("op {op_name:?} needs a value")));
        };
        match scalar(v) {
            Some(s) if allow(&s) => Ok(s),
            _ => Err(err(path, format!("op {op_name:?}: unsupported value {v}"))),
        }
    };
    let list = || -> Result<Vec<Scalar>, TargetingError> {
        if value.is_some() {
            return Err(err(path, format!("op {op_name:?} takes values, not value")));
        }
        let Some(Value::Array(items)) = values else {
            return Err(err(
                path,
                format!("op {op_name:?} needs values: a non-empty array"),
            ));
        };
        let out: Vec<Scalar> = items
            .iter()
            .map(|v| scalar(v).ok_or_else(|| err(path, format!("values: unsupported value {v}"))))
            .collect::<Result<_, _>>()?;
        let Some(first) = out.first() else {
            return Err(err(path, "values must not be empty"));
        };
        if out
            .iter()
            .any(|s| std::mem::discriminant(s) != std::mem::discriminant(first))
        {
            return Err(err(path, "values must all have the same type"));
        }
        Ok(out)
    };
    let any = |_: &Scalar| true;
    let ordered = |s: &Scalar| !matches!(s, Scalar::Bool(_));
    let is_str = |s: &Scalar| matches!(s, Scalar::Str(_));
    let string = || -> Result<String, TargetingError> {
        match single(&is_str)? {
            Scalar::Str(s) => Ok(s),
            _ => Err(err(path, format!("op {op_name:?} needs a string value"))),
        }
    };
    let semver = |cmp: Cmp| -> Result<Op, TargetingError> {
        let text = string()?;
        let version = Version::parse(&text)
            .ok_or_else(|| err(path, format!("op {op_name:?}: {text:?} is not a version")))?;
        Ok(Op::Semver(cmp, version))
    };
    let op = match op_name {
        "eq" => Op::Eq(single(&any)?),
        "neq" => Op::Neq(single(&any)?),
        "in" => Op::In(list()?),
        "not_in" => Op::NotIn(list()?),
        "gt" => Op::Compare(Cmp::Gt, single(&ordered)?),
        "gte" => Op::Compare(Cmp::Gte, single(&ordered)?),
        "lt" => Op::Compare(Cmp::Lt, single(&ordered)?),
        "lte" => Op::Compare(Cmp::Lte, single(&ordered)?),
        "contains" => Op::Contains(single(&any)?),
        "starts_with" => Op::StartsWith(string()?),
        "exists" => {
            if value.is_some() || values.is_some() {
                return Err(err(path, "op \"exists\" takes no value"));
            }
            Op::Exists
        }
        "semver_gt" => semver(Cmp::Gt)?,
        "semver_gte" => semver(Cmp::Gte)?,
        "semver_lt" => semver(Cmp::Lt)?,
        "semver_lte" => semver(Cmp::Lte)?,
        other => return Err(err(path, format!("unknown op {other:?}"))),
    };
    Ok(Rule::Cond { attr, op })
}

fn scalar(v: &Value) -> Option<Scalar> {
    match v {
        Value::String(s) => Some(Scalar::Str(s.clone())),
        Value::Number(n) => n.as_f64().filter(|f| f.is_finite()).map(Scalar::Num),
        Value::Bool(b) => Some(Scalar::Bool(*b)),
        _ => None,
    }
}

/// Equality of an attribute with a scalar; a type mismatch is `None`.
fn scalar_eq(attr: &Value, s: &Scalar) -> Option<bool> {
    match (attr, s) {
        (Value::String(a), Scalar::Str(b)) => Some(a == b),
        (Value::Number(a), Scalar::Num(b)) => a.as_f64().map(|a| a == *b),
        (Value::Bool(a), Scalar::Bool(b)) => Some(a == b),
        _ => None,
    }
}

fn scalar_cmp(attr: &Value, s: &Scalar) -> Option<Ordering> {
    match (attr, s) {
        (Value::String(a), Scalar::Str(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
        (Value::Number(a), Scalar::Num(b)) => a.as_f64().and_then(|a| a.partial_cmp(b)),
        _ => None,
    }
}

impl Rule {
    /// Whether the context satisfies the rule. Total: never fails or panics.
    pub(crate) fn matches(&self, ctx: &Context) -> bool {
        match self {
            Rule::All(rules) => rules.iter().all(|r| r.matches(ctx)),
            Rule::Any(rules) => rules.iter().any(|r| r.matches(ctx)),
            Rule::Not(rule) => !rule.matches(ctx),
            Rule::Cond { attr, op } => match ctx.get(attr) {
                None | Some(Value::Null) => false,
                Some(value) => op.holds(value),
            },
        }
    }
}

/// The part of a targeting rule that a context fails, as
/// [`crate::CompiledSnapshot::explain`] reports it.
///
/// The evaluator's verdict comes first: a failure is only described for a
/// rule that does not match, and the description follows that same verdict
/// down the tree (the first failing rule of an `all`; an `any` none of whose
/// rules holds; a `not` whose rule holds; a condition that is false).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TargetingFailure {
    /// Where the failing rule sits in the tree, in the notation of
    /// [`validate`]: `""` for the whole rule, `.all[1]` for the second rule
    /// of a top-level `all`.
    pub path: String,
    /// The failing rule in words, e.g. `country in ["US", "CA"]` or
    /// `not (beta exists)`.
    pub rule: String,
    /// The attributes the failing rule reads, with their values in the
    /// context; `null` for an attribute that is missing or null.
    pub values: BTreeMap<String, Value>,
}

impl TargetingFailure {
    /// A sentence for people, e.g. `country in ["US", "CA"], but country is "FR"`.
    pub fn message(&self) -> String {
        let mut text = self.rule.clone();
        if !self.path.is_empty() {
            text = format!("{text} (rule {})", self.path);
        }
        for (i, (attr, value)) in self.values.iter().enumerate() {
            text.push_str(if i == 0 { ", but " } else { " and " });
            match value {
                Value::Null => text.push_str(&format!("{attr} is not set")),
                v => text.push_str(&format!("{attr} is {v}")),
            }
        }
        text
    }
}

impl Rule {
    /// Why the context fails the rule, or `None` when it matches.
    pub(crate) fn failure(&self, ctx: &Context) -> Option<TargetingFailure> {
        if self.matches(ctx) {
            return None;
        }
        Some(self.failing_part(ctx, String::new()))
    }

    /// Describes the part of `self`, which does not match `ctx`, that fails.
    fn failing_part(&self, ctx: &Context, path: String) -> TargetingFailure {
        if let Rule::All(rules) = self {
            if let Some((i, rule)) = rules.iter().enumerate().find(|(_, r)| !r.matches(ctx)) {
                return rule.failing_part(ctx, format!("{path}.all[{i}]"));
            }
        }
        let mut values = BTreeMap::new();
        self.read_attributes(ctx, &mut values);
        TargetingFailure {
            path,
            rule: self.to_string(),
            values,
        }
    }

    fn read_attributes(&self, ctx: &Context, out: &mut BTreeMap<String, Value>) {
        match self {
            Rule::All(rules) | Rule::Any(rules) => {
                for rule in rules {
                    rule.read_attributes(ctx, out);
                }
            }
            Rule::Not(rule) => rule.read_attributes(ctx, out),
            Rule::Cond { attr, .. } => {
                let value = ctx.get(attr).cloned().unwrap_or(Value::Null);
                out.insert(attr.clone(), value);
            }
        }
    }
}

/// Rules in words, with the ops of the JSON form: `country in ["US", "CA"]`,
/// `all (a, b)`, `any (a, b)`, `not (a)`.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, name: &str, rules: &[Rule]| {
            write!(f, "{name} (")?;
            for (i, rule) in rules.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{rule}")?;
            }
            f.write_str(")")
        };
        match self {
            Rule::All(rules) => list(f, "all", rules),
            Rule::Any(rules) => list(f, "any", rules),
            Rule::Not(rule) => write!(f, "not ({rule})"),
            Rule::Cond { attr, op } => write!(f, "{attr} {op}"),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cmp = |c: &Cmp| match c {
            Cmp::Gt => "gt",
            Cmp::Gte => "gte",
            Cmp::Lt => "lt",
            Cmp::Lte => "lte",
        };
        let list = |f: &mut fmt::Formatter<'_>, name: &str, items: &[Scalar]| {
            write!(f, "{name} [")?;
            for (i, s) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{s}")?;
            }
            f.write_str("]")
        };
        match self {
            Op::Eq(s) => write!(f, "eq {s}"),
            Op::Neq(s) => write!(f, "neq {s}"),
            Op::In(items) => list(f, "in", items),
            Op::NotIn(items) => list(f, "not_in", items),
            Op::Compare(c, s) => write!(f, "{} {s}", cmp(c)),
            Op::Contains(s) => write!(f, "contains {s}"),
            Op::StartsWith(prefix) => write!(f, "starts_with {}", Value::from(prefix.as_str())),
            Op::Exists => f.write_str("exists"),
            Op::Semver(c, v) => write!(f, "semver_{} \"{v}\"", cmp(c)),
        }
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Str(s) => write!(f, "{}", Value::from(s.as_str())),
            Scalar::Num(n) => write!(f, "{n}"),
            Scalar::Bool(b) => write!(f, "{b}"),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [major, minor, patch] = self.core;
        write!(f, "{major}.{minor}.{patch}")?;
        for (i, id) in self.pre.iter().enumerate() {
            f.write_str(if i == 0 { "-" } else { "." })?;
            match id {
                PreId::Num(n) => write!(f, "{n}")?,
                PreId::Alpha(s) => f.write_str(s)?,
            }
        }
        Ok(())
    }
}

impl Op {
    fn holds(&self, v: &Value) -> bool {
        match self {
            Op::Eq(s) => scalar_eq(v, s) == Some(true),
            Op::Neq(s) => scalar_eq(v, s) == Some(false),
            Op::In(list) => list.iter().any(|s| scalar_eq(v, s) == Some(true)),
            // Lists are homogeneous, so one type check decides a mismatch.
            Op::NotIn(list) => list.iter().all(|s| scalar_eq(v, s) == Some(false)),
            Op::Compare(cmp, s) => scalar_cmp(v, s).is_some_and(|ord| cmp.holds(ord)),
            Op::Contains(s) => match (v, s) {
                (Value::String(hay), Scalar::Str(needle)) => hay.contains(needle.as_str()),
                (Value::Array(items), s) => {
                    items.iter().any(|item| scalar_eq(item, s) == Some(true))
                }
                _ => false,
            },
            Op::StartsWith(prefix) => {
                matches!(v, Value::String(s) if s.starts_with(prefix.as_str()))
            }
            Op::Exists => true,
            Op::Semver(cmp, want) => match v {
                Value::String(s) => Version::parse(s).is_some_and(|have| cmp.holds(have.cmp(want))),
                _ => false,
            },
        }
    }
}

/// A semantic version: `[v]MAJOR[.MINOR[.PATCH]][-PRERELEASE][+BUILD]`.
///
/// Missing minor/patch parts are zero, so app versions like `"2.1"` compare as
/// expected. Precedence follows SemVer 2.0.0 §11: a pre-release sorts before
/// its release, build metadata is ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Version {
    core: [u64; 3],
    pre: Vec<PreId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PreId {
    Num(u64),
    Alpha(String),
}

impl Ord for PreId {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (PreId::Num(a), PreId::Num(b)) => a.cmp(b),
            (PreId::Num(_), PreId::Alpha(_)) => Ordering::Less,
            (PreId::Alpha(_), PreId::Num(_)) => Ordering::Greater,
            (PreId::Alpha(a), PreId::Alpha(b)) => a.as_bytes().cmp(b.as_bytes()),
        }
    }
}

impl PartialOrd for PreId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Version {
    pub(crate) fn parse(text: &str) -> Option<Version> {
        let text = text.strip_prefix(['v', 'V']).unwrap_or(text);
        let text = match text.split_once('+') {
            Some((version, build)) if build.split('.').all(is_identifier) => version,
            Some(_) => return None,
            None => text,
        };
        let (core, pre) = match text.split_once('-') {
            Some((core, pre)) => (core, Some(pre)),
            None => (text, None),
        };
        let mut parts = [0u64; 3];
        for (i, part) in core.split('.').enumerate() {
            if i == 3 || part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            parts[i] = part.parse().ok()?;
        }
        let pre = match pre {
            None => Vec::new(),
            Some(pre) => pre
                .split('.')
                .map(|id| {
                    if !is_identifier(id) {
                        None
                    } else if id.bytes().all(|b| b.is_ascii_digit()) {
                        id.parse().ok().map(PreId::Num)
                    } else {
                        Some(PreId::Alpha(id.to_owned()))
                    }
                })
                .collect::<Option<Vec<_>>>()?,
        };
        Some(Version { core: parts, pre })
    }
}

/// A SemVer pre-release or build identifier: `[0-9A-Za-z-]+`.
fn is_identifier(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.core
            .cmp(&other.core)
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => self.pre.cmp(&other.pre),
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(v: Value) -> Rule {
        compile(&v).unwrap().unwrap()
    }

    fn ctx(v: Value) -> Context {
        Context::try_from(v).unwrap()
    }

    #[test]
    fn semver_precedence_follows_the_spec() {
        let order = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.1",
            "v1.10.0",
            "2",
        ];
        for pair in order.windows(2) {
            let (a, b) = (
                Version::parse(pair[0]).unwrap(),
                Version::parse(pair[1]).unwrap(),
            );
            assert!(a < b, "{} < {}", pair[0], pair[1]);
        }
        assert_eq!(Version::parse("1.2.3+build.5"), Version::parse("1.2.3"));
        for bad in [
            "",
            "1.",
            "a.b",
            "1.2.3.4",
            "1.2.3-",
            "1..2",
            "1.2.3-a..b",
            "-1.0",
            "1.0.0+",
            "1.0.0+a+b",
            "1.0.0+a..b",
            "18446744073709551616.0.0",
            "1.0.0-18446744073709551616",
        ] {
            assert_eq!(Version::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn missing_attributes_are_false_except_under_not() {
        let c = ctx(json!({"user_id": "u"}));
        for op in [
            json!({"attr": "x", "op": "eq", "value": 1}),
            json!({"attr": "x", "op": "neq", "value": 1}),
            json!({"attr": "x", "op": "not_in", "values": [1]}),
            json!({"attr": "x", "op": "exists"}),
            json!({"attr": "x", "op": "semver_lt", "value": "9.0.0"}),
        ] {
            assert!(!rule(op.clone()).matches(&c), "{op}");
            assert!(rule(json!({"not": op.clone()})).matches(&c), "not {op}");
        }
        assert!(!rule(json!({"attr": "x", "op": "exists"})).matches(&ctx(json!({"x": null}))));
    }

    #[test]
    fn type_mismatch_is_false() {
        let c = ctx(json!({"age": "30", "n": 30, "flag": true, "tags": ["a", "b"]}));
        assert!(!rule(json!({"attr": "age", "op": "gte", "value": 18})).matches(&c));
        assert!(!rule(json!({"attr": "age", "op": "neq", "value": 18})).matches(&c));
        assert!(!rule(json!({"attr": "n", "op": "not_in", "values": ["x"]})).matches(&c));
        assert!(!rule(json!({"attr": "flag", "op": "gt", "value": 0})).matches(&c));
        assert!(!rule(json!({"attr": "n", "op": "starts_with", "value": "3"})).matches(&c));
        assert!(!rule(json!({"attr": "n", "op": "semver_gt", "value": "1.0.0"})).matches(&c));
        assert!(rule(json!({"attr": "n", "op": "gte", "value": 30.0})).matches(&c));
        assert!(rule(json!({"attr": "tags", "op": "contains", "value": "b"})).matches(&c));
        assert!(
            rule(json!({"attr": "age", "op": "lt", "value": "4"})).matches(&c),
            "strings compare as strings"
        );
    }

    #[test]
    fn combinators() {
        let r = rule(json!({"all": [
            {"attr": "country", "op": "in", "values": ["US", "CA"]},
            {"any": [{"attr": "age", "op": "gte", "value": 30}, {"not": {"attr": "beta", "op": "exists"}}]}
        ]}));
        assert!(r.matches(&ctx(json!({"country": "US"}))));
        assert!(!r.matches(&ctx(json!({"country": "US", "beta": true}))));
        assert!(r.matches(&ctx(json!({"country": "CA", "beta": true, "age": 31}))));
        assert!(!r.matches(&ctx(json!({"country": "FR"}))));
        assert!(rule(json!({"all": []})).matches(&ctx(json!({}))));
        assert!(!rule(json!({"any": []})).matches(&ctx(json!({}))));
    }

    #[test]
    fn malformed_rules_are_rejected_with_a_path() {
        let cases = [
            (json!({"all": [{"attr": "a", "op": "eq"}]}), ".all[0]"),
            (
                json!({"all": [{"any": [{"attr": "a", "op": "bogus", "value": 1}]}]}),
                ".all[0].any[0]",
            ),
            (json!({"any": {"attr": "a"}}), ".any"),
            (json!({"attr": "a", "op": "in", "values": [1, "x"]}), ""),
            (json!({"attr": "a", "op": "in", "value": 1}), ""),
            (json!({"attr": "a", "op": "semver_gt", "value": "x"}), ""),
            (json!({"attr": "a", "op": "gt", "value": true}), ""),
            (json!({"attr": "a", "op": "eq", "value": 1, "extra": 2}), ""),
            (json!({"all": [], "any": []}), ""),
            (json!(7), ""),
        ];
        for (v, path) in cases {
            let e = compile(&v).unwrap_err();
            assert_eq!(e.path(), path, "{v}: {}", e.reason());
        }
        let mut deep = json!({"attr": "a", "op": "exists"});
        for _ in 0..MAX_DEPTH {
            deep = json!({"not": deep});
        }
        assert!(compile(&deep).is_err());
    }

    #[test]
    fn validate_accepts_well_formed_trees_and_null() {
        for rule in [
            Value::Null,
            json!({"all": []}),
            json!({"attr": "beta", "op": "exists"}),
            json!({"all": [
                {"attr": "country", "op": "in", "values": ["US", "CA"]},
                {"any": [
                    {"attr": "age", "op": "gte", "value": 30},
                    {"not": {"attr": "app_version", "op": "semver_lt", "value": "2.1"}}
                ]}
            ]}),
        ] {
            assert_eq!(validate(&rule), Ok(()), "{rule}");
        }
        // 32 levels, the top-level rule counting as the first, are allowed.
        let mut deep = json!({"attr": "a", "op": "exists"});
        for _ in 1..MAX_DEPTH {
            deep = json!({"not": deep});
        }
        assert_eq!(validate(&deep), Ok(()));
    }

    /// Each kind of malformed tree, with the path and reason `validate`
    /// reports (and the server passes on to API clients verbatim).
    #[test]
    fn validate_reports_the_path_and_reason() {
        let cases = [
            (json!(7), "", "a rule must be an object"),
            (json!([]), "", "a rule must be an object"),
            (
                json!({"all": [{"attr": "a", "op": "exists"}, "x"]}),
                ".all[1]",
                "a rule must be an object",
            ),
            (
                json!({"all": [], "attr": "a"}),
                "",
                "a \"all\" rule must have no other fields",
            ),
            (
                json!({"any": {"attr": "a", "op": "exists"}}),
                ".any",
                "must be an array of rules",
            ),
            (
                json!({"not": {"all": [{"any": [{"attr": "a", "op": "bogus", "value": 1}]}]}}),
                ".not.all[0].any[0]",
                "unknown op \"bogus\"",
            ),
            (
                json!({"attr": "a", "op": "eq", "value": 1, "extra": 2}),
                "",
                "unknown field \"extra\" (a condition has attr, op, value or values)",
            ),
            (json!({"op": "exists"}), "", "missing attr (or all/any/not)"),
            (
                json!({"attr": "", "op": "exists"}),
                "",
                "attr must be a non-empty string",
            ),
            (json!({"attr": "a"}), "", "missing op"),
            (json!({"attr": "a", "op": 1}), "", "op must be a string"),
            (
                json!({"all": [{"attr": "a", "op": "eq"}]}),
                ".all[0]",
                "op \"eq\" needs a value",
            ),
            (
                json!({"attr": "a", "op": "eq", "values": [1]}),
                "",
                "op \"eq\" takes value, not values",
            ),
            (
                json!({"attr": "a", "op": "gt", "value": true}),
                "",
                "op \"gt\": unsupported value true",
            ),
            (
                json!({"attr": "a", "op": "in", "value": "US"}),
                "",
                "op \"in\" takes values, not value",
            ),
            (
                json!({"attr": "a", "op": "in", "values": []}),
                "",
                "values must not be empty",
            ),
            (
                json!({"attr": "a", "op": "in", "values": [1, "x"]}),
                "",
                "values must all have the same type",
            ),
            (
                json!({"attr": "a", "op": "not_in", "values": [null]}),
                "",
                "values: unsupported value null",
            ),
            (
                json!({"attr": "a", "op": "starts_with", "value": 1}),
                "",
                "op \"starts_with\": unsupported value 1",
            ),
            (
                json!({"attr": "a", "op": "exists", "value": true}),
                "",
                "op \"exists\" takes no value",
            ),
            (
                json!({"all": [{"attr": "v", "op": "semver_gt", "value": "x.y"}]}),
                ".all[0]",
                "op \"semver_gt\": \"x.y\" is not a version",
            ),
        ];
        for (rule, path, reason) in cases {
            let e = validate(&rule).unwrap_err();
            assert_eq!((e.path(), e.reason()), (path, reason), "{rule}");
            assert_eq!(e.to_string(), format!("targeting{path}: {reason}"));
        }
        let mut deep = json!({"attr": "a", "op": "exists"});
        for _ in 0..MAX_DEPTH {
            deep = json!({"not": deep});
        }
        let e = validate(&deep).unwrap_err();
        assert_eq!(e.path(), ".not".repeat(MAX_DEPTH));
        assert_eq!(e.reason(), "rules nest deeper than 32 levels");
    }

    #[test]
    fn rules_read_as_their_json_ops() {
        let text = |v: Value| rule(v).to_string();
        assert_eq!(
            text(json!({"attr": "country", "op": "in", "values": ["US", "C\"A"]})),
            r#"country in ["US", "C\"A"]"#
        );
        assert_eq!(
            text(json!({"attr": "age", "op": "gte", "value": 30})),
            "age gte 30"
        );
        assert_eq!(
            text(json!({"attr": "r", "op": "lt", "value": 0.5})),
            "r lt 0.5"
        );
        assert_eq!(
            text(json!({"attr": "b", "op": "neq", "value": false})),
            "b neq false"
        );
        assert_eq!(
            text(json!({"attr": "v", "op": "semver_lt", "value": "v2.1-rc.1+b7"})),
            "v semver_lt \"2.1.0-rc.1\""
        );
        assert_eq!(
            text(
                json!({"all": [{"attr": "p", "op": "starts_with", "value": "i"},
                {"any": [{"attr": "t", "op": "contains", "value": 3}, {"not": {"attr": "x", "op": "exists"}}]},
                {"attr": "c", "op": "not_in", "values": [1, 2]}]})
            ),
            r#"all (p starts_with "i", any (t contains 3, not (x exists)), c not_in [1, 2])"#
        );
    }

    /// The failure follows the verdict of `matches` down the tree.
    #[test]
    fn failures_name_the_first_failing_rule_and_its_values() {
        let r = rule(json!({"all": [
            {"attr": "country", "op": "in", "values": ["US", "CA"]},
            {"all": [{"attr": "platform", "op": "eq", "value": "ios"},
                     {"any": [{"attr": "age", "op": "gte", "value": 30}, {"not": {"attr": "beta", "op": "exists"}}]}]}
        ]}));
        assert_eq!(
            r.failure(&ctx(json!({"country": "US", "platform": "ios"}))),
            None
        );
        let f = r
            .failure(&ctx(json!({"country": "FR", "platform": "web"})))
            .unwrap();
        assert_eq!(
            (f.path.as_str(), f.rule.as_str()),
            (".all[0]", r#"country in ["US", "CA"]"#)
        );
        assert_eq!(
            f.message(),
            r#"country in ["US", "CA"] (rule .all[0]), but country is "FR""#
        );
        let f = r
            .failure(&ctx(json!({"country": "US", "platform": null})))
            .unwrap();
        assert_eq!(f.path, ".all[1].all[0]");
        assert_eq!(
            f.values,
            BTreeMap::from([("platform".to_owned(), Value::Null)])
        );
        assert!(
            f.message().ends_with("but platform is not set"),
            "{}",
            f.message()
        );
        let f = r
            .failure(&ctx(
                json!({"country": "US", "platform": "ios", "age": 20, "beta": true}),
            ))
            .unwrap();
        assert_eq!(f.path, ".all[1].all[1]");
        assert_eq!(f.rule, "any (age gte 30, not (beta exists))");
        assert_eq!(f.message(), "any (age gte 30, not (beta exists)) (rule .all[1].all[1]), but age is 20 and beta is true");
        // The root itself, and an empty `any`.
        let f = rule(json!({"attr": "a", "op": "exists"}))
            .failure(&ctx(json!({})))
            .unwrap();
        assert_eq!(
            (f.path.as_str(), f.message().as_str()),
            ("", "a exists, but a is not set")
        );
        let f = rule(json!({"any": []})).failure(&ctx(json!({}))).unwrap();
        assert_eq!((f.rule.as_str(), f.values.len()), ("any ()", 0));
    }

    /// A snapshot rejects a rule exactly as `validate` does, at the same place.
    #[test]
    fn snapshots_reject_rules_as_validate_does() {
        let snapshot = |rule: Value| {
            json!({"version": 1, "experiments": [{"key": "e", "flag": "f", "salt": "s",
                "status": "killed", "targeting": rule, "variants": [{"key": "c", "weight": 1}]}]})
        };
        for rule in [
            json!({"attr": "a", "op": "exists"}),
            json!({"any": [{"attr": "a", "op": "in", "values": []}]}),
            json!({"not": 7}),
        ] {
            let compiled = crate::CompiledSnapshot::from_json(&snapshot(rule.clone()).to_string());
            match (validate(&rule), compiled) {
                (Ok(()), Ok(_)) => {}
                (
                    Err(TargetingError::Malformed { path, reason }),
                    Err(crate::SnapshotError::InvalidTargeting {
                        experiment,
                        path: p,
                        reason: r,
                    }),
                ) => assert_eq!((experiment.as_str(), p, r), ("e", path, reason)),
                (v, c) => panic!("{rule}: validate {v:?}, compile {c:?}"),
            }
        }
    }
}
