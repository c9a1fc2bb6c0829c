//! Distributed tracing end to end: a client's `traceparent` continued to the upstream
//! with the gateway's span as parent, and spans exported over OTLP/HTTP to a receiver
//! started here that decodes the real protobuf.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Request;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};
use sluice_tests::plugins as wasm;

use crate::harness::{AccessLog, Client, TestServer, eventually, full, otlp_collector, url};
use crate::plugins::{Plugins, upstream};

/// An OTLP/HTTP traces receiver: every span of every export, decoded.
struct Receiver {
    server: TestServer,
    spans: Arc<Mutex<Vec<Span>>>,
    exports: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let exports = Arc::new(Mutex::new(Vec::new()));
        let (s, e) = (Arc::clone(&spans), Arc::clone(&exports));
        let server = otlp_collector("/v1/traces", move |headers, export: ExportTraceServiceRequest| {
            assert_eq!(headers["content-type"], "application/x-protobuf");
            assert_eq!(headers["x-collector-key"], "k1");
            for rs in &export.resource_spans {
                for ss in &rs.scope_spans {
                    s.lock().unwrap().extend(ss.spans.iter().cloned());
                }
            }
            e.lock().unwrap().push(export);
        })
        .await;
        Receiver { server, spans, exports }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| match a.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    })
}

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_PARENT: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn a_client_trace_reaches_the_upstream_and_every_request_and_plugin_call_is_a_span() {
    let receiver = Receiver::start().await;
    let up = TestServer::echo().await;
    let plugins = Plugins::with(&[("trace_guard", wasm::GUARD)]);
    let log = AccessLog::get();
    let yaml = format!(
        "server:\n  tracing:\n    otlp_endpoint: http://{}/v1/traces\n    service_name: edge-gw\n    headers: {{ x-collector-key: k1 }}\n\
         {}routes:\n  - name: api\n    match: {{ path_prefix: /api }}\n    target: {{ upstream: app }}\n    plugins:\n      - name: trace_guard\n        config: {{ blocked_prefix: /api/admin }}\n",
        receiver.server.addr,
        upstream(up.addr)
    );
    let gw = plugins.start(&yaml).await;
    let client = Client::http1();
    let public = gw.addr("public");

    // 1. A sampled client trace: continued, with a new parent for the upstream.
    let traced = Request::get(url(public, "/api/orders"))
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"))
        .header("tracestate", "vendor=abc")
        .body(full(""))
        .unwrap();
    let reply = client.send(traced).await;
    assert_eq!(reply.status, 200);
    let seen = reply.json()["headers"]["traceparent"].as_str().unwrap().to_owned();
    let parts: Vec<&str> = seen.split('-').collect();
    assert_eq!((parts[0], parts[1], parts[3]), ("00", CLIENT_TRACE, "01"), "{seen}");
    assert_ne!(parts[2], CLIENT_PARENT, "the upstream's parent is the gateway's span");
    assert_eq!(reply.json()["headers"]["tracestate"], "vendor=abc", "tracestate passes on");
    let gateway_span = parts[2].to_owned();

    // 2. A plugin answers: its call's span says so.
    let blocked = Request::get(url(public, "/api/admin/x")).body(full("")).unwrap();
    assert_eq!(client.send(blocked).await.status, 403);
    // 3. A client that is not sampling: propagated, not exported.
    let unsampled = Request::get(url(public, "/api/quiet"))
        .header("traceparent", format!("00-{}-{CLIENT_PARENT}-00", "1".repeat(32)))
        .body(full(""))
        .unwrap();
    let reply = client.send(unsampled).await;
    let seen = reply.json()["headers"]["traceparent"].as_str().unwrap().to_owned();
    assert!(seen.starts_with(&format!("00-{}-", "1".repeat(32))) && seen.ends_with("-00"), "{seen}");

    // Two sampled requests, each a server span and one plugin span.
    assert!(
        eventually(Duration::from_secs(10), || receiver.spans().len() >= 4).await,
        "{:?}",
        receiver.spans()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spans = receiver.spans();
    assert_eq!(spans.len(), 4, "no span of the unsampled request: {spans:#?}");
    let servers: Vec<&Span> = spans.iter().filter(|s| s.kind == SpanKind::Server as i32).collect();
    assert_eq!(servers.len(), 2);

    let first = servers.iter().find(|s| hex(&s.trace_id) == CLIENT_TRACE).expect("the client's trace");
    assert_eq!(hex(&first.span_id), gateway_span, "the exported span is the upstream's parent");
    assert_eq!(hex(&first.parent_span_id), CLIENT_PARENT);
    assert_eq!(first.trace_state, "vendor=abc");
    assert_eq!(first.name, "GET api");
    assert_eq!(attr(first, "sluice.route").as_deref(), Some("api"));
    assert_eq!(attr(first, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attr(first, "url.path").as_deref(), Some("/api/orders"));
    assert!(first.end_time_unix_nano >= first.start_time_unix_nano && first.start_time_unix_nano > 0);

    let second = servers.iter().find(|s| hex(&s.trace_id) != CLIENT_TRACE).unwrap();
    assert!(second.parent_span_id.is_empty(), "a new trace has a root span");
    assert_eq!(attr(second, "http.response.status_code").as_deref(), Some("403"));

    for server in [first, second] {
        let children: Vec<&Span> = spans.iter().filter(|s| s.parent_span_id == server.span_id).collect();
        assert_eq!(children.len(), 1, "one span per plugin call");
        let call = children[0];
        assert_eq!(call.trace_id, server.trace_id);
        assert_eq!(call.kind, SpanKind::Internal as i32);
        assert_eq!(attr(call, "sluice.plugin").as_deref(), Some("trace_guard"));
        assert_eq!(attr(call, "sluice.plugin.phase").as_deref(), Some("on-request"));
        assert!(call.start_time_unix_nano >= server.start_time_unix_nano);
        assert!(call.end_time_unix_nano <= server.end_time_unix_nano);
    }
    let decision = |s: &Span| {
        attr(spans.iter().find(|c| c.parent_span_id == s.span_id).unwrap(), "sluice.plugin.decision")
    };
    assert_eq!(decision(first).as_deref(), Some("continue"));
    assert_eq!(decision(second).as_deref(), Some("respond"));

    let resource = receiver.exports.lock().unwrap()[0].resource_spans[0].resource.clone().unwrap();
    let service = resource.attributes.iter().find(|a| a.key == "service.name").unwrap();
    assert_eq!(service.value.as_ref().unwrap().value, Some(Value::StringValue("edge-gw".into())));

    // The access log names the trace.
    let lines = log
        .wait_for(1, |l| {
            l.get("path").is_some_and(|p| p == "/api/orders")
                && l.get("trace_id").is_some_and(|t| t == CLIENT_TRACE)
        })
        .await;
    let line = &lines[0];
    assert_eq!(line["trace_id"], CLIENT_TRACE);
}

#[tokio::test]
async fn without_tracing_a_traceparent_passes_untouched_and_nothing_is_exported() {
    let up = TestServer::echo().await;
    let gw = crate::harness::gateway(&crate::harness::config(&format!(
        "{}routes:\n  - name: api\n    match: {{ path_prefix: / }}\n    target: {{ upstream: app }}\n",
        upstream(up.addr)
    )))
    .await;
    let header = format!("00-{CLIENT_TRACE}-{CLIENT_PARENT}-01");
    let req =
        Request::get(url(gw.addr("public"), "/x")).header("traceparent", &header).body(full("")).unwrap();
    let reply = Client::http1().send(req).await;
    assert_eq!(reply.json()["headers"]["traceparent"], header.as_str());
    assert!(!sluice::observability::admin::metrics(&gw).contains("sluice_otlp_items_total"));
}

#[tokio::test]
async fn a_sample_ratio_of_zero_exports_no_new_trace_but_still_propagates_one() {
    let receiver = Receiver::start().await;
    let up = TestServer::echo().await;
    let gw = crate::harness::gateway(&crate::harness::config(&format!(
        "server:\n  tracing: {{ otlp_endpoint: 'http://{}/v1/traces', sample_ratio: 0, headers: {{ x-collector-key: k1 }} }}\n\
         {}routes:\n  - name: api\n    match: {{ path_prefix: / }}\n    target: {{ upstream: app }}\n",
        receiver.server.addr,
        upstream(up.addr)
    )))
    .await;
    let client = Client::http1();
    let mut ids = std::collections::HashSet::new();
    for _ in 0..20 {
        let reply = client.get(&url(gw.addr("public"), "/x")).await;
        let tp = reply.json()["headers"]["traceparent"].as_str().unwrap().to_owned();
        assert!(tp.ends_with("-00"), "{tp}");
        ids.insert(tp[3..35].to_owned());
    }
    assert_eq!(ids.len(), 20, "a new trace id per request");
    // A sampled caller still wins over the ratio.
    let req = Request::get(url(gw.addr("public"), "/x"))
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"))
        .body(full(""))
        .unwrap();
    client.send(req).await;
    assert!(eventually(Duration::from_secs(10), || !receiver.spans().is_empty()).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spans = receiver.spans();
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(hex(&spans[0].trace_id), CLIENT_TRACE);
}

#[tokio::test]
async fn a_plugins_outbound_http_call_carries_the_requests_trace() {
    let receiver = Receiver::start().await;
    let echo = TestServer::echo().await;
    let p = Plugins::with(&[("trace_caller", wasm::HTTP_CALLER)]);
    let gw = p
        .start(&format!(
            "server:\n  access_log: {{ enabled: false }}\n  tracing: {{ otlp_endpoint: 'http://{}/v1/traces', headers: {{ x-collector-key: k1 }} }}\n\
             routes:\n  - name: calls\n    match: {{ path_prefix: / }}\n    target: {{ echo: {{}} }}\n    plugins:\n      - name: trace_caller\n        config: {{ url: \"http://{}/x\" }}\n        grants: {{ http: {{ allow: [\"{}\"], timeout: 5s }} }}\n",
            receiver.server.addr, echo.addr, echo.addr
        ))
        .await;
    let req = Request::get(url(gw.addr("public"), "/go"))
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"))
        .body(full(""))
        .unwrap();
    let reply = Client::http1().send(req).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let outbound = reply.json()["headers"]["traceparent"].as_str().unwrap().to_owned();
    assert!(outbound.starts_with(&format!("00-{CLIENT_TRACE}-")) && outbound.ends_with("-01"), "{outbound}");
    assert!(!outbound.contains(CLIENT_PARENT), "the gateway's span is the parent: {outbound}");
    // No access log here: the exchange keeps the path for the trace alone.
    let server = || receiver.spans().into_iter().find(|s| s.kind == SpanKind::Server as i32);
    assert!(eventually(Duration::from_secs(10), || server().is_some()).await, "{:?}", receiver.spans());
    assert_eq!(attr(&server().unwrap(), "url.path").as_deref(), Some("/go"));
}
