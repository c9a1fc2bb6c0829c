//! The plugin kv API on a real `redis-server` (`plugins.kv.backend: redis`): counts
//! through the gateway visible in Redis and shared by two gateways, atomic increments
//! under concurrency, TTLs, compare-and-swap, Redis down (`unavailable`, no hang) and
//! back (recovery), and one connection across reloads.

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use sluice::Gateway;
use sluice::plugins::bindings::sluice::plugin::kv::KvError;
use sluice::plugins::host_api::{KvStore, RedisKv, RedisSettings};
use sluice::plugins::pool::Made;
use sluice_tests::RedisServer;
use sluice_tests::plugins as wasm;
use tempfile::TempDir;

use crate::harness::{Client, Reply, url};

/// A kv call here is generous: CI machines are slow, and timeouts are not under test.
const TIMEOUT: &str = "2s";

/// A plugins folder with `kv-counter` (under `plugin`, its name in the config), and
/// the configs of gateways counting in Redis.
struct Counter {
    dir: TempDir,
    plugin: &'static str,
    /// `plugins.kv.timeout`.
    kv_timeout: &'static str,
    /// The entry's `limits`, a YAML flow mapping's inside.
    limits: String,
}

impl Counter {
    fn new() -> Counter {
        Self::named("kv-counter")
    }

    /// The counter under another name, so its stats are its own.
    fn named(plugin: &'static str) -> Counter {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        std::fs::copy(wasm::KV_COUNTER, dir.path().join(format!("plugins/{plugin}.wasm"))).unwrap();
        Counter { dir, plugin, kv_timeout: TIMEOUT, limits: "deadline: 10s".into() }
    }

    /// A gateway whose route `/` counts in `key` on Redis at `redis_url`.
    fn config(&self, redis_url: &str, key: &str, extra: &str) -> String {
        let d = self.dir.path();
        format!(
            "version: 1
listeners:
  - name: public
    address: 127.0.0.1:0
plugins:
  dir: {}
  cache_dir: {}
  kv:
    backend: redis
    url: {redis_url}
    timeout: {}
routes:
  - name: count
    match: {{ path_prefix: / }}
    target: {{ echo: {{}} }}
    plugins:
      - name: {}
        config: {{ key: {key}{extra} }}
        grants: {{ kv: true }}
        limits: {{ {} }}
",
            d.join("plugins").display(),
            d.join("cache").display(),
            self.kv_timeout,
            self.plugin,
            self.limits,
        )
    }

    async fn start(&self, redis_url: &str, key: &str, extra: &str) -> Gateway {
        let yaml = self.config(redis_url, key, extra);
        let builder =
            Gateway::builder().config_yaml(&yaml).unwrap_or_else(|e| panic!("config rejected:\n{e}"));
        builder.start().await.unwrap_or_else(|e| panic!("gateway failed to start: {e}"))
    }
}

/// The Redis key of the kv-counter plugin's `key`: prefix, plugin, NUL, key.
fn redis_key(key: &str) -> String {
    format!("sluice:kv-counter\u{0}{key}")
}

/// A direct connection to the server, to look at what the gateway wrote.
async fn inspect(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap()
}

async fn count(gw: &Gateway) -> Reply {
    // A liveness guard, not a timing assertion: a request must never hang on Redis.
    tokio::time::timeout(Duration::from_secs(20), Client::http1().get(&url(gw.addr("public"), "/")))
        .await
        .expect("the request finished")
}

fn ok_count(r: &Reply) -> i64 {
    assert_eq!(r.status, 200, "{}", r.text());
    r.text().parse().unwrap()
}

