//! Positions of YAML nodes, addressed by config paths (`routes[1].match.path`), and the
//! deserialization step that turns serde errors into located [`Problem`]s.
//!
//! [`SourceMap::parse`] walks the YAML events of `yaml-rust2` once and remembers, for
//! every node, where it was written. A mapping entry is located at its key (that is
//! what a user wants to see), a sequence item at the item itself. [`deserialize`] then
//! reads the document with `serde-saphyr`; when that fails, it also reads every listener,
//! upstream and route on its own so that one run reports one shape error per item.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use super::{Config, ListenerConfig, Location, Problem, RouteConfig, UpstreamConfig};

/// Where each node of a YAML document was written.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    /// Path → position shown to users: the key of a mapping entry, the start of any
    /// other node.
    nodes: HashMap<String, Location>,
    /// Position of a mapping key → the entry's path.
    keys: HashMap<Location, String>,
    /// Start position of a value node → its path (the outermost node wins).
    values: HashMap<Location, String>,
    /// Start and end of every value node, by path.
    spans: HashMap<String, (Location, Location)>,
    /// The document uses anchors or aliases, so a node cannot be read on its own.
    has_anchors: bool,
}

impl SourceMap {
    /// An empty map: every lookup fails.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Indexes a YAML document; a syntax error is returned as a problem.
    pub fn parse(text: &str) -> Result<Self, Problem> {
        let mut walker = Walker::default();
        let mut parser = Parser::new_from_str(text);
        if let Err(e) = parser.load(&mut walker, false) {
            let at = location(e.marker());
            return Err(Problem::new("", format!("invalid yaml: {}", yaml_message(e.info()))).at(at));
        }
        walker.finish();
        Ok(walker.map)
    }

    /// The location of `path`, or of its nearest ancestor that has one.
    pub fn locate(&self, path: &str) -> Option<Location> {
        let mut path = path;
        loop {
            if let Some(l) = self.nodes.get(path) {
                return Some(*l);
            }
            if path.is_empty() {
                return None;
            }
            path = parent(path);
        }
    }

    /// The path of the node written at `at`: the mapping entry whose key is there
    /// when `key` is set, otherwise the value node starting there (falling back to the
    /// other kind).
    fn path_at(&self, at: Location, key: bool) -> Option<&str> {
        let (first, second) = if key { (&self.keys, &self.values) } else { (&self.values, &self.keys) };
        first.get(&at).or_else(|| second.get(&at)).map(String::as_str)
    }

    /// Records `path` at `at`, keeping an earlier record of the same path.
    fn record(&mut self, path: &str, at: Location) {
        self.nodes.entry(path.to_owned()).or_insert(at);
    }
}

/// The parent of a path: `a.b[2]` → `a.b`, `a.b` → `a`, `a` → ``.
fn parent(path: &str) -> &str {
    if let Some(stripped) = path.strip_suffix(']')
        && let Some(i) = stripped.rfind('[')
    {
        return &path[..i];
    }
    match path.rfind('.') {
        Some(i) => &path[..i],
        None => "",
    }
}

/// yaml-rust2 lines are 1-based, columns 0-based.
fn location(m: &Marker) -> Location {
    Location { line: m.line(), column: m.col() + 1 }
}

/// A YAML parser message as a problem message: lowercase, no trailing period.
fn yaml_message(info: &str) -> String {
    let mut m = info.trim().trim_end_matches('.').to_owned();
    if let Some(c) = m.get(..1) {
        m.replace_range(..1, &c.to_lowercase());
    }
    m
}

/// One open collection while walking the events.
enum Frame {
    Map { path: String, key: Option<String>, start: Location, has_key: bool },
    Seq { path: String, next: usize, start: Location },
}

#[derive(Default)]
struct Walker {
    map: SourceMap,
    stack: Vec<Frame>,
    /// A scalar whose end is the position of the next event.
    open_scalar: Option<(String, Location)>,
}

