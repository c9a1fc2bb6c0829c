//! Hot reload: edits are picked up with zero failed requests, broken configs change
//! nothing live, listeners and certificates follow the config, nothing leaks.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use sluice::Gateway;
use sluice::config::parse_str;

use sluice_tests::plugins as wasm;

use crate::harness::{Client, TestServer, refuses_connections, url};

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::hash::{BuildHasher, RandomState};
        let n = RandomState::new().hash_one(std::time::SystemTime::now());
        let dir = std::env::temp_dir().join(format!("sluice-{tag}-{}-{n:x}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes like an editor: a temp file in the same directory, renamed over the target.
fn write_atomic(path: &Path, contents: &str) {
    let tmp = path.with_extension("yaml.swp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn static_config(body: &str) -> String {
    format!(
        "version: 1\nlisteners:\n  - name: public\n    address: 127.0.0.1:0\nroutes:\n  - name: r\n    match: {{ path_prefix: / }}\n    target: {{ static: {{ body: {body} }} }}\n"
    )
}

/// Sends requests back to back until stopped; counts failures (any status but 200, or
/// no response at all) and records the plugin versions it saw (`x-tagger`), in order,
/// each time it changes.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    versions: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(addr: std::net::SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let versions = Arc::new(Mutex::new(Vec::<String>::new()));
        let (s, n, f, v) = (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&failed), Arc::clone(&versions));
        let task = tokio::spawn(async move {
            let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<crate::harness::TestBody>();
            while !s.load(Ordering::SeqCst) {
                let req = http::Request::get(url(addr, "/")).body(crate::harness::full("")).unwrap();
                n.fetch_add(1, Ordering::SeqCst);
                let ok = match client.request(req).await {
                    Ok(r) if r.status() == 200 => {
                        if let Some(tag) = r.headers().get("x-tagger").and_then(|t| t.to_str().ok()) {
                            let mut seen = v.lock().unwrap();
                            if seen.last().map(String::as_str) != Some(tag) {
                                seen.push(tag.to_owned());
                            }
                        }
                        // The whole body, or it is not a success.
                        r.into_body().collect().await.is_ok()
                    }
                    _ => false,
                };
                if !ok {
                    f.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Load { stop, sent, failed, versions, task }
    }

    /// Waits until the load has sent `n` more requests (at most 10 s).
    async fn wait_for_requests(&self, n: usize) {
        let target = self.sent.load(Ordering::SeqCst) + n;
        for _ in 0..1000 {
            if self.sent.load(Ordering::SeqCst) >= target {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the load stalled");
    }

    /// Waits until the load has seen plugin version `tag` (at most 10 s).
    async fn wait_for_version(&self, tag: &str) {
        for _ in 0..1000 {
            if self.versions.lock().unwrap().iter().any(|v| v == tag) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the load never saw {tag}");
    }

    /// Stops; returns (requests sent, failed, versions seen in order).
    async fn finish(self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        let versions = self.versions.lock().unwrap().clone();
        (self.sent.load(Ordering::SeqCst), self.failed.load(Ordering::SeqCst), versions)
    }
}

/// Polls until `GET /` answers `want` (at most 10 s).
async fn wait_for_body(addr: std::net::SocketAddr, want: &str) {
    let client = Client::http1();
    for _ in 0..200 {
        if client.get(&url(addr, "/")).await.text() == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the gateway never served `{want}`");
}

async fn start_watched(path: &Path) -> (Gateway, sluice::reload::WatchHandle) {
    let gw = Gateway::builder().config_file(path).unwrap().start().await.unwrap();
    let watch = sluice::reload::watch_config(gw.clone(), path).unwrap();
    (gw, watch)
}

#[tokio::test]
async fn config_edit_is_served_with_zero_failed_requests() {
    let dir = TempDir::new("reload-edit");
    let path = dir.join("sluice.yaml");
    std::fs::write(&path, static_config("v1")).unwrap();
    let (gw, _watch) = start_watched(&path).await;
    let addr = gw.addr("public");
    let load = Load::start(addr);
    load.wait_for_requests(10).await;
    write_atomic(&path, &static_config("v2"));
    wait_for_body(addr, "v2").await;
    write_atomic(&path, &static_config("v3"));
    wait_for_body(addr, "v3").await;
    let (sent, failed, _) = load.finish().await;
    assert!(sent > 10, "the load ran ({sent} requests)");
    assert_eq!(failed, 0, "{failed} of {sent} requests failed during reloads");
    assert_eq!(gw.reload_status().generation, 3);
    gw.shutdown().await;
}

#[tokio::test]
async fn broken_config_keeps_serving_the_old_one_until_fixed() {
    let dir = TempDir::new("reload-broken");
    let path = dir.join("sluice.yaml");
    std::fs::write(&path, static_config("good")).unwrap();
    let (gw, _watch) = start_watched(&path).await;
    let addr = gw.addr("public");
    let broken =
        static_config("bad").replace("target: { static: { body: bad } }", "target: { upstream: missing }");
    write_atomic(&path, &broken);
    for _ in 0..200 {
        if gw.reload_status().failures_total > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = gw.reload_status();
    assert_eq!(status.failures_total, 1);
    let err = status.last_error().unwrap();
    assert!(err.contains("sluice.yaml:") && err.contains("unknown upstream `missing`"), "{err}");
    assert_eq!(Client::http1().get(&url(addr, "/")).await.text(), "good", "the old config keeps serving");
    // The fix is picked up.
    write_atomic(&path, &static_config("fixed"));
    wait_for_body(addr, "fixed").await;
    let status = gw.reload_status();
    assert!(status.last_error().is_none());
    // The history keeps both attempts, oldest first.
    let history: Vec<(Option<u64>, bool)> =
        status.history.iter().map(|a| (a.generation, a.error.is_some())).collect();
    assert_eq!(history, [(None, true), (Some(2), false)]);
    gw.shutdown().await;
}

#[tokio::test]
async fn configmap_symlink_swap_is_picked_up() {
    // Kubernetes mounts: sluice.yaml -> ..data/sluice.yaml, ..data -> ..<timestamp>.
    let dir = TempDir::new("reload-configmap");
    std::fs::create_dir(dir.join("..v1")).unwrap();
    std::fs::write(dir.join("..v1/sluice.yaml"), static_config("first")).unwrap();
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/sluice.yaml", dir.join("sluice.yaml")).unwrap();
    let (gw, _watch) = start_watched(&dir.join("sluice.yaml")).await;
    let addr = gw.addr("public");
    assert_eq!(Client::http1().get(&url(addr, "/")).await.text(), "first");
    // The update: a new directory, a temp symlink, renamed over ..data.
    std::fs::create_dir(dir.join("..v2")).unwrap();
    std::fs::write(dir.join("..v2/sluice.yaml"), static_config("second")).unwrap();
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join("..v1")).unwrap();
    wait_for_body(addr, "second").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn in_flight_request_finishes_on_its_snapshot() {
    let (release, released) = tokio::sync::watch::channel(false);
    let old = TestServer::start(move |_req| {
        let mut released = released.clone();
        async move {
            let _ = released.wait_for(|v| *v).await;
            http::Response::new(crate::harness::full("old upstream"))
        }
    })
    .await;
    let new = TestServer::named("new upstream").await;
    let yaml = |addr: std::net::SocketAddr| {
        format!(
            "version: 1\nlisteners:\n  - name: public\n    address: 127.0.0.1:0\nupstreams:\n  app:\n    targets: [{{ address: \"{addr}\" }}]\nroutes:\n  - name: r\n    match: {{ path_prefix: / }}\n    target: {{ upstream: app }}\n"
        )
    };
    let gw = Gateway::builder().config_yaml(&yaml(old.addr)).unwrap().start().await.unwrap();
    let addr = gw.addr("public");
    let in_flight = tokio::spawn(async move { Client::http1().get(&url(addr, "/")).await.text() });
    while old.request_count() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gw.reload(parse_str("v2", &yaml(new.addr), ".".into()).unwrap()).await.unwrap();
    assert_eq!(Client::http1().get(&url(addr, "/")).await.text(), "new upstream");
    release.send(true).unwrap();
    assert_eq!(in_flight.await.unwrap(), "old upstream");
    gw.shutdown().await;
}

#[tokio::test]
async fn listeners_open_and_close_with_the_config() {
    let one = static_config("x");
    let two = one.replace(
        "listeners:\n  - name: public\n    address: 127.0.0.1:0\n",
        "listeners:\n  - name: public\n    address: 127.0.0.1:0\n  - name: extra\n    address: 127.0.0.1:0\n",
    );
    let gw = Gateway::builder().config_yaml(&one).unwrap().start().await.unwrap();
    let public = gw.addr("public");
    assert!(gw.try_addr("extra").is_none());
    gw.reload(parse_str("two", &two, ".".into()).unwrap()).await.unwrap();
    let extra = gw.addr("extra");
    assert_eq!(Client::http1().get(&url(extra, "/")).await.text(), "x");
    assert_eq!(gw.addr("public"), public, "an unchanged listener keeps its socket");
    gw.reload(parse_str("one", &one, ".".into()).unwrap()).await.unwrap();
    assert!(gw.try_addr("extra").is_none());
    assert!(
        refuses_connections(extra, Duration::from_secs(2)).await,
        "the removed listener still accepts connections"
    );
    assert_eq!(Client::http1().get(&url(public, "/")).await.text(), "x");
    gw.shutdown().await;
}

#[tokio::test]
async fn reloads_free_old_snapshots_and_upstreams() {
    let up = TestServer::named("ok").await;
    let yaml = format!(
        "version: 1\nlisteners:\n  - name: public\n    address: 127.0.0.1:0\nupstreams:\n  app:\n    targets: [{{ address: \"{}\" }}]\n    health:\n      active: {{ path: /health, interval: 50ms }}\nroutes:\n  - name: r\n    match: {{ path_prefix: / }}\n    target: {{ upstream: app }}\n",
        up.addr
    );
    let gw = Gateway::builder().config_yaml(&yaml).unwrap().start().await.unwrap();
    let addr = gw.addr("public");
    let client = Client::http1();
    let mut old: Vec<Box<dyn Alive + Send>> = Vec::new();
    for i in 0..200 {
        old.push(Arc::downgrade(&gw.snapshot()).into_any());
        old.push(Arc::downgrade(&gw.snapshot().upstreams.values().next().unwrap().clone()).into_any());
        gw.reload(parse_str("cycle", &yaml, ".".into()).unwrap()).await.unwrap();
        if i % 20 == 0 {
            assert_eq!(client.get(&url(addr, "/")).await.text(), "ok");
        }
    }
    // Everything but the current generation is gone once no request holds it (the
    // last tasks of old generations wind down asynchronously: wait for it, bounded).
    let mut alive = usize::MAX;
    for _ in 0..500 {
        alive = old.iter().filter(|w| w.alive()).count();
        if alive == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(alive, 0, "{alive} old snapshots or upstream pools are still alive after 200 reloads");
    // And so are their health checkers: once a reload drops the active checks, no
    // probe arrives at all (a leaked checker of any of the 200 generations would go
    // on probing every 50 ms). The first pause lets a probe already sent land.
    let quiet = yaml.replace("    health:\n      active: { path: /health, interval: 50ms }\n", "");
    assert_ne!(quiet, yaml);
    gw.reload(parse_str("quiet", &quiet, ".".into()).unwrap()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let probes_before = up.request_count();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(up.request_count(), probes_before, "health probes of old snapshots are still running");
    gw.shutdown().await;
}

/// A weak reference of any type, to check liveness.
trait Alive {
    fn alive(&self) -> bool;
}

impl<T> Alive for std::sync::Weak<T> {
    fn alive(&self) -> bool {
        self.strong_count() > 0
    }
}

trait IntoAny {
    fn into_any(self) -> Box<dyn Alive + Send>;
}

impl<T: Send + Sync + 'static> IntoAny for std::sync::Weak<T> {
    fn into_any(self) -> Box<dyn Alive + Send> {
        Box::new(self)
    }
}

// --- Plugin components swapped in the watched plugins folder ---------------------------
//
// `tagger-v1` and `tagger-v2` are two builds of one plugin whose tags differ: the
// response header `x-tagger`, the request header `x-tagger-request` and every response
// chunk (`<tagger-vN:chunk>`) name the build that handled them.

const V1: &str = "tagger-v1";
const V2: &str = "tagger-v2";

/// A config file beside a `plugins/` folder holding `tagger.wasm`, watched by a gateway
/// with an admin listener. `rest` holds the upstreams (if any) and the `tagger` route.
struct PluginSite {
    dir: TempDir,
    gw: Gateway,
    _watch: sluice::reload::WatchHandle,
}

impl PluginSite {
    async fn start(tag: &str, component: &str, rest: &str) -> PluginSite {
        let dir = TempDir::new(tag);
        std::fs::create_dir(dir.join("plugins")).unwrap();
        std::fs::copy(component, dir.join("plugins/tagger.wasm")).unwrap();
        let yaml = format!(
            "version: 1\nlisteners:\n  - name: public\n    address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nplugins:\n  dir: plugins\n  cache_dir: cache\n{rest}"
        );
        let config = dir.join("sluice.yaml");
        std::fs::write(&config, yaml).unwrap();
        let (gw, watch) = start_watched(&config).await;
        PluginSite { dir, gw, _watch: watch }
    }

    /// The echo route with `tagger` on it.
    async fn echo(tag: &str, component: &str) -> PluginSite {
        let route = "routes:\n  - name: r\n    match: { path_prefix: / }\n    target: { echo: {} }\n    plugins:\n      - name: tagger\n";
        PluginSite::start(tag, component, route).await
    }

    fn plugin_path(&self) -> PathBuf {
        self.dir.join("plugins/tagger.wasm")
    }

    /// Deploys `component` as `tagger.wasm` the way a deploy tool does: a temp file in
    /// the same folder, renamed over the old one.
    fn install(&self, component: &str) {
        let tmp = self.dir.join("plugins/.tagger.wasm.tmp");
        std::fs::copy(component, &tmp).unwrap();
        std::fs::rename(&tmp, self.plugin_path()).unwrap();
    }

    /// Overwrites `tagger.wasm` in place with `bytes` (a careless `cp`, a broken upload).
    fn overwrite(&self, bytes: &[u8]) {
        std::fs::write(self.plugin_path(), bytes).unwrap();
    }

    async fn admin(&self, path: &str) -> crate::harness::Reply {
        Client::http1().get(&url(self.gw.addr("admin"), path)).await
    }
}

/// Splits a tagged body `<tagger-vN:chunk><tagger-vN:chunk>…` into the tag of each
/// chunk and the chunks joined.
fn untag(body: &str) -> (Vec<String>, String) {
    let (mut tags, mut text) = (Vec::new(), String::new());
    let mut rest = body;
    while !rest.is_empty() {
        let inner = rest.strip_prefix('<').unwrap_or_else(|| panic!("untagged bytes in {body:?}"));
        let (tag, after) = inner.split_once(':').unwrap();
        // (The chunks of these tests never contain `>`.)
        let end = after.find('>').unwrap_or_else(|| panic!("unterminated chunk in {body:?}"));
        tags.push(tag.to_owned());
        text.push_str(&after[..end]);
        rest = &after[end + 1..];
    }
    tags.dedup();
    (tags, text)
}

/// Polls `GET /` until its `x-tagger` header is `want` (at most 10 s).
async fn wait_for_tag(addr: std::net::SocketAddr, want: &str) {
    let client = Client::http1();
    let mut last = None;
    for _ in 0..200 {
        let reply = client.get(&url(addr, "/")).await;
        if reply.header("x-tagger") == Some(want) {
            return;
        }
        last = reply.header("x-tagger").map(str::to_owned);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the gateway never served {want} (last seen: {last:?})");
}

/// Polls until the gateway serves generation `n` (at most 10 s).
async fn wait_for_generation(gw: &Gateway, n: u64) {
    for _ in 0..200 {
        if gw.snapshot().generation >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("generation {n} never came: {:?}", gw.reload_status());
}

/// Polls until the gateway has counted `n` failed reloads (at most 10 s).
async fn wait_for_failures(gw: &Gateway, n: u64) -> sluice::gateway::ReloadStatus {
    for _ in 0..200 {
        let status = gw.reload_status();
        if status.failures_total >= n {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the reload never failed: {:?}", gw.reload_status());
}

#[tokio::test]
async fn a_new_plugin_version_is_served_with_zero_failed_requests() {
    let site = PluginSite::echo("reload-plugin", wasm::TAGGER_V1).await;
    let addr = site.gw.addr("public");
    let reply = Client::http1().get(&url(addr, "/")).await;
    assert_eq!(reply.header("x-tagger"), Some(V1));
    assert_eq!(untag(&reply.text()).0, [V1], "the response chunks are tagged too");

    let load = Load::start(addr);
    load.wait_for_requests(10).await;
    site.install(wasm::TAGGER_V2);
    wait_for_tag(addr, V2).await;
    let reply = Client::http1().get(&url(addr, "/")).await;
    let (tags, body) = untag(&reply.text());
    assert_eq!(tags, [V2], "the response chunks are tagged by the new build");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["headers"]["x-tagger-request"], V2, "the request phase runs the new build: {body}");

    // And back (the old build's compiled code comes from the cache).
    load.wait_for_version(V2).await;
    site.install(wasm::TAGGER_V1);
    wait_for_tag(addr, V1).await;
    load.wait_for_requests(10).await;

    let (sent, failed, versions) = load.finish().await;
    assert_eq!(failed, 0, "{failed} of {sent} requests failed while the plugin was swapped");
    assert_eq!(versions, [V1, V2, V1], "one switch per deploy, never back and forth");
    let status = site.gw.reload_status();
    assert_eq!((status.generation, status.failures_total), (3, 0), "{status:?}");
    site.gw.shutdown().await;
}

#[tokio::test]
async fn a_corrupt_plugin_keeps_the_old_snapshot_serving_until_fixed() {
    let site = PluginSite::echo("reload-corrupt", wasm::TAGGER_V1).await;
    let addr = site.gw.addr("public");
    let load = Load::start(addr);
    load.wait_for_requests(10).await;
    let names_the_plugin = |err: &str| {
        assert!(
            err.contains("plugin tagger") && err.contains("tagger.wasm"),
            "the error names the plugin: {err}"
        )
    };

    // Garbage bytes where a component was.
    site.overwrite(b"\0asm this is not a component, just bytes");
    let status = wait_for_failures(&site.gw, 1).await;
    names_the_plugin(status.last_error().unwrap());
    assert_eq!(
        Client::http1().get(&url(addr, "/")).await.header("x-tagger"),
        Some(V1),
        "the old build serves"
    );
    let doc = site.admin("/-/status").await.json();
    assert_eq!(doc["reload"]["failures_total"], 1, "{doc}");
    assert_eq!(doc["generation"], 1, "{doc}");
    names_the_plugin(doc["reload"]["last_error"].as_str().unwrap());
    let metrics = site.admin("/metrics").await.text();
    assert!(metrics.contains("\nsluice_reload_failures_total 1\n"), "{metrics}");
    assert!(metrics.contains("\nsluice_reload_last_failed 1\n"), "{metrics}");

    // A half-written copy of a real component (an interrupted upload).
    let v2 = std::fs::read(wasm::TAGGER_V2).unwrap();
    site.overwrite(&v2[..v2.len() / 2]);
    let status = wait_for_failures(&site.gw, 2).await;
    names_the_plugin(status.last_error().unwrap());
    assert_eq!(
        Client::http1().get(&url(addr, "/")).await.header("x-tagger"),
        Some(V1),
        "the old build serves"
    );
    let metrics = site.admin("/metrics").await.text();
    assert!(metrics.contains("\nsluice_reload_failures_total 2\n"), "{metrics}");

    // The fixed file is picked up.
    site.overwrite(&v2);
    wait_for_tag(addr, V2).await;
    let doc = site.admin("/-/status").await.json();
    assert_eq!(doc["generation"], 2, "{doc}");
    assert_eq!(doc["reload"]["last_error"], serde_json::Value::Null, "{doc}");
    let metrics = site.admin("/metrics").await.text();
    assert!(metrics.contains("\nsluice_reload_last_failed 0\n"), "{metrics}");

    let (sent, failed, versions) = load.finish().await;
    assert_eq!(failed, 0, "{failed} of {sent} requests failed while the plugin file was broken");
    assert_eq!(versions, [V1, V2]);
    site.gw.shutdown().await;
}

#[tokio::test]
async fn a_streamed_response_started_before_a_plugin_swap_finishes_on_the_old_version() {
    // `/slow` streams five chunks: the first at once, the other four 200 ms apart once
    // the test releases them (after the swap); any other path answers `fast` at once.
    let (release, released) = tokio::sync::watch::channel(false);
    let up = TestServer::start(move |req: http::Request<hyper::body::Incoming>| {
        let released = released.clone();
        async move {
            if req.uri().path() != "/slow" {
                return http::Response::new(crate::harness::full("fast"));
            }
            let chunks = futures_util::stream::unfold(1u8, move |i| {
                let mut released = released.clone();
                async move {
                    match i {
                        1 => {}
                        2..=5 => {
                            let _ = released.wait_for(|v| *v).await;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        _ => return None,
                    }
                    let frame = http_body::Frame::data(bytes::Bytes::from(format!("c{i}")));
                    Some((Ok::<_, Box<dyn std::error::Error + Send + Sync>>(frame), i + 1))
                }
            });
            http::Response::new(http_body_util::StreamBody::new(chunks).boxed())
        }
    })
    .await;
    let site = PluginSite::start(
        "reload-stream",
        wasm::TAGGER_V1,
        &format!(
            "upstreams:\n  app:\n    targets: [{{ address: \"{}\" }}]\nroutes:\n  - name: r\n    match: {{ path_prefix: / }}\n    target: {{ upstream: app }}\n    plugins:\n      - name: tagger\n",
            up.addr
        ),
    )
    .await;
    let addr = site.gw.addr("public");

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<crate::harness::TestBody>();
    let req = http::Request::get(url(addr, "/slow")).body(crate::harness::full("")).unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.headers()["x-tagger"], V1);
    let mut body = resp.into_body();
    let mut received = Vec::new();
    while !received.ends_with(b">") {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame()).await.expect("first chunk");
        received.extend_from_slice(&frame.unwrap().unwrap().into_data().unwrap());
    }
    assert_eq!(received, format!("<{V1}:c1>").as_bytes());

    // Swap the plugin while the response is still streaming; new requests see v2.
    site.install(wasm::TAGGER_V2);
    wait_for_tag(addr, V2).await;
    assert_eq!(Client::http1().get(&url(addr, "/")).await.text(), format!("<{V2}:fast>"));

    release.send(true).unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(10), body.collect()).await.unwrap().unwrap();
    received.extend_from_slice(&rest.to_bytes());
    let (tags, text) = untag(std::str::from_utf8(&received).unwrap());
    assert_eq!(text, "c1c2c3c4c5", "the whole body arrived");
    assert_eq!(tags, [V1], "every chunk went through the build the response started on");
    site.gw.shutdown().await;
}

#[tokio::test]
async fn a_configmap_update_of_the_plugins_folder_is_picked_up() {
    // A ConfigMap mounted as the plugins folder: tagger.wasm -> ..data/tagger.wasm,
    // ..data -> ..v1. An update swaps ..data; the link tagger.wasm itself never changes.
    let site = PluginSite::echo("reload-plugins-configmap", wasm::TAGGER_V1).await;
    let addr = site.gw.addr("public");
    let plugins = site.dir.join("plugins");
    std::fs::create_dir(plugins.join("..v1")).unwrap();
    std::fs::copy(wasm::TAGGER_V1, plugins.join("..v1/tagger.wasm")).unwrap();
    std::os::unix::fs::symlink("..v1", plugins.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/tagger.wasm", plugins.join(".tagger.wasm.link")).unwrap();
    std::fs::rename(plugins.join(".tagger.wasm.link"), site.plugin_path()).unwrap();
    // The same build behind a link: a reload, and v1 keeps serving.
    wait_for_generation(&site.gw, 2).await;
    assert_eq!(Client::http1().get(&url(addr, "/")).await.header("x-tagger"), Some(V1));
    let load = Load::start(addr);
    load.wait_for_requests(10).await;

    std::fs::create_dir(plugins.join("..v2")).unwrap();
    std::fs::copy(wasm::TAGGER_V2, plugins.join("..v2/tagger.wasm")).unwrap();
    std::os::unix::fs::symlink("..v2", plugins.join("..data_tmp")).unwrap();
    std::fs::rename(plugins.join("..data_tmp"), plugins.join("..data")).unwrap();
    std::fs::remove_dir_all(plugins.join("..v1")).unwrap();
    wait_for_tag(addr, V2).await;

    let (sent, failed, versions) = load.finish().await;
    assert_eq!(failed, 0, "{failed} of {sent} requests failed during the ConfigMap update");
    assert_eq!(versions, [V1, V2]);
    site.gw.shutdown().await;
}

#[tokio::test]
async fn a_same_size_replacement_that_kept_its_modification_time_is_noticed() {
    // `cp -p`, `rsync -a` and `tar x` keep the source's modification time; a rebuilt
    // component can have the same size. Here: same size, same mtime, other bytes.
    let site = PluginSite::echo("reload-same-size", wasm::TAGGER_V1).await;
    let path = site.plugin_path();
    let meta = std::fs::metadata(&path).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..].fill(0xff); // keeps the `\0asm` preamble, breaks everything after it
    site.overwrite(&bytes);
    std::fs::File::options().write(true).open(&path).unwrap().set_modified(meta.modified().unwrap()).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), meta.len());
    let status = wait_for_failures(&site.gw, 1).await;
    assert!(status.last_error().unwrap().contains("tagger.wasm"), "{status:?}");
    site.gw.shutdown().await;
}

#[tokio::test]
async fn a_plugins_folder_created_after_the_start_is_watched() {
    let dir = TempDir::new("reload-late-plugins");
    let config = dir.join("sluice.yaml");
    let head = "version: 1\nlisteners:\n  - name: public\n    address: 127.0.0.1:0\nplugins:\n  dir: plugins\n  cache_dir: cache\n";
    std::fs::write(&config, format!("{head}routes:\n  - name: r\n    match: {{ path_prefix: / }}\n    target: {{ static: {{ body: none }} }}\n")).unwrap();
    let (gw, _watch) = start_watched(&config).await;
    let addr = gw.addr("public");
    assert_eq!(Client::http1().get(&url(addr, "/")).await.text(), "none");

    // The folder and a first plugin arrive, then the config that uses it.
    std::fs::create_dir(dir.join("plugins")).unwrap();
    std::fs::copy(wasm::TAGGER_V1, dir.join("plugins/tagger.wasm")).unwrap();
    write_atomic(
        &config,
        &format!(
            "{head}routes:\n  - name: r\n    match: {{ path_prefix: / }}\n    target: {{ echo: {{}} }}\n    plugins:\n      - name: tagger\n"
        ),
    );
    wait_for_tag(addr, V1).await;

    // A new build dropped into the folder, the config untouched.
    std::fs::copy(wasm::TAGGER_V2, dir.join("plugins/.tagger.wasm.tmp")).unwrap();
    std::fs::rename(dir.join("plugins/.tagger.wasm.tmp"), dir.join("plugins/tagger.wasm")).unwrap();
    wait_for_tag(addr, V2).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn the_admin_api_answers_health_status_reload_and_wrong_methods() {
    let dir = TempDir::new("admin-api");
    let config = dir.join("sluice.yaml");
    let yaml = |body: &str| {
        format!(
            "version: 1\nlisteners:\n  - name: public\n    address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nroutes:\n  - name: r\n    match: {{ path_prefix: / }}\n    target: {{ static: {{ body: {body} }} }}\n"
        )
    };
    std::fs::write(&config, yaml("one")).unwrap();
    let gw = Gateway::builder().config_file(&config).unwrap().start().await.unwrap();
    let (admin, public) = (gw.addr("admin"), gw.addr("public"));
    let client = Client::http1();

    let health = client.get(&url(admin, "/-/health")).await;
    assert_eq!((health.status.as_u16(), health.text().as_str()), (200, "ok\n"));
    let status = client.get(&url(admin, "/-/status")).await.json();
    assert_eq!(status["routes"], serde_json::json!(["r"]));
    assert_eq!(status["listeners"]["public"], public.to_string());
    assert_eq!(status["reload"]["reloads_total"], 0);
    assert_eq!(status["config"], config.display().to_string());
    let first = status["generation"].as_u64().unwrap();

    // Wrong method on a known path, and an unknown path.
    let put = client
        .send(http::Request::put(url(admin, "/-/health")).body(crate::harness::full("")).unwrap())
        .await;
    assert_eq!(put.status, 405);
    assert_eq!(client.get(&url(admin, "/-/reload")).await.status, 405, "reload is POST only");
    assert_eq!(client.get(&url(admin, "/nope")).await.status, 404);

    // A broken file: 422 naming the problem, and the old config keeps serving.
    std::fs::write(&config, "version: 1\nlisteners: 7\n").unwrap();
    let refused = client.post(&url(admin, "/-/reload"), "").await;
    assert_eq!(refused.status, 422, "{}", refused.text());
    assert!(refused.json()["error"].as_str().unwrap().contains("listeners"), "{}", refused.text());
    assert_eq!(refused.json()["generation"].as_u64(), Some(first));
    assert_eq!(client.get(&url(public, "/")).await.text(), "one");
    let status = client.get(&url(admin, "/-/status")).await.json();
    assert_eq!(status["reload"]["failures_total"], 1, "{}", status["reload"]);
    assert!(status["reload"]["last_error"].as_str().unwrap().contains("listeners"), "{}", status["reload"]);

    // A good file: 200 with the new generation, served at once.
    std::fs::write(&config, yaml("two")).unwrap();
    let done = client.post(&url(admin, "/-/reload"), "").await;
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(done.json()["generation"].as_u64(), Some(first + 1));
    assert_eq!(client.get(&url(public, "/")).await.text(), "two");
    let status = client.get(&url(admin, "/-/status")).await.json();
    assert_eq!(status["generation"].as_u64(), Some(first + 1));
    assert_eq!(status["reload"]["failures_total"], 1);
    assert_eq!(status["reload"]["reloads_total"], 1, "{}", status["reload"]);
    assert!(
        status["reload"]["last_error"].is_null(),
        "a success clears the last error: {}",
        status["reload"]
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_reload_whose_new_listener_cannot_bind_changes_nothing() {
    // The port is taken by someone else.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap();
    let one = static_config("x");
    let two = static_config("y").replace(
        "listeners:\n  - name: public\n    address: 127.0.0.1:0\n",
        &format!(
            "listeners:\n  - name: public\n    address: 127.0.0.1:0\n  - name: extra\n    address: {taken}\n"
        ),
    );
    let gw = Gateway::builder().config_yaml(&one).unwrap().start().await.unwrap();
    let generation = gw.snapshot().generation;
    let err = gw.reload(parse_str("two", &two, ".".into()).unwrap()).await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("listener extra cannot bind {taken}")),
        "the error names the listener and its address: {err}"
    );
    assert_eq!(gw.snapshot().generation, generation, "the old generation stays");
    assert!(gw.try_addr("extra").is_none());
    assert_eq!(Client::http1().get(&url(gw.addr("public"), "/")).await.text(), "x", "the old config serves");
    drop(squatter);
    gw.shutdown().await;
}

#[tokio::test]
async fn files_written_beside_the_config_and_the_plugins_do_not_hold_back_a_plugin_swap() {
    let site = PluginSite::echo("reload-noise", wasm::TAGGER_V1).await;
    let addr = site.gw.addr("public");
    wait_for_tag(addr, V1).await;
    // A log beside the config and a scratch file among the plugins, written every
    // 20 ms (faster than the debounce) for as long as the swap takes: only events on
    // the config and on `*.wasm` may count, or the debounce never ends.
    let stop = Arc::new(AtomicBool::new(false));
    let noise = {
        let (log, scratch, stop) =
            (site.dir.join("access.log"), site.dir.join("plugins/notes.txt"), Arc::clone(&stop));
        std::thread::spawn(move || {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                writeln!(file, "line {n}").unwrap();
                std::fs::write(&scratch, n.to_string()).unwrap();
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            n
        })
    };
    site.install(wasm::TAGGER_V2);
    wait_for_tag(addr, V2).await;
    stop.store(true, Ordering::SeqCst);
    assert!(noise.join().unwrap() > 0, "the noise was written");
    assert_eq!(site.gw.reload_status().failures_total, 0);
}
