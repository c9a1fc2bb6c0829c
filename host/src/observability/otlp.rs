//! One OTLP/HTTP exporter for every signal the gateway sends (trace spans, call-log
//! records): a bounded queue the request path `try_send`s to, and a task that posts
//! protobuf batches (the OpenTelemetry project's `opentelemetry-proto` types) to the
//! collector. A full queue drops items and counts them; the request path never waits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tokio::sync::mpsc;
use tracing::warn;

use super::metrics::Deliveries;

/// Items waiting for the exporter; past this, new ones are dropped (and counted).
const QUEUE: usize = 8192;
/// Most items in one export request.
const BATCH: usize = 512;
/// How long the exporter waits for more items before sending a batch.
const LINGER: Duration = Duration::from_millis(200);
/// An export that takes longer is abandoned (its items count as failed).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how one signal is exported.
#[derive(Debug, Clone)]
pub struct Target {
    /// The collector's OTLP/HTTP URL for the signal (`…/v1/traces`, `…/v1/logs`).
    pub endpoint: String,
    /// Headers sent with every export.
    pub headers: BTreeMap<String, String>,
    /// The resource's `service.name`.
    pub service: String,
}

/// The queue into a running exporter.
#[derive(Debug)]
pub struct Queue<T> {
    tx: mpsc::Sender<T>,
    /// The exporter's counts.
    pub stats: Arc<Deliveries>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Self { tx: self.tx.clone(), stats: Arc::clone(&self.stats) }
    }
}

impl<T> Queue<T> {
    /// Queues `item`; a full queue drops it (counted). Never waits.
    pub fn push(&self, item: T) {
        if self.tx.try_send(item).is_err() {
            self.stats.dropped();
        }
    }
}

/// Starts an exporter on the current runtime. `encode` turns the resource, the scope
/// and a batch into the signal's export request, encoded. The task ends (after
/// sending what is queued) once every [`Queue`] is dropped.
pub fn start<T: Send + 'static>(
    target: &Target,
    what: &'static str,
    encode: fn(Resource, InstrumentationScope, Vec<T>) -> Vec<u8>,
) -> Queue<T> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let stats = Arc::new(Deliveries::default());
    let mut headers = HeaderMap::new();
    for (k, v) in &target.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
            headers.insert(k, v);
        }
    }
    let exporter = Exporter {
        endpoint: target.endpoint.parse().unwrap_or_default(),
        headers,
        resource: Resource {
            attributes: vec![kv("service.name", &target.service), kv("telemetry.sdk.name", "sluice")],
            ..Resource::default()
        },
        stats: Arc::clone(&stats),
        client: Client::builder(TokioExecutor::new()).build_http(),
        warned: None,
        what,
        encode,
    };
    tokio::spawn(exporter.run(rx));
    Queue { tx, stats }
}

/// A string attribute.
pub fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_owned())) }),
        ..KeyValue::default()
    }
}

/// An integer attribute.
pub fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(any_value::Value::IntValue(value)) }),
        ..KeyValue::default()
    }
}

/// A floating-point attribute.
pub fn float(key: &str, value: f64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(any_value::Value::DoubleValue(value)) }),
        ..KeyValue::default()
    }
}

struct Exporter<T> {
    endpoint: Uri,
    headers: HeaderMap,
    resource: Resource,
    stats: Arc<Deliveries>,
    client: Client<HttpConnector, Full<Bytes>>,
    /// When a failed export was last logged at `warn` (the rest go to `debug`: a
    /// collector that is down is said once a minute, not per batch).
    warned: Option<Instant>,
    what: &'static str,
    encode: fn(Resource, InstrumentationScope, Vec<T>) -> Vec<u8>,
}

impl<T> Exporter<T> {
    async fn run(mut self, mut rx: mpsc::Receiver<T>) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            if rx.recv_many(&mut batch, BATCH).await == 0 {
                return;
            }
            let linger = tokio::time::sleep(LINGER);
            tokio::pin!(linger);
            while batch.len() < BATCH {
                let room = BATCH - batch.len();
                tokio::select! {
                    n = rx.recv_many(&mut batch, room) => if n == 0 { break },
                    () = &mut linger => break,
                }
            }
            self.send(std::mem::take(&mut batch)).await;
        }
    }

    async fn send(&mut self, items: Vec<T>) {
        let n = items.len() as u64;
        let scope = InstrumentationScope {
            name: "sluice".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..InstrumentationScope::default()
        };
        let body = (self.encode)(self.resource.clone(), scope, items);
        let mut req = Request::post(self.endpoint.clone())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default();
        req.headers_mut().extend(self.headers.clone());
        match tokio::time::timeout(EXPORT_TIMEOUT, self.client.request(req)).await {
            Ok(Ok(resp)) if resp.status().is_success() => {
                self.stats.delivered(n);
            }
            other => {
                self.stats.failed(n);
                let why = match other {
                    Ok(Ok(resp)) => format!("the collector answered {}", resp.status()),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("no answer within {EXPORT_TIMEOUT:?}"),
                };
                let what = self.what;
                if self.warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    self.warned = Some(Instant::now());
                    warn!(endpoint = %self.endpoint, items = n, error = %why, "OTLP export of {what} failed (said at most once a minute; sluice_otlp_items_total counts them)");
                } else {
                    tracing::debug!(endpoint = %self.endpoint, items = n, error = %why, "OTLP export of {what} failed");
                }
            }
        }
    }
}