impl Walker {
    /// The path of a node that starts now, recording key positions on the way.
    /// Returns `None` for a mapping key (which is not a node of the config).
    fn node_path(&mut self, at: Location, key_text: Option<&str>) -> Option<String> {
        let map = &mut self.map;
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, next, .. }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                Some(p)
            }
            Some(Frame::Map { path, key, start, has_key }) => match key.take() {
                Some(k) => Some(k),
                None => {
                    // This node is a key. Complex keys get a placeholder path.
                    let name = key_text.unwrap_or("?");
                    let p = if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") };
                    map.keys.entry(at).or_insert_with(|| p.clone());
                    map.record(&p, at);
                    // A block mapping's start event is reported after its first key:
                    // the mapping really starts at that key.
                    if !*has_key && at < *start {
                        if map.values.get(start) == Some(path) {
                            map.values.remove(start);
                        }
                        if map.nodes.get(path.as_str()) == Some(start) {
                            map.nodes.insert(path.clone(), at);
                        }
                        map.values.insert(at, path.clone());
                        *start = at;
                    }
                    *has_key = true;
                    *key = Some(p);
                    None
                }
            },
        }
    }

    fn start_node(&mut self, path: &str, at: Location) {
        self.map.record(path, at);
        self.map.values.entry(at).or_insert_with(|| path.to_owned());
    }

    fn finish(&mut self) {
        self.open_scalar = None;
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let at = location(&mark);
        if let Some((path, start)) = self.open_scalar.take() {
            self.map.spans.insert(path, (start, at));
        }
        match ev {
            Event::Scalar(text, _, anchor, _) => {
                self.map.has_anchors |= anchor > 0;
                if let Some(path) = self.node_path(at, Some(&text)) {
                    self.start_node(&path, at);
                    self.open_scalar = Some((path, at));
                }
            }
            Event::Alias(_) => {
                self.map.has_anchors = true;
                if let Some(path) = self.node_path(at, None) {
                    self.start_node(&path, at);
                }
            }
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                self.map.has_anchors |= anchor > 0;
                let is_map = matches!(ev, Event::MappingStart(..));
                let path = self.node_path(at, None).unwrap_or_else(|| "?".to_owned());
                self.start_node(&path, at);
                self.stack.push(if is_map {
                    Frame::Map { path, key: None, start: at, has_key: false }
                } else {
                    Frame::Seq { path, next: 0, start: at }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                if let Some(Frame::Map { path, start, .. } | Frame::Seq { path, start, .. }) =
                    self.stack.pop()
                {
                    self.map.spans.insert(path, (start, at));
                }
            }
            _ => {}
        }
    }
}

/// Deserializes the config. On failure returns the first shape error and, when the
/// document allows it, the first shape error of every listener, upstream and route.
pub fn deserialize(text: &str, source: &SourceMap) -> Result<Config, Vec<Problem>> {
    let err = match serde_saphyr::from_str::<Config>(text) {
        Ok(config) => return Ok(config),
        Err(e) => e,
    };
    let mut problems = vec![problem(&err, "", source)];
    if !source.has_anchors {
        for (path, (start, end)) in &source.spans {
            let item = match path_section(path) {
                Some(s) => s,
                None => continue,
            };
            let isolated = isolate(text, *start, flow_end(text, *start, *end));
            let result = match item {
                Section::Listener => check::<ListenerConfig>(&isolated),
                Section::Upstream => check::<UpstreamConfig>(&isolated),
                Section::Route => check::<RouteConfig>(&isolated),
            };
            if let Err(e) = result {
                let p = problem(&e, path, source);
                if !problems.iter().any(|q| q.location == p.location && q.message == p.message) {
                    problems.push(p);
                }
            }
        }
    }
    Err(problems)
}

fn check<T: DeserializeOwned>(text: &str) -> Result<(), serde_saphyr::Error> {
    serde_saphyr::from_str::<T>(text).map(drop)
}

/// The config items that can be read on their own.
enum Section {
    Listener,
    Upstream,
    Route,
}

fn path_section(path: &str) -> Option<Section> {
    let index = |rest: &str| rest.strip_prefix('[')?.strip_suffix(']')?.parse::<usize>().ok();
    if let Some(rest) = path.strip_prefix("listeners") {
        index(rest).map(|_| Section::Listener)
    } else if let Some(rest) = path.strip_prefix("routes") {
        index(rest).map(|_| Section::Route)
    } else if let Some(name) = path.strip_prefix("upstreams.") {
        (!name.is_empty() && !name.contains(['.', '['])).then_some(Section::Upstream)
    } else {
        None
    }
}

/// The end of a node's span, past its closing bracket when it is a flow collection
/// (`{ … }`, `[ … ]`): the parser marks the end of those at the bracket itself, and
/// a node isolated without it reads as an unclosed bracket.
fn flow_end(text: &str, start: Location, end: Location) -> Location {
    let char_at =
        |at: Location| text.lines().nth(at.line.checked_sub(1)?)?.chars().nth(at.column.checked_sub(1)?);
    match (char_at(start), char_at(end)) {
        (Some('{'), Some('}')) | (Some('['), Some(']')) => {
            Location { line: end.line, column: end.column + 1 }
        }
        _ => end,
    }
}

