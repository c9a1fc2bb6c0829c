//! The call log: every request recorded in SQLite and queried through the admin API —
//! fields, redaction, paging, filters, aggregates, retention, and a store that can
//! stall without a request waiting on it.

use std::time::Duration;

use http::Request;
use serde_json::Value;

use crate::harness::{Client, TestServer, eventually, full, gateway, url};

fn config(dir: &std::path::Path, up: std::net::SocketAddr, call_log: &str) -> String {
    format!(
        "version: 1
server:
  # No access log: the exchange keeps the path for the call log alone.
  access_log: {{ enabled: false }}
  call_log: {{ path: {db}, {call_log} }}
admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: public
    address: 127.0.0.1:0
upstreams:
  app:
    targets:
      - address: {up}
routes:
  - name: api
    match: {{ path_prefix: /api }}
    target: {{ upstream: app }}
    plugins:
      - name: auth
        config:
          api_key:
            keys: [{{ key: alice-key, consumer: alice }}, {{ key: bob-key, consumer: bob }}]
",
        db = dir.join("calls.db").display()
    )
}

async fn admin(gw: &sluice::Gateway, path_and_query: &str) -> Value {
    let reply = Client::http1().get(&url(gw.addr("admin"), path_and_query)).await;
    assert_eq!(reply.status, 200, "{path_and_query}: {}", reply.text());
    reply.json()
}

fn counts(gw: &sluice::Gateway) -> (u64, u64, u64) {
    gw.snapshot().call_log.as_ref().unwrap().stats.read()
}

