//! The offline plugin harness behind `sluice plugin test`: runs one plugin's phases
//! against a request described in a file, and reports the decision, the request the
//! upstream got and the response the client got.
//!
//! It runs the real gateway — the same loading, chain and proxy code as production —
//! on loopback, with a recording upstream that answers with the fixture's recorded
//! response, a fixed plugin clock and a fresh in-memory `kv`. So a harness run makes
//! exactly the decision a gateway run makes, and the output is reproducible enough
//! to check in as a golden file.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::Gateway;
use crate::plugins::LoadOptions;
use crate::plugins::host_api::{InProcessKv, PluginClock};

/// The plugin clock of a run unless the fixture says otherwise: 2023-11-14T22:13:20Z.
pub const DEFAULT_NOW_MS: u64 = 1_700_000_000_000;

/// The request id a run sends (and the gateway keeps) unless the fixture sets one.
pub const DEFAULT_REQUEST_ID: &str = "harness-request";

/// Host header sent unless the fixture sets one.
pub const DEFAULT_HOST: &str = "gateway.test";

/// A request to run a plugin against (the `--request` file, YAML or JSON).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// Request method. Default `GET`.
    #[serde(default = "default_method")]
    pub method: String,
    /// Path and query, like `/orders?limit=5`. Default `/`.
    #[serde(default = "default_path")]
    pub path: String,
    /// Request headers: a map of name to value (or list of values).
    #[serde(default)]
    pub headers: BTreeMap<String, OneOrMany>,
    /// Request body (text).
    #[serde(default)]
    pub body: Option<String>,
    /// What the upstream answers if the chain lets the request through. Default: 200
    /// with an empty body.
    #[serde(default)]
    pub upstream: RecordedResponse,
    /// The plugin clock, in Unix milliseconds. Default [`DEFAULT_NOW_MS`].
    #[serde(default)]
    pub now_ms: Option<u64>,
    /// Grants for the plugin, as in a route's `grants:` (default `{ kv: true }`; `log`,
    /// `clock` and `metrics` are granted unless set to false).
    #[serde(default)]
    pub grants: Option<Value>,
    /// Secrets the plugin may read, by name (granted as `grants.secrets`).
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
}

fn default_method() -> String {
    "GET".to_owned()
}

fn default_path() -> String {
    "/".to_owned()
}

/// One header value or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One value.
    One(String),
    /// Several values, sent as separate header lines.
    Many(Vec<String>),
}

impl OneOrMany {
    fn values(&self) -> &[String] {
        match self {
            Self::One(v) => std::slice::from_ref(v),
            Self::Many(v) => v,
        }
    }
}

/// A recorded upstream response.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedResponse {
    /// Status. Default 200.
    #[serde(default = "default_status")]
    pub status: u16,
    /// Headers.
    #[serde(default)]
    pub headers: BTreeMap<String, OneOrMany>,
    /// Body (text).
    #[serde(default)]
    pub body: String,
}

fn default_status() -> u16 {
    200
}

impl Default for RecordedResponse {
    fn default() -> Self {
        Self { status: 200, headers: BTreeMap::new(), body: String::new() }
    }
}

/// What a run did: the output of `sluice plugin test`, compared with `--expect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// `continue` when the request reached the upstream, `respond` when a plugin
    /// answered it.
    pub decision: Decision,
    /// The request as the upstream received it (absent when a plugin answered).
    pub upstream_request: Option<SeenRequest>,
    /// The response as the client received it.
    pub response: SeenResponse,
}

/// The request phase's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The request went on to the upstream.
    Continue,
    /// A plugin answered it.
    Respond,
}

/// A request as the upstream saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeenRequest {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers (lower-case names; several values joined by `, `).
    pub headers: BTreeMap<String, String>,
    /// Body as text (invalid UTF-8 replaced).
    pub body: String,
}

/// A response as the client saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeenResponse {
    /// Status.
    pub status: u16,
    /// Headers (lower-case names; several values joined by `, `), without `date`.
    pub headers: BTreeMap<String, String>,
    /// Body as text (invalid UTF-8 replaced).
    pub body: String,
}

