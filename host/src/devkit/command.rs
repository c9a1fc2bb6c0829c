//! `sluice plugin …`: the plugin author's commands.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use anyhow::{Context, bail};

use super::harness::Golden;
use super::{harness, scaffold};
use crate::plugins::compat;

/// Commands for writing, building and testing plugins.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Create a plugin project: source, WIT, build script and a test, from the
    /// example of that language.
    New {
        /// The plugin's name (lowercase letters, digits, `-`); also the folder's,
        /// unless `--dir` is given.
        name: String,
        /// Language: rust, python, js, c, zig or go.
        #[arg(long, short, default_value = "rust")]
        lang: String,
        /// Where to create the project. Default: `./NAME`.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Start from this example instead of the language's minimal starter
        /// (`tally`: the full example, with request and response phases and `kv`).
        #[arg(long, value_name = "EXAMPLE")]
        example: Option<String>,
        /// Depend on this Rust SDK folder (`plugin-sdk` of a Sluice checkout) by
        /// path, for work on the SDK itself. Default: the project gets its own copy
        /// of the SDK this binary carries, so it builds without a checkout.
        #[arg(long, value_name = "PATH")]
        sdk: Option<PathBuf>,
    },
    /// Run a plugin's phases against a request described in a file, offline: the
    /// real gateway on loopback with a recording upstream, a fixed clock and a fresh
    /// in-memory kv. Prints the decision, the request the upstream got and the
    /// response the client got (JSON) on stdout, and the plugin's log lines and the
    /// gateway's warnings on stderr (`SLUICE_LOG` filters them).
    Test {
        /// The plugin component, or the name of a built-in plugin (`auth`).
        plugin: PathBuf,
        /// The plugin's config (YAML or JSON). Default `{}`.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The request (YAML): method, path, headers, body, and optionally the
        /// upstream's recorded response, the clock, grants and secrets.
        #[arg(long, value_name = "FILE")]
        request: PathBuf,
        /// Compare the outcome with this golden file and fail on a difference (the
        /// file is written when it does not exist yet).
        #[arg(long, value_name = "FILE")]
        expect: Option<PathBuf>,
        /// Rewrite the `--expect` file with this run's outcome.
        #[arg(long, requires = "expect", env = "SLUICE_BLESS", value_parser = clap::builder::BoolishValueParser::new())]
        bless: bool,
    },
    /// Check that a component is a plugin this gateway can load, and list the
    /// grants its imports need.
    Check {
        /// The plugin component.
        plugin: PathBuf,
    },
    /// Generate bindings for a world of a WIT folder (C: a header, its `.c` and the
    /// `<world>_component_type.o` to link in).
    Bindgen {
        /// Language of the bindings: c.
        #[arg(long, short)]
        lang: String,
        /// The WIT folder (with the host's WIT in `deps/`). Default `wit`.
        #[arg(long, value_name = "DIR", default_value = "wit")]
        wit: PathBuf,
        /// The world. Default: the folder's only world.
        #[arg(long, value_name = "NAME")]
        world: Option<String>,
        /// Where to write the files.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Turn a core Wasm module (wasm32-wasi or wasip1, reactor, linked with the
    /// bindings' component-type object or given `--wit`) into the component the
    /// gateway loads.
    Componentize {
        /// The core module.
        module: PathBuf,
        /// The component to write.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Embed the type of a world of this WIT folder (with the host's WIT in
        /// `deps/`) into the module first, for toolchains that cannot link the
        /// `<world>_component_type.o` (Go).
        #[arg(long, value_name = "DIR")]
        wit: Option<PathBuf>,
        /// The world of `--wit`. Default: the folder's only world.
        #[arg(long, value_name = "NAME", requires = "wit")]
        world: Option<String>,
    },
    /// Print the WIT plugins are written against (or write it into a folder).
    Wit {
        /// Write `plugin.wit` into this folder instead of printing it.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// Runs a `sluice plugin` command.
pub fn run(cmd: PluginCommand) -> ExitCode {
    let result = match cmd {
        PluginCommand::New { name, lang, dir, example, sdk } => new(name, lang, dir, example, sdk),
        PluginCommand::Test { plugin, config, request, expect, bless } => {
            test(&plugin, config.as_deref(), &request, expect.as_deref(), bless)
        }
        PluginCommand::Check { plugin } => check(&plugin),
        PluginCommand::Bindgen { lang, wit, world, out } => bindgen(&lang, &wit, world.as_deref(), &out),
        PluginCommand::Componentize { module, output, wit, world } => {
            componentize(&module, &output, wit.as_deref(), world.as_deref())
        }
        PluginCommand::Wit { out: None } => {
            print!("{}", compat::WIT);
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Wit { out: Some(dir) } => write_wit(&dir),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}

fn new(
    name: String,
    lang: String,
    dir: Option<PathBuf>,
    example: Option<String>,
    sdk: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
    let files =
        scaffold::scaffold(&scaffold::Scaffold { name: name.clone(), lang, example, dir: dir.clone(), sdk })?;
    println!("created {} ({} files):", dir.display(), files.len());
    for f in &files {
        println!("  {}", f.display());
    }
    println!(
        "next: cd {} && ./test.sh   (builds {name}.wasm into build/ and runs its fixtures; see README.md)",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn test(
    plugin: &Path,
    config: Option<&Path>,
    request: &Path,
    expect: Option<&Path>,
    bless: bool,
) -> anyhow::Result<ExitCode> {
    let sources = harness::Sources { config, fixture: Some(request) };
    let config = match config {
        Some(path) => harness::read_config(path)?,
        None => serde_json::json!({}),
    };
    let fixture = harness::read_fixture(request)?;
    // The plugin's own log lines, and the gateway's warnings (a plugin fault names
    // its cause there), on stderr; the outcome stays alone on stdout.
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sluice::plugin=trace"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .compact()
        .try_init();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let outcome = runtime.block_on(harness::run_from(plugin, &config, &fixture, sources))?;
    println!("{}", serde_json::to_string_pretty(&outcome)?);
    let Some(expect) = expect else { return Ok(ExitCode::SUCCESS) };
    match harness::check_golden(&outcome, expect, bless)? {
        Golden::Matches => {
            eprintln!("ok: {} matches {}", request.display(), expect.display());
            Ok(ExitCode::SUCCESS)
        }
        Golden::Created => {
            eprintln!(
                "created {} from this run (it did not exist): review it, and check it in",
                expect.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Golden::Blessed => {
            eprintln!("blessed: wrote this run to {}", expect.display());
            Ok(ExitCode::SUCCESS)
        }
        Golden::Differs(diff) => {
            eprintln!(
                "{} differs from {} (- expected, + this run; rerun with --bless to accept):\n{diff}",
                request.display(),
                expect.display()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

fn check(plugin: &Path) -> anyhow::Result<ExitCode> {
    use crate::plugins::registry::PluginSource;
    let component = crate::plugins::cache::load_component(
        PluginSource::File(plugin),
        crate::plugins::cache::default_cache_dir().as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    let caps = compat::check_links(&component).map_err(|e| anyhow::anyhow!("{}: {e}", plugin.display()))?;
    println!("{}: ok, a {}/plugin@{} component", plugin.display(), compat::PACKAGE, compat::WIT_VERSION);
    // What a route's `grants:` must add to what every plugin has by default.
    let defaults = crate::plugins::host_api::Grants::default();
    let grants: Vec<&str> = caps.iter().copied().filter(|c| !defaults.has(c)).collect();
    println!("  imports: {}", if caps.is_empty() { "types only".to_owned() } else { caps.join(", ") });
    if grants.is_empty() {
        println!("  grants a route must give it: none");
    } else {
        println!("  grants a route must give it: {}", grants.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

fn bindgen(lang: &str, wit: &Path, world: Option<&str>, out: &Path) -> anyhow::Result<ExitCode> {
    if lang != "c" {
        bail!(
            "no `{lang}` bindings here: `sluice plugin bindgen` writes C (Rust uses the SDK, Python and JS toolchains generate their own)"
        );
    }
    let files = super::bindgen::c_bindings(wit, world)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for (name, contents) in &files {
        let path = out.join(name);
        std::fs::write(&path, contents).with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn componentize(
    module: &Path,
    output: &Path,
    wit: Option<&Path>,
    world: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let core = std::fs::read(module).with_context(|| format!("cannot read {}", module.display()))?;
    let world = wit.map(|dir| super::bindgen::load_world(dir, world)).transpose()?;
    let component = super::componentize::componentize(&core, world.as_ref().map(|(r, w)| (r, *w)))
        .with_context(|| module.display().to_string())?;
    std::fs::write(output, &component).with_context(|| format!("cannot write {}", output.display()))?;
    println!("wrote {} ({} bytes)", output.display(), component.len());
    Ok(ExitCode::SUCCESS)
}

fn write_wit(dir: &Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir)?;
    let file = dir.join("plugin.wit");
    std::fs::write(&file, compat::WIT)?;
    println!("wrote {}", file.display());
    Ok(ExitCode::SUCCESS)
}