#[tokio::test]
async fn every_call_is_recorded_redacted_paged_filtered_and_aggregated() {
    let dir = tempfile::tempdir().unwrap();
    let up = TestServer::named("app").await;
    let gw = gateway(&config(dir.path(), up.addr, "headers: [user-agent, x-api-key]")).await;
    let client = Client::http1();
    let public = gw.addr("public");
    let send = |method: &str, path: &str, key: Option<&str>, body: &'static str| {
        let mut req =
            Request::builder().method(method).uri(url(public, path)).header("user-agent", "call-log-test");
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        let (client, req) = (client.clone(), req.body(full(body)).unwrap());
        async move { client.send(req).await }
    };
    let mut alice_ids = Vec::new();
    for _ in 0..4 {
        let r = send("GET", "/api/a", Some("alice-key"), "").await;
        assert_eq!(r.status, 200);
        alice_ids.push(r.header("x-request-id").unwrap().to_owned());
    }
    for _ in 0..2 {
        assert_eq!(send("POST", "/api/b", Some("bob-key"), "hello").await.status, 200);
    }
    assert_eq!(send("GET", "/api/a", None, "").await.status, 401);
    for _ in 0..2 {
        assert_eq!(send("GET", "/nowhere", None, "").await.status, 404);
    }
    assert!(eventually(Duration::from_secs(10), || counts(&gw).0 == 9).await, "{:?}", counts(&gw));
    assert_eq!(counts(&gw), (9, 0, 0));

    let all = admin(&gw, "/-/calls?limit=100").await;
    let calls = all["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 9);
    assert!(all["next"].is_null());
    let ids: Vec<i64> = calls.iter().map(|c| c["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let first_alice = calls.iter().find(|c| c["request_id"] == alice_ids[0].as_str()).expect("by request id");
    assert_eq!(first_alice["route"], "api");
    assert_eq!(first_alice["consumer"], "alice");
    assert_eq!(first_alice["method"], "GET");
    assert_eq!(first_alice["path"], "/api/a");
    assert_eq!(first_alice["status"], 200);
    assert_eq!(first_alice["listener"], "public");
    assert_eq!(first_alice["client"], "127.0.0.1");
    assert_eq!(first_alice["upstream"], up.addr.to_string());
    assert_eq!(first_alice["bytes_out"], 3, "the body `app`");
    assert!(first_alice["duration_us"].as_i64().unwrap() > 0);
    assert_eq!(first_alice["headers"]["user-agent"], "call-log-test");
    assert_eq!(first_alice["headers"]["x-api-key"], "[redacted]", "API keys are never stored");
    assert!(!all.to_string().contains("alice-key") && !all.to_string().contains("bob-key"));
    let post = calls.iter().find(|c| c["method"] == "POST").unwrap();
    assert_eq!((post["consumer"].as_str(), post["bytes_in"].as_i64()), (Some("bob"), Some(5)));
    let unrouted = calls.iter().find(|c| c["status"] == 404).unwrap();
    assert!(unrouted["route"].is_null());
    assert_eq!(unrouted["error"], "no_route");

    // Paging: 4 + 4 + 1, no record twice.
    let mut seen = Vec::new();
    let mut next = String::new();
    for expected in [4, 4, 1] {
        let page = admin(&gw, &format!("/-/calls?limit=4{next}")).await;
        let got = page["calls"].as_array().unwrap();
        assert_eq!(got.len(), expected);
        seen.extend(got.iter().map(|c| c["id"].as_i64().unwrap()));
        next = page["next"].as_i64().map(|n| format!("&before={n}")).unwrap_or_default();
    }
    assert!(next.is_empty());
    assert_eq!(seen, ids);

    // Filters.
    let n = |doc: Value| doc["calls"].as_array().unwrap().len();
    assert_eq!(n(admin(&gw, "/-/calls?route=api&consumer=alice").await), 4);
    assert_eq!(n(admin(&gw, "/-/calls?route=api&consumer=al%69ce").await), 4, "percent-decoded");
    assert_eq!(n(admin(&gw, "/-/calls?status=4xx").await), 3);
    assert_eq!(n(admin(&gw, "/-/calls?status=404").await), 2);
    assert_eq!(n(admin(&gw, "/-/calls?route=-").await), 2);
    assert_eq!(n(admin(&gw, "/-/calls?status=2xx&route=api").await), 6);
    let future = sluice::observability::call_log::now_ms() + 3_600_000;
    assert_eq!(n(admin(&gw, &format!("/-/calls?from={future}")).await), 0);
    let bad = Client::http1().get(&url(gw.addr("admin"), "/-/calls?status=teapot")).await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("`status`"), "{}", bad.text());

    // Aggregates: by route, then by consumer, over every bucket of the run.
    let by_route = admin(&gw, "/-/calls/stats?bucket=hour&by=route").await;
    let rows = by_route["rows"].as_array().unwrap();
    let sum = |key: Option<&str>, field: &str| -> i64 {
        rows.iter().filter(|r| r["route"].as_str() == key).map(|r| r[field].as_i64().unwrap()).sum()
    };
    assert_eq!((sum(Some("api"), "requests"), sum(Some("api"), "client_errors")), (7, 1));
    assert_eq!((sum(None, "requests"), sum(None, "client_errors")), (2, 2));
    for r in rows {
        let (p50, p95, p99) =
            (r["p50_ms"].as_f64().unwrap(), r["p95_ms"].as_f64().unwrap(), r["p99_ms"].as_f64().unwrap());
        assert!(0.0 < p50 && p50 <= p95 && p95 <= p99, "{r}");
    }
    let by_consumer = admin(&gw, "/-/calls/stats?by=consumer").await;
    let consumer = |name: &str| -> i64 {
        by_consumer["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["consumer"] == name)
            .map(|r| r["requests"].as_i64().unwrap())
            .sum()
    };
    assert_eq!((consumer("alice"), consumer("bob")), (4, 2));
    assert_eq!(by_consumer["bucket"], "minute");
}

#[tokio::test]
async fn records_past_the_retention_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let up = TestServer::named("app").await;
    let path = dir.path().join("sluice.yaml");
    std::fs::write(&path, config(dir.path(), up.addr, "retention: 1h")).unwrap();
    let gw = sluice::Gateway::builder().config_file(&path).unwrap().start().await.unwrap();
    for _ in 0..3 {
        Client::http1().get(&url(gw.addr("public"), "/nowhere")).await;
    }
    assert!(eventually(Duration::from_secs(10), || counts(&gw).0 == 3).await);
    let count = || async { admin(&gw, "/-/calls").await["calls"].as_array().unwrap().len() };
    assert_eq!(count().await, 3);
    // A reload with a changed call log starts a new writer, which sweeps at once: with
    // a retention of 1ms every record is past it.
    std::fs::write(&path, config(dir.path(), up.addr, "retention: 1ms")).unwrap();
    gw.reload_from_source().await.unwrap();
    let mut left = usize::MAX;
    for _ in 0..100 {
        left = count().await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0, "records older than the retention were deleted");
}

#[tokio::test]
async fn a_stalled_store_drops_records_and_never_holds_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let up = TestServer::named("app").await;
    let gw = gateway(&config(dir.path(), up.addr, "queue: 1")).await;
    let public = gw.addr("public");
    // Another process holds the database's write lock: the writer stalls on it.
    let mut lock = rusqlite::Connection::open(dir.path().join("calls.db")).unwrap();
    let held = lock.transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive).unwrap();
    // One record reaches the writer, which gathers a batch for 100 ms and then waits on
    // the lock (up to its 5 s busy timeout).
    Client::http1().get(&url(public, "/nowhere")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let client = Client::http1();
    let replies =
        futures_util::future::join_all(
            (0..200).map(|_| {
                let client = client.clone();
                let u = url(public, "/nowhere");
                // A liveness guard, not a timing assertion: a request waiting on the stalled
                // store would hang here until the lock goes.
                async move {
                    tokio::time::timeout(Duration::from_secs(30), client.get(&u)).await.expect("answered")
                }
            }),
        )
        .await;
    assert!(replies.iter().all(|r| r.status == 404));
    let (_, dropped, _) = counts(&gw);
    assert!(dropped >= 100, "a full queue drops records: {dropped} dropped");

    drop(held);
    assert!(
        eventually(Duration::from_secs(15), || {
            let (written, dropped, failed) = counts(&gw);
            written + dropped + failed == 201
        })
        .await,
        "every record is written, dropped or failed: {:?}",
        counts(&gw)
    );
    let metrics = Client::http1().get(&url(gw.addr("admin"), "/metrics")).await.text();
    assert!(
        metrics.contains(&format!("sluice_call_log_records_total{{outcome=\"dropped\"}} {}", counts(&gw).1)),
        "{metrics}"
    );
}

