//! Unit tests of the whole plugin, natively: configs as the gateway passes them, fake
//! requests and responses from the SDK, the SDK's in-memory kv (real clock, limits long
//! enough that it does not matter) or [`TestStore`] with a fixed `now` where time or
//! failures matter.

use sluice_plugin_sdk::testing::{self, FakeRequest};
use sluice_plugin_sdk::{Decision, Phases, Plugin};

use super::*;
use crate::store::tests::TestStore;

const S: u64 = 1_000_000_000;
const NOW: u64 = 1_700_000_000 * S;

fn plugin(json: &str) -> RateLimit {
    testing::configure::<RateLimit>(json).unwrap_or_else(|e| panic!("config rejected: {e}"))
}

fn rejected(json: &str) -> String {
    match testing::configure::<RateLimit>(json) {
        Ok(_) => panic!("config accepted: {json}"),
        Err(e) => e,
    }
}

fn reply(d: &Decision) -> &sluice_plugin_sdk::Reply {
    match d {
        Decision::Respond(r) => r,
        Decision::Continue => panic!("expected an answer, got continue"),
    }
}

fn header<'a>(d: &'a Decision, name: &str) -> Option<&'a str> {
    reply(d).headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn admits_exactly_the_burst_then_answers_429_with_retry_after_and_headers() {
    let rl = plugin(r#"{"limits": [{"name": "per_hour", "rate": 3, "per": "1h"}]}"#);
    assert_eq!(rl.phases(), Phases::REQUEST, "the headers need no response-phase call");
    for left in [2, 1, 0] {
        let mut req = FakeRequest::new("GET", "/a");
        assert!(rl.on_request(&mut req.as_request()).is_continue());
        // The gateway puts the headers on the upstream's response: no response phase.
        let resp = req.response(200);
        assert_eq!(resp.header("ratelimit-policy").as_deref(), Some(r#""per_hour";q=3;w=3600"#));
        let expected_t = (3 - left) * 1200;
        assert_eq!(resp.header("ratelimit"), Some(format!("\"per_hour\";r={left};t={expected_t}")));
    }
    let mut req =
        FakeRequest::new("GET", "/a").with_header("x-request-id", "from-the-client").with_request_id("req-7");
    let d = rl.on_request(&mut req.as_request());
    assert_eq!(d.status(), Some(429));
    let retry: u64 = header(&d, "retry-after").unwrap().parse().unwrap();
    assert!((1..=1200).contains(&retry), "one unit comes back within 20 minutes: {retry}");
    assert_eq!(header(&d, "ratelimit-policy"), Some(r#""per_hour";q=3;w=3600"#));
    assert!(header(&d, "ratelimit").unwrap().starts_with(r#""per_hour";r=0;t="#));
    assert_eq!(header(&d, "content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&reply(&d).body).unwrap();
    assert_eq!(body["error"]["status"], 429);
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(body["error"]["request_id"], "req-7");
    assert!(body["error"]["message"].as_str().unwrap().contains("per_hour"));
}

#[test]
fn time_brings_units_back_at_the_rate() {
    let rl = plugin(r#"{"limits": [{"name": "ps", "rate": 10, "per": "1s", "burst": 20}]}"#);
    let store = TestStore::default();
    let run = |now: u64, n: usize| {
        (0..n)
            .filter(|_| rl.check(&mut FakeRequest::new("GET", "/").as_request(), &store, now).is_continue())
            .count()
    };
    assert_eq!(run(NOW, 50), 20, "the burst");
    assert_eq!(run(NOW + S / 2, 50), 5, "half a second at 10/s");
    let d = rl.check(&mut FakeRequest::new("GET", "/").as_request(), &store, NOW + S / 2);
    assert_eq!(header(&d, "retry-after"), Some("1"), "100ms, rounded up");
    assert_eq!(run(NOW + 10 * S, 50), 20, "a full bucket after a quiet spell, not more");
}

#[test]
fn consumers_ips_and_headers_have_their_own_budgets() {
    let rl = plugin(
        r#"{"key": ["consumer"], "fallback_key": ["ip"], "limits": [{"name": "l", "rate": 2, "per": "1d"}]}"#,
    );
    let store = TestStore::default();
    let admitted = |req: FakeRequest| {
        let mut req = req;
        rl.check(&mut req.as_request(), &store, NOW).is_continue()
    };
    let alice = || FakeRequest::new("GET", "/").with_consumer("alice", &[]).with_client_ip("10.0.0.1");
    let bob = || FakeRequest::new("GET", "/").with_consumer("bob", &[]).with_client_ip("10.0.0.1");
    let anon = |ip: &str| FakeRequest::new("GET", "/").with_client_ip(ip);
    assert!(admitted(alice()) && admitted(alice()) && !admitted(alice()));
    assert!(admitted(bob()) && admitted(bob()) && !admitted(bob()), "same IP, other consumer");
    // No consumer: keyed by IP (the fallback), not one shared anonymous bucket.
    assert!(admitted(anon("10.0.0.1")) && admitted(anon("10.0.0.1")) && !admitted(anon("10.0.0.1")));
    assert!(admitted(anon("10.0.0.2")));

    let by_header =
        plugin(r#"{"key": [{"header": "X-Api-Key"}], "limits": [{"name": "l", "rate": 1, "per": "1d"}]}"#);
    let store = TestStore::default();
    let with_key = |k: &str| {
        let mut req = FakeRequest::new("GET", "/").with_header("x-api-key", k);
        by_header.check(&mut req.as_request(), &store, NOW).is_continue()
    };
    let without =
        || by_header.check(&mut FakeRequest::new("GET", "/").as_request(), &store, NOW).is_continue();
    assert!(with_key("a") && !with_key("a") && with_key("b"));
    assert!(without() && !without(), "clients without the header share one budget");
}

#[test]
fn skip_absent_leaves_requests_without_the_key_uncounted_by_that_limit_only() {
    // Per consumer and tool: only requests naming a tool count; all count per consumer.
    let rl = plugin(
        r#"{"key": ["consumer"], "limits": [
            {"name": "per_tool", "rate": 1, "per": "1d", "key": ["consumer", {"header": "x-mcp-tool"}], "skip_absent": true},
            {"name": "all", "rate": 4, "per": "1d"}]}"#,
    );
    let store = TestStore::default();
    let go = |tool: Option<&str>| {
        let mut req = FakeRequest::new("POST", "/mcp").with_consumer("ann", &[]);
        if let Some(t) = tool {
            req = req.with_header("x-mcp-tool", t);
        }
        rl.check(&mut req.as_request(), &store, NOW).is_continue()
    };
    assert!(go(None) && go(None), "no tool: per_tool does not count them");
    assert!(go(Some("add")) && !go(Some("add")), "one `add` a day");
    assert!(go(Some("shout")), "another tool has its own");
    assert!(!go(None), "`all` still counts every request (4 admitted)");
}

#[test]
fn combined_keys_path_and_path_params() {
    let rl = plugin(r#"{"key": ["ip", "path"], "limits": [{"name": "l", "rate": 1, "per": "1m"}]}"#);
    let store = TestStore::default();
    let go = |ip: &str, path: &str| {
        let mut req = FakeRequest::new("GET", path).with_client_ip(ip);
        rl.check(&mut req.as_request(), &store, NOW).is_continue()
    };
    assert!(go("1.1.1.1", "/a") && go("1.1.1.1", "/b") && go("2.2.2.2", "/a"));
    assert!(!go("1.1.1.1", "/a"));

    let rl = plugin(r#"{"key": [{"path_param": "id"}], "limits": [{"name": "l", "rate": 1, "per": "1m"}]}"#);
    let go = |id: &str| {
        let mut req = FakeRequest::new("GET", "/users/x").with_param("id", id);
        rl.check(&mut req.as_request(), &store, NOW).is_continue()
    };
    assert!(go("1") && go("2") && !go("1"));
}

#[test]
fn several_limits_all_apply_and_a_refusal_gives_earlier_units_back() {
    let rl = plugin(
        r#"{"limits": [
            {"name": "per_second", "rate": 5, "per": "1s"},
            {"name": "per_day", "rate": 2, "per": "1d"}
        ]}"#,
    );
    let store = TestStore::default();
    let mut req = FakeRequest::new("GET", "/");
    assert!(rl.check(&mut req.as_request(), &store, NOW).is_continue());
    assert_eq!(
        req.response(200).header("ratelimit").as_deref(),
        Some(r#""per_second";r=4;t=1, "per_day";r=1;t=43200"#)
    );
    assert!(rl.check(&mut FakeRequest::new("GET", "/").as_request(), &store, NOW).is_continue());
    let d = rl.check(&mut FakeRequest::new("GET", "/").as_request(), &store, NOW);
    assert_eq!(d.status(), Some(429));
    assert!(header(&d, "ratelimit").unwrap().starts_with(r#""per_day";r=0;"#));
    assert_eq!(header(&d, "ratelimit-policy"), Some(r#""per_second";q=5;w=1, "per_day";q=2;w=86400"#));
    // The per-second limit got its unit back: 3 of 5 left, not 2.
    let store_view = |name: &str| -> u64 {
        let key = kv_key("test", name, "127.0.0.1");
        let value = String::from_utf8(store.map.borrow()[&key].clone()).unwrap();
        value.split_once(' ').unwrap().0.parse().unwrap()
    };
    assert_eq!(store_view("per_second"), NOW + 2 * S / 5);
}

#[test]
fn the_scope_shares_state_across_routes_and_defaults_to_the_route() {
    let store = TestStore::default();
    let per_route = plugin(r#"{"limits": [{"name": "l", "rate": 1, "per": "1h"}]}"#);
    let mut a = FakeRequest::new("GET", "/");
    a.route = "a".into();
    let mut b = a.clone();
    b.route = "b".into();
    assert!(per_route.check(&mut a.clone().as_request(), &store, NOW).is_continue());
    assert!(per_route.check(&mut b.clone().as_request(), &store, NOW).is_continue(), "route b counts apart");
    let shared = plugin(r#"{"scope": "shared", "limits": [{"name": "l", "rate": 1, "per": "1h"}]}"#);
    assert!(shared.check(&mut a.as_request(), &store, NOW).is_continue());
    assert_eq!(shared.check(&mut b.as_request(), &store, NOW).status(), Some(429), "one budget for both");
}

#[test]
fn an_unreachable_store_fails_open_or_closed_as_configured() {
    let store = TestStore::default();
    store.down.set(true);
    let open = plugin(r#"{"limits": [{"name": "l", "rate": 1, "per": "1s"}]}"#);
    let mut req = FakeRequest::new("GET", "/");
    assert!(open.check(&mut req.as_request(), &store, NOW).is_continue());
    let resp = req.response(200);
    assert_eq!(resp.header("ratelimit"), None, "no RateLimit state to report");
    assert_eq!(resp.header("ratelimit-policy").as_deref(), Some(r#""l";q=1;w=1"#), "the policy holds");
    assert!(testing::logs().iter().any(|l| l.contains("fail_open") && l.contains("within 50ms")));

    let closed =
        plugin(r#"{"on_kv_error": "fail_closed", "limits": [{"name": "l", "rate": 1, "per": "1s"}]}"#);
    let d = closed.check(&mut FakeRequest::new("GET", "/").as_request(), &store, NOW);
    assert_eq!(d.status(), Some(503));
    assert_eq!(header(&d, "retry-after"), Some("1"));
    let body: serde_json::Value = serde_json::from_slice(&reply(&d).body).unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_unavailable");
}

#[test]
fn headers_can_be_turned_off() {
    let rl = plugin(r#"{"headers": false, "limits": [{"name": "l", "rate": 1, "per": "1h"}]}"#);
    let store = TestStore::default();
    let mut req = FakeRequest::new("GET", "/");
    assert!(rl.check(&mut req.as_request(), &store, NOW).is_continue());
    assert!(req.response_edits.is_empty());
    let d = rl.check(&mut FakeRequest::new("GET", "/").as_request(), &store, NOW);
    assert_eq!(d.status(), Some(429));
    assert!(header(&d, "retry-after").is_some());
    assert!(header(&d, "ratelimit").is_none() && header(&d, "ratelimit-policy").is_none());
}

#[test]
fn configs_are_checked_with_every_problem_at_once() {
    let e = rejected(r#"{"limits": []}"#);
    assert!(e.contains("`limits` is empty"), "{e}");
    let e = rejected(
        r#"{"limits": [
            {"name": "a b", "rate": 0, "per": "1s"},
            {"name": "x", "rate": 1, "per": "1s", "burst": 0},
            {"name": "x", "rate": 1, "per": "1s", "key": [{"header": "bad header"}]}
        ]}"#,
    );
    for want in [
        "limits[0].name",
        "`rate` must be at least 1",
        "`burst` must be at least 1",
        "names must be unique",
        "not a valid header name",
    ] {
        assert!(e.contains(want), "{want} missing in:\n{e}");
    }
    assert!(rejected(r#"{"limits": [{"name": "a", "rate": 1, "per": "1.5s"}]}"#).contains("invalid period"));
    assert!(rejected(r#"{"limits": [{"name": "a", "rate": 1, "per": "500ms"}]}"#).contains("invalid period"));
    assert!(rejected(r#"{"limits": [{"name": "a", "rate": 1, "per": "0s"}]}"#).contains("at least `1s`"));
    assert!(
        rejected(r#"{"limits": [{"name": "a", "rate": 1, "per": "1s", "window": 3}]}"#)
            .contains("unknown field")
    );
    assert!(rejected(r#"{"limit": []}"#).contains("unknown field"));
    assert!(
        rejected(r#"{"key": ["cookie"], "limits": [{"name": "a", "rate": 1, "per": "1s"}]}"#)
            .contains("unknown variant")
    );
    assert!(
        rejected(r#"{"key": [], "limits": [{"name": "a", "rate": 1, "per": "1s"}]}"#)
            .contains("`key` is empty")
    );
    assert!(
        rejected(r#"{"on_kv_error": "maybe", "limits": [{"name": "a", "rate": 1, "per": "1s"}]}"#)
            .contains("unknown variant")
    );
}

#[test]
fn periods_parse() {
    use std::time::Duration;
    assert_eq!(config::parse_period("1s"), Ok(Duration::from_secs(1)));
    assert_eq!(config::parse_period("15m"), Ok(Duration::from_secs(900)));
    assert_eq!(config::parse_period("2h"), Ok(Duration::from_secs(7200)));
    assert_eq!(config::parse_period("1d"), Ok(Duration::from_secs(86_400)));
    for bad in ["", "s", "1", "1w", "-1s", "1 s", "99999999999999999999d"] {
        assert!(config::parse_period(bad).is_err(), "{bad}");
    }
}

/// `plugins/rate-limit/schema.json` is the config's JSON Schema: `SLUICE_BLESS=1`
/// rewrites it, otherwise it must match.
#[test]
fn the_json_schema_file_is_current() {
    let schema = serde_json::to_string_pretty(&schemars::schema_for!(Config)).unwrap() + "\n";
    testing::golden(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.json"), &schema);
}