/// `text` with everything outside `[start, end)` blanked out, so that the node between
/// them parses on its own at its original lines and columns.
fn isolate(text: &str, start: Location, end: Location) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let n = i + 1;
        for (j, c) in line.chars().enumerate() {
            let here = Location { line: n, column: j + 1 };
            if c == '\n' || c == '\r' || (start <= here && here < end) {
                out.push(c);
            } else {
                out.push(' ');
            }
        }
    }
    out
}

/// A serde-saphyr error as a located problem. `within` is the path of the node that
/// was being read, used when the error's position names no node.
fn problem(err: &serde_saphyr::Error, within: &str, source: &SourceMap) -> Problem {
    let err = innermost(err);
    let at = err.location().map(|l| Location {
        line: usize::try_from(l.line()).unwrap_or(usize::MAX),
        column: usize::try_from(l.column()).unwrap_or(usize::MAX),
    });
    let on_key = matches!(
        err,
        serde_saphyr::Error::SerdeUnknownField { .. } | serde_saphyr::Error::DuplicateMappingKey { .. }
    );
    if let serde_saphyr::Error::SerdeMissingField { .. } = err {
        // Reported at the mapping or at one of its keys: name the mapping, and let
        // the source map point at it (its key, when it is a mapping entry).
        let path = match at.map(|at| (source.values.get(&at), source.keys.get(&at))) {
            Some((Some(mapping), _)) => mapping.as_str(),
            Some((None, Some(key))) => parent(key),
            _ => within,
        };
        return Problem::new(path, message(err));
    }
    let path = at.and_then(|at| source.path_at(at, on_key)).unwrap_or(within);
    let problem = Problem::new(path, message(err));
    match at {
        Some(at) => problem.at(at),
        None => problem,
    }
}

fn innermost(err: &serde_saphyr::Error) -> &serde_saphyr::Error {
    match err {
        serde_saphyr::Error::WithSnippet { error, .. } => innermost(error),
        other => other,
    }
}

/// A clean problem message for a serde-saphyr error: lowercase, no position, no
/// trailing period, in the config's vocabulary.
fn message(err: &serde_saphyr::Error) -> String {
    use serde_saphyr::{Error, MessageFormatter, UserMessageFormatter};
    let raw = match err {
        Error::InvalidScalar { ty, .. } => return number_message(ty),
        Error::SerdeUnknownField { field, expected, .. } => {
            return if expected.is_empty() {
                format!("unknown field `{field}`: remove it")
            } else {
                format!("unknown field `{field}`: expected one of {}", expected.join(", "))
            };
        }
        Error::SerdeMissingField { field, .. } => return format!("missing field `{field}`: add it"),
        Error::Unexpected { expected, .. } => match *expected {
            "string scalar" => return "expected a string".to_owned(),
            "sequence start" => return "expected a list".to_owned(),
            "mapping start" => return "expected a mapping".to_owned(),
            other => format!("expected {other}"),
        },
        Error::Eof { .. } => return "the config is empty: start with `version: 1`".to_owned(),
        Error::ExpectedMappingEndAfterEnumVariantValue { .. } => {
            return "only one form is allowed here: remove the extra key".to_owned();
        }
        _ => UserMessageFormatter.format_message(err).into_owned(),
    };
    yaml_message(&raw)
}

