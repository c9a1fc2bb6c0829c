//! The instance ceiling: each plugin entry has at most `limits.max_instances`
//! instances; `warm` ones are made at load, so a burst does not run `configure` on the
//! request path; a call past the bound waits (within the deadline) for a free one,
//! then fails `plugin_busy` under the entry's policy; instances a burst left idle
//! are swept after `idle_timeout`; the pool's state is in the metrics.
//!
//! The streams here are held open by the upstream until the test releases them, so
//! "N streams at once" is an observed state, not a timing guess.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use sluice::Gateway;
use sluice::plugins::Phase;
use sluice::plugins::pool::{InstancePool, Made};
use sluice::plugins::stats::stats_for;
use sluice_tests::plugins as wasm;
use tokio::sync::watch;

use crate::harness::{Client, Reply, TestServer, eventually, full, url};
use crate::plugins::{Plugins, upstream};

/// An upstream whose every response sends `a` at once, then `b` once `release`
/// holds `true`, then ends.
async fn held_streams() -> (TestServer, watch::Sender<bool>) {
    let (release, released) = watch::channel(false);
    // A backlog for thousands of connections arriving at once (the default 1024
    // drops SYNs, and the gateway's connects then time out).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(4096).unwrap();
    let server = TestServer::start_on(listener, move |_req: Request<hyper::body::Incoming>| {
        let released = released.clone();
        async move {
            let frames = futures_util::stream::unfold((0u8, released), |(i, mut released)| async move {
                let data: &'static [u8] = match i {
                    0 => b"a",
                    1 => {
                        let _ = released.wait_for(|r| *r).await;
                        b"b"
                    }
                    _ => return None,
                };
                let frame = http_body::Frame::data(Bytes::from_static(data));
                Some((Ok::<_, Box<dyn std::error::Error + Send + Sync>>(frame), (i + 1, released)))
            });
            Response::new(http_body_util::StreamBody::new(frames).boxed())
        }
    });
    (server, release)
}

/// One route per `(path, entry)`: `/path` to the upstream `app`, its chain the one
/// entry (a YAML flow mapping).
fn routes(up: std::net::SocketAddr, list: &[(&str, &str)]) -> String {
    let mut out = format!("{}routes:\n", upstream(up));
    for (path, entry) in list {
        out.push_str(&format!(
            "  - name: {path}\n    match: {{ path_prefix: /{path} }}\n    target: {{ upstream: app }}\n    plugins:\n      - {entry}\n"
        ));
    }
    out
}

/// The pool of the entry of `plugin` in the serving snapshot.
fn pool_of(gw: &Gateway, plugin: &str) -> Arc<InstancePool> {
    gw.snapshot().plugin_pools().into_iter().find(|p| &**p.plugin() == plugin).expect("the plugin's entry")
}

fn busy(pool: &InstancePool) -> usize {
    pool.live() - pool.idle()
}

/// The states waited for here come from thousands of sockets on two busy cores.
async fn until(cond: impl Fn() -> bool) -> bool {
    eventually(Duration::from_secs(60), cond).await
}

/// Sends `GET path` tagged `tag` in a task of its own.
fn spawn_get(
    client: &Client,
    addr: std::net::SocketAddr,
    path: &str,
    tag: String,
) -> tokio::task::JoinHandle<Reply> {
    let client = client.clone();
    let req = Request::get(url(addr, path)).header("x-tag", tag).body(full("")).unwrap();
    tokio::spawn(async move { client.send(req).await })
}

