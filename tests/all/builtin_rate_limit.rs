//! End-to-end tests of the built-in `rate-limit` plugin through the gateway: real
//! upstreams, the embedded component, the in-process kv store and a real
//! `redis-server` (shared by two gateways, and stopped mid-test).
//!
//! The in-process store is shared by every gateway of this test process, and a limit's
//! state is scoped by route name: every test uses its own route names.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode};
use redis::AsyncCommands;
use sluice::Gateway;
use sluice_tests::RedisServer;
use sluice_tests::plugins as wasm;
use tempfile::TempDir;

use crate::harness::{Client, Reply, TestServer, full, url};

/// A kv call on Redis may take this long: CI machines are slow, and timeouts are not
/// under test (refused connections fail at once).
const KV_TIMEOUT: &str = "2s";

/// A gateway's config folder: a plugins folder (for the `identity` test plugin that
/// sets consumers) and a compile cache.
struct Setup {
    dir: TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        std::fs::copy(wasm::IDENTITY, dir.path().join("plugins/identity.wasm")).unwrap();
        Setup { dir }
    }

    /// A config with one listener, the plugins section (`kv` lines indented under it)
    /// and `rest`.
    fn config(&self, kv: &str, rest: &str) -> String {
        let d = self.dir.path();
        format!(
            "version: 1\nlisteners:\n  - name: public\n    address: 127.0.0.1:0\nplugins:\n  dir: {}\n  cache_dir: {}\n{kv}{rest}",
            d.join("plugins").display(),
            d.join("cache").display(),
        )
    }

    async fn start(&self, kv: &str, rest: &str) -> Gateway {
        let yaml = self.config(kv, rest);
        let builder =
            Gateway::builder().config_yaml(&yaml).unwrap_or_else(|e| panic!("config rejected:\n{e}"));
        builder.start().await.unwrap_or_else(|e| panic!("gateway failed to start: {e}"))
    }
}

/// The `plugins.kv` lines of a Redis-backed gateway.
fn redis_kv(url: &str) -> String {
    format!("  kv:\n    backend: redis\n    url: {url}\n    timeout: {KV_TIMEOUT}\n")
}

/// An `upstreams:` section with the pool `app` on `addr`, then `routes:`.
fn upstream(addr: std::net::SocketAddr) -> String {
    format!("upstreams:\n  app:\n    targets:\n      - address: {addr}\nroutes:\n")
}

/// A route `name` on `path_prefix` to `app` with the rate-limit plugin and `config`.
fn limited_route(name: &str, prefix: &str, config: &str) -> String {
    format!(
        "  - name: {name}
    match: {{ path_prefix: {prefix} }}
    target: {{ upstream: app }}
    plugins:
      - name: rate-limit
        config: {config}
        grants: {{ kv: true }}
        limits: {{ deadline: 10s }}
"
    )
}

/// Sends `n` requests at once (from `make`) and returns the replies.
async fn all_at_once(n: usize, make: impl Fn(usize) -> Request<crate::harness::TestBody>) -> Vec<Reply> {
    let client = Client::http1();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (client, req) = (client.clone(), make(i));
        // A liveness guard, not a timing assertion: no request may hang on the limiter.
        tasks.spawn(async move {
            tokio::time::timeout(Duration::from_secs(30), client.send(req))
                .await
                .expect("the request finished")
        });
    }
    let mut replies = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        replies.push(r.unwrap());
    }
    replies
}

fn get(u: &str) -> Request<crate::harness::TestBody> {
    Request::get(u).body(full("")).unwrap()
}

/// (admitted, refused) among `replies`; anything else fails the test.
fn tally(replies: &[Reply]) -> (usize, usize) {
    let mut counts = (0, 0);
    for r in replies {
        match r.status {
            StatusCode::OK => counts.0 += 1,
            StatusCode::TOO_MANY_REQUESTS => counts.1 += 1,
            s => panic!("unexpected {s}: {}", r.text()),
        }
    }
    counts
}

async fn one(u: &str) -> Reply {
    tokio::time::timeout(Duration::from_secs(30), Client::http1().get(u)).await.expect("the request finished")
}

