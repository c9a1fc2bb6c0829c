//! The call log: every request recorded in an embedded SQLite database, and the
//! queries behind the admin API's `/-/calls` (filtered, paged records) and
//! `/-/calls/stats` (per-minute or per-hour aggregates by route or consumer).
//!
//! The request path builds a [`Call`] when the response ends and `try_send`s it to a
//! bounded queue; a writer thread inserts batches in one transaction each and deletes
//! records past the retention once a minute. A full queue drops the record and counts
//! it: a request never waits on the store. Queries open their own read-only
//! connection (the database is in WAL mode, so they do not block the writer).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use rusqlite::{Connection, OpenFlags, params_from_iter, types::Value};
use serde_json::{Value as Json, json};
use tracing::warn;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;

use super::metrics::Deliveries;
use super::otlp::{self, Queue, float, int, kv};
use super::trace::id_hex;
use crate::config::CallLogConfig;

const DEFAULT_QUEUE: usize = 10_000;
const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
const DEFAULT_REDACT: [&str; 5] = ["authorization", "proxy-authorization", "cookie", "x-api-key", "api-key"];
/// Most records in one write transaction.
const BATCH: usize = 1000;
/// How long the writer gathers a batch.
const LINGER: Duration = Duration::from_millis(100);
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Most records one `/-/calls` page returns.
pub const MAX_PAGE: u32 = 1000;
/// Most records one `/-/calls/stats` query reads.
const MAX_STATS_ROWS: u32 = 1_000_000;

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    trace_id TEXT,
    listener TEXT NOT NULL,
    route TEXT,
    consumer TEXT,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    status INTEGER NOT NULL,
    error TEXT,
    duration_us INTEGER NOT NULL,
    upstream TEXT,
    client TEXT NOT NULL,
    bytes_in INTEGER NOT NULL,
    bytes_out INTEGER NOT NULL,
    model TEXT,
    tokens_in INTEGER,
    tokens_out INTEGER,
    cost REAL,
    annotations TEXT,
    headers TEXT
);
CREATE INDEX IF NOT EXISTS calls_time ON calls (time_ms);
";

/// One request, as recorded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Call {
    /// Arrival, milliseconds since the epoch.
    pub time_ms: i64,
    /// The request id.
    pub request_id: String,
    /// The trace id and the gateway's span id, when tracing is on (the database keeps
    /// the trace id, as hex).
    pub trace: Option<([u8; 16], [u8; 8])>,
    /// Listener name.
    pub listener: String,
    /// Route name, if one matched.
    pub route: Option<String>,
    /// The consumer an authentication plugin set.
    pub consumer: Option<String>,
    /// Method.
    pub method: String,
    /// Path (no query).
    pub path: String,
    /// Response status.
    pub status: u16,
    /// The gateway's error code, when it answered with an error.
    pub error: Option<String>,
    /// Arrival to the end of the response body.
    pub duration_us: u64,
    /// The upstream target that answered.
    pub upstream: Option<String>,
    /// Client address.
    pub client: String,
    /// Request body bytes read.
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// The AI model asked for (the `ai` plugin's `model` annotation).
    pub model: Option<String>,
    /// AI input tokens (`tokens_in`).
    pub tokens_in: Option<u64>,
    /// AI output tokens (`tokens_out`).
    pub tokens_out: Option<u64>,
    /// AI cost (`cost`).
    pub cost: Option<f64>,
    /// Plugin annotations, `plugin.key=value …` (decisions, fallbacks).
    pub annotations: Option<String>,
    /// The configured request headers, JSON, sensitive ones redacted.
    pub headers: Option<String>,
}

/// A running call log: the queues into its SQLite writer thread and its OTLP
/// exporter (either or both), and what to capture.
#[derive(Debug)]
pub struct CallLog {
    config: CallLogConfig,
    path: Option<PathBuf>,
    queue: Option<SyncSender<Call>>,
    otlp: Option<Queue<Call>>,
    headers: Vec<http::HeaderName>,
    redact: Vec<String>,
    /// The writer's counts.
    pub stats: Arc<Deliveries>,
}

