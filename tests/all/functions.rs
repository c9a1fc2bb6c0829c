//! Functions as route targets: real `wasi:http/proxy` components built from
//! `tests/plugins/http-echo` and `http-hello` (the world `wasmtime serve` runs), served
//! by a real gateway, with the route's plugins around them.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use sluice::Gateway;
use sluice_tests::plugins as wasm;

use crate::harness::{AccessLog, Client, TestServer, full, url};
use crate::plugins::Plugins;

/// A route `fn` (every path) whose target is the function `component`, with `extra`
/// appended to the route (limits, plugins).
fn function_route(component: &str, extra: &str) -> String {
    format!(
        "routes:\n  - name: fn\n    match: {{ path_prefix: / }}\n    target:\n      function:\n        component: {component}\n{extra}"
    )
}

async fn echo_gateway(extra: &str) -> (Plugins, Gateway) {
    let p = Plugins::with(&[("echo", wasm::HTTP_ECHO)]);
    let gw = p.start(&function_route("echo.wasm", extra)).await;
    (p, gw)
}

/// A connection of its own to the gateway and a POST to `path` on it whose body
/// streams what is sent on the returned channel, ending when the channel is dropped.
async fn open_post(
    gw: &Gateway,
    path: &str,
) -> (
    hyper::client::conn::http1::SendRequest<StreamedBody>,
    Request<StreamedBody>,
    tokio::sync::mpsc::Sender<Bytes>,
) {
    let stream = tokio::net::TcpStream::connect(gw.addr("public")).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        let data = rx.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(http_body::Frame::data(data)), rx))
    });
    let body = http_body_util::StreamBody::new(frames).boxed();
    let req = Request::post(path).header("host", "localhost").body(body).unwrap();
    (sender, req, tx)
}

/// The body [`open_post`] streams.
type StreamedBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

#[tokio::test]
async fn a_function_gets_the_method_path_headers_and_body_and_answers() {
    let (_p, gw) = echo_gateway("").await;
    let client = Client::http1();
    let req = Request::post(url(gw.addr("public"), "/orders/7?full=1"))
        .header("x-echo", "hello function")
        .body(full("a body for the function"))
        .unwrap();
    let reply = client.send(req).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-function-method"), Some("POST"));
    assert_eq!(reply.header("x-function-path"), Some("/orders/7?full=1"));
    assert_eq!(reply.header("x-function-header"), Some("hello function"));
    assert_eq!(reply.text(), "a body for the function");

    // A second request gets a fresh instance and the same treatment.
    let reply = client.get(&url(gw.addr("public"), "/second")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-function-method"), Some("GET"));
    assert_eq!(reply.header("x-function-path"), Some("/second"));
    assert_eq!(reply.header("x-function-header"), None);
    assert_eq!(reply.text(), "");

    // Over HTTP/2 too.
    let reply = Client::h2c().post(&url(gw.addr("public"), "/h2"), "over h2").await;
    assert_eq!(reply.version, http::Version::HTTP_2);
    assert_eq!(reply.header("x-function-path"), Some("/h2"));
    assert_eq!(reply.text(), "over h2");

    // An HTTP/1.0 request without Host has no authority to give the function: 400.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut raw = tokio::net::TcpStream::connect(gw.addr("public")).await.unwrap();
    raw.write_all(b"GET /no-host HTTP/1.0\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400") || answer.starts_with("HTTP/1.0 400"), "{answer}");
    assert!(answer.contains("needs a Host header"), "{answer}");
    gw.shutdown().await;
}

#[tokio::test]
async fn the_request_body_streams_in_and_the_response_body_streams_out() {
    let (_p, gw) = echo_gateway("").await;
    let (mut sender, req, tx) = open_post(&gw, "/stream").await;
    tx.send(Bytes::from_static(b"first piece;")).await.unwrap();
    let within = Duration::from_secs(10);
    let resp = tokio::time::timeout(within, sender.send_request(req)).await.expect("head in time").unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    // The echo of the first piece arrives while the client still holds the rest: the
    // gateway buffered neither the request nor the response.
    let first =
        tokio::time::timeout(within, body.frame()).await.expect("first echo in time").unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"first piece;"));
    tx.send(Bytes::from_static(b"second piece")).await.unwrap();
    drop(tx);
    let rest =
        tokio::time::timeout(within, body.collect()).await.expect("the rest in time").unwrap().to_bytes();
    assert_eq!(rest, Bytes::from_static(b"second piece"));
    gw.shutdown().await;
}

