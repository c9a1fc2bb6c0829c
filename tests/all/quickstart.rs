//! The embedded quick-start config serves with no other process running.

use sluice::config::{QUICKSTART_YAML, parse_str};

use crate::harness::{Client, url};

#[tokio::test]
async fn quickstart_config_serves_alone() {
    // The quick start listens on 8080 and proxies to itself; run it on a free port.
    let port = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let yaml = QUICKSTART_YAML
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:9901", "127.0.0.1:0");
    let loaded = parse_str("quickstart", &yaml, ".".into()).expect("quick-start config is valid");
    let gw = sluice::Gateway::builder().config(loaded).start().await.unwrap();
    let addr = gw.addr("public");
    let client = Client::http1();

    let welcome = client.get(&url(addr, "/")).await;
    assert_eq!(welcome.status, 200);
    assert!(welcome.text().contains("Sluice is running"));

    let echo = client.get(&url(addr, "/echo/hello?x=1")).await;
    assert_eq!(echo.status, 200);
    let doc = echo.json();
    assert_eq!(doc["route"], "echo");
    assert_eq!(doc["method"], "GET");
    assert_eq!(doc["path"], "/echo/hello");
    assert_eq!(doc["query"], "x=1");
    assert!(doc["headers"]["host"].is_string());
    assert!(echo.header("x-request-id").is_some());

    let teapot = client.get(&url(addr, "/status/418")).await;
    assert_eq!(teapot.status, 418);

    let health = client.get(&url(addr, "/healthz")).await;
    assert_eq!((health.status.as_u16(), health.text().as_str()), (200, "ok\n"));

    // Through the upstream pool back into the gateway itself.
    let proxied = client.get(&url(addr, "/upstream/hi")).await;
    assert_eq!(proxied.status, 200);
    let doc = proxied.json();
    assert_eq!(doc["route"], "upstream-echo");
    assert_eq!(doc["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(doc["headers"]["x-forwarded-proto"], "http");

    // The built-in auth and rate-limit plugins on /api.
    let anonymous = client.get(&url(addr, "/api/orders")).await;
    assert_eq!(anonymous.status, 401);
    assert!(anonymous.header("www-authenticate").is_some());
    let with_key = |client: &Client| {
        let req = http::Request::get(url(addr, "/api/orders"))
            .header("x-api-key", "demo-key")
            .body(crate::harness::full(""))
            .unwrap();
        let client = client.clone();
        async move { client.send(req).await }
    };
    let ok = with_key(&client).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["headers"]["x-consumer"], "demo");
    assert!(ok.header("ratelimit").is_some_and(|v| v.starts_with("\"per_second\";r=")));
    let statuses: Vec<u16> = futures_util::future::join_all((0..20).map(|_| with_key(&client)))
        .await
        .iter()
        .map(|r| r.status.as_u16())
        .collect();
    assert!(statuses.contains(&429), "a burst past the limit is refused: {statuses:?}");

    let status = client.get(&url(gw.addr("admin"), "/-/status")).await;
    assert_eq!(status.json()["generation"], 1);
    let metrics = client.get(&url(gw.addr("admin"), "/metrics")).await;
    assert!(metrics.text().contains("sluice_upstream_target_up{upstream=\"self\""), "{}", metrics.text());

    let missing = client.get(&url(addr, "/nope")).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "no_route");
    gw.shutdown().await;
}

