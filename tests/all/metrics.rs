//! Request metrics on the admin listener: exact counts after known traffic, the page
//! validated by `promtool check metrics`, and scraped by a real Prometheus whose
//! PromQL answers with the same count.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http::Request;
use sluice_tests::plugins as wasm;

use crate::harness::{Client, TestServer, full, url};
use crate::plugins::{Plugins, upstream};

/// One parsed sample: name and labels → value.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

/// Parses the text exposition (the subset the gateway writes: no timestamps).
fn parse(page: &str) -> Samples {
    let mut out = Samples::new();
    for line in page.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("bad labels in {line:?}"));
                (name.to_owned(), labels(body))
            }
        };
        assert!(out.insert((name, labels), value).is_none(), "duplicate series {line:?}");
    }
    out
}

/// `k="v",…` with the format's escapes.
fn labels(body: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = body.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "label {key} is not quoted in {body:?}");
        let mut value = String::new();
        loop {
            match chars.next().expect("unterminated label value") {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => panic!("dangling escape"),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.insert(key, value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    out
}

/// The value of `name` with exactly `want` labels, or 0 when absent.
fn value(s: &Samples, name: &str, want: &[(&str, &str)]) -> f64 {
    let key: BTreeMap<String, String> =
        want.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    s.get(&(name.to_owned(), key)).copied().unwrap_or(0.0)
}

/// Every series of `name` whose labels include `want`.
fn series<'a>(
    s: &'a Samples,
    name: &'a str,
    want: &'a [(&str, &str)],
) -> Vec<(&'a BTreeMap<String, String>, f64)> {
    s.iter()
        .filter(|((n, l), _)| {
            n == name && want.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|((_, l), v)| (l, *v))
        .collect()
}

/// `{guard}`: the plugin's name (plugin counters are process-wide by name, so each
/// test names its own).
const ROUTES: &str = "admin: { address: 127.0.0.1:0 }
routes:
  - name: api
    match: { path_prefix: /api }
    target: { upstream: app }
  - name: hello
    match: { path: /hello }
    target: { static: { body: hi } }
  - name: guarded
    match: { path_prefix: /guarded }
    target: { upstream: app }
    plugins:
      - name: {guard}
        config: { blocked_prefix: /guarded/admin }
";

/// A gateway with an upstream route, a static route and a plugin that answers some
/// requests itself; and the traffic every test here sends through it.
struct Traffic {
    _up: TestServer,
    _plugins: Plugins,
    gw: sluice::Gateway,
    /// Response body bytes the client received.
    body_bytes: usize,
}

impl Traffic {
    async fn sent(guard: &str) -> Traffic {
        let up = TestServer::named("app").await;
        let plugins = Plugins::with(&[(guard, wasm::GUARD)]);
        let routes = ROUTES.replace("{guard}", guard);
        let gw = plugins.start(&format!("{}{routes}", upstream(up.addr))).await;
        let (public, client) = (gw.addr("public"), Client::http1());
        let get = |path: &str| Request::get(url(public, path)).body(full("")).unwrap();
        let mut plan: Vec<_> = (0..3).map(|_| (get("/api/a"), 200)).collect();
        for _ in 0..2 {
            plan.push((Request::post(url(public, "/api/b")).body(full("hello")).unwrap(), 200));
        }
        plan.extend([
            (get("/hello"), 200),
            (get("/guarded/admin/x"), 403),
            (get("/guarded/ok"), 200),
            (get("/nowhere"), 404),
            (get("/nowhere"), 404),
        ]);
        let mut body_bytes = 0;
        for (req, status) in plan {
            let reply = client.send(req).await;
            assert_eq!(reply.status.as_u16(), status, "{}", reply.text());
            body_bytes += reply.body.len();
        }
        Traffic { _up: up, _plugins: plugins, gw, body_bytes }
    }

    async fn page(&self) -> String {
        let reply = Client::http1().get(&url(self.gw.addr("admin"), "/metrics")).await;
        assert_eq!(reply.status, 200);
        reply.text()
    }
}

#[tokio::test]
async fn requests_are_counted_by_route_method_and_code_after_known_traffic() {
    let t = Traffic::sent("metrics_guard").await;
    // The access record (and so the count) is finished as the body ends, which can be
    // just after the client read it.
    let mut s = parse(&t.page().await);
    for _ in 0..500 {
        if series(&s, "sluice_request_duration_seconds_count", &[]).iter().map(|(_, v)| v).sum::<f64>()
            >= 10.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        s = parse(&t.page().await);
    }
    let req = |route: &str, method: &str, code: &str| {
        value(
            &s,
            "sluice_requests_total",
            &[("listener", "public"), ("route", route), ("method", method), ("code", code)],
        )
    };
    assert_eq!(req("api", "GET", "200"), 3.0);
    assert_eq!(req("api", "POST", "200"), 2.0);
    assert_eq!(req("hello", "GET", "200"), 1.0);
    assert_eq!(req("guarded", "GET", "403"), 1.0);
    assert_eq!(req("guarded", "GET", "200"), 1.0);
    assert_eq!(req("", "GET", "404"), 2.0, "requests no route took count under route=\"\"");
    assert_eq!(series(&s, "sluice_requests_total", &[]).len(), 6, "no other series");

    // Histograms: cumulative buckets, +Inf equal to the count, one observation per request.
    for (route, n) in [("api", 5.0), ("hello", 1.0), ("guarded", 2.0), ("", 2.0)] {
        let labels = [("listener", "public"), ("route", route)];
        let count = value(&s, "sluice_request_duration_seconds_count", &labels);
        assert_eq!(count, n, "duration observations of route {route:?}");
        let mut buckets: Vec<(f64, f64)> = series(&s, "sluice_request_duration_seconds_bucket", &labels)
            .into_iter()
            .map(|(l, v)| (l["le"].parse::<f64>().unwrap_or(f64::INFINITY), v))
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert_eq!(buckets.len(), 19, "18 bounds and +Inf");
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "cumulative: {buckets:?}");
        assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, n));
        assert!(buckets[0].0 <= 0.0001, "a bucket fit for sub-millisecond answers");
        assert!(value(&s, "sluice_request_duration_seconds_sum", &labels) > 0.0);
    }
    // Only requests that went upstream have an upstream duration.
    let upstream_count = |route: &str| {
        value(&s, "sluice_upstream_duration_seconds_count", &[("listener", "public"), ("route", route)])
    };
    assert_eq!((upstream_count("api"), upstream_count("guarded"), upstream_count("hello")), (5.0, 1.0, 0.0));

    let bytes = |name: &str, route: &str| value(&s, name, &[("listener", "public"), ("route", route)]);
    assert_eq!(bytes("sluice_request_body_bytes_total", "api"), 10.0, "two bodies of five bytes");
    let sent: f64 = series(&s, "sluice_response_body_bytes_total", &[]).iter().map(|(_, v)| v).sum();
    assert_eq!(sent, t.body_bytes as f64, "every body byte the client got, counted once");

    let attempts = |outcome: &str| {
        let target = t._up.addr.to_string();
        value(
            &s,
            "sluice_upstream_attempts_total",
            &[("upstream", "app"), ("target", target.as_str()), ("outcome", outcome)],
        )
    };
    assert_eq!((attempts("response"), attempts("connect_failed"), attempts("timeout")), (6.0, 0.0, 0.0));
    assert_eq!(
        value(&s, "sluice_plugin_responses_total", &[("plugin", "metrics_guard"), ("code", "403")]),
        1.0
    );

    // One client, one keep-alive connection (the admin scrape is not counted here).
    assert_eq!(value(&s, "sluice_connections_accepted_total", &[("listener", "public")]), 1.0);
    let open: f64 =
        series(&s, "sluice_connections_open", &[("listener", "public")]).iter().map(|(_, v)| v).sum();
    assert!(open <= 1.0, "at most the client's connection is open: {open}");
    assert_eq!(value(&s, "sluice_requests_in_flight", &[("listener", "public")]), 0.0);
}