#[tokio::test]
async fn a_limit_admits_exactly_its_burst_of_concurrent_requests_in_process() {
    let up = TestServer::named("app").await;
    let s = Setup::new();
    let routes = limited_route("rl_exact", "/", "{ limits: [{ name: per_hour, rate: 10, per: 1h }] }");
    let gw = s.start("", &format!("{}{routes}", upstream(up.addr))).await;
    let target = url(gw.addr("public"), "/x");
    let replies = all_at_once(60, |_| get(&target)).await;
    assert_eq!(tally(&replies), (10, 50), "exactly the limit admitted");
    assert_eq!(up.request_count(), 10, "refused requests never reached the upstream");
}

#[tokio::test]
async fn refusals_are_429_with_retry_after_and_every_response_has_ratelimit_headers() {
    let up = TestServer::named("app").await;
    let s = Setup::new();
    let routes = limited_route(
        "rl_headers",
        "/",
        "{ limits: [{ name: per_minute, rate: 2, per: 1m }, { name: per_day, rate: 100, per: 1d }] }",
    );
    let gw = s.start("", &format!("{}{routes}", upstream(up.addr))).await;
    let target = url(gw.addr("public"), "/h");
    let policy = r#""per_minute";q=2;w=60, "per_day";q=100;w=86400"#;

    for left in [1, 0] {
        let ok = one(&target).await;
        assert_eq!(ok.status, 200);
        assert_eq!(ok.text(), "app", "the upstream's own response");
        assert_eq!(ok.header("ratelimit-policy"), Some(policy));
        let state = ok.header("ratelimit").expect("RateLimit on a 2xx");
        let want = format!("\"per_minute\";r={left};t=");
        assert!(state.starts_with(&want), "{state}");
        assert!(state.contains(&format!(r#", "per_day";r={};t="#, 98 + left)), "{state}");
    }

    let req = Request::get(&target).header("x-request-id", "rl-test-1").body(full("")).unwrap();
    let refused = Client::http1().send(req).await;
    assert_eq!(refused.status, 429);
    let retry: u64 = refused.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=30).contains(&retry), "a unit comes back within 30s: {retry}");
    assert_eq!(refused.header("ratelimit-policy"), Some(policy));
    let state = refused.header("ratelimit").expect("RateLimit on a 429");
    assert!(state.starts_with(r#""per_minute";r=0;t="#), "{state}");
    assert_eq!(refused.header("content-type"), Some("application/json"));
    let body = refused.json();
    assert_eq!(body["error"]["status"], 429);
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(body["error"]["request_id"], "rl-test-1");
    assert_eq!(refused.header("x-request-id"), Some("rl-test-1"), "the gateway's id, as in the body");
    assert_eq!(up.request_count(), 2);
}

#[tokio::test]
async fn consumers_have_their_own_budgets_and_anonymous_clients_fall_back_to_their_ip() {
    let up = TestServer::named("app").await;
    let s = Setup::new();
    // The `identity` test plugin makes the `x-as` header the consumer, as an auth
    // plugin would; rate-limit comes after it in the chain.
    let routes = "  - name: rl_consumer
    match: { path_prefix: / }
    target: { upstream: app }
    plugins:
      - name: identity
        config: { role: setter }
      - name: rate-limit
        config: { key: [consumer], fallback_key: [ip], limits: [{ name: daily, rate: 3, per: 1d }] }
        grants: { kv: true }
        limits: { deadline: 10s }
";
    let gw = s.start("", &format!("{}{routes}", upstream(up.addr))).await;
    let target = url(gw.addr("public"), "/c");
    let as_consumer = |who: &'static str| {
        let target = target.clone();
        move |_| Request::get(&target).header("x-as", who).body(full("")).unwrap()
    };
    assert_eq!(tally(&all_at_once(8, as_consumer("alice")).await), (3, 5));
    assert_eq!(tally(&all_at_once(8, as_consumer("bob")).await), (3, 5), "bob's budget is his own");
    // Without a consumer: keyed by the client IP, a budget apart from alice's and bob's
    // (who came from the same IP).
    assert_eq!(tally(&all_at_once(8, |_| get(&target)).await), (3, 5));
}

#[tokio::test]
async fn keyed_by_a_header_each_value_has_a_budget_and_keyed_by_ip_everyone_here_shares_one() {
    let up = TestServer::named("app").await;
    let s = Setup::new();
    let routes = format!(
        "{}{}",
        limited_route(
            "rl_by_header",
            "/h",
            "{ key: [{ header: x-api-key }], limits: [{ name: l, rate: 2, per: 1h }] }"
        ),
        limited_route("rl_by_ip", "/ip", "{ key: [ip], limits: [{ name: l, rate: 2, per: 1h }] }"),
    );
    let gw = s.start("", &format!("{}{routes}", upstream(up.addr))).await;
    let addr = gw.addr("public");
    let keyed = |k: &'static str| {
        let target = url(addr, "/h");
        move |_| Request::get(&target).header("x-api-key", k).body(full("")).unwrap()
    };
    assert_eq!(tally(&all_at_once(5, keyed("k1")).await), (2, 3));
    assert_eq!(tally(&all_at_once(5, keyed("k2")).await), (2, 3));
    // Every client of this test is 127.0.0.1, whatever key it sends.
    let by_ip = url(addr, "/ip");
    let make = |i: usize| Request::get(&by_ip).header("x-api-key", format!("k{i}")).body(full("")).unwrap();
    assert_eq!(tally(&all_at_once(5, make).await), (2, 3));
}

#[tokio::test]
async fn behind_the_auth_plugin_each_api_key_consumer_has_its_own_budget() {
    let up = TestServer::echo().await;
    let s = Setup::new();
    let routes = "  - name: rl_auth
    match: { path_prefix: / }
    target: { upstream: app }
    plugins:
      - name: auth
        config:
          api_key: { keys: [{ key: key-alice, consumer: alice }, { key: key-bob, consumer: bob }] }
        grants:
          http: { allow: [127.0.0.1] }
          secrets: { unused: { file: SECRET } }
      - name: rate-limit
        config: { key: [consumer], limits: [{ name: per_hour, rate: 2, per: 1h }] }
        grants: { kv: true }
        limits: { deadline: 10s }
";
    // The component imports `http` (JWKS URLs) and `secrets`: grant both.
    let secret = s.dir.path().join("unused.secret");
    std::fs::write(&secret, "unused").unwrap();
    let routes = routes.replace("SECRET", &secret.display().to_string());
    let gw = s.start("", &format!("{}{routes}", upstream(up.addr))).await;
    let target = url(gw.addr("public"), "/a");
    let with_key = |k: &'static str| {
        let target = target.clone();
        move |_| Request::get(&target).header("x-api-key", k).body(full("")).unwrap()
    };
    let alice = all_at_once(6, with_key("key-alice")).await;
    assert_eq!(tally(&alice), (2, 4));
    let admitted = alice.iter().find(|r| r.status == 200).unwrap();
    assert_eq!(admitted.json()["headers"]["x-consumer"], "alice", "auth ran first");
    assert_eq!(tally(&all_at_once(6, with_key("key-bob")).await), (2, 4), "bob's budget is his own");
    // A bad key is refused by auth before it is counted.
    let bad = Client::http1().send(with_key("nope")(0)).await;
    assert_eq!(bad.status, 401);
    assert!(bad.header("ratelimit").is_none());
    assert_eq!(up.request_count(), 4);
}

