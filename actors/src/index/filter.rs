//! The contract's metadata filter language, parsed once per request into a tree that is cheap to
//! evaluate per candidate during graph search.
//!
//! Flat form: `{"type":"task","status":"pending"}` means every key equals. Full form:
//! `{"must":[cond],"should":[cond],"must_not":[cond]}` where a cond is `{"key","match"}`,
//! `{"key","range":{"gt"|"gte"|"lt"|"lte"}}`, `{"key","any":[…]}`, `{"key","exists":bool}` or a
//! nested full-form filter. Keys are dotted paths into nested objects. A field holding an array
//! matches `match`/`any` when one of its elements does.

use serde_json::Value;

use crate::error::{EngineError, Result};
use crate::types::Metadata;

/// Deepest nesting of filters accepted (guards the evaluator's recursion).
/// What one filter may cost (from `[index]`): a filter is matched against every candidate
/// point of a search and every write a standing query sees, so its size is the bound of that
/// work.
#[derive(Debug, Clone, Copy)]
pub struct FilterLimits {
    pub max_conditions: usize,
    /// JSON values compared against: every `match` value and every `any` element, counted as
    /// the nodes they hold.
    pub max_values: usize,
    pub max_depth: usize,
}

impl Default for FilterLimits {
    fn default() -> Self {
        FilterLimits {
            max_conditions: 256,
            max_values: 1024,
            max_depth: 8,
        }
    }
}

/// How much of the limits a parse has used.
struct Budget {
    limits: FilterLimits,
    conditions: usize,
    values: usize,
}

impl Budget {
    fn condition(&mut self) -> Result<()> {
        self.conditions += 1;
        if self.conditions > self.limits.max_conditions {
            return Err(bad(format!(
                "more than {} conditions",
                self.limits.max_conditions
            )));
        }
        Ok(())
    }