impl CallLog {
    /// Opens (or creates) the database of `config.path` (relative to `base_dir`) and
    /// starts its writer thread, and starts the OTLP exporter of `config.otlp_endpoint`
    /// (spans and records share the `service` name). Both end, after writing what is
    /// queued, once the last handle is dropped.
    pub fn open(config: &CallLogConfig, base_dir: &Path, service: &str) -> Result<CallLog, String> {
        let stats = Arc::new(Deliveries::default());
        let (path, queue) = match &config.path {
            None => (None, None),
            Some(file) => {
                let path = base_dir.join(file);
                let conn =
                    Connection::open(&path).map_err(|e| format!("cannot open `{}`: {e}", path.display()))?;
                conn.execute_batch(SCHEMA).map_err(|e| format!("cannot set up `{}`: {e}", path.display()))?;
                let (queue, rx) = sync_channel(config.queue.unwrap_or(DEFAULT_QUEUE).max(1));
                let retention = config.retention.map_or(DEFAULT_RETENTION, |d| d.get());
                let writer = Writer { conn, stats: Arc::clone(&stats), retention };
                std::thread::Builder::new()
                    .name("sluice-call-log".into())
                    .spawn(move || writer.run(&rx))
                    .map_err(|e| format!("cannot start the call log writer: {e}"))?;
                (Some(path), Some(queue))
            }
        };
        let otlp = config.otlp_endpoint.as_ref().map(|endpoint| {
            let target = otlp::Target {
                endpoint: endpoint.clone(),
                headers: config.otlp_headers.clone(),
                service: service.to_owned(),
            };
            otlp::start(&target, "call log records", encode_logs)
        });
        let redact = config
            .redact
            .clone()
            .unwrap_or_else(|| DEFAULT_REDACT.iter().map(|s| (*s).to_owned()).collect())
            .into_iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        let headers =
            config.headers.iter().filter_map(|h| http::HeaderName::from_bytes(h.as_bytes()).ok()).collect();
        Ok(CallLog { config: config.clone(), path, queue, otlp, headers, redact, stats })
    }

    /// The configured request headers of `headers` as JSON, redacted, or `None`
    /// when none is configured or present.
    pub fn capture(&self, headers: &HeaderMap) -> Option<String> {
        let mut out = serde_json::Map::new();
        for name in &self.headers {
            let Some(v) = headers.get(name) else { continue };
            let value = if self.redact.iter().any(|r| r == name.as_str()) {
                "[redacted]".to_owned()
            } else {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            };
            out.insert(name.as_str().to_owned(), Json::String(value));
        }
        (!out.is_empty()).then(|| Json::Object(out).to_string())
    }

    /// Queues a record for the store and the exporter; a full queue drops it
    /// (counted). Never blocks.
    pub fn record(&self, call: Call) {
        if let Some(otlp) = &self.otlp {
            otlp.push(call.clone());
        }
        if let Some(queue) = &self.queue
            && queue.try_send(call).is_err()
        {
            self.stats.dropped();
        }
    }

    /// The database file, when records are stored here.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The OTLP exporter's counts, when records go out over OTLP.
    pub fn otlp_stats(&self) -> Option<&Deliveries> {
        self.otlp.as_ref().map(|q| &*q.stats)
    }
}

/// The gateway's call log across reloads: kept while `server.call_log` stays the same.
#[derive(Debug, Default)]
pub struct CallLogSlot(Mutex<Option<Arc<CallLog>>>);

impl CallLogSlot {
    /// The call log for `config` (its file resolved against `base_dir`).
    pub fn for_config(
        &self,
        config: Option<&CallLogConfig>,
        base_dir: &Path,
        service: &str,
    ) -> Result<Option<Arc<CallLog>>, String> {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let Some(config) = config else {
            *slot = None;
            return Ok(None);
        };
        let path = config.path.as_ref().map(|p| base_dir.join(p));
        if let Some(log) = slot.as_ref().filter(|l| &l.config == config && l.path == path) {
            return Ok(Some(Arc::clone(log)));
        }
        let log = Arc::new(CallLog::open(config, base_dir, service)?);
        *slot = Some(Arc::clone(&log));
        Ok(Some(log))
    }
}

struct Writer {
    conn: Connection,
    stats: Arc<Deliveries>,
    retention: Duration,
}