#[tokio::test]
async fn counts_land_in_redis_and_two_gateways_share_them() {
    let Some(redis) = RedisServer::start_or_skip() else { return };
    let c = Counter::new();
    let a = c.start(&redis.url(), "shared", "").await;
    // Another URL for the same database, so the second gateway has its own connection.
    let b = c.start(&format!("redis://127.0.0.1:{}", redis.port()), "shared", "").await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(ok_count(&count(&a).await));
        seen.push(ok_count(&count(&b).await));
    }
    assert_eq!(seen, vec![1, 2, 3, 4, 5, 6], "both gateways count on one counter");
    // Each Redis round trip waits: the plugin takes the asynchronous call path.
    for gw in [&a, &b] {
        let paths: Vec<_> = gw.snapshot().routes[0].chain.entries().iter().map(|e| e.pool.path()).collect();
        assert_eq!(paths, [sluice::plugins::pool::CallPath::Async]);
    }
    let mut conn = inspect(&redis).await;
    let stored: String = conn.get(redis_key("shared")).await.unwrap();
    assert_eq!(stored, "6");
    let ttl: i64 = conn.pttl(redis_key("shared")).await.unwrap();
    assert_eq!(ttl, -1, "no ttl was asked for");
}

#[tokio::test]
async fn concurrent_increments_on_redis_sum_exactly() {
    const REQUESTS: i64 = 64;
    let Some(redis) = RedisServer::start_or_skip() else { return };
    let c = Counter::new();
    let a = c.start(&redis.url(), "hits", "").await;
    let b = c.start(&format!("redis://127.0.0.1:{}", redis.port()), "hits", "").await;
    let client = Client::http1();
    let targets = Arc::new([url(a.addr("public"), "/"), url(b.addr("public"), "/")]);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..REQUESTS {
        let (client, targets) = (client.clone(), Arc::clone(&targets));
        tasks.spawn(async move { client.get(&targets[i as usize % 2]).await });
    }
    let mut seen = Vec::new();
    while let Some(r) = tasks.join_next().await {
        seen.push(ok_count(&r.unwrap()));
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=REQUESTS).collect::<Vec<_>>(), "every increment counted exactly once");
    let stored: i64 = inspect(&redis).await.get(redis_key("hits")).await.unwrap();
    assert_eq!(stored, REQUESTS);
}