#[tokio::test]
async fn the_page_passes_promtool() {
    if !sluice_tests::have(
        sluice_tests::runs("promtool", &["--version"]),
        "promtool",
        "apt-get install -y prometheus",
    ) {
        return;
    }
    let t = Traffic::sent("promtool_guard").await;
    let page = t.page().await;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(page.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics:\n{said}\n--- page:\n{page}"
    );
}

/// A `prometheus` server scraping one target every 200 ms, on a free port, with its
/// data in a temporary folder; killed when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{ scrape_interval: 200ms, scrape_timeout: 150ms }}\n\
                 scrape_configs:\n  - job_name: sluice\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run prometheus");
        Prometheus { child, addr, _dir: dir }
    }

    /// The value of an instant PromQL query's first sample, if it has one.
    async fn query(&self, promql: &str) -> Option<f64> {
        let q: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let reply = Client::http1().get(&url(self.addr, &format!("/api/v1/query?query={q}"))).await;
        if reply.status != 200 {
            return None;
        }
        let json = reply.json();
        json["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_admin_listener_and_promql_counts_the_requests() {
    if !sluice_tests::have(
        sluice_tests::runs("prometheus", &["--version"]),
        "prometheus",
        "apt-get install -y prometheus",
    ) {
        return;
    }
    let t = Traffic::sent("prometheus_guard").await;
    let prom = Prometheus::start(t.gw.addr("admin"));
    let up = async {
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(prom.addr).await.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(up.await, "prometheus listens on {}", prom.addr);
    let mut seen = None;
    for _ in 0..300 {
        seen = prom.query("sum(sluice_requests_total{route=\"api\"})").await;
        if seen == Some(5.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, Some(5.0), "PromQL sum of the api route's requests");
    let not_found = prom.query("sluice_requests_total{route=\"\",code=\"404\"}").await;
    assert_eq!(not_found, Some(2.0));
}
