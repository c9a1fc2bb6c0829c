//! Wasm plugin chains end to end: real components built from `tests/plugins` (and the
//! example in `examples/plugins/guard`), real upstreams, real sockets.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use sluice::Gateway;
use sluice_tests::plugins as wasm;
use tempfile::TempDir;

use crate::harness::{Client, TestServer, eventually, full, get_streamed, url};

/// A plugins folder holding `(name, component path)` pairs, and a compile cache.
pub(crate) struct Plugins {
    dir: TempDir,
}

impl Plugins {
    pub(crate) fn with(list: &[(&str, &str)]) -> Plugins {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        for (name, path) in list {
            std::fs::copy(path, dir.path().join("plugins").join(format!("{name}.wasm"))).unwrap();
        }
        Plugins { dir }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A config with one listener, the plugins section, and `rest` (upstreams, routes).
    pub(crate) fn config(&self, rest: &str) -> String {
        format!(
            "version: 1\nlisteners:\n  - name: public\n    address: 127.0.0.1:0\nplugins:\n  dir: {}\n  cache_dir: {}\n{rest}",
            self.path().join("plugins").display(),
            self.path().join("cache").display(),
        )
    }

    pub(crate) async fn start(&self, rest: &str) -> Gateway {
        let yaml = self.config(rest);
        match Gateway::builder().config_yaml(&yaml) {
            Ok(b) => b.start().await.unwrap_or_else(|e| panic!("gateway failed to start: {e}")),
            Err(e) => panic!("config rejected:\n{e}"),
        }
    }

    /// Starts a gateway that must fail to load; returns the error text.
    pub(crate) async fn rejected(&self, rest: &str) -> String {
        let yaml = self.config(rest);
        match Gateway::builder().config_yaml(&yaml) {
            Ok(b) => match b.start().await {
                Ok(_) => panic!("the config was accepted"),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        }
    }
}

pub(crate) fn upstream(addr: std::net::SocketAddr) -> String {
    format!("upstreams:\n  app:\n    targets:\n      - address: {addr}\n")
}

/// The upstream `app` on `addr` and one route `app` (every path) to it, whose chain is
/// `plugins` (YAML list items, indented for the route's `plugins:` key).
pub(crate) fn app_route(addr: std::net::SocketAddr, plugins: &str) -> String {
    format!(
        "{}routes:\n  - name: app\n    match: {{ path_prefix: / }}\n    target: {{ upstream: app }}\n    plugins:\n{plugins}",
        upstream(addr)
    )
}

#[tokio::test]
async fn a_chain_changes_the_request_upstream_sees_and_the_response_client_sees() {
    let up = TestServer::echo().await;
    let p = Plugins::with(&[("header-adder", wasm::HEADER_ADDER)]);
    let gw = p.start(&app_route(up.addr, "      - name: header-adder\n        config: { request_header: x-added, response_header: x-added-resp, value: hello }\n"))
        .await;
    let reply = Client::http1().get(&url(gw.addr("public"), "/a")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["headers"]["x-added"], "hello", "the upstream saw the plugin's header");
    assert_eq!(reply.header("x-added-resp"), Some("hello"), "the client saw the plugin's response header");
}

#[tokio::test]
async fn consumer_client_ip_path_params_and_context_reach_later_plugins_and_the_response_phase() {
    let up = TestServer::echo().await;
    let p = Plugins::with(&[("setter", wasm::IDENTITY), ("reader", wasm::IDENTITY)]);
    let gw = p
        .start(&format!(
            "{}routes:
  - name: app
    match: {{ path: \"/users/{{id}}/posts/{{post}}\" }}
    target: {{ upstream: app }}
    plugins:
      - name: setter
        config: {{ role: setter }}
      - name: reader
        config: {{ role: reader }}
",
            upstream(up.addr)
        ))
        .await;
    let addr = gw.addr("public");
    let req = Request::get(url(addr, "/users/42/posts/7"))
        .header("x-as", "billing")
        .header("x-groups", "internal,paying")
        .body(full(""))
        .unwrap();
    let reply = Client::http1().send(req).await;
    assert_eq!(reply.status, 200);
    let seen = &reply.json()["headers"];
    assert_eq!(seen["x-seen-consumer"], "billing:internal+paying", "a later plugin sees the consumer");
    assert_eq!(seen["x-seen-ip"], "127.0.0.1");
    assert_eq!(
        seen["x-seen-request-id"],
        reply.header("x-request-id").unwrap(),
        "plugins see the request id"
    );
    assert_eq!(seen["x-seen-params"], "id=42&post=7");
    assert_eq!(seen["x-seen-foreign-context"], "-", "one plugin's context is private to it");
    let all = |name: &str| -> Vec<String> {
        reply.headers.get_all(name).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
    };
    let consumers = all("x-consumer-seen-by");
    assert_eq!(consumers, ["reader=billing", "setter=billing"], "the response phase sees the consumer");
    let contexts = all("x-context-seen-by");
    assert_eq!(
        contexts,
        ["reader=-", "setter=/users/42/posts/7"],
        "context survives into the response phase"
    );

    // Without `x-as` no consumer is set.
    let reply = Client::http1().get(&url(addr, "/users/1/posts/2")).await;
    assert_eq!(reply.json()["headers"]["x-seen-consumer"], "-");
}

#[tokio::test]
async fn a_response_made_in_the_request_phase_unwinds_through_the_plugins_before_it() {
    let up = TestServer::echo().await;
    let p = Plugins::with(&[("recorder", wasm::RECORDER), ("responder", wasm::RESPONDER)]);
    let gw = p.start(&app_route(up.addr, "      - name: recorder\n        config: { name: before }\n      - name: responder\n        config: { status: 401, body: denied }\n      - name: recorder\n        config: { name: after }\n"))
        .await;
    let reply = Client::http1().get(&url(gw.addr("public"), "/x")).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.text(), "denied");
    assert_eq!(
        reply.header("x-order"),
        Some("before"),
        "the plugin before the answering one ran its response phase on the answer; the one after never ran"
    );
    assert_eq!(up.request_count(), 0);
}

#[tokio::test]
async fn respond_short_circuits_the_chain_and_the_upstream() {
    let up = TestServer::echo().await;
    let p = Plugins::with(&[("responder", wasm::RESPONDER), ("header-adder", wasm::HEADER_ADDER)]);
    let gw = p.start(&app_route(up.addr, "      - name: responder\n        config: { status: 418, body: short }\n      - name: header-adder\n        config: { request_header: x-a, response_header: x-b, value: v }\n"))
        .await;
    let reply = Client::http1().get(&url(gw.addr("public"), "/tea")).await;
    assert_eq!(reply.status, 418);
    assert_eq!(reply.text(), "short");
    assert_eq!(reply.header("x-responder-path"), Some("/tea"));
    assert_eq!(reply.header("x-b"), None, "later plugins did not run");
    assert_eq!(up.request_count(), 0, "the upstream was never called");
}

#[tokio::test]
async fn response_edits_from_the_request_phase_apply_in_each_plugins_place_in_the_response_order() {
    let up = TestServer::start(|_req: Request<hyper::body::Incoming>| async move {
        Response::builder()
            .header("server", "up")
            .header("x-list", "up")
            .header("x-order", "up")
            .body(full("ok"))
            .unwrap()
    })
    .await;
    let p = Plugins::with(&[
        ("a", wasm::RESPONSE_EDITOR),
        ("b", wasm::RESPONSE_EDITOR),
        ("header-adder", wasm::HEADER_ADDER),
    ]);
    let chain = |b_answers: &str| {
        format!(
            "      - name: a
        config: {{ edits: [[set, x-order, a], [append, x-list, a], [remove, server, '']] }}
      - name: b
        config: {{ edits: [[set, x-order, b], [append, x-list, b], [set, x-b, '1']]{b_answers} }}
      - name: header-adder
        config: {{ request_header: x-c, response_header: x-order, value: c }}
"
        )
    };
    let gw = p.start(&app_route(up.addr, &chain(""))).await;
    let reply = Client::http1().get(&url(gw.addr("public"), "/")).await;
    assert_eq!(reply.status, 200);
    // Last plugin first: header-adder's on-response, then b's edits, then a's.
    assert_eq!(reply.header("x-order"), Some("a"));
    let list: Vec<&str> = reply.headers.get_all("x-list").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(list, ["up", "b", "a"]);
    assert_eq!(reply.header("server"), None, "a removed the upstream's header");
    assert_eq!(reply.header("x-b"), Some("1"));

    // b answers: the plugins before it edit its answer; its own edits and the
    // plugins after it do not run.
    let gw = p.start(&app_route(up.addr, &chain(", respond: 418"))).await;
    let reply = Client::http1().get(&url(gw.addr("public"), "/")).await;
    assert_eq!(reply.status, 418);
    assert_eq!(reply.header("x-order"), Some("a"));
    let list: Vec<&str> = reply.headers.get_all("x-list").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(list, ["a"]);
    assert_eq!(reply.header("x-b"), None);
    assert_eq!(up.request_count(), 1, "the answered request never went upstream");
}

#[tokio::test]
async fn a_response_edit_with_a_bad_or_gateway_managed_header_is_an_error_the_plugin_handles() {
    let up = TestServer::echo().await;
    let p = Plugins::with(&[("editor", wasm::RESPONSE_EDITOR)]);
    for (edit, error) in [
        ("[set, 'bad name', v]", "set bad name: invalid-name"),
        ("[append, x-ok, \"line\\nbreak\"]", "append x-ok: invalid-value"),
        ("[remove, content-length, '']", "remove content-length: forbidden"),
    ] {
        let gw = p
            .start(&app_route(
                up.addr,
                &format!("      - name: editor\n        config: {{ edits: [{edit}] }}\n"),
            ))
            .await;
        let reply = Client::http1().get(&url(gw.addr("public"), "/")).await;
        assert_eq!((reply.status.as_u16(), reply.text().as_str()), (500, error), "{edit}");
    }
    assert_eq!(up.request_count(), 0);
}

#[tokio::test]
async fn phases_run_in_order_across_three_plugins_with_the_global_chain_first() {
    // The upstream reports the order it saw in a header of its own.
    let up = TestServer::start(|req: Request<hyper::body::Incoming>| async move {
        let seen: Vec<String> =
            req.headers().get_all("x-order").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        Response::builder().header("x-upstream-saw", seen.join(",")).body(full("ok")).unwrap()
    })
    .await;
    let p = Plugins::with(&[("recorder", wasm::RECORDER)]);
    let rest = app_route(
        up.addr,
        "      - name: recorder\n        config: { name: b }\n      - name: recorder\n        config: { name: c }\n",
    );
    let yaml_global = "  global:\n    - name: recorder\n      config: { name: a }\n";
    let yaml = p.config(&rest).replacen("\nupstreams:", &format!("\n{yaml_global}upstreams:"), 1);
    let gw = Gateway::builder().config_yaml(&yaml).unwrap().start().await.unwrap();
    let reply = Client::http1().get(&url(gw.addr("public"), "/")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-upstream-saw"), Some("a,b,c"), "request phase: first to last");
    let resp_order: Vec<&str> =
        reply.headers.get_all("x-order").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(resp_order, ["c", "b", "a"], "response phase: last to first");
}

#[tokio::test]
async fn a_config_the_plugin_rejects_fails_the_load_with_its_message() {
    let p = Plugins::with(&[("config-rejecter", wasm::CONFIG_REJECTER)]);
    let err = p
        .rejected(
            "routes:\n  - name: limited\n    match: { path_prefix: / }\n    target: { echo: {} }\n    plugins:\n      - name: config-rejecter\n        config: { limit: 0 }\n",
        )
        .await;
    assert!(err.contains("routes[0].plugins[0].config"), "{err}");
    assert!(err.contains("plugin config-rejecter on route limited failed in configure"), "{err}");
    assert!(err.contains("limit must be positive, got 0"), "{err}");
}

#[tokio::test]
async fn an_unknown_plugin_is_a_config_problem_at_its_path() {
    let p = Plugins::with(&[]);
    let err = p
        .rejected(
            "routes:\n  - name: r\n    match: { path_prefix: / }\n    target: { echo: {} }\n    plugins:\n      - name: nope\n",
        )
        .await;
    assert!(err.contains("routes[0].plugins[0].name: unknown plugin `nope`"), "{err}");
}

#[tokio::test]
async fn an_endless_loop_hits_its_deadline_and_fails_closed_while_other_routes_serve() {
    // A name of its own: plugin stats are process-wide, so only this test counts here.
    let p = Plugins::with(&[("looper-fails-closed", wasm::LOOPER), ("header-adder", wasm::HEADER_ADDER)]);
    let gw = p
        .start(
            "routes:\n  - name: slow\n    match: { path_prefix: /slow }\n    target: { echo: {} }\n    plugins:\n      - name: looper-fails-closed\n        limits: { deadline: 20ms }\n  - name: fast\n    match: { path_prefix: /fast }\n    target: { echo: {} }\n    plugins:\n      - name: header-adder\n        config: { request_header: x-a, response_header: x-b, value: v }\n",
        )
        .await;
    let client = Client::http1();
    let addr = gw.addr("public");
    let (slow_url, fast_url) = (url(addr, "/slow"), url(addr, "/fast"));
    let (slow, fast) = tokio::join!(client.get(&slow_url), client.get(&fast_url));
    assert_eq!(slow.status, 503);
    assert_eq!(slow.json()["error"]["code"], "plugin_timeout");
    assert_eq!(fast.status, 200);
    assert_eq!(fast.header("x-b"), Some("v"));
    // The looping instance was discarded; the route keeps answering the same way.
    assert_eq!(client.get(&url(addr, "/slow")).await.status, 503);
    assert_eq!(sluice::plugins::stats::stats_for("looper-fails-closed").errors_of("deadline"), 2);
}

#[tokio::test]
async fn memory_hogs_panics_and_garbage_fail_only_their_own_requests() {
    // Names of their own: plugin stats are process-wide, so only this test counts here.
    let p = Plugins::with(&[
        ("hog-own-route", wasm::MEMORY_HOG),
        ("panicker-own-route", wasm::PANICKER),
        ("garbage-own-route", wasm::GARBAGE),
        ("header-adder", wasm::HEADER_ADDER),
    ]);
    let route = |name: &str, plugin: &str, extra: &str| {
        format!(
            "  - name: {name}\n    match: {{ path_prefix: /{name} }}\n    target: {{ echo: {{}} }}\n    plugins:\n      - name: {plugin}\n{extra}"
        )
    };
    let routes = [
        route("hog", "hog-own-route", "        limits: { memory: 4MiB }\n"),
        route("panic", "panicker-own-route", ""),
        route("badstatus", "garbage-own-route", "        config: { mode: status }\n"),
        route("badheader", "garbage-own-route", "        config: { mode: header }\n"),
        route(
            "ok",
            "header-adder",
            "        config: { request_header: x-a, response_header: x-b, value: v }\n",
        ),
    ]
    .concat();
    let gw = p.start(&format!("routes:\n{routes}")).await;
    let client = Client::http1();
    let addr = gw.addr("public");
    for _ in 0..2 {
        for path in ["/hog", "/panic", "/badstatus", "/badheader"] {
            let (bad_url, ok_url) = (url(addr, path), url(addr, "/ok"));
            let (bad, ok) = tokio::join!(client.get(&bad_url), client.get(&ok_url));
            assert_eq!(bad.status, 500, "{path}: {}", bad.text());
            assert_eq!(bad.json()["error"]["code"], "plugin_failed");
            assert!(!bad.text().contains("boom"), "no plugin internals leak to clients");
            assert_eq!(ok.status, 200, "a healthy route is unaffected by {path}");
            assert_eq!(ok.header("x-b"), Some("v"));
        }
    }
    let stats = sluice::plugins::stats::stats_for;
    assert_eq!(stats("hog-own-route").errors_of("memory"), 2);
    assert_eq!(stats("panicker-own-route").errors_of("trap"), 2);
    assert_eq!(stats("garbage-own-route").errors_of("bad_return"), 4);
}

#[tokio::test]
async fn an_instance_whose_memory_keeps_growing_is_retired_before_it_fails_a_request() {
    // 512 KiB leaked per request against an 8 MiB cap: without retiring the instance
    // at three quarters of its cap, about the 14th request would fail at the cap.
    let p = Plugins::with(&[("memory-hog", wasm::MEMORY_HOG)]);
    let gw = p
        .start(
            "routes:\n  - name: leak\n    match: { path_prefix: / }\n    target: { echo: {} }\n    plugins:\n      - name: memory-hog\n        config: { leak_kib: 512 }\n        limits: { memory: 8MiB }\n",
        )
        .await;
    let client = Client::http1();
    for i in 0..60 {
        let reply = client.get(&url(gw.addr("public"), "/leak")).await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
    }
}

#[tokio::test]
async fn fail_open_skips_the_failing_plugin() {
    let up = TestServer::echo().await;
    let p = Plugins::with(&[("panicker", wasm::PANICKER), ("header-adder", wasm::HEADER_ADDER)]);
    let gw = p.start(&app_route(up.addr, "      - name: panicker\n        on_error: fail_open\n      - name: header-adder\n        config: { request_header: x-after, response_header: x-b, value: \"yes\" }\n"))
        .await;
    let reply = Client::http1().get(&url(gw.addr("public"), "/")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["headers"]["x-after"], "yes", "the next plugin still ran");
    assert_eq!(up.request_count(), 1);
}

#[tokio::test]
async fn fail_open_also_covers_deadlines_memory_caps_and_global_plugins() {
    let up = TestServer::echo().await;
    let p = Plugins::with(&[
        ("open-looper", wasm::LOOPER),
        ("open-hog", wasm::MEMORY_HOG),
        ("open-global-panicker", wasm::PANICKER),
        ("header-adder", wasm::HEADER_ADDER),
    ]);
    let after = "      - name: header-adder\n        config: { request_header: x-after, response_header: x-b, value: \"yes\" }\n";
    let gw = p
        .start(&format!(
            "  global:\n    - name: open-global-panicker\n      on_error: fail_open\n{}routes:\n  - name: deadline\n    match: {{ path_prefix: /deadline }}\n    target: {{ upstream: app }}\n    plugins:\n      - name: open-looper\n        on_error: fail_open\n        limits: {{ deadline: 20ms }}\n{after}  - name: memory\n    match: {{ path_prefix: /memory }}\n    target: {{ upstream: app }}\n    plugins:\n      - name: open-hog\n        on_error: fail_open\n        limits: {{ memory: 4MiB }}\n{after}",
            upstream(up.addr)
        ))
        .await;
    let client = Client::http1();
    for path in ["/deadline", "/memory"] {
        let reply = client.get(&url(gw.addr("public"), path)).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        assert_eq!(reply.json()["headers"]["x-after"], "yes", "{path}: the next plugin still ran");
    }
    assert_eq!(up.request_count(), 2);
    let stats = sluice::plugins::stats::stats_for;
    assert_eq!(stats("open-looper").errors_of("deadline"), 1);
    assert_eq!(stats("open-hog").errors_of("memory"), 1);
    assert_eq!(
        stats("open-global-panicker").errors_of("trap"),
        2,
        "the global plugin failed open on both routes"
    );
}

#[tokio::test]
async fn an_ungranted_import_is_refused_at_load() {
    let p = Plugins::with(&[("kv-counter", wasm::KV_COUNTER)]);
    let err = p
        .rejected(
            "routes:\n  - name: count\n    match: { path_prefix: / }\n    target: { echo: {} }\n    plugins:\n      - name: kv-counter\n        config: { key: k }\n",
        )
        .await;
    assert!(err.contains("routes[0].plugins[0].grants"), "{err}");
    assert!(err.contains("plugin kv-counter on route count imports `kv`, which is not granted"), "{err}");
}

#[tokio::test]
async fn a_full_in_process_kv_store_refuses_writes_with_unavailable_naming_its_bound() {
    let p = Plugins::with(&[("kv-counter-bounded", wasm::KV_COUNTER)]);
    // The store is the process's (other tests' keys are in it): a bound of one byte
    // leaves room for no new key, whatever they hold.
    let gw = p
        .start("  kv: { max_bytes: 1 }\nroutes:\n  - name: count\n    match: { path_prefix: / }\n    target: { echo: {} }\n    plugins:\n      - name: kv-counter-bounded\n        config: { key: bounded }\n        grants: { kv: true }\n")
        .await;
    let reply = Client::http1().get(&url(gw.addr("public"), "/")).await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert!(
        reply.text().contains("in-process kv store is full (plugins.kv.max_bytes: 1 bytes)"),
        "{}",
        reply.text()
    );
}

#[tokio::test]
async fn concurrent_kv_increments_sum_exactly() {
    const REQUESTS: usize = 64;
    let p = Plugins::with(&[("kv-counter", wasm::KV_COUNTER)]);
    let key = format!("hits-{}", std::process::id());
    let gw = p
        .start(&format!(
            "routes:\n  - name: count\n    match: {{ path_prefix: / }}\n    target: {{ echo: {{}} }}\n    plugins:\n      - name: kv-counter\n        config: {{ key: {key} }}\n        grants: {{ kv: true }}\n"
        ))
        .await;
    let client = Client::http1();
    let target = Arc::new(url(gw.addr("public"), "/"));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..REQUESTS {
        let (client, target) = (client.clone(), Arc::clone(&target));
        tasks.spawn(async move { client.get(&target).await });
    }
    let mut seen = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let r = r.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        seen.push(r.text().parse::<usize>().unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=REQUESTS).collect::<Vec<_>>(), "every increment counted exactly once");
}

#[tokio::test]
async fn plugins_that_cannot_wait_are_called_without_a_fiber_and_only_those_that_can_on_one() {
    use sluice::plugins::Phase;
    use sluice::plugins::pool::CallPath;
    use sluice::plugins::stats::stats_for;
    // Copies under names of their own: a plugin's stats are process-wide, so these
    // count only this test's calls.
    let allowed = TestServer::named("from-allowed").await;
    let p = Plugins::with(&[
        ("path-sync-headers", wasm::HEADER_ADDER),
        ("path-sync-kv", wasm::KV_COUNTER),
        ("path-sync-http-ungranted", wasm::GUARD),
        ("path-async-http", wasm::HTTP_CALLER),
    ]);
    let gw = p
        .start(&format!(
            "routes:
  - name: sync
    match: {{ path_prefix: /sync }}
    target: {{ echo: {{}} }}
    plugins:
      - name: path-sync-headers
        config: {{ request_header: x-a, response_header: x-b, value: v }}
      - name: path-sync-http-ungranted
        config: {{ blocked_prefix: /admin }}
      - name: path-sync-kv
        config: {{ key: path-{} }}
        grants: {{ kv: true }}
  - name: auth
    match: {{ path_prefix: /auth }}
    target: {{ echo: {{}} }}
    plugins:
      - name: auth
        config: {{ jwt: {{ keys: [{{ alg: HS256, secret: path-test-secret-of-at-least-32-bytes }}] }} }}
  - name: async
    match: {{ path_prefix: /async }}
    target: {{ echo: {{}} }}
    plugins:
      - name: path-async-http
        config: {{ url: \"http://{}/x\" }}
        grants: {{ http: {{ allow: [\"{}\"], timeout: 5s }} }}
",
            std::process::id(),
            allowed.addr,
            allowed.addr
        ))
        .await;
    let paths: Vec<(String, Vec<CallPath>)> = gw
        .snapshot()
        .routes
        .iter()
        .map(|r| (r.name.to_string(), r.chain.entries().iter().map(|e| e.pool.path()).collect()))
        .collect();
    let sync = vec![CallPath::Sync; 3];
    assert_eq!(
        paths,
        [
            ("sync".to_owned(), sync),
            // The built-in auth imports `http` (for JWKS) but is not granted it here.
            ("auth".to_owned(), vec![CallPath::Sync]),
            ("async".to_owned(), vec![CallPath::Async]),
        ]
    );
    let client = Client::http1();
    for n in 1..=3 {
        let r = client.get(&url(gw.addr("public"), "/sync")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), n.to_string(), "the in-process kv counts on the synchronous path");
        assert_eq!(r.headers["x-b"], "v");
        let r = client.get(&url(gw.addr("public"), "/async")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "from-allowed");
    }
    for name in ["path-sync-headers", "path-sync-kv", "path-sync-http-ungranted"] {
        let stats = stats_for(name);
        assert!(stats.calls(Phase::Request) >= 3, "{name} ran");
        assert_eq!(stats.async_calls(), 0, "{name} imports nothing that can wait, yet was called on a fiber");
    }
    let http = stats_for("path-async-http");
    assert!(http.calls(Phase::Request) >= 3);
    assert!(
        http.async_calls() >= http.calls(Phase::Request),
        "a plugin granted `http` is called on the asynchronous path"
    );
}

#[tokio::test]
async fn time_spent_waiting_on_the_host_does_not_count_against_the_deadline() {
    // The outbound call takes 300 ms; the plugin's deadline is 50 ms of its own time.
    let slow = TestServer::start(|_req: Request<hyper::body::Incoming>| async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        Response::new(full("slow answer"))
    })
    .await;
    let p = Plugins::with(&[("http-caller", wasm::HTTP_CALLER), ("looper", wasm::LOOPER)]);
    let gw = p
        .start(&format!(
            "routes:\n  - name: call\n    match: {{ path_prefix: /call }}\n    target: {{ echo: {{}} }}\n    plugins:\n      - name: http-caller\n        config: {{ url: \"http://{}/x\" }}\n        grants: {{ http: {{ allow: [\"127.0.0.1\"], timeout: 5s }} }}\n        limits: {{ deadline: 50ms }}\n  - name: loop\n    match: {{ path_prefix: /loop }}\n    target: {{ echo: {{}} }}\n    plugins:\n      - name: looper\n        limits: {{ deadline: 50ms }}\n",
            slow.addr
        ))
        .await;
    let client = Client::http1();
    let reply = client.get(&url(gw.addr("public"), "/call")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "slow answer");
    let looped = client.get(&url(gw.addr("public"), "/loop")).await;
    assert_eq!(looped.status, 503, "a plugin that only runs still hits its deadline: {}", looped.text());
}

#[tokio::test]
async fn outbound_http_reaches_allowed_hosts_only() {
    let allowed = TestServer::named("from-allowed").await;
    let other = TestServer::named("from-other").await;
    let p = Plugins::with(&[("http-caller", wasm::HTTP_CALLER)]);
    let route = |name: &str, target: std::net::SocketAddr| {
        format!(
            "  - name: {name}\n    match: {{ path_prefix: /{name} }}\n    target: {{ echo: {{}} }}\n    plugins:\n      - name: http-caller\n        config: {{ url: \"http://{target}/x\" }}\n        grants: {{ http: {{ allow: [\"{}\"], timeout: 5s }} }}\n",
            allowed.addr
        )
    };
    let gw = p.start(&format!("routes:\n{}{}", route("good", allowed.addr), route("evil", other.addr))).await;
    let client = Client::http1();
    let good = client.get(&url(gw.addr("public"), "/good")).await;
    assert_eq!(good.status, 200, "{}", good.text());
    assert_eq!(good.text(), "from-allowed");
    let evil = client.get(&url(gw.addr("public"), "/evil")).await;
    assert_eq!(evil.status, 403, "{}", evil.text());
    assert!(evil.text().starts_with("not-allowed"), "{}", evil.text());
    assert_eq!(other.request_count(), 0, "the non-allowed host was never contacted");
}

#[tokio::test]
async fn the_example_guard_plugin_blocks_a_path_and_tags_the_rest() {
    let up = TestServer::echo().await;
    let p = Plugins::with(&[("guard", wasm::GUARD)]);
    let gw = p
        .start(&app_route(up.addr, "      - name: guard\n        config: { blocked_prefix: /admin }\n"))
        .await;
    let client = Client::http1();
    let blocked = client.get(&url(gw.addr("public"), "/admin/users")).await;
    assert_eq!(blocked.status, 403);
    assert_eq!(blocked.json()["error"], "blocked by policy");
    let passed = client.get(&url(gw.addr("public"), "/api")).await;
    assert_eq!(passed.status, 200);
    assert_eq!(passed.json()["headers"]["x-guarded"], "1");
    assert_eq!(up.request_count(), 1);
}

#[tokio::test]
async fn body_phases_replace_the_request_body_and_transform_response_chunks() {
    // Upstream `app` answers with what it received; `other` with its own name.
    let app = TestServer::start(|req: Request<hyper::body::Incoming>| async move {
        use http_body_util::BodyExt;
        let len = req.headers().get("content-length").map(|v| v.to_str().unwrap().to_owned());
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let text =
            format!("got {} ({} bytes declared)", String::from_utf8_lossy(&body), len.unwrap_or_default());
        Response::new(full(text))
    })
    .await;
    let other = TestServer::named("other").await;
    let p = Plugins::with(&[("body-upper", wasm::BODY_UPPER)]);
    let gw = p
        .start(&format!(
            "upstreams:\n  app:\n    targets:\n      - address: {}\n  other:\n    targets:\n      - address: {}\nroutes:\n  - name: app\n    match: {{ path_prefix: / }}\n    target: {{ upstream: app }}\n    plugins:\n      - name: body-upper\n",
            app.addr, other.addr
        ))
        .await;
    let client = Client::http1();
    let reply = client.post(&url(gw.addr("public"), "/"), "hello body").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.text(),
        "GOT HELLO BODY (10 BYTES DECLARED)!",
        "request body replaced, response chunks transformed"
    );

    let req =
        Request::post(url(gw.addr("public"), "/")).header("x-upstream", "other").body(full("x")).unwrap();
    let reply = client.send(req).await;
    assert_eq!(reply.text(), "OTHER!", "set-upstream sent the request to the other pool");
    let req =
        Request::post(url(gw.addr("public"), "/")).header("x-upstream", "nope").body(full("x")).unwrap();
    assert_eq!(client.send(req).await.status, 400, "an unknown upstream is an error the plugin handles");
}

#[tokio::test]
async fn a_reload_reconfigures_plugins_and_a_rejected_config_changes_nothing() {
    let p =
        Plugins::with(&[("header-adder", wasm::HEADER_ADDER), ("config-rejecter", wasm::CONFIG_REJECTER)]);
    let rest = |value: &str, limit: i64| {
        format!(
            "routes:\n  - name: r\n    match: {{ path_prefix: / }}\n    target: {{ echo: {{}} }}\n    plugins:\n      - name: header-adder\n        config: {{ request_header: x-a, response_header: x-v, value: {value} }}\n      - name: config-rejecter\n        config: {{ limit: {limit} }}\n"
        )
    };
    let gw = p.start(&rest("one", 1)).await;
    let client = Client::http1();
    let target = url(gw.addr("public"), "/");
    assert_eq!(client.get(&target).await.header("x-v"), Some("one"));

    let loaded = |yaml: String| sluice::config::parse_str("reload", &yaml, p.path().to_owned()).unwrap();
    let yaml = p.config(&rest("two", 1));
    gw.reload(loaded(yaml)).await.unwrap();
    assert_eq!(client.get(&target).await.header("x-v"), Some("two"), "new instances, configured once");

    let yaml = p.config(&rest("three", 0));
    let err = gw.reload(loaded(yaml)).await.unwrap_err().to_string();
    assert!(err.contains("limit must be positive"), "{err}");
    assert_eq!(client.get(&target).await.header("x-v"), Some("two"), "the previous snapshot keeps serving");

    let metrics = sluice::observability::admin::metrics(&gw);
    assert!(
        metrics.contains("sluice_plugin_calls_total{plugin=\"header-adder\",phase=\"on-request\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_plugin_errors_total{plugin=\"config-rejecter\",kind=\"config\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn dropping_a_new_component_into_the_plugins_folder_reloads_the_gateway() {
    let p = Plugins::with(&[("tagger", wasm::HEADER_ADDER)]);
    let config = p.path().join("sluice.yaml");
    // A config both the header-adder and the recorder accept (each ignores the
    // other's fields).
    let yaml = p.config(
        "routes:\n  - name: r\n    match: { path_prefix: / }\n    target: { echo: {} }\n    plugins:\n      - name: tagger\n        config: { request_header: x-a, response_header: x-tag, value: v1, name: rec }\n",
    );
    std::fs::write(&config, yaml).unwrap();
    let gw = Gateway::builder().config_file(&config).unwrap().start().await.unwrap();
    let _watch = sluice::reload::watch_config(gw.clone(), &config).unwrap();
    let client = Client::http1();
    let target = url(gw.addr("public"), "/");
    assert_eq!(client.get(&target).await.header("x-tag"), Some("v1"));

    // Swap the component under the same name, the way a deploy would (temp + rename).
    let generation = gw.snapshot().generation;
    let tmp = p.path().join("plugins").join(".tagger.wasm.tmp");
    std::fs::copy(wasm::RECORDER, &tmp).unwrap();
    std::fs::rename(&tmp, p.path().join("plugins").join("tagger.wasm")).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || gw.snapshot().generation > generation).await,
        "the plugin change was picked up"
    );
    let reply = client.get(&target).await;
    assert_eq!(reply.header("x-tag"), None);
    assert_eq!(reply.header("x-order"), Some("rec"), "the new component serves");
}

/// An upstream that streams `a`, `b`, `c` as three body frames, 30 ms apart.
async fn streaming_upstream() -> TestServer {
    TestServer::start(|_req: Request<hyper::body::Incoming>| async move {
        use http_body_util::BodyExt;
        let frames = futures_util::stream::unfold(0u8, |i| async move {
            if i == 3 {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            let frame = http_body::Frame::data(bytes::Bytes::from(vec![b'a' + i]));
            Some((Ok::<_, Box<dyn std::error::Error + Send + Sync>>(frame), i + 1))
        });
        Response::new(http_body_util::StreamBody::new(frames).boxed())
    })
    .await
}

#[tokio::test]
async fn faults_in_the_response_and_chunk_phases_follow_the_entrys_policy() {
    let up = streaming_upstream().await;
    let p = Plugins::with(&[("resp-panicker", wasm::PANICKER), ("chunk-panicker", wasm::PANICKER)]);
    let route = |name: &str, plugin: &str, extra: &str| {
        format!(
            "  - name: {name}\n    match: {{ path_prefix: /{name} }}\n    target: {{ upstream: app }}\n    plugins:\n      - name: {plugin}\n{extra}"
        )
    };
    let open = "        on_error: fail_open\n";
    let gw = p
        .start(&format!(
            "{}routes:\n{}{}{}{}",
            upstream(up.addr),
            route("resp-closed", "resp-panicker", "        config: { in: response }\n"),
            route("resp-open", "resp-panicker", &format!("        config: {{ in: response }}\n{open}")),
            route("chunk-closed", "chunk-panicker", "        config: { in: chunk }\n"),
            route("chunk-open", "chunk-panicker", &format!("        config: {{ in: chunk }}\n{open}")),
        ))
        .await;
    let client = Client::http1();
    let at = |path: &str| url(gw.addr("public"), path);

    // The response phase failing closed replaces the upstream's answer with the
    // gateway's 500; failing open lets it through.
    let closed = client.get(&at("/resp-closed")).await;
    assert_eq!(closed.status, 500, "{}", closed.text());
    assert_eq!(closed.json()["error"]["code"], "plugin_failed");
    let opened = client.get(&at("/resp-open")).await;
    assert_eq!((opened.status.as_u16(), opened.text().as_str()), (200, "abc"));

    // Mid-stream the head is already sent: failing closed cuts the body short (the
    // client sees an error, not a complete body); failing open passes the chunk on.
    let (status, body) = get_streamed(&at("/chunk-closed"), Duration::from_secs(20)).await;
    assert_eq!(status, 200);
    assert!(body.is_err(), "a stream whose chunk plugin failed closed must not look complete");
    let opened = client.get(&at("/chunk-open")).await;
    assert_eq!((opened.status.as_u16(), opened.text().as_str()), (200, "abc"));

    // Each failure counted once, and the gateway goes on serving.
    let stats = sluice::plugins::stats::stats_for;
    assert_eq!(stats("resp-panicker").errors_of("trap"), 2);
    assert_eq!(stats("chunk-panicker").errors_of("trap"), 2);
    assert_eq!(client.get(&at("/resp-open")).await.text(), "abc");
}

#[tokio::test]
async fn one_instance_serves_all_chunks_of_a_response_so_concurrent_streams_keep_their_own_state() {
    let up = streaming_upstream().await;
    let p = Plugins::with(&[("streamer", wasm::STREAMER)]);
    let gw = p.start(&app_route(up.addr, "      - name: streamer\n")).await;
    let addr = gw.addr("public");
    // Concurrent streams interleave their chunk calls; with one instance per
    // response each still numbers its own chunks 0, 1, 2.
    let calls = (0..6).map(|i| {
        let client = Client::http1();
        async move {
            let req = Request::get(url(addr, "/s")).header("x-tag", format!("t{i}")).body(full("")).unwrap();
            (i, client.send(req).await)
        }
    });
    for (i, reply) in futures_util::future::join_all(calls).await {
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), format!("t{i}#0:a;t{i}#1:b;t{i}#2:c;t{i}:total=3"), "stream {i}");
    }
    let stats = sluice::plugins::stats::stats_for("streamer");
    let chunks: u64 = stats
        .custom_labeled()
        .into_iter()
        .filter(|((name, labels), _)| {
            name == "chunks" && labels[0].0 == "tag" && labels[0].1.starts_with('t')
        })
        .map(|(_, v)| v)
        .sum();
    assert_eq!(chunks, 18, "a labeled counter per stream tag: 6 streams × 3 chunks");
    let mut out = sluice::observability::prom::Exposition::new();
    sluice::plugins::stats::write_prometheus(&mut out);
    let out = out.finish();
    assert!(
        out.contains("sluice_plugin_custom_total{plugin=\"streamer\",name=\"chunks\",tag=\"t0\"} 3"),
        "{out}"
    );
}

#[tokio::test]
async fn a_stream_the_client_abandons_still_gets_its_last_chunk_call() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = streaming_upstream().await;
    let p = Plugins::with(&[("streamer", wasm::STREAMER)]);
    let gw = p.start(&app_route(up.addr, "      - name: streamer\n")).await;
    let mut conn = tokio::net::TcpStream::connect(gw.addr("public")).await.unwrap();
    conn.write_all(b"GET /s HTTP/1.1\r\nhost: x\r\nx-tag: gone\r\n\r\n").await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains("gone#0:a;") {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the first chunk: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    drop(conn); // the client leaves after the first chunk

    let stats = sluice::plugins::stats::stats_for("streamer");
    let counted = || {
        stats.custom_labeled().into_iter().any(|((name, labels), v)| {
            name == "chunks" && labels == [("tag".into(), "gone".into())] && (1..3).contains(&v)
        })
    };
    assert!(
        eventually(Duration::from_secs(10), counted).await,
        "the plugin's last call ran after the client left and counted the chunks it saw: {:?}",
        stats.custom_labeled()
    );
}

#[tokio::test]
async fn an_upstream_failure_goes_through_the_response_phase() {
    let dead = crate::harness::dead_addr().await;
    let p = Plugins::with(&[("recorder", wasm::RECORDER), ("editor", wasm::RESPONSE_EDITOR)]);
    let gw = p
        .start(&format!(
            "upstreams:\n  app:\n    targets:\n      - address: {dead}\n    retries: {{ attempts: 0 }}\nroutes:\n  - name: app\n    match: {{ path_prefix: / }}\n    target: {{ upstream: app }}\n    plugins:\n      - name: editor\n        config: {{ edits: [[set, x-edited, '1']] }}\n      - name: recorder\n        config: {{ name: r }}\n"
        ))
        .await;
    let reply = Client::http1().get(&url(gw.addr("public"), "/x")).await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.json()["error"]["code"], "upstream_connect_failed");
    assert_eq!(reply.header("x-order"), Some("r"), "the plugin's response phase saw the gateway's 502");
    assert_eq!(reply.header("x-edited"), Some("1"), "response edits land on the gateway's 502 too");
}

#[tokio::test]
async fn a_typo_in_a_plugins_config_fails_the_load_at_its_yaml_field() {
    let p = Plugins::with(&[("header-check", wasm::HEADER_CHECK)]);
    let route = |config: &str| {
        format!(
            "routes:\n  - name: r\n    match: {{ path_prefix: / }}\n    target: {{ echo: {{}} }}\n    plugins:\n      - name: header-check\n        config:\n{config}"
        )
    };
    // The config header of `Plugins::config` is 7 lines: the typo is on line 15.
    let err = p.rejected(&route("          modee: read\n")).await;
    assert!(err.contains(":15:11: routes[0].plugins[0].config.modee: "), "{err}");
    assert!(err.contains("unknown field `modee`"), "{err}");
    assert!(!err.contains("line 1 column"), "no positions in the JSON the plugin was given: {err}");
    // A wrong value names its field too.
    let err = p.rejected(&route("          mode: sideways\n")).await;
    assert!(err.contains(":15:11: routes[0].plugins[0].config.mode: "), "{err}");
    assert!(err.contains("unknown variant `sideways`"), "{err}");
    // The built-ins read their config through the same SDK.
    let err = p
        .rejected(
            "routes:\n  - name: r\n    match: { path_prefix: / }\n    target: { echo: {} }\n    plugins:\n      - name: rate-limit\n        grants: { kv: true }\n        config:\n          limits: [{ name: s, rate: 10, pr: 1s }]\n",
        )
        .await;
    assert!(err.contains(":16:"), "{err}");
    assert!(err.contains("routes[0].plugins[0].config.limits[0].pr"), "{err}");
}

#[tokio::test]
async fn faults_while_configuring_are_reported_as_configure_faults_with_their_cause() {
    let p = Plugins::with(&[("panicker", wasm::PANICKER), ("looper", wasm::LOOPER)]);
    let route = |plugin: &str, extra: &str| {
        format!(
            "routes:\n  - name: r\n    match: {{ path_prefix: / }}\n    target: {{ echo: {{}} }}\n    plugins:\n      - name: {plugin}\n        config: {{ in: configure }}\n{extra}"
        )
    };
    // A panic: named as a trap in `configure`, with the guest's panic message and
    // line, not as a component that "could not be loaded".
    let err = p.rejected(&route("panicker", "")).await;
    assert!(err.contains("plugin panicker on route r failed in configure: trapped:"), "{err}");
    assert!(err.contains("boom while configuring") && err.contains("panicker/src/lib.rs:"), "{err}");
    assert!(!err.contains("could not be loaded"), "{err}");
    // An endless loop: stopped at the configured deadline, which the message names.
    let err = p.rejected(&route("looper", "        limits: { configure_deadline: 200ms }\n")).await;
    assert!(
        err.contains(
            "plugin looper on route r failed in configure: ran past limits.configure_deadline (200ms)"
        ),
        "{err}"
    );
}