impl Writer {
    fn run(mut self, rx: &Receiver<Call>) {
        let _ = self.conn.busy_timeout(Duration::from_secs(5));
        let mut swept = Instant::now();
        self.sweep();
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let first = match rx.recv_timeout(SWEEP_EVERY) {
                Ok(c) => Some(c),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            batch.extend(first);
            let until = Instant::now() + LINGER;
            while batch.len() < BATCH {
                match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                    Ok(c) => batch.push(c),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        self.write(&mut batch);
                        return;
                    }
                }
            }
            self.write(&mut batch);
            if swept.elapsed() >= SWEEP_EVERY {
                swept = Instant::now();
                self.sweep();
            }
        }
    }

    fn write(&mut self, batch: &mut Vec<Call>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let result = (|| -> rusqlite::Result<()> {
            let tx = self.conn.transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO calls (time_ms, request_id, trace_id, listener, route, consumer, method, path, \
                     status, error, duration_us, upstream, client, bytes_in, bytes_out, model, tokens_in, \
                     tokens_out, cost, annotations, headers) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)",
                )?;
                for c in batch.iter() {
                    insert.execute(rusqlite::params![
                        c.time_ms,
                        c.request_id,
                        c.trace.map(|(t, _)| id_hex(&t)),
                        c.listener,
                        c.route,
                        c.consumer,
                        c.method,
                        c.path,
                        c.status,
                        c.error,
                        c.duration_us as i64,
                        c.upstream,
                        c.client,
                        c.bytes_in as i64,
                        c.bytes_out as i64,
                        c.model,
                        c.tokens_in.map(|t| t as i64),
                        c.tokens_out.map(|t| t as i64),
                        c.cost,
                        c.annotations,
                        c.headers,
                    ])?;
                }
            }
            tx.commit()
        })();
        batch.clear();
        match result {
            Ok(()) => {
                self.stats.delivered(n);
            }
            Err(e) => {
                self.stats.failed(n);
                warn!(error = %e, records = n, "call log write failed");
            }
        }
    }

    fn sweep(&mut self) {
        let cutoff = now_ms() - i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX / 2);
        if let Err(e) = self.conn.execute("DELETE FROM calls WHERE time_ms < ?1", [cutoff]) {
            warn!(error = %e, "call log retention sweep failed");
        }
    }
}

/// Records as an `ExportLogsServiceRequest`: one log record per call, its fields as
/// attributes (OpenTelemetry's HTTP names where there is one), linked to its trace.
fn encode_logs(resource: Resource, scope: InstrumentationScope, calls: Vec<Call>) -> Vec<u8> {
    let observed = u64::try_from(now_ms()).unwrap_or(0) * 1_000_000;
    let log_records = calls
        .into_iter()
        .map(|c| {
            let mut a = vec![
                kv("http.request.method", &c.method),
                kv("url.path", &c.path),
                int("http.response.status_code", i64::from(c.status)),
                kv("sluice.listener", &c.listener),
                kv("sluice.request_id", &c.request_id),
                kv("client.address", &c.client),
                int("sluice.duration_us", i64::try_from(c.duration_us).unwrap_or(i64::MAX)),
                int("http.request.body.size", i64::try_from(c.bytes_in).unwrap_or(i64::MAX)),
                int("http.response.body.size", i64::try_from(c.bytes_out).unwrap_or(i64::MAX)),
            ];
            let optional = [
                ("sluice.route", &c.route),
                ("sluice.consumer", &c.consumer),
                ("error.type", &c.error),
                ("sluice.upstream.target", &c.upstream),
                ("gen_ai.request.model", &c.model),
                ("sluice.annotations", &c.annotations),
                ("sluice.headers", &c.headers),
            ];
            a.extend(optional.iter().filter_map(|(k, v)| v.as_deref().map(|v| kv(k, v))));
            if let Some(t) = c.tokens_in {
                a.push(int("gen_ai.usage.input_tokens", i64::try_from(t).unwrap_or(i64::MAX)));
            }
            if let Some(t) = c.tokens_out {
                a.push(int("gen_ai.usage.output_tokens", i64::try_from(t).unwrap_or(i64::MAX)));
            }
            if let Some(cost) = c.cost {
                a.push(float("sluice.ai.cost", cost));
            }
            let (severity, text) = match c.status {
                500.. => (SeverityNumber::Error, "ERROR"),
                400..=499 => (SeverityNumber::Warn, "WARN"),
                _ => (SeverityNumber::Info, "INFO"),
            };
            LogRecord {
                time_unix_nano: u64::try_from(c.time_ms).unwrap_or(0) * 1_000_000,
                observed_time_unix_nano: observed,
                severity_number: severity as i32,
                severity_text: text.to_owned(),
                body: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(format!(
                        "{} {} {}",
                        c.method, c.path, c.status
                    ))),
                }),
                attributes: a,
                trace_id: c.trace.map(|(t, _)| t.to_vec()).unwrap_or_default(),
                span_id: c.trace.map(|(_, s)| s.to_vec()).unwrap_or_default(),
                event_name: "sluice.call".to_owned(),
                ..LogRecord::default()
            }
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource),
            scope_logs: vec![ScopeLogs { scope: Some(scope), log_records, schema_url: String::new() }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A query's filters, from the admin API's query string.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// From this time on (ms since the epoch), inclusive.
    pub from_ms: Option<i64>,
    /// Before this time (ms since the epoch).
    pub to_ms: Option<i64>,
    /// Route name (`-`: requests no route took).
    pub route: Option<String>,
    /// Consumer name.
    pub consumer: Option<String>,
    /// A status class (`2xx` … `5xx`) or an exact status.
    pub status: Option<String>,
}