/// The Redis keys the plugin wrote (the gateway's default prefix).
async fn redis_keys(redis: &RedisServer) -> Vec<String> {
    let mut conn =
        redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<Vec<u8>> = conn.keys("sluice:rate-limit*").await.unwrap();
    keys.into_iter().map(|k| String::from_utf8_lossy(&k).into_owned()).collect()
}

#[tokio::test]
async fn on_redis_a_limit_admits_exactly_its_burst_of_concurrent_requests() {
    let Some(redis) = RedisServer::start_or_skip() else { return };
    let up = TestServer::named("app").await;
    let s = Setup::new();
    let routes = limited_route("rl_redis", "/", "{ limits: [{ name: per_hour, rate: 15, per: 1h }] }");
    let gw = s.start(&redis_kv(&redis.url()), &format!("{}{routes}", upstream(up.addr))).await;
    let target = url(gw.addr("public"), "/r");
    assert_eq!(tally(&all_at_once(60, |_| get(&target)).await), (15, 45));
    assert_eq!(up.request_count(), 15);
    let keys = redis_keys(&redis).await;
    assert_eq!(keys, ["sluice:rate-limit\u{0}rl_redis\u{0}per_hour\u{0}127.0.0.1"], "the state is in Redis");
    let mut conn =
        redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = conn.pttl(&keys[0]).await.unwrap();
    assert!(ttl > 0 && ttl <= 3_600_000, "the state expires when the bucket is full again: {ttl}");
}

