//! The `function` route target: a WebAssembly component implementing the standard
//! `wasi:http/incoming-handler` interface (the `wasi:http/proxy` world that
//! `wasmtime serve` and Spin run), served inside the gateway. Checked by
//! [`validate_function`]; the component itself is checked when the snapshot is built
//! (see `crate::function`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ByteSize, ConfigDuration, MAX_PLUGIN_MEMORY, Name, Problem};

/// Default `limits.deadline` of a function: the CPU time one request may use.
pub const DEFAULT_FUNCTION_DEADLINE: ConfigDuration = ConfigDuration::secs(1);
/// Default `limits.timeout` of a function: how long one request may take in all.
pub const DEFAULT_FUNCTION_TIMEOUT: ConfigDuration = ConfigDuration::secs(30);
/// Default `limits.memory` of a function: its linear memory per request.
pub const DEFAULT_FUNCTION_MEMORY: ByteSize = ByteSize::mib(64);
/// Default `limits.max_concurrent` of a function.
pub const DEFAULT_FUNCTION_MAX_CONCURRENT: usize = 100;
/// Largest `limits.max_concurrent` (the process's instance slots are shared with
/// the plugins).
pub const MAX_FUNCTION_CONCURRENT: usize = 5_000;

/// A function target: `target: { function: { component: hello.wasm } }`.
///
/// Each request gets a fresh instance of the component (the `wasi:http` model:
/// nothing a request leaves in memory is seen by the next), whose
/// `wasi:http/incoming-handler.handle` gets the request — after the route's plugins'
/// request phase — and whose response goes back through their response phase. The
/// request body streams in and the response body streams out. The function has no
/// filesystem, no sockets, no environment variables, and its outgoing HTTP requests
/// (`wasi:http/outgoing-handler`) are refused (`HTTP-request-denied`) except to the
/// upstream pools listed in `outgoing`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FunctionConfig {
    /// The component: a file of the plugins folder (`plugins.dir`), `hello.wasm`
    /// (`hello` means the same). Replacing the file reloads the config, like a plugin.
    pub component: String,
    /// The sandbox's limits.
    #[serde(default)]
    pub limits: FunctionLimitsConfig,
    /// Upstream pools (names under `upstreams`) the function may call: a request to
    /// `http://NAME/path` goes to that pool, with its balancing, health checks,
    /// retries and timeouts. Every other outgoing request is refused
    /// (`HTTP-request-denied`), so the function reaches nothing the operator did not
    /// name. Default: none.
    #[serde(default)]
    pub outgoing: Vec<Name>,
}

impl FunctionConfig {
    /// The component's file name in the plugins folder (`.wasm` added when missing).
    pub fn file_name(&self) -> String {
        if self.component.ends_with(".wasm") {
            self.component.clone()
        } else {
            format!("{}.wasm", self.component)
        }
    }
}

/// Limits of a function target, per request.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FunctionLimitsConfig {
    /// Longest time one request's function may run (CPU, counted in 2 ms epoch
    /// ticks in which it ran; time spent waiting for the request body, for the client
    /// to take the response or yielded to other requests does not count). Past it the
    /// function is stopped: `504 function_timeout` if it had not answered yet, else
    /// its response body ends early. Default `1s`.
    #[serde(default)]
    pub deadline: Option<ConfigDuration>,
    /// Longest time one request's function may take in all, waiting included; past it
    /// the function is stopped like at the deadline. Default `30s`.
    #[serde(default)]
    pub timeout: Option<ConfigDuration>,
    /// Largest linear memory of the function's instance; growing past it fails the
    /// request (`502 function_failed`). Default `64MiB`, at most `256MiB`.
    #[serde(default)]
    pub memory: Option<ByteSize>,
    /// Most requests the function serves at once (each holds an instance until its
    /// response body ends); one more is answered `503 function_busy`. Default `100`,
    /// at most `5000`.
    #[serde(default)]
    pub max_concurrent: Option<usize>,
}

/// Every problem of the function target at `at` (`routes[i].target.function`) that
/// can be seen without loading the component.
pub fn validate_function(f: &FunctionConfig, at: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    let file = f.file_name();
    let stem = file.trim_end_matches(".wasm");
    if stem.is_empty() || stem.starts_with('.') || file.contains(['/', '\\']) {
        problems.push(Problem::new(
            format!("{at}.component"),
            format!("`{}` is not a file name of the plugins folder (like `hello.wasm`)", f.component),
        ));
    }
    let l = &f.limits;
    for (field, d) in [("deadline", l.deadline), ("timeout", l.timeout)] {
        if d.is_some_and(|d| d.get().is_zero()) {
            problems.push(Problem::new(format!("{at}.limits.{field}"), "must be more than 0ms"));
        }
    }
    if let Some(m) = l.memory
        && (m.bytes() > MAX_PLUGIN_MEMORY.bytes() || m.bytes() == 0)
    {
        problems.push(Problem::new(
            format!("{at}.limits.memory"),
            format!("must be more than 0 and at most {MAX_PLUGIN_MEMORY}"),
        ));
    }
    if let Some(n) = l.max_concurrent
        && !(1..=MAX_FUNCTION_CONCURRENT).contains(&n)
    {
        problems.push(Problem::new(
            format!("{at}.limits.max_concurrent"),
            format!("must be between 1 and {MAX_FUNCTION_CONCURRENT}"),
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function(component: &str) -> FunctionConfig {
        FunctionConfig {
            component: component.into(),
            limits: FunctionLimitsConfig::default(),
            outgoing: Vec::new(),
        }
    }

    #[test]
    fn file_name_adds_the_extension_once() {
        assert_eq!(function("hello").file_name(), "hello.wasm");
        assert_eq!(function("hello.wasm").file_name(), "hello.wasm");
    }

    #[test]
    fn paths_and_bad_limits_are_named() {
        let mut f = function("../etc/hello.wasm");
        f.limits.deadline = Some(ConfigDuration::millis(0));
        f.limits.memory = Some(ByteSize::mib(1024));
        f.limits.max_concurrent = Some(0);
        let paths: Vec<String> =
            validate_function(&f, "routes[0].target.function").into_iter().map(|p| p.path).collect();
        assert_eq!(
            paths,
            [
                "routes[0].target.function.component",
                "routes[0].target.function.limits.deadline",
                "routes[0].target.function.limits.memory",
                "routes[0].target.function.limits.max_concurrent",
            ]
        );
        assert!(validate_function(&function("hello"), "x").is_empty());
    }
}
