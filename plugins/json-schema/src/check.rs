//! Checking values against compiled schemas, and reading texts as typed values.

use std::cell::Cell;

use serde_json::Value;

use crate::compile::{Additional, Node, TYPES};
use crate::{Kind, SchemaId, Schemas, Step, Violation};

/// The schema checks one [`Schemas::check`] may make: this many per node of the
/// value, plus [`MIN_STEPS`]. Nested alternatives (`oneOf` inside a recursive schema)
/// can cost exponentially in the depth of the value; past this budget the value is
/// refused as too complex instead of holding the caller, while a large but plain
/// value always fits.
pub const STEPS_PER_NODE: usize = 64;
/// The budget every check has, however small the value.
pub const MIN_STEPS: usize = 10_000;

/// The number of JSON nodes in `v`.
pub(crate) fn nodes(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(nodes).sum::<usize>(),
        Value::Object(obj) => 1 + obj.values().map(nodes).sum::<usize>(),
        _ => 1,
    }
}

/// Collected violations, up to a limit, and the steps left of the check's budget.
pub(crate) struct Out<'b> {
    pub list: Vec<Violation>,
    pub limit: usize,
    pub budget: &'b Cell<usize>,
}

impl Out<'_> {
    fn full(&self) -> bool {
        self.list.len() >= self.limit || self.budget.get() == 0
    }

    fn push(&mut self, path: &[Step], kind: Kind, message: String) {
        if !self.full() {
            self.list.push(Violation { path: path.to_vec(), kind, message });
        }
    }
}

fn type_bit(v: &Value) -> u8 {
    match v {
        Value::String(_) => 1,
        Value::Number(n) => {
            let integral = n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0);
            if integral { 2 | 4 } else { 2 }
        }
        Value::Bool(_) => 8,
        Value::Object(_) => 16,
        Value::Array(_) => 32,
        Value::Null => 64,
    }
}

fn type_names(bits: u8) -> String {
    TYPES.iter().filter(|(_, b)| bits & b != 0).map(|(n, _)| *n).collect::<Vec<_>>().join(" or ")
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 { format!("{}", x as i64) } else { x.to_string() }
}

impl Schemas {
    fn node(&self, id: SchemaId) -> &Node {
        &self.nodes[id.0]
    }

    /// Whether `v` passes `id` (no violation), from the same budget as `out`.
    fn passes(&self, id: SchemaId, v: &Value, out: &Out<'_>) -> bool {
        let mut o = Out { list: Vec::new(), limit: 1, budget: out.budget };
        self.check_into(id, v, &mut Vec::new(), &mut o);
        o.list.is_empty() && o.budget.get() > 0
    }

    pub(crate) fn check_into(&self, id: SchemaId, v: &Value, path: &mut Vec<Step>, out: &mut Out<'_>) {
        if out.full() {
            return;
        }
        out.budget.set(out.budget.get() - 1);
        let s = self.node(id);
        if s.types != 0 && s.types & type_bit(v) == 0 {
            out.push(path, Kind::Invalid, format!("must be of type {}", type_names(s.types)));
            return;
        }
        if let Some(options) = &s.enumeration
            && !options.contains(v)
        {
            let list: Vec<String> = options.iter().map(Value::to_string).collect();
            out.push(path, Kind::Invalid, format!("must be one of {}", list.join(", ")));
        }
        match v {
            Value::String(text) => self.string(s, text, path, out),
            Value::Number(n) => number(s, n.as_f64().unwrap_or(0.0), path, out),
            Value::Array(items) => self.array(s, items, path, out),
            Value::Object(obj) => self.object(s, obj, path, out),
            _ => {}
        }
        for sub in &s.all_of {
            self.check_into(*sub, v, path, out);
        }
        if !s.any_of.is_empty() && !s.any_of.iter().any(|sub| self.passes(*sub, v, out)) {
            self.closest(&s.any_of, v, path, out, "anyOf");
        }
        if !s.one_of.is_empty() {
            match s.one_of.iter().filter(|sub| self.passes(**sub, v, out)).count() {
                1 => {}
                0 => self.closest(&s.one_of, v, path, out, "oneOf"),
                n => out.push(
                    path,
                    Kind::Invalid,
                    format!("must match exactly one schema of oneOf, matches {n}"),
                ),
            }
        }
        if let Some(not) = s.not
            && self.passes(not, v, out)
        {
            out.push(path, Kind::Invalid, "must not match the schema of `not`".to_owned());
        }
    }

    /// No alternative matched: report the one that came closest (fewest problems),
    /// which is usually the one the client meant.
    fn closest(&self, options: &[SchemaId], v: &Value, path: &[Step], out: &mut Out<'_>, keyword: &str) {
        let best = options
            .iter()
            .map(|sub| {
                let mut o = Out { list: Vec::new(), limit: out.limit, budget: out.budget };
                self.check_into(*sub, v, &mut path.to_vec(), &mut o);
                o.list
            })
            .min_by_key(Vec::len)
            .unwrap_or_default();
        if options.len() > 1 || best.is_empty() {
            out.push(path, Kind::Invalid, format!("must match one of the schemas of {keyword}"));
        }
        for violation in best {
            out.push(&violation.path, violation.kind, violation.message);
        }
    }

