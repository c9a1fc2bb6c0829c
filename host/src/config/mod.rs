//! Configuration: the YAML model, its validation and its error reporting.
//!
//! The recipe: [`load_file`] (or [`parse_str`]) reads YAML into a [`Config`] and keeps a
//! [`SourceMap`] of where every node was written; [`validate`] checks the whole config
//! and returns every [`Problem`] it finds, each addressed by a path such as
//! `routes[2].target.upstream`; the snapshot builder adds problems of its own (a
//! certificate that does not load, a route pattern that does not compile); finally
//! [`ConfigError::new`] resolves every path to a file, line and column.
//!
//! A config with problems never goes live: at startup the process exits with every
//! problem listed, on reload the previous snapshot keeps serving.

pub mod aggregate;
pub mod cache;
pub mod files;
pub mod function;
pub mod kv;
mod locate;
pub mod mcp;
pub mod model;
pub mod plugins;
mod schema;
pub mod split;
pub mod types;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

pub use aggregate::*;
pub use cache::*;
pub use function::*;
pub use kv::*;
pub use locate::SourceMap;
pub use mcp::*;
pub use model::*;
pub use plugins::*;
pub use schema::json_schema;
pub use split::*;
pub use types::{ByteSize, ConfigDuration, HostPort, ListenAddr, Name};
pub use validate::validate;

/// The quick-start config, embedded in the binary: `sluice run` with no `--config`
/// serves it.
pub const QUICKSTART_YAML: &str = include_str!("../../../examples/quickstart/sluice.yaml");
/// The name under which the embedded quick-start config reports problems.
pub const QUICKSTART_NAME: &str = "<embedded quickstart>";

/// One problem found in a config, before it is given a location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Path of the offending node: `listeners[0].tls.certificates[1].cert`. Empty for
    /// the document as a whole.
    pub path: String,
    /// What is wrong, lowercase, without a trailing period.
    pub message: String,
    /// An explicit position, for problems found before the path can be resolved (a
    /// YAML syntax error, a shape error reported by the deserializer). When set, it
    /// wins over the position of `path`.
    pub location: Option<Location>,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into(), location: None }
    }

    /// The same problem, pinned to an explicit position.
    pub fn at(mut self, location: Location) -> Self {
        self.location = Some(location);
        self
    }
}

/// A line and column in the config file, both 1-based. Ordered by line, then column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// One located problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Where it is, when known.
    pub location: Option<Location>,
    /// The path of the offending node (may be empty).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Every problem of a config file, each with its location.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    /// The config's file name (or [`QUICKSTART_NAME`]).
    pub source_name: String,
    /// The problems, in file order.
    pub issues: Vec<Issue>,
}

impl ConfigError {
    /// Locates `problems` in `source` and sorts them by position.
    pub fn new(source_name: &str, source: &SourceMap, problems: Vec<Problem>) -> Self {
        let mut issues: Vec<Issue> = problems
            .into_iter()
            .map(|p| Issue {
                location: p.location.or_else(|| source.locate(&p.path)),
                path: p.path,
                message: p.message,
            })
            .collect();
        issues.sort_by_key(|i| i.location.map(|l| (l.line, l.column)).unwrap_or((0, 0)));
        issues.dedup();
        Self { source_name: source_name.to_owned(), issues }
    }

    /// A single problem that has no position, like a file that cannot be read.
    pub fn whole_file(source_name: &str, message: impl Into<String>) -> Self {
        Self {
            source_name: source_name.to_owned(),
            issues: vec![Issue { location: None, path: String::new(), message: message.into() }],
        }
    }
}

impl fmt::Display for ConfigError {
    /// One problem per line: `file:line:column: path: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.source_name)?;
            if let Some(l) = issue.location {
                write!(f, ":{}:{}", l.line, l.column)?;
            }
            if issue.path.is_empty() {
                write!(f, ": {}", issue.message)?;
            } else {
                write!(f, ": {}: {}", issue.path, issue.message)?;
            }
        }
        Ok(())
    }
}

/// A parsed and validated config with what is needed to report later problems.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The config itself.
    pub config: Config,
    /// Positions of its nodes.
    pub source: SourceMap,
    /// File name for messages.
    pub source_name: String,
    /// Directory that relative paths in the config are resolved against.
    pub base_dir: PathBuf,
    /// Files the plugin configs referenced with `$file` (see [`files`]), which the
    /// reload watcher follows.
    pub files: Vec<PathBuf>,
}

impl LoadedConfig {
    /// Builds a [`ConfigError`] from problems found after parsing (snapshot build).
    pub fn error(&self, problems: Vec<Problem>) -> ConfigError {
        ConfigError::new(&self.source_name, &self.source, problems)
    }

    /// Resolves a path written in the config against the config's directory.
    pub fn resolve_path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() { p.to_owned() } else { self.base_dir.join(p) }
    }
}

/// Reads, parses and validates a config file.
pub fn load_file(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::whole_file(&name, format!("cannot read config file: {e}")))?;
    let base = path.parent().map(Path::to_owned).unwrap_or_default();
    parse_str(&name, &text, base)
}

/// Parses and validates config text. `base_dir` resolves relative file paths.
pub fn parse_str(source_name: &str, text: &str, base_dir: PathBuf) -> Result<LoadedConfig, ConfigError> {
    let source =
        SourceMap::parse(text).map_err(|p| ConfigError::new(source_name, &SourceMap::empty(), vec![p]))?;
    let mut config =
        locate::deserialize(text, &source).map_err(|p| ConfigError::new(source_name, &source, p))?;
    let mut problems = validate(&config);
    let files = files::resolve(&mut config, &base_dir).unwrap_or_else(|p| {
        problems.extend(p);
        Vec::new()
    });
    if !problems.is_empty() {
        return Err(ConfigError::new(source_name, &source, problems));
    }
    Ok(LoadedConfig { config, source, source_name: source_name.to_owned(), base_dir, files })
}

/// The embedded quick-start config, parsed.
pub fn quickstart() -> LoadedConfig {
    parse_str(QUICKSTART_NAME, QUICKSTART_YAML, PathBuf::from("."))
        .expect("the embedded quick-start config is valid")
}
