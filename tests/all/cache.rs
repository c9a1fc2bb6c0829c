//! Route response caches: hits with `Age`, what is never stored, `Vary`, revalidation
//! with `ETag`, coalesced misses, stale-while-revalidate and stale-if-error, and the
//! Redis store shared by two gateways. Every test counts what the upstream saw.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::harness::{Client, Reply, TestBody, TestServer, eventually, full, gateway, url};

/// A gateway with one route `/` named `route` to `upstream`, cached as `cache` says
/// (the fields of the `cache:` mapping, in flow style), plus `extra` top-level YAML.
/// Entries live in one store per process, keyed by route: each test names its own.
fn config(route: &str, upstream: &TestServer, cache: &str, extra: &str) -> String {
    format!(
        "version: 1\n{extra}listeners:\n  - name: public\n    address: 127.0.0.1:0\nupstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\nroutes:\n  - name: {route}\n    match: {{ path_prefix: / }}\n    target: {{ upstream: app }}\n    cache: {{ {cache} }}\n",
        upstream.addr
    )
}

/// An upstream answering `n=<request number>` (padded to 100 bytes for a path with
/// `big` in it) with the headers `headers` gives for the request.
async fn counting(
    headers: impl Fn(&Request<Incoming>) -> Vec<(&'static str, String)> + Send + Sync + 'static,
) -> TestServer {
    let n = Arc::new(AtomicUsize::new(0));
    TestServer::start(move |req| {
        let i = n.fetch_add(1, Ordering::SeqCst) + 1;
        let body = format!("n={i}");
        let body = if req.uri().path().contains("big") { format!("{body:<100}") } else { body };
        let mut resp = Response::new(full(body));
        for (k, v) in headers(&req) {
            resp.headers_mut().append(k, v.parse().unwrap());
        }
        async move { resp }
    })
    .await
}

async fn get(gw: &sluice::Gateway, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::get(url(gw.addr("public"), path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Client::http1().send(req.body(full("")).unwrap()).await
}

fn cached_as(r: &Reply) -> &str {
    r.header("x-cache-status").unwrap_or("-")
}

#[tokio::test]
async fn a_second_get_is_answered_from_the_cache_with_its_age_and_the_upstream_sees_one() {
    let upstream = counting(|_| vec![("cache-control", "max-age=60".into())]).await;
    let gw = gateway(&config("hit_age", &upstream, "", "admin: { address: 127.0.0.1:0 }\n")).await;

    let first = get(&gw, "/cache/item?x=1", &[]).await;
    assert_eq!((first.status.as_u16(), first.text().as_str(), cached_as(&first)), (200, "n=1", "MISS"));
    let second = get(&gw, "/cache/item?x=1", &[]).await;
    assert_eq!((second.text().as_str(), cached_as(&second)), ("n=1", "HIT"));
    let age: u64 = second.header("age").expect("a hit carries Age").parse().unwrap();
    assert!(age < 60, "{age}");
    assert_eq!(second.header("cache-control"), Some("max-age=60"), "the stored headers are replayed");
    assert_eq!(upstream.request_count(), 1);

    // HEAD is answered from the stored GET; another query string is another entry;
    // a POST is never cached.
    let head = Client::http1()
        .send(Request::head(url(gw.addr("public"), "/cache/item?x=1")).body(full("")).unwrap())
        .await;
    assert_eq!((head.status.as_u16(), cached_as(&head), head.text().as_str()), (200, "HIT", ""));
    assert_eq!(get(&gw, "/cache/item?x=2", &[]).await.text(), "n=2");
    let post = Client::http1().post(&url(gw.addr("public"), "/cache/item?x=1"), "b").await;
    assert_eq!((post.text().as_str(), cached_as(&post)), ("n=3", "BYPASS"));
    assert_eq!(upstream.request_count(), 3);
    let metrics = Client::http1().get(&url(gw.addr("admin"), "/metrics")).await.text();
    for (status, n) in [("HIT", 2), ("MISS", 2), ("BYPASS", 1)] {
        let line = format!("sluice_cache_responses_total{{route=\"hit_age\",status=\"{status}\"}} {n}\n");
        assert!(metrics.contains(&line), "{line} not in:\n{metrics}");
    }
    assert!(metrics.contains("sluice_cache_memory_bytes "), "{metrics}");

    // The admin API purges one path, then the whole route.
    let admin = Client::http1();
    let purge = |q: &'static str| {
        let req =
            Request::post(url(gw.addr("admin"), &format!("/-/cache/purge?{q}"))).body(full("")).unwrap();
        admin.send(req)
    };
    assert_eq!(purge("route=hit_age&path=/cache/other").await.json()["purged"], 0);
    assert_eq!(purge("route=hit_age&path=/cache/item").await.json()["purged"], 2, "both query strings");
    assert_eq!(cached_as(&get(&gw, "/cache/item?x=1", &[]).await), "MISS");
    assert_eq!(purge("route=hit_age").await.json()["purged"], 1);
    assert_eq!(purge("route=nowhere").await.status, 404);
    assert_eq!(upstream.request_count(), 4);

    // The client's own conditional on a hit gets a 304 from the gateway.
    let etagged = counting(|_| vec![("cache-control", "max-age=60".into()), ("etag", "\"v7\"".into())]).await;
    let gw = gateway(&config("etag_304", &etagged, "", "")).await;
    get(&gw, "/e", &[]).await;
    let not_modified = get(&gw, "/e", &[("if-none-match", "\"v7\"")]).await;
    assert_eq!((not_modified.status.as_u16(), cached_as(&not_modified)), (304, "HIT"));
    assert_eq!(not_modified.header("etag"), Some("\"v7\""));
    assert_eq!(etagged.request_count(), 1);
}

#[tokio::test]
async fn what_a_shared_cache_must_not_keep_is_fetched_every_time() {
    // The path picks the upstream's answer.
    let upstream = counting(|req| match req.uri().path() {
        "/no-store" => vec![("cache-control", "no-store".into())],
        "/private" => vec![("cache-control", "private, max-age=60".into())],
        "/cookie" => vec![("cache-control", "max-age=60".into()), ("set-cookie", "session=1".into())],
        "/bare" => vec![],
        _ => vec![("cache-control", "max-age=60".into())],
    })
    .await;
    let gw = gateway(&config("never_kept", &upstream, "max_body: 4", "")).await;
    for path in ["/no-store", "/private", "/cookie", "/bare", "/big"] {
        let before = upstream.request_count();
        let a = get(&gw, path, &[]).await;
        let b = get(&gw, path, &[]).await;
        assert_eq!((cached_as(&a), cached_as(&b)), ("MISS", "MISS"), "{path}");
        assert_eq!(upstream.request_count(), before + 2, "{path} was served from the cache");
    }
    // `max_body: 4`: "n=12" (4 bytes) fits, and is stored.
    let before = upstream.request_count();
    get(&gw, "/fits", &[]).await;
    assert_eq!(cached_as(&get(&gw, "/fits", &[]).await), "HIT");
    assert_eq!(upstream.request_count(), before + 1);
    // Requests with credentials skip the cache unless the route says otherwise.
    let before = upstream.request_count();
    let a = get(&gw, "/fits", &[("authorization", "Bearer x")]).await;
    assert_eq!(cached_as(&a), "BYPASS");
    assert_eq!(upstream.request_count(), before + 1);
}

#[tokio::test]
async fn a_route_ttl_applies_only_where_the_upstream_says_nothing() {
    let upstream = counting(|req| match req.uri().path() {
        "/short" => vec![("cache-control", "max-age=0".into())],
        _ => vec![],
    })
    .await;
    let gw = gateway(&config("ttl_where_silent", &upstream, "ttl: 60s", "")).await;
    get(&gw, "/bare", &[]).await;
    assert_eq!(cached_as(&get(&gw, "/bare", &[]).await), "HIT");
    get(&gw, "/short", &[]).await;
    assert_eq!(cached_as(&get(&gw, "/short", &[]).await), "MISS", "the upstream's max-age=0 wins over ttl");
    assert_eq!(upstream.request_count(), 3);
}

#[tokio::test]
async fn vary_keeps_one_variant_per_value() {
    let upstream = counting(|req| {
        let lang = req.headers().get("accept-language").map(|v| v.to_str().unwrap().to_owned());
        vec![
            ("cache-control", "max-age=60".into()),
            ("vary", "Accept-Language".into()),
            ("content-language", lang.unwrap_or_else(|| "none".into())),
        ]
    })
    .await;
    let gw = gateway(&config("vary", &upstream, "", "")).await;
    let en = get(&gw, "/v", &[("accept-language", "en")]).await;
    let fr = get(&gw, "/v", &[("accept-language", "fr")]).await;
    let none = get(&gw, "/v", &[]).await;
    assert_eq!(upstream.request_count(), 3);
    for (lang, first) in [("en", &en), ("fr", &fr)] {
        let again = get(&gw, "/v", &[("accept-language", lang)]).await;
        assert_eq!((cached_as(&again), again.text()), ("HIT", first.text()));
        assert_eq!(again.header("content-language"), Some(lang));
    }
    assert_eq!(get(&gw, "/v", &[]).await.text(), none.text());
    assert_eq!(upstream.request_count(), 3);
}

#[tokio::test]
async fn a_stale_entry_is_revalidated_with_its_etag_and_a_304_keeps_its_body() {
    let conditionals = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&conditionals);
    let n = Arc::new(AtomicUsize::new(0));
    let upstream = TestServer::start(move |req: Request<Incoming>| {
        let i = n.fetch_add(1, Ordering::SeqCst) + 1;
        let matches = req.headers().get("if-none-match").is_some_and(|v| v == "\"v1\"");
        let resp: Response<TestBody> = if matches {
            seen.fetch_add(1, Ordering::SeqCst);
            Response::builder()
                .status(304)
                .header("etag", "\"v1\"")
                .header("x-seen", i.to_string())
                .body(full(""))
                .unwrap()
        } else {
            Response::builder()
                .header("cache-control", "no-cache")
                .header("etag", "\"v1\"")
                .body(full(format!("body {i}")))
                .unwrap()
        };
        async move { resp }
    })
    .await;
    let gw = gateway(&config("revalidate", &upstream, "", "")).await;
    let first = get(&gw, "/doc", &[]).await;
    assert_eq!((first.text().as_str(), cached_as(&first)), ("body 1", "MISS"));
    // `no-cache`: stored, but confirmed with the upstream before each use.
    let second = get(&gw, "/doc", &[]).await;
    assert_eq!(
        (second.status.as_u16(), second.text().as_str(), cached_as(&second)),
        (200, "body 1", "REVALIDATED")
    );
    assert_eq!(second.header("x-seen"), Some("2"), "the 304's headers update the entry");
    assert_eq!(conditionals.load(Ordering::SeqCst), 1);
    assert_eq!(upstream.request_count(), 2);
}

#[tokio::test]
async fn a_burst_of_misses_for_one_entry_makes_one_upstream_call() {
    let (open, gate) = tokio::sync::watch::channel(false);
    let n = Arc::new(AtomicUsize::new(0));
    let upstream = TestServer::start(move |_req| {
        let mut gate = gate.clone();
        let i = n.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let _ = gate.wait_for(|open| *open).await;
            Response::builder().header("cache-control", "max-age=60").body(full(format!("n={i}"))).unwrap()
        }
    })
    .await;
    let gw = Arc::new(gateway(&config("burst", &upstream, "", "")).await);
    let mut clients = Vec::new();
    for _ in 0..20 {
        let gw = Arc::clone(&gw);
        clients.push(tokio::spawn(async move { get(&gw, "/hot", &[]).await }));
    }
    assert!(eventually(Duration::from_secs(10), || upstream.request_count() >= 1).await);
    // Let the other 19 requests reach the gateway and queue behind the first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    open.send(true).unwrap();
    let mut outcomes = Vec::new();
    for c in clients {
        let r = c.await.unwrap();
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "n=1"));
        outcomes.push(cached_as(&r).to_owned());
    }
    assert_eq!(upstream.request_count(), 1, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| *o == "MISS").count(), 1, "{outcomes:?}");
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_in_the_background() {
    let upstream = counting(|_| vec![("cache-control", "max-age=1, stale-while-revalidate=60".into())]).await;
    let gw = gateway(&config("swr", &upstream, "", "")).await;
    assert_eq!(get(&gw, "/s", &[]).await.text(), "n=1");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let stale = get(&gw, "/s", &[]).await;
    assert_eq!((stale.text().as_str(), cached_as(&stale)), ("n=1", "STALE"));
    assert!(eventually(Duration::from_secs(10), || upstream.request_count() == 2).await, "refreshed");
    // The refreshed entry is stored once the background fetch ends.
    let mut refreshed = String::new();
    for _ in 0..100 {
        let r = get(&gw, "/s", &[]).await;
        if cached_as(&r) == "HIT" {
            refreshed = r.text();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(refreshed, "n=2");
    assert_eq!(upstream.request_count(), 2);
}

#[tokio::test]
async fn stale_if_error_serves_the_old_entry_while_the_upstream_fails() {
    let failing = Arc::new(AtomicBool::new(false));
    let fail = Arc::clone(&failing);
    let upstream = TestServer::start(move |_req| {
        let resp = if fail.load(Ordering::SeqCst) {
            Response::builder().status(503).body(full("down")).unwrap()
        } else {
            Response::builder().header("cache-control", "max-age=1").body(full("good")).unwrap()
        };
        async move { resp }
    })
    .await;
    let gw = gateway(&config("sie", &upstream, "stale_if_error: 60s", "")).await;
    assert_eq!(get(&gw, "/f", &[]).await.text(), "good");
    failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = get(&gw, "/f", &[]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str(), cached_as(&r)), (200, "good", "STALE"));
    assert_eq!(upstream.request_count(), 2, "the upstream was asked first");
    // Without the stale window, the failure is the answer.
    let gw = gateway(&config("sie_off", &upstream, "", "")).await;
    assert_eq!(get(&gw, "/f", &[]).await.status.as_u16(), 503);
}

#[tokio::test]
async fn per_consumer_entries_keep_authorized_content_apart() {
    let upstream = counting(|req| {
        let who =
            req.headers().get("authorization").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        vec![("cache-control", "max-age=60".into()), ("x-for", who)]
    })
    .await;
    let plugins = "    plugins:\n      - name: auth\n        config: { api_key: { sources: [{ bearer: authorization }], keys: [{ key: key-a, consumer: alice }, { key: key-b, consumer: bob }] } }\n";
    let yaml = config("per_consumer", &upstream, "authorized: per_consumer", "")
        .replace("    cache:", &format!("{plugins}    cache:"));
    let gw = gateway(&yaml).await;
    let a1 = get(&gw, "/me", &[("authorization", "Bearer key-a")]).await;
    let b1 = get(&gw, "/me", &[("authorization", "Bearer key-b")]).await;
    let a2 = get(&gw, "/me", &[("authorization", "Bearer key-a")]).await;
    assert_eq!((a1.status.as_u16(), b1.status.as_u16()), (200, 200), "{}", a1.text());
    assert_eq!((cached_as(&a1), cached_as(&b1), cached_as(&a2)), ("MISS", "MISS", "HIT"));
    assert_eq!(a2.text(), a1.text());
    assert_ne!(a1.text(), b1.text());
    assert_eq!(upstream.request_count(), 2);
}

#[tokio::test]
async fn two_gateways_share_entries_through_redis() {
    let Some(redis) = sluice_tests::RedisServer::start_or_skip() else { return };
    let upstream = counting(|_| vec![("cache-control", "max-age=60".into())]).await;
    let extra = format!(
        "server:\n  cache: {{ backend: redis }}\nplugins:\n  kv: {{ backend: redis, url: \"{}\" }}\n",
        redis.url()
    );
    let a = gateway(&config("redis_shared", &upstream, "", &extra)).await;
    let b = gateway(&config("redis_shared", &upstream, "", &extra)).await;
    assert_eq!(cached_as(&get(&a, "/shared", &[]).await), "MISS");
    // The entry is written to Redis once the body has ended.
    let mut hit = None;
    for _ in 0..100 {
        let r = get(&b, "/shared", &[]).await;
        if cached_as(&r) == "HIT" {
            hit = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hit = hit.expect("the second gateway hits the entry the first stored");
    assert_eq!(hit.text(), "n=1");
    assert_eq!(upstream.request_count(), 1);
}