fn number_message(ty: &str) -> String {
    let max = match ty {
        "u8" => u64::from(u8::MAX),
        "u16" => u64::from(u16::MAX),
        "u32" => u64::from(u32::MAX),
        "u64" | "usize" => return "expected a whole number".to_owned(),
        "bool" => return "expected `true` or `false`".to_owned(),
        other => return format!("expected a value of type {other}"),
    };
    format!("expected a whole number from 0 to {max}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
version: 1
listeners:
  - name: public
    address: 127.0.0.1:8080
    tls:
      certificates:
        - { hosts: [a.example], cert: a.pem, key: a.key }
        - hosts: [b.example]
          cert: b.pem
          key: b.key
upstreams:
  api:
    targets:
      - address: 10.0.0.1:80
routes:
  - name: r
    match: { path: / }
    target: { upstream: api }
";

    fn at(line: usize, column: usize) -> Option<Location> {
        Some(Location { line, column })
    }

    #[test]
    fn locates_keys_and_items() {
        let map = SourceMap::parse(DOC).unwrap();
        assert_eq!(map.locate("version"), at(1, 1));
        assert_eq!(map.locate("listeners[0]"), at(3, 5));
        assert_eq!(map.locate("listeners[0].address"), at(4, 5));
        assert_eq!(map.locate("listeners[0].tls.certificates[0].cert"), at(7, 33));
        assert_eq!(map.locate("listeners[0].tls.certificates[1]"), at(8, 11));
        assert_eq!(map.locate("listeners[0].tls.certificates[1].cert"), at(9, 11));
        assert_eq!(map.locate("upstreams.api"), at(12, 3));
        assert_eq!(map.locate("upstreams.api.targets"), at(13, 5));
        assert_eq!(map.locate("upstreams.api.targets[0].address"), at(14, 9));
        assert_eq!(map.locate("routes[0].match.path"), at(17, 14));
        assert_eq!(map.locate("routes[0].target.upstream"), at(18, 15));
    }

    #[test]
    fn missing_nodes_fall_back_to_the_nearest_ancestor() {
        let map = SourceMap::parse(DOC).unwrap();
        assert_eq!(map.locate("routes[0].match.path_prefix"), at(17, 5));
        assert_eq!(map.locate("routes[0].listeners[3]"), at(16, 5));
        assert_eq!(map.locate("server.grace_period"), at(1, 1));
        assert_eq!(SourceMap::empty().locate("version"), None);
    }

    #[test]
    fn syntax_errors_carry_the_parser_position() {
        let p = SourceMap::parse("version: 1\nroutes: [\n  a: 1\nb: 2\n").unwrap_err();
        assert_eq!(p.location, at(4, 3));
        assert!(p.message.starts_with("invalid yaml: "), "{}", p.message);
    }

    #[test]
    fn shape_errors_point_at_the_culprit() {
        let text = DOC.replace("    address: 127.0.0.1:8080", "    adress: 127.0.0.1:8080");
        let map = SourceMap::parse(&text).unwrap();
        let problems = deserialize(&text, &map).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "listeners[0].adress");
        assert_eq!(problems[0].location, at(4, 5));
        assert!(problems[0].message.starts_with("unknown field `adress`"), "{}", problems[0].message);
    }

    #[test]
    fn missing_fields_name_the_mapping() {
        let first = |text: &str| {
            let p = deserialize(text, &SourceMap::parse(text).unwrap()).unwrap_err().remove(0);
            (p.path, p.message, p.location)
        };
        let root = first("version: 1\nlisteners: []\n");
        assert_eq!(root, (String::new(), "missing field `routes`: add it".to_owned(), None));
        let item = first("version: 1\nlisteners:\n  - name: a\nroutes: []\n");
        assert_eq!(item.0, "listeners[0]");
        let nested = first("version: 1\nlisteners:\n  - name: a\n    tls:\n      min_version: '1.3'\n");
        assert_eq!(nested.0, "listeners[0].tls");
        assert_eq!(nested.1, "missing field `certificates`: add it");
    }

    #[test]
    fn one_shape_error_per_item() {
        let text = "version: 1\nlisteners: []\nroutes:\n  - name: a\n    match: { path: / }\n    target: { echo: {} }\n    extra: 1\n  - name: b\n    match: { path: /, methods: 3 }
    target: { echo: {} }\n";
        let map = SourceMap::parse(text).unwrap();
        let problems = deserialize(text, &map).unwrap_err();
        let got: Vec<_> = problems.iter().map(|p| (p.path.as_str(), p.location)).collect();
        assert!(got.contains(&("routes[0].extra", at(7, 5))), "{got:?}");
        assert!(got.contains(&("routes[1].match.methods", at(9, 32))), "{got:?}");
    }

    #[test]
    fn flow_style_items_are_read_whole_and_report_only_real_problems() {
        let text = "version: 1\nlisteners: [{ name: public, address: 127.0.0.1:8080 }]\nroutes: [{ name: r, match: { path_prefix: / }, target: { echo: {} } }, { name: s, match: { path_prefix: /s }, target: { echo: {} }, tyop: 1 }]\n";
        let problems = deserialize(text, &SourceMap::parse(text).unwrap()).unwrap_err();
        let got: Vec<_> = problems.iter().map(|p| (p.path.as_str(), p.message.as_str())).collect();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, "routes[1].tyop");
        assert!(got[0].1.starts_with("unknown field `tyop`"), "{got:?}");
    }
}