/// `examples/observability/sluice.yaml` serves (on free ports), its `/metrics` counts
/// requests by route, and its OTLP export, with no collector listening, fails without
/// touching requests.
#[tokio::test]
async fn the_observability_example_serves_and_counts_requests_by_route() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/observability/sluice.yaml");
    let dead = crate::harness::dead_addr().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = std::fs::read_to_string(file)
        .unwrap()
        .replace("sluice-calls.db", &dir.path().join("calls.db").display().to_string())
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9901", "127.0.0.1:0")
        .replace("127.0.0.1:4318", &dead.to_string());
    let loaded = parse_str("observability", &yaml, ".".into()).expect("the example is valid");
    let gw = sluice::Gateway::builder().config(loaded).start().await.unwrap();
    let client = Client::http1();
    for _ in 0..3 {
        assert_eq!(client.get(&url(gw.addr("public"), "/echo/hi")).await.status, 200);
    }
    assert_eq!(client.get(&url(gw.addr("public"), "/api/orders")).await.status, 401);
    let counted = || async {
        let page = client.get(&url(gw.addr("admin"), "/metrics")).await.text();
        page.contains(
            "sluice_requests_total{listener=\"public\",route=\"echo\",method=\"GET\",code=\"200\"} 3",
        ) && page.contains(
            "sluice_requests_total{listener=\"public\",route=\"api\",method=\"GET\",code=\"401\"} 1",
        ) && page.contains("sluice_plugin_responses_total{plugin=\"auth\",code=\"401\"}")
            && page.contains("sluice_otlp_items_total{signal=\"spans\",outcome=\"failed\"} ")
            && page.contains("sluice_call_log_records_total{outcome=\"written\"} 4")
    };
    let mut ok = false;
    for _ in 0..300 {
        if counted().await {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ok, "{}", client.get(&url(gw.addr("admin"), "/metrics")).await.text());
    let calls = client.get(&url(gw.addr("admin"), "/-/calls?route=echo")).await.json();
    assert_eq!(calls["calls"].as_array().unwrap().len(), 3);
    gw.shutdown().await;
}

/// `examples/ai/sluice.yaml` serves with no model server running: `/v1/models` lists
/// the alias, and its MCP endpoint answers `initialize` and lists the prompt route as a
/// tool with the route's input schema; a call reaches the route, whose provider is down.
#[tokio::test]
async fn the_ai_example_serves_its_mcp_endpoint_without_a_model_server() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/ai/sluice.yaml");
    let dead = crate::harness::dead_addr().await;
    let yaml = std::fs::read_to_string(file)
        .unwrap()
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:8081", &dead.to_string());
    let loaded = parse_str("ai", &yaml, ".".into()).expect("the example is valid");
    let gw = sluice::Gateway::builder().config(loaded).start().await.unwrap();
    let at = |path: &str| url(gw.addr("public"), path);
    let client = Client::http1();
    let post = |path: &str, headers: &[(&str, &str)], body: serde_json::Value| {
        let mut req = http::Request::post(at(path))
            .header("content-type", "application/json")
            .header("authorization", "Bearer sk-demo-team-a");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        client.send(req.body(crate::harness::full(body.to_string())).unwrap())
    };

    let models = client
        .send(
            http::Request::get(at("/v1/models"))
                .header("authorization", "Bearer sk-demo-team-a")
                .body(crate::harness::full(""))
                .unwrap(),
        )
        .await;
    assert_eq!(models.status, 200, "{}", models.text());
    assert_eq!(models.json()["data"][0]["id"], "local");

    let init = post(
        "/mcp",
        &[],
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18"}}),
    )
    .await;
    assert_eq!(init.status, 200, "{}", init.text());
    assert_eq!(init.json()["result"]["serverInfo"]["name"], "sluice-ai-example");
    assert!(init.json()["result"]["capabilities"]["tools"].is_object());
    let session = init.header("mcp-session-id").unwrap().to_owned();
    let s = [("mcp-session-id", session.as_str())];

    let list = post("/mcp", &s, serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})).await;
    let tool = &list.json()["result"]["tools"][0];
    assert_eq!(tool["name"], "summarize_en");
    assert_eq!(tool["inputSchema"]["required"], serde_json::json!(["text"]));
    assert_eq!(tool["inputSchema"]["properties"]["text"]["type"], "string");

    let call = serde_json::json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                                  "params": {"name": "summarize_en", "arguments": {"text": "hello"}}});
    let r = post("/mcp", &s, call).await.json();
    assert_eq!(r["result"]["isError"], true, "no model server runs: {r}");
    // A call missing what the schema requires is refused by the route itself.
    let call = serde_json::json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                                  "params": {"name": "summarize_en", "arguments": {}}});
    let r = post("/mcp", &s, call).await.json();
    assert_eq!(r["result"]["isError"], true);
    assert!(r["result"]["content"][0]["text"].as_str().unwrap().contains("text"), "{r}");
}