    fn string(&self, s: &Node, text: &str, path: &[Step], out: &mut Out<'_>) {
        let n = text.chars().count() as u64;
        if let Some(m) = s.min_length.filter(|m| n < *m) {
            out.push(path, Kind::Invalid, format!("must have at least {m} characters"));
        }
        if let Some(m) = s.max_length.filter(|m| n > *m) {
            out.push(path, Kind::Invalid, format!("must have at most {m} characters"));
        }
        if let Some((p, re)) = &s.pattern
            && !re.is_match(text)
        {
            out.push(path, Kind::Invalid, format!("must match the pattern `{p}`"));
        }
    }

    fn array(&self, s: &Node, items: &[Value], path: &mut Vec<Step>, out: &mut Out<'_>) {
        let n = items.len() as u64;
        if let Some(m) = s.min_items.filter(|m| n < *m) {
            out.push(path, Kind::Invalid, format!("must have at least {m} items"));
        }
        if let Some(m) = s.max_items.filter(|m| n > *m) {
            out.push(path, Kind::Invalid, format!("must have at most {m} items"));
        }
        if s.unique_items && items.iter().enumerate().any(|(i, x)| items[..i].contains(x)) {
            out.push(path, Kind::Invalid, "must not repeat items".to_owned());
        }
        if let Some(item) = s.items {
            for (i, x) in items.iter().enumerate() {
                path.push(Step::Index(i));
                self.check_into(item, x, path, out);
                path.pop();
            }
        }
    }

    fn object(
        &self,
        s: &Node,
        obj: &serde_json::Map<String, Value>,
        path: &mut Vec<Step>,
        out: &mut Out<'_>,
    ) {
        for r in &s.required {
            if obj.get(r).is_none_or(Value::is_null) {
                path.push(Step::Key(r.clone()));
                out.push(path, Kind::Missing, "is required".to_owned());
                path.pop();
            }
        }
        let n = obj.len() as u64;
        if let Some(m) = s.min_properties.filter(|m| n < *m) {
            out.push(path, Kind::Invalid, format!("must have at least {m} members"));
        }
        if let Some(m) = s.max_properties.filter(|m| n > *m) {
            out.push(path, Kind::Invalid, format!("must have at most {m} members"));
        }
        for (k, x) in obj {
            path.push(Step::Key(k.clone()));
            match (s.properties.get(k), &s.additional) {
                (Some(p), _) => self.check_into(*p, x, path, out),
                (None, Additional::None) => out.push(path, Kind::Unknown, "is not allowed".to_owned()),
                (None, Additional::Schema(extra)) => self.check_into(*extra, x, path, out),
                (None, Additional::Any) => {}
            }
            path.pop();
        }
    }

    /// The types a schema takes, looking through `allOf`/`$ref` when it names none.
    fn types_of(&self, id: SchemaId, depth: usize) -> u8 {
        let s = self.node(id);
        if s.types != 0 || depth > 8 {
            return s.types;
        }
        let subs = s.all_of.iter().chain(&s.any_of).chain(&s.one_of);
        subs.fold(0, |acc, sub| acc | self.types_of(*sub, depth + 1))
    }

    /// The `items` schema of an array schema, looking through `allOf`/`$ref`.
    fn items_of(&self, id: SchemaId, depth: usize) -> Option<SchemaId> {
        let s = self.node(id);
        if s.items.is_some() || depth > 8 {
            return s.items;
        }
        s.all_of.iter().find_map(|sub| self.items_of(*sub, depth + 1))
    }
}

fn number(s: &Node, x: f64, path: &[Step], out: &mut Out<'_>) {
    if let Some(m) = s.minimum.filter(|m| x < *m) {
        out.push(path, Kind::Invalid, format!("must be at least {}", fmt_num(m)));
    }
    if let Some(m) = s.maximum.filter(|m| x > *m) {
        out.push(path, Kind::Invalid, format!("must be at most {}", fmt_num(m)));
    }
    if let Some(m) = s.exclusive_minimum.filter(|m| x <= *m) {
        out.push(path, Kind::Invalid, format!("must be greater than {}", fmt_num(m)));
    }
    if let Some(m) = s.exclusive_maximum.filter(|m| x >= *m) {
        out.push(path, Kind::Invalid, format!("must be less than {}", fmt_num(m)));
    }
    if let Some(m) = s.multiple_of
        && ((x / m).round() * m - x).abs() > 1e-9 * x.abs().max(1.0)
    {
        out.push(path, Kind::Invalid, format!("must be a multiple of {}", fmt_num(m)));
    }
}

/// See [`Schemas::coerce`].
pub(crate) fn coerce(schemas: &Schemas, id: SchemaId, values: &[&str], separator: char) -> Value {
    let types = schemas.types_of(id, 0);
    if types & 32 != 0 {
        let parts: Vec<&str> = match values {
            [""] => Vec::new(),
            [one] => one.split(separator).collect(),
            many => many.to_vec(),
        };
        return match schemas.items_of(id, 0) {
            Some(item) => Value::Array(parts.iter().map(|p| scalar(schemas.types_of(item, 0), p)).collect()),
            None => Value::Array(parts.iter().map(|p| Value::String((*p).to_owned())).collect()),
        };
    }
    scalar(types, values.first().copied().unwrap_or(""))
}

fn scalar(types: u8, text: &str) -> Value {
    if types & (2 | 4) != 0 {
        if let Ok(i) = text.parse::<i64>() {
            return Value::from(i);
        }
        if let Some(n) = text.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
            return Value::Number(n);
        }
    }
    if types & 8 != 0 {
        match text {
            "true" => return Value::Bool(true),
            "false" => return Value::Bool(false),
            _ => {}
        }
    }
    if types & 64 != 0 && text == "null" && types & 1 == 0 {
        return Value::Null;
    }
    Value::String(text.to_owned())
}
