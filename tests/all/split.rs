//! The split target: weighted canary splits between upstream pools, sticky by
//! header, cookie or consumer, with overrides; new weights with a reload.

use std::collections::HashMap;

use sluice::config::parse_str;

use crate::harness::{Client, TestServer, gateway, url};

/// A gateway whose route `/` splits between `v1` and `v2` (each a test server answering
/// its own name) as `split` says (the YAML of the `split:` mapping's fields).
fn config(v1: &TestServer, v2: &TestServer, split: &str) -> String {
    format!(
        "version: 1\nlisteners:\n  - name: public\n    address: 127.0.0.1:0\nupstreams:\n  v1: {{ targets: [{{ address: \"{}\" }}] }}\n  v2: {{ targets: [{{ address: \"{}\" }}] }}\nroutes:\n  - name: app\n    match: {{ path_prefix: / }}\n    target:\n      split:\n{split}",
        v1.addr, v2.addr
    )
}

async fn servers() -> (TestServer, TestServer) {
    (TestServer::named("v1").await, TestServer::named("v2").await)
}

/// Which upstream answered each of `n` requests made by `make`.
async fn count(
    gw: &sluice::Gateway,
    n: usize,
    make: impl Fn(usize) -> Vec<(&'static str, String)>,
) -> HashMap<String, usize> {
    let client = Client::http1();
    let mut seen = HashMap::new();
    for i in 0..n {
        let mut req = http::Request::get(url(gw.addr("public"), "/"));
        for (k, v) in make(i) {
            req = req.header(k, v);
        }
        let reply = client.send(req.body(crate::harness::full("")).unwrap()).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        *seen.entry(reply.text()).or_default() += 1;
    }
    seen
}

#[tokio::test]
async fn requests_are_split_by_weight() {
    let (v1, v2) = servers().await;
    let gw = gateway(&config(
        &v1,
        &v2,
        "        to: [{ upstream: v1, weight: 80 }, { upstream: v2, weight: 20 }]\n",
    ))
    .await;
    let seen = count(&gw, 2000, |_| vec![]).await;
    // 400 expected; the bounds are more than five standard deviations (17.9) away.
    let canary = seen.get("v2").copied().unwrap_or(0);
    assert!((300..=500).contains(&canary), "{seen:?}");
    assert_eq!(seen.values().sum::<usize>(), 2000);
}

#[tokio::test]
async fn a_sticky_header_keeps_each_client_on_one_side_and_clients_split_by_weight() {
    let (v1, v2) = servers().await;
    let gw = gateway(&config(
        &v1,
        &v2,
        "        to: [{ upstream: v1, weight: 50 }, { upstream: v2, weight: 50 }]\n        sticky: { header: x-user }\n",
    ))
    .await;
    let mut sides: HashMap<usize, String> = HashMap::new();
    let client = Client::http1();
    for round in 0..3 {
        for user in 0..200 {
            let req = http::Request::get(url(gw.addr("public"), "/"))
                .header("x-user", format!("user-{user}"))
                .body(crate::harness::full(""))
                .unwrap();
            let side = client.send(req).await.text();
            match sides.get(&user) {
                Some(before) => assert_eq!(before, &side, "user {user}, round {round}"),
                None => {
                    sides.insert(user, side);
                }
            }
        }
    }
    let on_v2 = sides.values().filter(|s| *s == "v2").count();
    // 100 expected of 200 users; standard deviation 7.1.
    assert!((60..=140).contains(&on_v2), "{on_v2} of 200 users on v2");
}

#[tokio::test]
async fn a_sticky_cookie_is_set_once_and_then_keeps_the_client() {
    let (v1, v2) = servers().await;
    let gw = gateway(&config(
        &v1,
        &v2,
        "        to: [{ upstream: v1, weight: 1 }, { upstream: v2, weight: 1 }]\n        sticky: { cookie: canary }\n",
    ))
    .await;
    let client = Client::http1();
    let mut first_sides = HashMap::new();
    for _ in 0..40 {
        let first = client.get(&url(gw.addr("public"), "/")).await;
        let set = first.header("set-cookie").expect("a client without the cookie gets one").to_owned();
        assert!(
            set.starts_with("canary=") && set.contains("Max-Age=2592000") && set.contains("HttpOnly"),
            "{set}"
        );
        let cookie = set.split(';').next().unwrap().to_owned();
        for _ in 0..5 {
            let req = http::Request::get(url(gw.addr("public"), "/"))
                .header("cookie", format!("theme=dark; {cookie}"))
                .body(crate::harness::full(""))
                .unwrap();
            let again = client.send(req).await;
            assert_eq!(again.text(), first.text(), "{cookie}");
            assert_eq!(again.header("set-cookie"), None, "set once");
        }
        *first_sides.entry(first.text()).or_insert(0) += 1;
    }
    assert_eq!(first_sides.len(), 2, "new clients land on both sides: {first_sides:?}");
}

#[tokio::test]
async fn consumers_stay_on_their_side() {
    let (v1, v2) = servers().await;
    let yaml = config(
        &v1,
        &v2,
        "        to: [{ upstream: v1, weight: 1 }, { upstream: v2, weight: 1 }]\n        sticky: consumer\n    plugins:\n      - name: auth\n        config: { api_key: { keys: [{ key: k1, consumer: ann }, { key: k2, consumer: bob }, { key: k3, consumer: cyd }, { key: k4, consumer: dan }] } }\n",
    );
    let gw = gateway(&yaml).await;
    for key in ["k1", "k2", "k3", "k4"] {
        let seen = count(&gw, 10, |_| vec![("x-api-key", key.to_owned())]).await;
        assert_eq!(seen.len(), 1, "{key}: {seen:?}");
    }
}

#[tokio::test]
async fn an_override_sends_a_request_to_its_upstream_and_a_reload_moves_the_weights() {
    let (v1, v2) = servers().await;
    let split = |w1: u32, w2: u32| {
        format!(
            "        to: [{{ upstream: v1, weight: {w1} }}, {{ upstream: v2, weight: {w2} }}]\n        overrides: [{{ header: x-canary, value: \"1\", upstream: v2 }}]\n"
        )
    };
    let gw = gateway(&config(&v1, &v2, &split(100, 0))).await;
    assert_eq!(count(&gw, 20, |_| vec![]).await, HashMap::from([("v1".to_owned(), 20)]));
    let forced = count(&gw, 20, |_| vec![("x-canary", "1".to_owned())]).await;
    assert_eq!(forced, HashMap::from([("v2".to_owned(), 20)]), "the override wins over weight 0");
    let other = count(&gw, 5, |_| vec![("x-canary", "0".to_owned())]).await;
    assert_eq!(other, HashMap::from([("v1".to_owned(), 5)]), "only its value");

    let loaded = parse_str("reload", &config(&v1, &v2, &split(0, 100)), ".".into()).unwrap();
    gw.reload(loaded).await.unwrap();
    assert_eq!(count(&gw, 20, |_| vec![]).await, HashMap::from([("v2".to_owned(), 20)]));
}
