//! The command line: `sluice run`, `sluice check`, `sluice schema`,
//! `sluice import openapi` (in [`crate::openapi::import`]), and the plugin author's
//! `sluice plugin …` (in [`crate::devkit::command`]).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, LoadedConfig};
use crate::snapshot::Snapshot;

/// Sluice: a programmable HTTP API gateway with sandboxed WebAssembly plugins.
///
/// With no command, `sluice` runs the gateway on the embedded quick-start config
/// (http://127.0.0.1:8080, try `curl localhost:8080/echo/hi`).
#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    propagate_version = true,
    after_help = "Examples:\n  sluice                          serve the quick-start config on 127.0.0.1:8080\n  sluice run --config gw.yaml     serve your config\n  sluice check gw.yaml other.yaml validate configs, list every problem\n  sluice schema > sluice.schema.json\n  sluice schema --plugin auth     the auth plugin's config schema\n  sluice import openapi api.yaml > gw.yaml\n  sluice plugin new quota --lang python\n  sluice plugin test quota.wasm --config c.json --request req.yaml --expect req.expected.json"
)]
pub struct Cli {
    /// What to do (default: `run`).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Sluice's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Run {
        /// Config file (YAML). Without it, the embedded quick-start config is served.
        #[arg(short, long, value_name = "FILE", env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
        /// Worker threads serving requests, each with its own single-threaded runtime
        /// and its own `SO_REUSEPORT` copy of every listener. Default: one per CPU core.
        #[arg(long, value_name = "N", env = "SLUICE_WORKERS")]
        workers: Option<usize>,
        /// Do not watch the config file; reload only on SIGHUP or `POST /-/reload`.
        #[arg(long)]
        no_watch: bool,
    },
    /// Validate config files without serving: prints every problem with its file,
    /// line and column, and exits non-zero if any file has one.
    Check {
        /// Config files to check (each on its own, as `sluice run` would load it).
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the JSON Schema of the config file format (for editors and CI linting),
    /// or of a built-in plugin's `config:`.
    Schema {
        /// A built-in plugin (`ai`, `auth`, `cors`, `mcp`, `openapi-validate`, `rate-limit`,
        /// `transform`) whose config schema to print instead.
        #[arg(long, value_name = "NAME")]
        plugin: Option<String>,
    },
    /// Generate config from another description of an API.
    Import {
        /// What to import from.
        #[command(subcommand)]
        command: ImportCommand,
    },
    /// Write and test plugins: scaffold a project, run a plugin offline against a
    /// request file, check a component, print the WIT.
    Plugin {
        /// What to do.
        #[command(subcommand)]
        command: crate::devkit::command::PluginCommand,
    },
}

/// What `sluice import` reads.
#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Print a config (YAML) for an OpenAPI 3.0/3.1 document: an upstream per server
    /// URL, a route per path with its operations' methods, and the `openapi-validate`
    /// plugin on each route checking requests against the document.
    Openapi {
        /// The OpenAPI document (YAML or JSON).
        #[arg(value_name = "SPEC")]
        spec: PathBuf,
        /// Route to this upstream (of the config the output is merged into) instead
        /// of making upstreams from the document's servers.
        #[arg(long, value_name = "NAME")]
        upstream: Option<String>,
        /// Serve the API under this path prefix (stripped again before the upstream).
        #[arg(long, value_name = "PATH")]
        prefix: Option<String>,
        /// The generated listener's address.
        #[arg(long, value_name = "ADDR", default_value = crate::openapi::import::DEFAULT_LISTEN)]
        listen: String,
        /// The path the generated `spec: { $file: … }` references, as the config will
        /// find it (relative to the config's folder). Default: SPEC as given.
        #[arg(long, value_name = "PATH")]
        spec_ref: Option<String>,
    },
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run { config: None, workers: None, no_watch: false }) {
        Command::Run { config, workers, no_watch } => run(config, workers, !no_watch),
        Command::Check { files } => check_all(&files),
        Command::Plugin { command } => crate::devkit::command::run(command),
        Command::Import { command } => import(command),
        Command::Schema { plugin: None } => {
            println!("{:#}", config::json_schema());
            ExitCode::SUCCESS
        }
        Command::Schema { plugin: Some(name) } => match crate::plugins::builtin::schema(&name) {
            Some(schema) => {
                println!("{}", schema.trim_end());
                ExitCode::SUCCESS
            }
            None => {
                let known = crate::plugins::builtin::names().collect::<Vec<_>>().join(", ");
                eprintln!("error: no built-in plugin `{name}` with a config schema (built-in: {known})");
                ExitCode::from(2)
            }
        },
    }
}

/// `sluice import …`: the config on stdout, or the problem (with its JSON pointer)
/// on stderr and exit code 1.
fn import(command: ImportCommand) -> ExitCode {
    let ImportCommand::Openapi { spec, upstream, prefix, listen, spec_ref } = command;
    let options = crate::openapi::ImportOptions {
        spec_ref: spec_ref.unwrap_or_else(|| spec.display().to_string()),
        upstream,
        prefix,
        listen: Some(listen),
    };
    let result = crate::openapi::read_document(&spec).and_then(|doc| crate::openapi::import(&doc, &options));
    match result {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}: {e}", spec.display());
            ExitCode::FAILURE
        }
    }
}

fn load(path: Option<&PathBuf>) -> Result<LoadedConfig, config::ConfigError> {
    match path {
        Some(p) => config::load_file(p),
        None => Ok(config::quickstart()),
    }
}

/// Checks every file; fails when any has a problem.
fn check_all(files: &[PathBuf]) -> ExitCode {
    let failed = files.iter().filter(|f| !check(f)).count();
    if files.len() > 1 && failed > 0 {
        eprintln!("{failed} of {} files have problems", files.len());
    }
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// Checks one file: `FILE: ok (…)` on stdout, or its problems on stderr.
fn check(file: &PathBuf) -> bool {
    let problems = |e: &config::ConfigError| {
        eprintln!("{e}");
        eprintln!("{}: {} problem(s) found", file.display(), e.issues.len());
        false
    };
    let loaded = match load(Some(file)) {
        Ok(l) => l,
        Err(e) => return problems(&e),
    };
    let routes = loaded.config.routes.len();
    let upstreams = loaded.config.upstreams.len();
    match Snapshot::build(loaded, 0) {
        Ok(_) => {
            println!("{}: ok ({routes} routes, {upstreams} upstreams)", file.display());
            true
        }
        Err(e) => problems(&e),
    }
}

fn run(config: Option<PathBuf>, workers: Option<usize>, watch: bool) -> ExitCode {
    let loaded = match load(config.as_ref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    crate::observability::init(loaded.config.server.access_log.format);
    if config.is_none() {
        tracing::info!("no --config given: serving the embedded quick-start config");
    }
    // Requests are served on the worker threads (`crate::workers`); this thread's
    // runtime runs the control plane: signals, reloads, the admin listener, health checks.
    let workers = workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, usize::from).min(crate::workers::MAX)
    });
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let signals = match crate::gateway::Signals::install() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mut builder = crate::Gateway::builder().workers(workers);
        if let Some(path) = &config {
            // Already validated above; `config_file` remembers the path for reloads.
            builder = match builder.config_file(path) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
        } else {
            builder = builder.config(loaded);
        }
        let gw = match builder.start().await {
            Ok(gw) => gw,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let _watch = match (&config, watch) {
            (Some(path), true) => match crate::reload::watch_config(gw.clone(), path) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP or the admin API");
                    None
                }
            },
            _ => None,
        };
        gw.run_until_signal(signals).await;
        ExitCode::SUCCESS
    })
}