    fn values(&mut self, v: &Value) -> Result<()> {
        fn nodes(v: &Value) -> usize {
            1 + match v {
                Value::Array(a) => a.iter().map(nodes).sum(),
                Value::Object(m) => m.values().map(nodes).sum(),
                Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => 0,
            }
        }
        self.values += nodes(v);
        if self.values > self.limits.max_values {
            return Err(bad(format!(
                "a filter may compare against at most {} values",
                self.limits.max_values
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    must: Vec<Condition>,
    should: Vec<Condition>,
    must_not: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq)]
enum Condition {
    Match(Vec<String>, Value),
    Range(Vec<String>, Range),
    Any(Vec<String>, Vec<Value>),
    Exists(Vec<String>, bool),
    Nested(Box<Filter>),
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Range {
    gt: Option<f64>,
    gte: Option<f64>,
    lt: Option<f64>,
    lte: Option<f64>,
}

impl Range {
    fn contains(&self, x: f64) -> bool {
        self.gt.is_none_or(|b| x > b)
            && self.gte.is_none_or(|b| x >= b)
            && self.lt.is_none_or(|b| x < b)
            && self.lte.is_none_or(|b| x <= b)
    }
}

fn bad(msg: impl Into<String>) -> EngineError {
    EngineError::invalid(format!("bad filter: {}", msg.into()))
}

impl Filter {
    /// Parses a filter from its JSON form under the default limits.
    pub fn parse(v: &Value) -> Result<Filter> {
        Self::parse_with(v, FilterLimits::default())
    }

    /// Parses a filter from its JSON form; every mistake, and a filter past `limits`, is an
    /// `invalid_argument`.
    pub fn parse_with(v: &Value, limits: FilterLimits) -> Result<Filter> {
        let mut budget = Budget {
            limits,
            conditions: 0,
            values: 0,
        };
        Self::parse_at(v, 0, &mut budget)
    }

    fn parse_at(v: &Value, depth: usize, count: &mut Budget) -> Result<Filter> {
        if depth > count.limits.max_depth {
            return Err(bad(format!(
                "nested deeper than {} levels",
                count.limits.max_depth
            )));
        }
        let obj = v
            .as_object()
            .ok_or_else(|| bad("a filter must be a JSON object"))?;
        let full = !obj.is_empty()
            && obj
                .keys()
                .all(|k| matches!(k.as_str(), "must" | "should" | "must_not"));
        if !full {
            // Flat form: every key equals its value.
            let mut must = Vec::with_capacity(obj.len());
            for (k, val) in obj {
                count.condition()?;
                count.values(val)?;
                must.push(Condition::Match(parse_key(k)?, val.clone()));
            }
            return Ok(Filter {
                must,
                should: vec![],
                must_not: vec![],
            });
        }
        let mut list = |name: &str| -> Result<Vec<Condition>> {
            match obj.get(name) {
                None | Some(Value::Null) => Ok(vec![]),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|c| {
                        count.condition()?;
                        parse_condition(c, depth, count)
                    })
                    .collect(),
                Some(_) => Err(bad(format!("{name:?} must be an array of conditions"))),
            }
        };
        Ok(Filter {
            must: list("must")?,
            should: list("should")?,
            must_not: list("must_not")?,
        })
    }

    /// A `must` equality on a scalar value that every matching point satisfies: the dotted path
    /// and the value's index key (see `index_key`). Used to index standing queries.
    pub fn equality_key(&self) -> Option<(String, String)> {
        self.must.iter().find_map(|c| match c {
            Condition::Match(path, v) => index_key(v).map(|k| (path.join("."), k)),
            Condition::Range(..)
            | Condition::Any(..)
            | Condition::Exists(..)
            | Condition::Nested(_) => None,
        })
    }

    /// Whether a point's metadata passes the filter. A point without metadata has no fields.
    pub fn matches(&self, metadata: Option<&Metadata>) -> bool {
        self.must.iter().all(|c| c.matches(metadata))
            && (self.should.is_empty() || self.should.iter().any(|c| c.matches(metadata)))
            && !self.must_not.iter().any(|c| c.matches(metadata))
    }
}

fn parse_key(k: &str) -> Result<Vec<String>> {
    if k.is_empty() || k.split('.').any(str::is_empty) {
        return Err(bad(format!("key {k:?} is not a dotted path")));
    }
    Ok(k.split('.').map(str::to_owned).collect())
}

fn parse_number(v: &Value, what: &str) -> Result<f64> {
    v.as_f64()
        .filter(|x| x.is_finite())
        .ok_or_else(|| bad(format!("range bound {what:?} must be a number")))
}

fn parse_condition(c: &Value, depth: usize, count: &mut Budget) -> Result<Condition> {
    let obj = c
        .as_object()
        .ok_or_else(|| bad("a condition must be a JSON object"))?;
    if obj
        .keys()
        .any(|k| matches!(k.as_str(), "must" | "should" | "must_not"))
    {
        return Ok(Condition::Nested(Box::new(Filter::parse_at(
            c,
            depth + 1,
            count,
        )?)));
    }
    let key = match obj.get("key") {
        Some(Value::String(k)) => parse_key(k)?,
        Some(_) => return Err(bad("\"key\" must be a string")),
        None => return Err(bad("a condition needs a \"key\"")),
    };
    let ops: Vec<&str> = ["match", "range", "any", "exists"]
        .into_iter()
        .filter(|op| obj.contains_key(*op))
        .collect();
    if ops.len() != 1 {
        return Err(bad(
            "a condition needs exactly one of \"match\", \"range\", \"any\", \"exists\"",
        ));
    }
    match ops[0] {
        "match" => {
            count.values(&obj["match"])?;
            Ok(Condition::Match(key, obj["match"].clone()))
        }
        "range" => {
            let r = obj["range"]
                .as_object()
                .ok_or_else(|| bad("\"range\" must be an object"))?;
            let mut range = Range::default();
            for (k, v) in r {
                let x = parse_number(v, k)?;
                match k.as_str() {
                    "gt" => range.gt = Some(x),
                    "gte" => range.gte = Some(x),
                    "lt" => range.lt = Some(x),
                    "lte" => range.lte = Some(x),
                    other => return Err(bad(format!("unknown range bound {other:?}"))),
                }
            }
            if r.is_empty() {
                return Err(bad("\"range\" needs at least one of gt, gte, lt, lte"));
            }
            Ok(Condition::Range(key, range))
        }
        "any" => match &obj["any"] {
            Value::Array(vs) => {
                count.values(&obj["any"])?;
                Ok(Condition::Any(key, vs.clone()))
            }
            Value::Null
            | Value::Bool(_)
            | Value::Number(_)
            | Value::String(_)
            | Value::Object(_) => Err(bad("\"any\" must be an array")),
        },
        _ => match &obj["exists"] {
            Value::Bool(b) => Ok(Condition::Exists(key, *b)),
            Value::Null
            | Value::Number(_)
            | Value::String(_)
            | Value::Array(_)
            | Value::Object(_) => Err(bad("\"exists\" must be true or false")),
        },
    }
}

/// The index key of a scalar JSON value (numbers by value, so 1 and 1.0 share a key); `None`
/// for arrays, objects and null.
pub fn index_key(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(format!("s:{s}")),
        Value::Number(n) => n.as_f64().map(|x| format!("n:{x}")),
        Value::Bool(b) => Some(format!("b:{b}")),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Index keys of the value at a dotted path (one per element when it holds an array).
pub fn index_keys_at(metadata: Option<&Metadata>, dotted: &str) -> Vec<String> {
    let path: Vec<String> = dotted.split('.').map(str::to_owned).collect();
    match lookup(metadata, &path) {
        Some(Value::Array(items)) => items.iter().filter_map(index_key).collect(),
        Some(v) => index_key(v).into_iter().collect(),
        None => vec![],
    }
}

fn lookup<'a>(metadata: Option<&'a Metadata>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut cur = metadata?.get(first)?;
    for part in rest {
        cur = cur.as_object()?.get(part)?;
    }
    Some(cur)
}

/// JSON equality where numbers compare by value (1 equals 1.0).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// Equality, also true when the field is an array holding the value.
fn field_eq(field: &Value, v: &Value) -> bool {
    json_eq(field, v)
        || matches!(field, Value::Array(items) if !v.is_array() && items.iter().any(|i| json_eq(i, v)))
}

impl Condition {
    fn matches(&self, metadata: Option<&Metadata>) -> bool {
        match self {
            Condition::Match(key, v) => lookup(metadata, key).is_some_and(|f| field_eq(f, v)),
            Condition::Range(key, r) => lookup(metadata, key)
                .and_then(Value::as_f64)
                .is_some_and(|x| r.contains(x)),
            Condition::Any(key, vs) => {
                lookup(metadata, key).is_some_and(|f| vs.iter().any(|v| field_eq(f, v)))
            }
            Condition::Exists(key, want) => {
                lookup(metadata, key).is_some_and(|f| !f.is_null()) == *want
            }
            Condition::Nested(f) => f.matches(metadata),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn md(v: Value) -> Metadata {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn flat_and_full_forms() {
        let m = md(json!({"type":"task","status":"pending","n":5,"tags":["a","b"],"o":{"x":1}}));
        let yes = [
            json!({"type":"task","status":"pending"}),
            json!({"must":[{"key":"n","range":{"gte":5,"lt":6}}]}),
            json!({"must":[{"key":"o.x","match":1.0}]}),
            json!({"should":[{"key":"tags","any":["z","b"]}]}),
            json!({"must_not":[{"key":"missing","exists":true}]}),
            json!({"must":[{"should":[{"key":"type","match":"x"},{"key":"tags","match":"a"}]}]}),
        ];
        for f in yes {
            assert!(Filter::parse(&f).unwrap().matches(Some(&m)), "{f}");
        }
        let no = [
            json!({"type":"note"}),
            json!({"must":[{"key":"n","range":{"gt":5}}]}),
            json!({"must":[{"key":"type","exists":false}]}),
        ];
        for f in no {
            assert!(!Filter::parse(&f).unwrap().matches(Some(&m)), "{f}");
        }
        assert!(!Filter::parse(&json!({"type":"task"}))
            .unwrap()
            .matches(None));
    }

    #[test]
    fn malformed_filters_are_invalid_argument() {
        for f in [
            json!([1]),
            json!({"must":"x"}),
            json!({"must":[{"match":1}]}),
            json!({"must":[{"key":"a","range":{"gt":"x"}}]}),
            json!({"must":[{"key":"a","range":{}}]}),
            json!({"must":[{"key":"a","match":1,"any":[1]}]}),
            json!({"must":[{"key":"a..b","match":1}]}),
            json!({"must":[{"key":"a","exists":"yes"}]}),
        ] {
            let err = Filter::parse(&f).unwrap_err();
            assert_eq!(err.code(), "invalid_argument", "{f}");
        }
    }
}