#[tokio::test]
async fn two_gateways_sharing_redis_admit_one_limit_between_them() {
    let Some(redis) = RedisServer::start_or_skip() else { return };
    let up = TestServer::named("app").await;
    let s = Setup::new();
    // Both gateways share the budget through `scope` (and one Redis); the second
    // gateway uses another URL for the same database, so it has its own connection.
    let config = "{ scope: shared_api, limits: [{ name: per_hour, rate: 20, per: 1h }] }";
    let a = s
        .start(
            &redis_kv(&redis.url()),
            &format!("{}{}", upstream(up.addr), limited_route("rl_two_a", "/", config)),
        )
        .await;
    let b_url = format!("redis://127.0.0.1:{}", redis.port());
    let b = s
        .start(&redis_kv(&b_url), &format!("{}{}", upstream(up.addr), limited_route("rl_two_b", "/", config)))
        .await;
    let targets = Arc::new([url(a.addr("public"), "/t"), url(b.addr("public"), "/t")]);
    let replies = all_at_once(80, |i| get(&targets[i % 2])).await;
    assert_eq!(tally(&replies), (20, 60), "20 in total across both gateways");
    assert_eq!(up.request_count(), 20);
    assert_eq!(redis_keys(&redis).await, ["sluice:rate-limit\u{0}shared_api\u{0}per_hour\u{0}127.0.0.1"]);
}

#[tokio::test]
async fn with_redis_stopped_fail_open_lets_requests_through_and_fail_closed_refuses_them() {
    let Some(mut redis) = RedisServer::start_or_skip() else { return };
    let up = TestServer::named("app").await;
    let s = Setup::new();
    let routes = format!(
        "{}{}",
        limited_route(
            "rl_open",
            "/open",
            "{ on_kv_error: fail_open, limits: [{ name: l, rate: 1, per: 1h }] }"
        ),
        limited_route(
            "rl_closed",
            "/closed",
            "{ on_kv_error: fail_closed, limits: [{ name: l, rate: 1, per: 1h }] }"
        ),
    );
    let gw = s.start(&redis_kv(&redis.url()), &format!("{}{routes}", upstream(up.addr))).await;
    let addr = gw.addr("public");
    let (open, closed) = (url(addr, "/open"), url(addr, "/closed"));
    // Redis up: both limits are enforced.
    for target in [&open, &closed] {
        assert_eq!(one(target).await.status, 200);
        assert_eq!(one(target).await.status, 429);
    }

    redis.stop();
    // Each request is decided (none hangs): fail_open admits even though the budget
    // is spent, fail_closed refuses with 503.
    let replies = all_at_once(6, |_| get(&open)).await;
    assert!(
        replies.iter().all(|r| r.status == 200),
        "fail_open: {:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(replies.iter().all(|r| r.header("ratelimit").is_none()), "no state to report");
    assert!(replies.iter().all(|r| r.header("ratelimit-policy").is_some()), "the policy is still announced");
    let replies = all_at_once(6, |_| get(&closed)).await;
    for r in &replies {
        assert_eq!(r.status, 503, "fail_closed: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "rate_limit_unavailable");
        assert_eq!(r.header("retry-after"), Some("1"));
    }
    assert!(
        sluice::plugins::stats::stats_for("rate-limit")
            .custom_counters()
            .get("kv_errors")
            .copied()
            .unwrap_or(0)
            >= 12
    );

    // Redis back (empty): limits apply again once the gateway has reconnected.
    redis.restart();
    let mut recovered = false;
    for _ in 0..100 {
        if one(&closed).await.status == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the limiter works again after Redis came back");
    assert_eq!(one(&closed).await.status, 429);
}