#[tokio::test]
async fn an_increment_ttl_is_set_on_creation_and_the_counter_expires() {
    let Some(redis) = RedisServer::start_or_skip() else { return };
    let c = Counter::new();
    let mut conn = inspect(&redis).await;

    // A long TTL: set when the key is created, kept (not reset) by later increments.
    let long = c.start(&redis.url(), "long", ", ttl_ms: 600000").await;
    assert_eq!(ok_count(&count(&long).await), 1);
    let first: i64 = conn.pttl(redis_key("long")).await.unwrap();
    assert!(first > 0 && first <= 600_000, "pttl {first}");
    // Shorten the expiry by hand: an increment that reset it would put it back near
    // 600 s, one that keeps it leaves it at most 300 s.
    let shortened: bool = conn.pexpire(redis_key("long"), 300_000).await.unwrap();
    assert!(shortened);
    assert_eq!(ok_count(&count(&long).await), 2);
    let later: i64 = conn.pttl(redis_key("long")).await.unwrap();
    assert!(later > 0 && later <= 300_000, "the second increment kept the expiry: {later}");

    // A short TTL: once Redis has expired the key, the count starts over.
    let short = c.start(&redis.url(), "short", ", ttl_ms: 50").await;
    assert_eq!(ok_count(&count(&short).await), 1);
    let mut gone = false;
    for _ in 0..500 {
        let exists: bool = conn.exists(redis_key("short")).await.unwrap();
        if !exists {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(gone, "redis expired the counter");
    assert_eq!(ok_count(&count(&short).await), 1, "an expired counter starts over");
}

/// A store opened directly, as the gateway opens it, on `redis`.
fn store(redis: &RedisServer, prefix: &str) -> RedisKv {
    RedisKv::open(&RedisSettings {
        url: redis.url(),
        password: None,
        timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
        key_prefix: prefix.into(),
    })
    .unwrap()
}

#[tokio::test]
async fn compare_and_swap_get_set_delete_on_redis() {
    let Some(redis) = RedisServer::start_or_skip() else { return };
    let kv = store(&redis, "cas:");
    let mut conn = inspect(&redis).await;

    // Absent expected: only the first swap wins.
    assert!(kv.compare_and_swap("k".into(), None, b"one".to_vec(), None).await.unwrap());
    assert!(!kv.compare_and_swap("k".into(), None, b"two".to_vec(), None).await.unwrap());
    // A wrong expected value changes nothing; the right one swaps.
    assert!(!kv.compare_and_swap("k".into(), Some(b"nope".to_vec()), b"two".to_vec(), None).await.unwrap());
    assert!(kv.compare_and_swap("k".into(), Some(b"one".to_vec()), b"two".to_vec(), None).await.unwrap());
    assert_eq!(kv.get("k".into()).await.unwrap(), Some(b"two".to_vec()));
    let raw: Vec<u8> = conn.get("cas:k").await.unwrap();
    assert_eq!(raw, b"two", "keys carry the prefix");
    // An expected value on an absent key fails.
    assert!(!kv.compare_and_swap("absent".into(), Some(b"x".to_vec()), b"y".to_vec(), None).await.unwrap());
    // A swap with a TTL sets it; a TTL of 0 stores an already expired value.
    assert!(
        kv.compare_and_swap("k".into(), Some(b"two".to_vec()), b"3".to_vec(), Some(Duration::from_secs(600)))
            .await
            .unwrap()
    );
    let ttl: i64 = conn.pttl("cas:k").await.unwrap();
    assert!(ttl > 0 && ttl <= 600_000, "pttl {ttl}");
    assert!(
        kv.compare_and_swap("k".into(), Some(b"3".to_vec()), b"4".to_vec(), Some(Duration::ZERO))
            .await
            .unwrap()
    );
    assert_eq!(kv.get("k".into()).await.unwrap(), None);
    // Binary values survive; set, delete, and increment on text.
    kv.set("bin".into(), vec![0, 255, 10], None).await.unwrap();
    assert_eq!(kv.get("bin".into()).await.unwrap(), Some(vec![0, 255, 10]));
    assert!(kv.compare_and_swap("bin".into(), Some(vec![0, 255, 10]), b"5".to_vec(), None).await.unwrap());
    assert_eq!(kv.increment("bin".into(), 2, None).await.unwrap(), 7);
    kv.set("text".into(), b"hello".to_vec(), Some(Duration::from_secs(600))).await.unwrap();
    assert!(matches!(kv.increment("text".into(), 1, None).await, Err(KvError::NotANumber)));
    assert!(kv.delete("text".into()).await.unwrap());
    assert!(!kv.delete("text".into()).await.unwrap());
    kv.set("gone".into(), b"x".to_vec(), Some(Duration::ZERO)).await.unwrap();
    assert_eq!(kv.get("gone".into()).await.unwrap(), None);
}

#[tokio::test]
async fn redis_down_is_unavailable_to_the_plugin_and_it_recovers() {
    let Some(mut redis) = RedisServer::start_or_skip() else { return };
    let c = Counter::new();
    let gw = c.start(&redis.url(), "up-down", "").await;
    assert_eq!(ok_count(&count(&gw).await), 1);
    assert_eq!(ok_count(&count(&gw).await), 2);

    redis.stop();
    for _ in 0..3 {
        // kv-counter answers 500 with the kv error it got (`KvError::Unavailable("…")`);
        // the request does not hang.
        let r = count(&gw).await;
        assert_eq!(r.status, 500, "{}", r.text());
        assert!(r.text().contains("Unavailable("), "{}", r.text());
    }

    redis.restart();
    // The connection is remade in the background: within a few tries, counting works
    // again (from 1: the restarted server is empty).
    let mut recovered = None;
    for _ in 0..200 {
        let r = count(&gw).await;
        if r.status == 200 {
            recovered = Some(r.text());
            break;
        }
        assert!(r.text().contains("Unavailable("), "{}", r.text());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(recovered.as_deref(), Some("1"), "the gateway counts again after redis came back");
    assert_eq!(ok_count(&count(&gw).await), 2);
}

/// Clients connected to `redis`, the inspecting connection included.
async fn clients(conn: &mut redis::aio::MultiplexedConnection) -> usize {
    let list: String = redis::cmd("CLIENT").arg("LIST").query_async(conn).await.unwrap();
    list.lines().filter(|l| !l.is_empty()).count()
}

#[tokio::test]
async fn reloads_keep_one_redis_connection() {
    let Some(redis) = RedisServer::start_or_skip() else { return };
    let c = Counter::new();
    let yaml = c.config(&redis.url(), "reloads", "");
    let gw = c.start(&redis.url(), "reloads", "").await;
    let mut conn = inspect(&redis).await;
    assert_eq!(ok_count(&count(&gw).await), 1);
    let before = clients(&mut conn).await;
    for i in 2..=200 {
        let loaded = sluice::config::parse_str("reload.yaml", &yaml, c.dir.path().to_owned()).unwrap();
        gw.reload(loaded).await.unwrap();
        if i % 20 == 0 {
            assert_eq!(ok_count(&count(&gw).await), i / 20 + 1);
        }
    }
    assert_eq!(clients(&mut conn).await, before, "no connection was opened (or leaked) by a reload");
}

#[tokio::test]
async fn configure_may_wait_on_redis_like_any_call() {
    // `start_at` makes the plugin's `configure` set the counter in Redis: a load-time
    // call that waits on the network.
    let Some(redis) = RedisServer::start_or_skip() else { return };
    let c = Counter::new();
    let gw = c.start(&redis.url(), "seeded", ", start_at: 41").await;
    assert_eq!(ok_count(&count(&gw).await), 42, "configure's write landed before the first request");
    let stored: String = inspect(&redis).await.get(redis_key("seeded")).await.unwrap();
    assert_eq!(stored, "42");
    // A reload builds the chain again, configure included.
    gw.reload_from_source().await.unwrap();
    assert_eq!(ok_count(&count(&gw).await), 42, "the reload's configure set the counter back");
}

/// A TCP relay to `127.0.0.1:port` that passes on what the client sends `delay`
/// after it arrived, in order and without the delays adding up: a Redis that
/// answers every command (pipelined or not) in `delay`.
async fn slow_relay(port: u16, delay: Duration) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { continue };
            let (mut from_client, mut to_client) = client.into_split();
            let (mut from_server, mut to_server) = server.into_split();
            let (line, mut held) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                    if line.send((tokio::time::Instant::now() + delay, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                while let Some((at, bytes)) = held.recv().await {
                    tokio::time::sleep_until(at).await;
                    if to_server.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_answering_in_200ms_under_500_concurrent_requests_costs_no_5xx_and_no_configure_after_warm_up()
 {
    const CONCURRENT: usize = 500;
    let Some(redis) = RedisServer::start_or_skip() else { return };
    let relay = slow_relay(redis.port(), Duration::from_millis(200)).await;
    let counter =
        Counter { kv_timeout: "20s", limits: format!("warm: {CONCURRENT}"), ..Counter::named("kv-slow") };
    let gw = counter.start(&format!("redis://{relay}"), "slow", "").await;
    let stats = sluice::plugins::stats::stats_for("kv-slow");
    let configured = || stats.calls(sluice::plugins::Phase::Configure);
    let client = Client::http1();
    let target = url(gw.addr("public"), "/");
    let wave = || {
        let calls: Vec<_> = (0..CONCURRENT)
            .map(|_| {
                let (client, target) = (client.clone(), target.clone());
                tokio::spawn(async move { client.get(&target).await })
            })
            .collect();
        async move {
            let mut counts = Vec::new();
            for call in calls {
                counts.push(ok_count(&call.await.unwrap()));
            }
            counts
        }
    };
    // Prewarmed to the expected concurrency: however the waves overlap, every
    // request waiting on Redis holds an instance made at load.
    assert_eq!(configured(), CONCURRENT as u64);
    let mut counts = wave().await;
    counts.extend(wave().await);
    assert_eq!(configured(), CONCURRENT as u64, "configure ran on the request path");
    assert_eq!(stats.made(Made::Request), 0);
    counts.sort_unstable();
    assert_eq!(counts, (1..=2 * CONCURRENT as i64).collect::<Vec<_>>(), "no 5xx, every increment once");
    assert!(stats.errors().iter().all(|(_, n)| *n == 0), "{:?}", stats.errors());
}