/// `examples/edge/sluice.yaml` serves alone: a cached route (the second GET is a hit
/// with `Age`, the upstream saw one request), version routing by path and query, a
/// canary override, and a composed dashboard.
#[tokio::test]
async fn the_edge_example_serves_each_pattern_on_its_own_echo_routes() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/edge/sluice.yaml");
    let free =
        || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port() };
    let (public, services, v2) = (free().await, free().await, free().await);
    let yaml = std::fs::read_to_string(file)
        .unwrap()
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{public}"))
        .replace("127.0.0.1:8081", &format!("127.0.0.1:{services}"))
        .replace("127.0.0.1:8082", &format!("127.0.0.1:{v2}"))
        .replace("127.0.0.1:9901", "127.0.0.1:0");
    let base = std::path::Path::new(file).parent().unwrap().to_owned();
    let loaded = parse_str("edge", &yaml, base).expect("the example is valid");
    let gw = sluice::Gateway::builder().config(loaded).start().await.unwrap();
    let at = |path: &str| url(gw.addr("public"), path);
    let client = Client::http1();

    let first = client.get(&at("/cache/catalog")).await;
    let second = client.get(&at("/cache/catalog")).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(
        (first.header("x-cache-status"), second.header("x-cache-status")),
        (Some("MISS"), Some("HIT"))
    );
    assert!(second.header("age").is_some());
    // The echo names the request it saw: the same one, so the upstream was asked once.
    assert_eq!(first.json()["headers"]["x-request-id"], second.json()["headers"]["x-request-id"]);
    let backend_calls = |metrics: &str| {
        metrics
            .lines()
            .filter(|l| l.starts_with("sluice_requests_total{") && l.contains("route=\"backend\""))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum::<u64>()
    };
    let metrics = client.get(&url(gw.addr("admin"), "/metrics")).await.text();
    assert_eq!(backend_calls(&metrics), 1, "{metrics}");

    assert_eq!(client.get(&at("/v2/items")).await.json()["route"], "backend-v2");
    assert_eq!(client.get(&at("/items?version=2")).await.json()["route"], "backend-v2");
    assert_eq!(client.get(&at("/items")).await.json()["route"], "backend");
    let canary = client
        .send(
            http::Request::get(at("/shop/items"))
                .header("x-canary", "1")
                .body(crate::harness::full(""))
                .unwrap(),
        )
        .await;
    assert_eq!(canary.json()["route"], "backend-v2");

    let dash = client.get(&at("/dashboard/42?limit=5")).await;
    assert_eq!(dash.status, 200, "{}", dash.text());
    let dash = dash.json();
    assert_eq!(dash["profile"]["path"], "/users/42");
    assert_eq!(dash["orders"]["path"], "/orders");
    assert_eq!(dash["orders"]["query"], "user=42&limit=5");
    assert_eq!(dash["recommendations"]["path"], "/recs/42");

    let pet = |body: &'static str| {
        let req = http::Request::post(at("/pets")).header("content-type", "application/json");
        client.send(req.body(crate::harness::full(body)).unwrap())
    };
    let refused = pet("{}").await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(refused.text().contains("name"), "{}", refused.text());
    let created = pet(r#"{"name":"rex"}"#).await;
    assert_eq!(created.status, 200, "{}", created.text());
    assert_eq!(created.json()["route"], "backend");
    gw.shutdown().await;
}