impl Filter {
    /// Reads `from`, `to`, `route`, `consumer` and `status` from `query`; an invalid
    /// value is an error naming the parameter.
    pub fn parse(query: &BTreeMap<String, String>) -> Result<Filter, String> {
        let time = |k: &str| -> Result<Option<i64>, String> {
            query
                .get(k)
                .map(|v| v.parse().map_err(|_| format!("`{k}` must be milliseconds since the epoch")))
                .transpose()
        };
        let status = query.get("status").cloned();
        if let Some(s) = &status {
            let class = s.len() == 3 && s.ends_with("xx") && matches!(s.as_bytes()[0], b'1'..=b'5');
            if !class && !s.parse::<u16>().is_ok_and(|c| (100..=999).contains(&c)) {
                return Err("`status` must be a class like `5xx` or a code like `404`".into());
            }
        }
        Ok(Filter {
            from_ms: time("from")?,
            to_ms: time("to")?,
            route: query.get("route").cloned(),
            consumer: query.get("consumer").cloned(),
            status,
        })
    }

    /// `WHERE …` and its parameters.
    fn sql(&self) -> (String, Vec<Value>) {
        let mut clauses = Vec::new();
        let mut params: Vec<Value> = Vec::new();
        if let Some(t) = self.from_ms {
            clauses.push("time_ms >= ?");
            params.push(t.into());
        }
        if let Some(t) = self.to_ms {
            clauses.push("time_ms < ?");
            params.push(t.into());
        }
        match self.route.as_deref() {
            Some("-") => clauses.push("route IS NULL"),
            Some(r) => {
                clauses.push("route = ?");
                params.push(r.to_owned().into());
            }
            None => {}
        }
        if let Some(c) = &self.consumer {
            clauses.push("consumer = ?");
            params.push(c.clone().into());
        }
        if let Some(s) = &self.status {
            if let Some(class) = s.strip_suffix("xx").and_then(|d| d.parse::<i64>().ok()) {
                clauses.push("status >= ? AND status < ?");
                params.push((class * 100).into());
                params.push((class * 100 + 100).into());
            } else if let Ok(code) = s.parse::<i64>() {
                clauses.push("status = ?");
                params.push(code.into());
            }
        }
        let sql = if clauses.is_empty() { String::new() } else { format!("WHERE {}", clauses.join(" AND ")) };
        (sql, params)
    }
}

fn reader(path: &Path) -> Result<Connection, String> {
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(|e| format!("cannot open the call log: {e}"))?;
    let _ = conn.busy_timeout(Duration::from_secs(5));
    Ok(conn)
}

/// One page of records, newest first: at most `limit`, older than the record `before`
/// (an id from the previous page's `next`).
pub fn page(path: &Path, filter: &Filter, limit: u32, before: Option<i64>) -> Result<Json, String> {
    let conn = reader(path)?;
    let (mut sql, mut params) = filter.sql();
    if let Some(b) = before {
        sql = if sql.is_empty() { "WHERE id < ?".to_owned() } else { format!("{sql} AND id < ?") };
        params.push(b.into());
    }
    let limit = limit.clamp(1, MAX_PAGE);
    let query = format!(
        "SELECT id, time_ms, request_id, trace_id, listener, route, consumer, method, path, status, error, \
         duration_us, upstream, client, bytes_in, bytes_out, model, tokens_in, tokens_out, cost, annotations, headers \
         FROM calls {sql} ORDER BY id DESC LIMIT {}",
        limit + 1
    );
    let mut stmt = conn.prepare(&query).map_err(|e| e.to_string())?;
    let names: Vec<String> = stmt.column_names().map(str::to_owned).collect();
    let rows = stmt
        .query_map(params_from_iter(params), |row| {
            let mut doc = serde_json::Map::new();
            for (i, name) in names.iter().enumerate() {
                let v = match row.get::<_, Value>(i)? {
                    Value::Null => Json::Null,
                    Value::Integer(n) => json!(n),
                    Value::Real(f) => json!(f),
                    Value::Text(t) if name == "headers" => {
                        serde_json::from_str(&t).unwrap_or(Json::String(t))
                    }
                    Value::Text(t) => Json::String(t),
                    Value::Blob(_) => Json::Null,
                };
                doc.insert(name.clone(), v);
            }
            Ok(Json::Object(doc))
        })
        .map_err(|e| e.to_string())?;
    let mut calls: Vec<Json> = rows.collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    let next = if calls.len() > limit as usize {
        calls.truncate(limit as usize);
        calls.last().and_then(|c| c["id"].as_i64())
    } else {
        None
    };
    Ok(json!({ "calls": calls, "next": next }))
}