/// What the `streamer` plugin makes of the held upstream's `a`, `b` for `tag`.
fn streamed(tag: &str) -> String {
    format!("{tag}#0:a;{tag}#1:b;{tag}:total=2")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_streams_through_a_chunk_plugin_use_prewarmed_instances_and_none_fails() {
    const STREAMS: usize = 2000;
    // Client, gateway and upstream all live in this process: 4 sockets per stream.
    let open_files = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines().find(|l| l.starts_with("Max open files"))?.split_whitespace().nth(3)?.parse().ok()
        })
        .unwrap_or(usize::MAX);
    assert!(
        open_files >= 5 * STREAMS,
        "this test needs `ulimit -n` of at least {} (it is {open_files})",
        5 * STREAMS
    );
    let (up, release) = held_streams().await;
    let p = Plugins::with(&[("streamer-2k", wasm::STREAMER)]);
    let gw = p
        .start(&routes(
            up.addr,
            &[("s", "{ name: streamer-2k, limits: { warm: 2000, max_instances: 2000 } }")],
        ))
        .await;
    let stats = stats_for("streamer-2k");
    assert_eq!(stats.made(Made::Load), STREAMS as u64, "warm: every instance made at load");
    assert_eq!(stats.calls(Phase::Configure), STREAMS as u64);
    let pool = pool_of(&gw, "streamer-2k");
    let addr = gw.addr("public");
    let client = Client::http1();

    // Two waves: each holds every instance at once (a stream keeps the one that ran
    // its `on-response` until its last chunk), and the second finds them all warm.
    for wave in 0..2 {
        release.send_replace(false);
        let calls: Vec<_> =
            (0..STREAMS).map(|i| spawn_get(&client, addr, "/s", format!("w{wave}-{i}"))).collect();
        assert!(
            until(|| busy(&pool) == STREAMS).await,
            "wave {wave}: all {STREAMS} streams hold an instance at once (busy: {}, live: {}, upstream saw {} requests, made on request: {}, errors: {:?})",
            busy(&pool),
            pool.live(),
            up.request_count(),
            stats.made(Made::Request),
            stats.errors(),
        );
        let metrics = sluice::observability::admin::metrics(&gw);
        let line = format!(
            "sluice_plugin_instances{{plugin=\"streamer-2k\",route=\"s\",entry=\"routes[0].plugins[0]\",state=\"busy\"}} {STREAMS}"
        );
        assert!(metrics.contains(&line), "the pool's state is in the metrics:\n{metrics}");
        release.send_replace(true);
        for (i, call) in calls.into_iter().enumerate() {
            let reply = call.await.unwrap();
            assert_eq!(reply.status, 200, "wave {wave}, stream {i}: {}", reply.text());
            assert_eq!(reply.text(), streamed(&format!("w{wave}-{i}")), "wave {wave}, stream {i}");
        }
    }
    assert_eq!(stats.made(Made::Request), 0, "no instance was made on the request path");
    assert_eq!(stats.calls(Phase::Configure), STREAMS as u64, "configure ran at load only");
    assert_eq!(
        stats.calls(Phase::ResponseChunk),
        2 * STREAMS as u64 * 3,
        "a, b and the last call per stream"
    );
    assert!(stats.errors().iter().all(|(_, n)| *n == 0), "{:?}", stats.errors());
    assert_eq!(stats.checkout_waits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_max_instances_waits_for_a_free_instance_and_past_the_deadline_fails_busy_by_policy() {
    let (up, release) = held_streams().await;
    let p = Plugins::with(&[
        ("streamer-queue", wasm::STREAMER),
        ("streamer-busy", wasm::STREAMER),
        ("streamer-open", wasm::STREAMER),
    ]);
    let gw = p
        .start(&routes(
            up.addr,
            &[
                ("queue", "{ name: streamer-queue, limits: { max_instances: 1, deadline: 60s } }"),
                ("busy", "{ name: streamer-busy, limits: { max_instances: 1, deadline: 50ms } }"),
                ("open", "{ name: streamer-open, limits: { max_instances: 1, deadline: 50ms }, on_error: fail_open }"),
            ],
        ))
        .await;
    let addr = gw.addr("public");
    let client = Client::http1();

    // Waits: the second stream's `on-response` queues for the one instance, which
    // the first stream gives back with its last chunk.
    let (queue, queue_stats) = (pool_of(&gw, "streamer-queue"), stats_for("streamer-queue"));
    let first = spawn_get(&client, addr, "/queue", "q1".into());
    assert!(until(|| busy(&queue) == 1).await, "the first stream holds the instance");
    let second = spawn_get(&client, addr, "/queue", "q2".into());
    assert!(until(|| queue_stats.checkout_waits() == 1).await, "the second call waits");
    let metrics = sluice::observability::admin::metrics(&gw);
    assert!(metrics.contains("sluice_plugin_checkout_waits_total{plugin=\"streamer-queue\"} 1"), "{metrics}");
    assert_eq!(queue.live(), 1, "the bound holds while a call waits");
    release.send_replace(true);
    assert_eq!(first.await.unwrap().text(), streamed("q1"));
    let second = second.await.unwrap();
    assert_eq!((second.status.as_u16(), second.text()), (200, streamed("q2")));
    assert_eq!(queue_stats.made(Made::Request), 0, "the waiter reused the instance");

    // Past the deadline: 503 `plugin_busy` when failing closed.
    release.send_replace(false);
    let busy_pool = pool_of(&gw, "streamer-busy");
    let held = spawn_get(&client, addr, "/busy", "b1".into());
    assert!(until(|| busy(&busy_pool) == 1).await);
    let refused = client.get(&url(addr, "/busy")).await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.json()["error"]["code"], "plugin_busy");
    assert_eq!(stats_for("streamer-busy").errors_of("busy"), 1);

    // Failing open, the plugin is skipped for that whole response: its chunks pass
    // through untouched (not numbered by an instance without the stream's state).
    let open_pool = pool_of(&gw, "streamer-open");
    let held_open = spawn_get(&client, addr, "/open", "o1".into());
    assert!(until(|| busy(&open_pool) == 1).await);
    let skipped = spawn_get(&client, addr, "/open", "o2".into());
    // It gives up in `on-request`, then in `on-response`: each phase's call is skipped.
    assert!(until(|| stats_for("streamer-open").errors_of("busy") == 2).await, "the second call gave up");
    release.send_replace(true);
    let skipped = skipped.await.unwrap();
    assert_eq!((skipped.status.as_u16(), skipped.text()), (200, "ab".to_owned()));
    assert_eq!(stats_for("streamer-open").errors_of("busy"), 2, "no wait per chunk once skipped");
    assert_eq!(held_open.await.unwrap().text(), streamed("o1"));
    assert_eq!(held.await.unwrap().text(), streamed("b1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_a_burst_left_idle_are_swept_down_to_warm_after_idle_timeout() {
    const BURST: usize = 10;
    let (up, release) = held_streams().await;
    let p = Plugins::with(&[("streamer-sweep", wasm::STREAMER)]);
    let gw = p
        .start(&routes(up.addr, &[("s", "{ name: streamer-sweep, limits: { warm: 2, idle_timeout: 1s } }")]))
        .await;
    let pool = pool_of(&gw, "streamer-sweep");
    assert_eq!((pool.live(), pool.idle()), (2, 2), "warm instances at load");
    let client = Client::http1();
    let addr = gw.addr("public");
    let calls: Vec<_> = (0..BURST).map(|i| spawn_get(&client, addr, "/s", format!("t{i}"))).collect();
    assert!(until(|| busy(&pool) == BURST).await, "busy: {}", busy(&pool));
    release.send_replace(true);
    for call in calls {
        assert_eq!(call.await.unwrap().status, 200);
    }
    assert!(until(|| pool.idle() == BURST).await, "healthy instances stay warm after the burst");
    assert_eq!(stats_for("streamer-sweep").made(Made::Request), (BURST - 2) as u64);
    assert!(until(|| pool.live() == 2).await, "swept down to warm: {} left", pool.live());
    assert_eq!(pool.idle(), 2);
    // The warm ones serve the next call.
    assert_eq!(client.get(&url(addr, "/s")).await.status, 200);
    assert_eq!(stats_for("streamer-sweep").made(Made::Request), (BURST - 2) as u64);
}

#[tokio::test]
async fn instance_limits_out_of_range_are_config_problems_at_their_fields() {
    let up = TestServer::named("x").await;
    let p = Plugins::with(&[("streamer-limits", wasm::STREAMER)]);
    let err = p
        .rejected(&routes(
            up.addr,
            &[
                ("a", "{ name: streamer-limits, limits: { max_instances: 0 } }"),
                ("b", "{ name: streamer-limits, limits: { max_instances: 2, warm: 3 } }"),
                ("c", "{ name: streamer-limits, limits: { idle_timeout: 0s } }"),
                ("d", "{ name: streamer-limits, limits: { max_instances: 10001 } }"),
            ],
        ))
        .await;
    for needle in [
        "routes[0].plugins[0].limits.max_instances",
        "routes[1].plugins[0].limits.warm",
        "routes[2].plugins[0].limits.idle_timeout",
        "routes[3].plugins[0].limits.max_instances",
    ] {
        assert!(err.contains(needle), "{needle} in:\n{err}");
    }
}
