//! Hot reload: edits are picked up with zero failed requests, broken configs change
//! nothing live, listeners and certificates follow the config, nothing leaks.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use sluice::Gateway;
use sluice::config::parse_str;

use crate::harness::{Client, TestServer, url};

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

/// Sends requests back to back until stopped; counts failures.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(addr: std::net::SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let (s, n, f) = (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&failed));
        let task = tokio::spawn(async move {
            let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<crate::harness::TestBody>();
            while !s.load(Ordering::SeqCst) {
                let req = http::Request::get(url(addr, "/")).body(crate::harness::full("")).unwrap();
                n.fetch_add(1, Ordering::SeqCst);
                match client.request(req).await {
                    Ok(r) if r.status() == 200 => {}
                    _ => {
                        f.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        });
        Load { stop, sent, failed, task }
    }

    async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        (self.sent.load(Ordering::SeqCst), self.failed.load(Ordering::SeqCst))
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
    tokio::time::sleep(Duration::from_millis(100)).await;
    write_atomic(&path, &static_config("v2"));
    wait_for_body(addr, "v2").await;
    write_atomic(&path, &static_config("v3"));
    wait_for_body(addr, "v3").await;
    let (sent, failed) = load.finish().await;
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
    let err = status.last_error.unwrap();
    assert!(err.contains("sluice.yaml:") && err.contains("unknown upstream `missing`"), "{err}");
    assert_eq!(Client::http1().get(&url(addr, "/")).await.text(), "good", "the old config keeps serving");
    // The fix is picked up.
    write_atomic(&path, &static_config("fixed"));
    wait_for_body(addr, "fixed").await;
    assert!(gw.reload_status().last_error.is_none());
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
    let mut closed = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(extra).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed, "the removed listener still accepts connections");
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
    // Everything but the current generation is gone once no request holds it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let alive = old.iter().filter(|w| w.alive()).count();
    assert_eq!(alive, 0, "{alive} old snapshots or upstream pools are still alive after 200 reloads");
    let probes_before = up.request_count();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let probes = up.request_count() - probes_before;
    assert!(probes <= 12, "health probes of old snapshots are still running: {probes} probes in 300ms");
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