/// How `/-/calls/stats` groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// Per minute.
    Minute,
    /// Per hour.
    Hour,
}

/// Aggregates per time bucket and per route (or consumer): requests, client and
/// server errors, latency p50/p95/p99, AI tokens and cost.
pub fn stats(path: &Path, filter: &Filter, bucket: Bucket, by_consumer: bool) -> Result<Json, String> {
    let conn = reader(path)?;
    let (sql, params) = filter.sql();
    let width: i64 = match bucket {
        Bucket::Minute => 60_000,
        Bucket::Hour => 3_600_000,
    };
    let key = if by_consumer { "consumer" } else { "route" };
    let query = format!(
        "SELECT (time_ms / {width}) * {width}, {key}, status, duration_us, tokens_in, tokens_out, cost \
         FROM calls {sql} ORDER BY time_ms LIMIT {MAX_STATS_ROWS}"
    );
    let mut stmt = conn.prepare(&query).map_err(|e| e.to_string())?;
    #[derive(Default)]
    struct Group {
        durations: Vec<u64>,
        client_errors: u64,
        server_errors: u64,
        tokens_in: u64,
        tokens_out: u64,
        cost: f64,
    }
    let mut groups: BTreeMap<(i64, Option<String>), Group> = BTreeMap::new();
    let mut rows = stmt.query(params_from_iter(params)).map_err(|e| e.to_string())?;
    while let Some(row) = rows.next().map_err(|e| e.to_string())? {
        let t: i64 = row.get(0).map_err(|e| e.to_string())?;
        let k: Option<String> = row.get(1).map_err(|e| e.to_string())?;
        let status: i64 = row.get(2).map_err(|e| e.to_string())?;
        let d: i64 = row.get(3).map_err(|e| e.to_string())?;
        let g = groups.entry((t, k)).or_default();
        g.durations.push(u64::try_from(d).unwrap_or(0));
        match status {
            400..=499 => g.client_errors += 1,
            500.. => g.server_errors += 1,
            _ => {}
        }
        g.tokens_in += row.get::<_, Option<i64>>(4).ok().flatten().unwrap_or(0).max(0) as u64;
        g.tokens_out += row.get::<_, Option<i64>>(5).ok().flatten().unwrap_or(0).max(0) as u64;
        g.cost += row.get::<_, Option<f64>>(6).ok().flatten().unwrap_or(0.0);
    }
    let rows: Vec<Json> = groups
        .into_iter()
        .map(|((t, k), mut g)| {
            g.durations.sort_unstable();
            let ms = |q: f64| percentile(&g.durations, q) as f64 / 1000.0;
            json!({
                "time_ms": t,
                key: k,
                "requests": g.durations.len(),
                "client_errors": g.client_errors,
                "server_errors": g.server_errors,
                "p50_ms": ms(0.50),
                "p95_ms": ms(0.95),
                "p99_ms": ms(0.99),
                "tokens_in": g.tokens_in,
                "tokens_out": g.tokens_out,
                "cost": g.cost,
            })
        })
        .collect();
    Ok(json!({
        "bucket": match bucket { Bucket::Minute => "minute", Bucket::Hour => "hour" },
        "by": key,
        "rows": rows,
    }))
}

/// The nearest-rank percentile `q` of sorted `values` (0 when empty).
fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!((percentile(&v, 0.5), percentile(&v, 0.95), percentile(&v, 0.99)), (50, 95, 99));
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn filters_are_parsed_and_bad_values_named() {
        let q = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        let f = Filter::parse(&q(&[("from", "10"), ("route", "api"), ("status", "5xx")])).unwrap();
        assert_eq!(
            (f.from_ms, f.route.as_deref(), f.status.as_deref()),
            (Some(10), Some("api"), Some("5xx"))
        );
        assert!(Filter::parse(&q(&[("from", "yesterday")])).unwrap_err().contains("`from`"));
        assert!(Filter::parse(&q(&[("status", "6xx")])).unwrap_err().contains("`status`"));
        assert!(Filter::parse(&q(&[("status", "404")])).is_ok());
    }
}