/// Reads a `--request` file.
pub fn read_fixture(path: &Path) -> Result<Fixture> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_fixture(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Parses a fixture's YAML (or JSON) text.
pub fn parse_fixture(text: &str) -> Result<Fixture> {
    serde_saphyr::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Reads a plugin's `--config` file (YAML or JSON) into the JSON its `configure` gets.
pub fn read_config(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_saphyr::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Runs the plugin `plugin` (configured with `config`) against `fixture`. `plugin` is
/// a component file, named after the file (`tally.wasm` → `tally`, shadowing a
/// built-in of that name as in the gateway), or the name of a built-in plugin
/// (`auth`). Load errors (a bad component, a rejected config) are returned with the
/// gateway's messages.
pub async fn run(plugin: &Path, config: &Value, fixture: &Fixture) -> Result<Outcome> {
    run_from(plugin, config, fixture, Sources::default()).await
}

/// The files a run's plugin config and fixture came from, so that a load the gateway
/// rejects is reported at the user's files (`tally.yaml:3:5: required_header: …`)
/// rather than at the one-route config the harness generated.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sources<'a> {
    /// The `--config` file.
    pub config: Option<&'a Path>,
    /// The `--request` file (its `grants` and `secrets` go on the entry).
    pub fixture: Option<&'a Path>,
}

/// The generated config's one plugin entry.
const ENTRY: &str = "routes[0].plugins[0]";

/// A rejected load in the terms of the user's files: problems in the entry's
/// `config` at the `--config` file, problems in its `grants` at the fixture, the
/// rest (a bad component, a missing plugin) without a position in a file the user
/// never wrote.
fn explain(err: crate::gateway::StartError, sources: Sources<'_>) -> anyhow::Error {
    let crate::gateway::StartError::Config(config) = err else { return anyhow::anyhow!("{err}") };
    let lines: Vec<String> = config
        .issues
        .iter()
        .map(|issue| {
            let rest = issue.path.strip_prefix(ENTRY).unwrap_or(&issue.path);
            let in_file = |file: Option<&Path>, field: &str| match file {
                Some(file) => located(file, field, &issue.message),
                None if field.is_empty() => issue.message.clone(),
                None => format!("{field}: {}", issue.message),
            };
            if let Some(field) = rest.strip_prefix(".config") {
                in_file(sources.config, field.trim_start_matches('.'))
            } else if rest.starts_with(".grants") {
                in_file(sources.fixture, rest.trim_start_matches('.'))
            } else {
                issue.message.clone()
            }
        })
        .collect();
    anyhow::anyhow!(lines.join("\n"))
}

/// `file:line:column: field: message`, `field` located in `file` (a YAML or JSON
/// file) when it can be.
fn located(file: &Path, field: &str, message: &str) -> String {
    let at = std::fs::read_to_string(file)
        .ok()
        .and_then(|text| crate::config::SourceMap::parse(&text).ok())
        .and_then(|map| map.locate(field));
    let place = match at {
        Some(l) => format!("{}:{}:{}", file.display(), l.line, l.column),
        None => file.display().to_string(),
    };
    if field.is_empty() { format!("{place}: {message}") } else { format!("{place}: {field}: {message}") }
}

/// [`run`], reporting a rejected load at `sources`.
pub async fn run_from(
    plugin: &Path,
    config: &Value,
    fixture: &Fixture,
    sources: Sources<'_>,
) -> Result<Outcome> {
    let name = plugin
        .file_stem()
        .and_then(|s| s.to_str())
        .with_context(|| format!("{}: not a plugin file name", plugin.display()))?
        .to_owned();
    let work = tempfile::tempdir().context("cannot create a temporary folder")?;
    let dir = work.path().join("plugins");
    std::fs::create_dir_all(&dir)?;
    let builtin = !plugin.exists() && crate::plugins::builtin::get(&name).is_some();
    if !builtin {
        std::fs::copy(plugin, dir.join(format!("{name}.wasm")))
            .with_context(|| format!("cannot read {}", plugin.display()))?;
    }

    let recorder = Recorder::start(fixture.upstream.clone()).await?;
    let yaml = gateway_config(&name, config, fixture, &dir, work.path(), recorder.addr)?;
    let options = LoadOptions {
        clock: PluginClock::Fixed { now_ms: fixture.now_ms.unwrap_or(DEFAULT_NOW_MS) },
        kv: Some(Arc::new(InProcessKv::default())),
        ..LoadOptions::default()
    };
    let gw = Gateway::builder()
        .config_yaml(&yaml)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .load_options(options)
        .start()
        .await
        .map_err(|e| explain(e, sources))?;
    let sent = send(gw.addr("harness"), fixture).await;
    gw.shutdown().await;
    let response = sent?;
    let upstream_request = recorder.seen.lock().expect("recorder lock").take();
    let decision = if upstream_request.is_some() { Decision::Continue } else { Decision::Respond };
    Ok(Outcome { decision, upstream_request, response })
}

/// The one-route gateway config of a run, as JSON text (which is YAML).
fn gateway_config(
    name: &str,
    config: &Value,
    fixture: &Fixture,
    plugins_dir: &Path,
    work: &Path,
    upstream: SocketAddr,
) -> Result<String> {
    let mut grants = match &fixture.grants {
        Some(Value::Object(g)) => g.clone(),
        Some(other) => bail!("`grants` must be a map like the route's `grants:`, got {other}"),
        None => serde_json::Map::from_iter([("kv".to_owned(), Value::Bool(true))]),
    };
    if !fixture.secrets.is_empty() {
        let mut secrets = serde_json::Map::new();
        for (i, (k, v)) in fixture.secrets.iter().enumerate() {
            let file = work.join(format!("secret-{i}"));
            std::fs::write(&file, v)?;
            secrets.insert(k.clone(), serde_json::json!({ "file": file }));
        }
        grants.insert("secrets".to_owned(), Value::Object(secrets));
    }
    let doc = serde_json::json!({
        "version": 1,
        "listeners": [{
            "name": "harness",
            "address": "127.0.0.1:0",
            "forwarded": { "x_forwarded": false },
            "request_id": { "trust_incoming": true },
        }],
        "plugins": { "dir": plugins_dir },
        "upstreams": { "recorded": { "targets": [{ "address": upstream.to_string() }] } },
        "routes": [{
            "name": "harness",
            "match": { "path_prefix": "/" },
            "target": { "upstream": "recorded" },
            "plugins": [{ "name": name, "config": config, "grants": grants }],
        }],
    });
    Ok(doc.to_string())
}

/// Sends the fixture's request to the gateway and reads the whole response.
async fn send(addr: SocketAddr, fixture: &Fixture) -> Result<SeenResponse> {
    let method = http::Method::from_bytes(fixture.method.as_bytes())
        .map_err(|_| anyhow::anyhow!("`method: {}` is not an HTTP method", fixture.method))?;
    let mut req = Request::builder().method(method).uri(format!("http://{addr}{}", fixture.path));
    let has = |n: &str| fixture.headers.keys().any(|k| k.eq_ignore_ascii_case(n));
    if !has("host") {
        req = req.header(http::header::HOST, DEFAULT_HOST);
    }
    if !has("x-request-id") {
        req = req.header("x-request-id", DEFAULT_REQUEST_ID);
    }
    for (k, vs) in &fixture.headers {
        for v in vs.values() {
            req = req.header(k.as_str(), v.as_str());
        }
    }
    let body = Full::new(Bytes::from(fixture.body.clone().unwrap_or_default()));
    let req = req.body(body).map_err(|e| anyhow::anyhow!("the fixture's request is invalid: {e}"))?;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let resp = client.request(req).await.context("the gateway did not answer")?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.context("reading the gateway's response")?.to_bytes();
    Ok(SeenResponse {
        status: parts.status.as_u16(),
        headers: header_map(&parts.headers),
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Headers as a sorted map, without `date` (which changes every second).
fn header_map(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in headers {
        if k == http::header::DATE {
            continue;
        }
        let v = String::from_utf8_lossy(v.as_bytes());
        out.entry(k.as_str().to_owned())
            .and_modify(|e| *e = format!("{e}, {v}"))
            .or_insert_with(|| v.into_owned());
    }
    out
}

/// The upstream of a run: remembers the request it got, answers the recorded response.
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Option<SeenRequest>>>,
}

impl Recorder {
    async fn start(answer: RecordedResponse) -> Result<Recorder> {
        let listener =
            TcpListener::bind("127.0.0.1:0").await.context("cannot bind the recording upstream")?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(None));
        let answer = Arc::new(answer);
        let recorded = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (seen, answer) = (Arc::clone(&recorded), Arc::clone(&answer));
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (seen, answer) = (Arc::clone(&seen), Arc::clone(&answer));
                    async move { Ok::<_, Infallible>(record(req, &seen, &answer).await) }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Recorder { addr, seen })
    }
}

async fn record(
    req: Request<Incoming>,
    seen: &Mutex<Option<SeenRequest>>,
    answer: &RecordedResponse,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let path = parts.uri.path_and_query().map_or_else(|| parts.uri.path().to_owned(), |p| p.to_string());
    *seen.lock().expect("recorder lock") = Some(SeenRequest {
        method: parts.method.to_string(),
        path,
        headers: header_map(&parts.headers),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let mut resp = Response::new(Full::new(Bytes::from(answer.body.clone())));
    *resp.status_mut() = http::StatusCode::from_u16(answer.status).unwrap_or(http::StatusCode::OK);
    for (k, vs) in &answer.headers {
        for v in vs.values() {
            if let (Ok(k), Ok(v)) =
                (http::HeaderName::from_bytes(k.as_bytes()), http::HeaderValue::from_str(v))
            {
                resp.headers_mut().append(k, v);
            }
        }
    }
    resp
}

/// What checking a run against its golden file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Golden {
    /// The file held this outcome.
    Matches,
    /// The file did not exist: it was created from this run.
    Created,
    /// `--bless`: the file was rewritten from this run.
    Blessed,
    /// The file holds another outcome: the lines that differ.
    Differs(String),
}

/// Compares `outcome` with the golden file `expect`: writes it when the file is
/// missing (or when `bless`), else reports whether it matches.
pub fn check_golden(outcome: &Outcome, expect: &Path, bless: bool) -> Result<Golden> {
    let actual = format!("{}\n", serde_json::to_string_pretty(outcome)?);
    let existed = expect.exists();
    if bless || !existed {
        std::fs::write(expect, &actual).with_context(|| format!("cannot write {}", expect.display()))?;
        return Ok(if existed { Golden::Blessed } else { Golden::Created });
    }
    let expected =
        std::fs::read_to_string(expect).with_context(|| format!("cannot read {}", expect.display()))?;
    let parsed: Outcome = serde_json::from_str(&expected)
        .with_context(|| format!("{} is not a `sluice plugin test` outcome", expect.display()))?;
    if &parsed == outcome {
        return Ok(Golden::Matches);
    }
    Ok(Golden::Differs(line_diff(&expected, &actual)))
}

/// The lines of `expected` missing from `actual` (`-`) and the new ones (`+`), in
/// order: enough to read a small JSON document's change.
fn line_diff(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    // Longest common subsequence table, then a walk to print the differences.
    let mut lcs = vec![vec![0usize; a.len() + 1]; e.len() + 1];
    for i in (0..e.len()).rev() {
        for j in (0..a.len()).rev() {
            lcs[i][j] = if e[i] == a[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < e.len() || j < a.len() {
        if i < e.len() && j < a.len() && e[i] == a[j] {
            out.push_str(&format!("  {}\n", e[i]));
            (i, j) = (i + 1, j + 1);
        } else if j < a.len() && (i == e.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push_str(&format!("+ {}\n", a[j]));
            j += 1;
        } else {
            out.push_str(&format!("- {}\n", e[i]));
            i += 1;
        }
    }
    out
}

/// Where `sluice plugin test` writes a golden file by default: beside the request file.
pub fn default_expect_path(request: &Path) -> PathBuf {
    request.with_extension("expected.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_read_maps_lists_and_defaults() {
        let f: Fixture = serde_saphyr::from_str(
            "path: /a?b=1\nheaders: { x-team: blue, accept: [a, b] }\nupstream: { status: 201, body: hi }\n",
        )
        .unwrap();
        assert_eq!(f.method, "GET");
        assert_eq!(f.headers["accept"].values(), ["a", "b"]);
        assert_eq!(f.upstream.status, 201);
        assert!(serde_saphyr::from_str::<Fixture>("pathh: /").is_err(), "unknown fields are refused");
    }

    #[test]
    fn the_diff_marks_changed_lines() {
        let d = line_diff("{\n  \"a\": 1,\n  \"b\": 2\n}\n", "{\n  \"a\": 1,\n  \"b\": 3\n}\n");
        assert!(d.contains("-   \"b\": 2") && d.contains("+   \"b\": 3"), "{d}");
        assert!(d.contains("    \"a\": 1"), "{d}");
    }
}