#[tokio::test]
async fn without_a_call_log_the_api_says_it_is_off() {
    let gw = gateway(&crate::harness::config(
        "admin: { address: 127.0.0.1:0 }\nroutes:\n  - name: r\n    match: { path_prefix: / }\n    target: { echo: {} }\n",
    ))
    .await;
    let reply = Client::http1().get(&url(gw.addr("admin"), "/-/calls")).await;
    assert_eq!(reply.status, 404);
    assert!(reply.text().contains("server.call_log"), "{}", reply.text());
}

#[tokio::test]
async fn records_go_out_as_otlp_log_records_linked_to_their_traces() {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use opentelemetry_proto::tonic::logs::v1::LogRecord;
    use std::sync::{Arc, Mutex};

    let records: Arc<Mutex<Vec<LogRecord>>> = Arc::default();
    let seen = Arc::clone(&records);
    let collector = crate::harness::otlp_collector("/v1/logs", move |_, export: ExportLogsServiceRequest| {
        for rl in export.resource_logs {
            for sl in rl.scope_logs {
                seen.lock().unwrap().extend(sl.log_records);
            }
        }
    })
    .await;
    let dead = crate::harness::dead_addr().await;
    let up = TestServer::named("app").await;
    let gw = gateway(&format!(
        "version: 1\nserver:\n  call_log: {{ otlp_endpoint: 'http://{}/v1/logs' }}\n  tracing: {{ otlp_endpoint: 'http://{dead}/v1/traces' }}\n\
         admin: {{ address: 127.0.0.1:0 }}\nlisteners:\n  - name: public\n    address: 127.0.0.1:0\n\
         upstreams:\n  app:\n    targets:\n      - address: {}\n\
         routes:\n  - name: api\n    match: {{ path_prefix: /api }}\n    target: {{ upstream: app }}\n",
        collector.addr, up.addr
    ))
    .await;
    let client = Client::http1();
    let traced = Request::get(url(gw.addr("public"), "/api/x"))
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .body(full(""))
        .unwrap();
    assert_eq!(client.send(traced).await.status, 200);
    assert_eq!(client.get(&url(gw.addr("public"), "/nowhere")).await.status, 404);
    assert!(eventually(Duration::from_secs(10), || records.lock().unwrap().len() >= 2).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let records = records.lock().unwrap().clone();
    assert_eq!(records.len(), 2, "one log record per call");
    let attr = |r: &LogRecord, key: &str| -> Option<String> {
        r.attributes.iter().find(|a| a.key == key).and_then(|a| match a.value.as_ref()?.value.as_ref()? {
            Any::StringValue(s) => Some(s.clone()),
            Any::IntValue(i) => Some(i.to_string()),
            _ => None,
        })
    };
    let api = records.iter().find(|r| attr(r, "url.path").as_deref() == Some("/api/x")).unwrap();
    assert_eq!(attr(api, "sluice.route").as_deref(), Some("api"));
    assert_eq!(attr(api, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(api.event_name, "sluice.call");
    let hex: String = api.trace_id.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, "4bf92f3577b34da6a3ce929d0e0e4736", "linked to the request's trace");
    assert_eq!(api.span_id.len(), 8);
    let missing = records.iter().find(|r| attr(r, "url.path").as_deref() == Some("/nowhere")).unwrap();
    assert_eq!(attr(missing, "error.type").as_deref(), Some("no_route"));
    assert_eq!(missing.severity_text, "WARN");
    // Not stored on this node: the query API says so.
    let reply = Client::http1().get(&url(gw.addr("admin"), "/-/calls")).await;
    assert_eq!(reply.status, 404);
    assert!(reply.text().contains("server.call_log.path"), "{}", reply.text());
}

#[test]
fn a_call_log_with_neither_a_file_nor_a_collector_is_a_config_error() {
    let yaml = "version: 1\nserver:\n  call_log: { retention: 1h }\nlisteners:\n  - name: public\n    address: 127.0.0.1:0\nroutes: []\n";
    let Err(err) = sluice::Gateway::builder().config_yaml(yaml) else { panic!("the config was accepted") };
    let err = err.to_string();
    assert!(err.contains("server.call_log") && err.contains("otlp_endpoint"), "{err}");
}