#[tokio::test]
async fn the_routes_plugins_run_before_and_after_the_function() {
    let p = Plugins::with(&[("echo", wasm::HTTP_ECHO), ("header-adder", wasm::HEADER_ADDER)]);
    let plugins = "    plugins:\n      - name: header-adder\n        config: { request_header: x-echo, response_header: x-added-resp, value: set-by-plugin }\n";
    let gw = p.start(&function_route("echo", plugins)).await;
    let reply = Client::http1().post(&url(gw.addr("public"), "/p"), "body").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // Request phase: the function saw the header the plugin set.
    assert_eq!(reply.header("x-function-header"), Some("set-by-plugin"));
    // Response phase: the client sees the header the plugin set on the function's answer.
    assert_eq!(reply.header("x-added-resp"), Some("set-by-plugin"));
    assert_eq!(reply.text(), "body");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_faulting_function_answers_5xx_and_the_next_request_is_served() {
    let log = AccessLog::get();
    let limits = "        limits: { deadline: 100ms, memory: 8MiB }\n";
    let (_p, gw) = echo_gateway(limits).await;
    let client = Client::http1();
    let base = gw.addr("public");
    for (path, status, code) in [
        ("/trap", 502, "function_failed"),
        ("/hog", 502, "function_failed"),
        ("/loop", 504, "function_timeout"),
    ] {
        let reply = client.get(&url(base, path)).await;
        assert_eq!(reply.status, status, "{path}: {}", reply.text());
        let doc = reply.json();
        assert_eq!(doc["error"]["code"], code, "{path}: {doc}");
        assert!(!reply.text().contains("echo.wasm"), "no internals leak to the client: {doc}");
        let id = doc["error"]["request_id"].as_str().unwrap().to_owned();
        let lines = log.wait_for(1, |l| l.get("request_id").map(String::as_str) == Some(id.as_str())).await;
        assert_eq!(lines[0].get("error").map(String::as_str), Some(code), "{path}: {lines:?}");

        let reply = client.post(&url(base, "/after"), "still here").await;
        assert_eq!(reply.status, 200, "after {path}: {}", reply.text());
        assert_eq!(reply.text(), "still here");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_fault_after_the_response_head_breaks_the_body_instead_of_ending_it_cleanly() {
    let (_p, gw) = echo_gateway("").await;
    for _ in 0..5 {
        // The function set its head, wrote a piece, then trapped. Whether the head and
        // that piece got out before the trap is a race (a trap drops what the function
        // had not handed over yet); either way the response must fail, never end cleanly.
        let stream = tokio::net::TcpStream::connect(gw.addr("public")).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        let req = Request::get("/trap-mid-body")
            .header("host", "localhost")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let within = Duration::from_secs(10);
        let outcome = match tokio::time::timeout(within, sender.send_request(req)).await.expect("in time") {
            Err(head_failed) => Err(head_failed),
            Ok(resp) => {
                assert_eq!(resp.status(), 200);
                tokio::time::timeout(within, resp.into_body().collect())
                    .await
                    .expect("in time")
                    .map(|b| b.to_bytes())
            }
        };
        assert!(outcome.is_err(), "a truncated response must not look complete: {outcome:?}");
    }
    let reply = Client::http1().post(&url(gw.addr("public"), "/after"), "fine").await;
    assert_eq!(reply.text(), "fine");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_function_at_its_concurrency_limit_answers_503() {
    let (_p, gw) = echo_gateway("        limits: { max_concurrent: 1 }\n").await;
    // A request whose body stays open holds the one place.
    let (mut sender, req, tx) = open_post(&gw, "/held").await;
    tx.send(Bytes::from_static(b"x")).await.unwrap();
    let held = sender.send_request(req).await.unwrap();
    assert_eq!(held.status(), 200);

    let reply = Client::http1().get(&url(gw.addr("public"), "/second")).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.json()["error"]["code"], "function_busy");

    drop(tx);
    let echoed = held.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(echoed, Bytes::from_static(b"x"));
    // The place is given back when the function ends.
    let mut served = false;
    for _ in 0..100 {
        if Client::http1().get(&url(gw.addr("public"), "/third")).await.status == 200 {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "the place was never given back");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_functions_fault_names_the_function_route_and_cause() {
    let p = Plugins::with(&[("echo", wasm::HTTP_ECHO)]);
    let yaml = p.config(&function_route("echo", "        limits: { deadline: 100ms, memory: 8MiB }\n"));
    let loaded = sluice::config::parse_str("test.yaml", &yaml, p.path().to_owned()).unwrap();
    let snapshot = sluice::snapshot::Snapshot::build(loaded, 1).unwrap();
    let sluice::snapshot::Target::Function(f) = &snapshot.routes[0].target else {
        panic!("a function target")
    };
    let get = |path: &str| {
        Request::get(path).header("host", "x").body(http_body_util::Empty::<Bytes>::new()).unwrap()
    };
    let err = f.serve(get("/trap"), false).await.unwrap_err().to_string();
    assert!(err.starts_with("function echo.wasm on route fn failed: trapped"), "{err}");
    assert!(err.contains("the function was asked to trap"), "the guest's panic message is kept: {err}");
    let err = f.serve(get("/hog"), false).await.unwrap_err().to_string();
    assert!(err.contains("memory cap of 8388608 bytes (limits.memory)"), "{err}");
    let err = f.serve(get("/loop"), false).await.unwrap_err().to_string();
    assert!(err.contains("deadline of 100ms (limits.deadline)"), "{err}");
}

#[tokio::test]
async fn outgoing_requests_go_only_to_the_upstreams_the_function_may_call() {
    let inside = TestServer::named("inside").await;
    let other = TestServer::named("other").await;
    let p = Plugins::with(&[("echo", wasm::HTTP_ECHO)]);
    let upstreams = format!(
        "upstreams:\n  inside: {{ targets: [{{ address: \"{}\" }}] }}\n  other: {{ targets: [{{ address: \"{}\" }}] }}\n",
        inside.addr, other.addr
    );
    let gw = p.start(&format!("{upstreams}{}", function_route("echo", "        outgoing: [inside]\n"))).await;
    let call = |target: String| {
        let req = Request::get(url(gw.addr("public"), "/outgoing"))
            .header("x-target", target)
            .body(full(""))
            .unwrap();
        async move { Client::http1().send(req).await.text() }
    };
    // The listed pool, by its name.
    assert_eq!(call("inside".into()).await, "status: 200");
    assert_eq!(inside.request_count(), 1);
    // Anything else is refused before it leaves: an address (even the pool's own), a
    // configured but unlisted pool, the listed name with a port.
    for target in [inside.addr.to_string(), other.addr.to_string(), "other".into(), "inside:80".into()] {
        let answer = call(target.clone()).await;
        assert!(answer.contains("HttpRequestDenied"), "{target}: {answer}");
    }
    assert_eq!(inside.request_count(), 1, "nothing more reached the listed pool");
    assert_eq!(other.request_count(), 0, "nothing reached the unlisted one");
    gw.shutdown().await;

    // Without `outgoing`, nothing goes anywhere.
    let gw = p.start(&format!("{upstreams}{}", function_route("echo", ""))).await;
    let req = Request::get(url(gw.addr("public"), "/outgoing"))
        .header("x-target", "inside")
        .body(full(""))
        .unwrap();
    assert!(Client::http1().send(req).await.text().contains("HttpRequestDenied"));
    assert_eq!(inside.request_count(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_component_that_is_not_an_http_handler_is_refused_at_load() {
    let p = Plugins::with(&[("identity", wasm::IDENTITY)]);
    let err = p.rejected(&function_route("identity.wasm", "")).await;
    assert!(err.contains("routes[0].target.function.component"), "{err}");
    assert!(err.contains("function identity.wasm on route fn"), "{err}");
    assert!(err.contains("does not export `wasi:http/incoming-handler@0.2`"), "{err}");

    let err = p.rejected(&function_route("missing.wasm", "")).await;
    assert!(err.contains("no component missing.wasm in the plugins folder"), "{err}");
    let err = p.rejected(&function_route("../x.wasm", "        limits: { max_concurrent: 0 }\n")).await;
    assert!(err.contains("routes[0].target.function.limits.max_concurrent"), "{err}");
}

#[tokio::test]
async fn a_changed_component_is_picked_up_and_a_broken_one_keeps_the_old_serving() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    let deploy = |component: &str| {
        let tmp = plugins.join(".fn.wasm.tmp");
        std::fs::copy(component, &tmp).unwrap();
        std::fs::rename(&tmp, plugins.join("fn.wasm")).unwrap();
    };
    deploy(wasm::HTTP_HELLO);
    let yaml = format!(
        "version: 1\nlisteners:\n  - name: public\n    address: 127.0.0.1:0\nplugins:\n  dir: plugins\n  cache_dir: cache\n{}",
        function_route("fn.wasm", "")
    );
    let config = dir.path().join("sluice.yaml");
    std::fs::write(&config, yaml).unwrap();
    let gw = Gateway::builder().config_file(&config).unwrap().start().await.unwrap();
    let _watch = sluice::reload::watch_config(gw.clone(), &config).unwrap();
    let client = Client::http1();
    let addr = gw.addr("public");
    let reply = client.get(&url(addr, "/")).await;
    assert_eq!(reply.header("x-function"), Some("hello"));
    assert_eq!(reply.text(), "hello from a function");

    // A plugin is no function: the reload fails naming it, the old component serves.
    deploy(wasm::IDENTITY);
    let status = wait_until(|| gw.reload_status().failures_total >= 1, &gw).await;
    let err = status.last_error().unwrap().to_owned();
    assert!(err.contains("function fn.wasm on route fn") && err.contains("incoming-handler"), "{err}");
    assert_eq!(client.get(&url(addr, "/")).await.text(), "hello from a function");

    // A new build of the function is served.
    deploy(wasm::HTTP_ECHO);
    wait_until(|| gw.snapshot().generation >= 2, &gw).await;
    let reply = client.post(&url(addr, "/v2"), "new build").await;
    assert_eq!(reply.header("x-function-path"), Some("/v2"));
    assert_eq!(reply.text(), "new build");
    gw.shutdown().await;
}

/// Polls `cond` for up to 10 s; the gateway's reload status when it holds.
async fn wait_until(cond: impl Fn() -> bool, gw: &Gateway) -> sluice::gateway::ReloadStatus {
    for _ in 0..200 {
        if cond() {
            return gw.reload_status();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the condition never held: {:?}", gw.reload_status());
}
