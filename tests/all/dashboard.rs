//! The admin dashboard in a real headless Chromium, driven over the DevTools protocol
//! (a small WebSocket client here: no browser download, no driver): the page loads
//! without console errors, lists the configured routes, and its numbers follow traffic.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::harness::{Client, TestServer, full, gateway, url};

/// A DevTools protocol session on one page.
struct Cdp {
    stream: TcpStream,
    next_id: u64,
    /// Every event received so far.
    events: Vec<Value>,
}

impl Cdp {
    async fn connect(ws_url: &str) -> Cdp {
        let rest = ws_url.strip_prefix("ws://").expect("a ws:// url");
        let (host, path) = rest.split_once('/').unwrap();
        let mut stream = TcpStream::connect(host).await.unwrap();
        let handshake = format!(
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(handshake.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(stream.read_u8().await.unwrap());
        }
        assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
        Cdp { stream, next_id: 1, events: Vec::new() }
    }

    async fn send(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mut frame = vec![0x81u8];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let key = fastrand::u32(..).to_be_bytes();
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        self.stream.write_all(&frame).await.unwrap();
    }

    /// The next whole text message (continuation frames joined; others skipped).
    async fn receive(&mut self) -> Value {
        let mut message = Vec::new();
        loop {
            let b0 = self.stream.read_u8().await.unwrap();
            let b1 = self.stream.read_u8().await.unwrap();
            let len = match b1 & 0x7f {
                126 => u64::from(self.stream.read_u16().await.unwrap()),
                127 => self.stream.read_u64().await.unwrap(),
                n => u64::from(n),
            };
            let mut key = [0u8; 4];
            if b1 & 0x80 != 0 {
                self.stream.read_exact(&mut key).await.unwrap();
            }
            let mut payload = vec![0u8; usize::try_from(len).unwrap()];
            self.stream.read_exact(&mut payload).await.unwrap();
            if b1 & 0x80 != 0 {
                payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= key[i % 4]);
            }
            let opcode = b0 & 0x0f;
            if opcode == 0x1 || opcode == 0x0 {
                message.extend_from_slice(&payload);
                if b0 & 0x80 != 0 {
                    return serde_json::from_slice(&message).unwrap();
                }
            }
        }
    }

    /// Calls `method` and returns its result; events that arrive meanwhile are kept.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({ "id": id, "method": method, "params": params }).to_string()).await;
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(30), self.receive())
                .await
                .expect("a DevTools answer");
            if msg["id"] == id {
                assert!(msg.get("error").is_none(), "{method}: {msg}");
                return msg["result"].clone();
            }
            self.events.push(msg);
        }
    }

    /// Evaluates `expression` in the page and returns its value.
    async fn eval(&mut self, expression: &str) -> Value {
        let r =
            self.call("Runtime.evaluate", json!({ "expression": expression, "returnByValue": true })).await;
        r["result"]["value"].clone()
    }

    /// Console errors, uncaught exceptions and error log entries seen so far.
    fn errors(&self) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| match e["method"].as_str() {
                Some("Runtime.exceptionThrown") => true,
                Some("Runtime.consoleAPICalled") => e["params"]["type"] == "error",
                Some("Log.entryAdded") => e["params"]["entry"]["level"] == "error",
                _ => false,
            })
            .collect()
    }
}

/// Headless Chromium with a DevTools port; killed when dropped.
struct Chromium {
    child: Child,
    _profile: tempfile::TempDir,
    /// `host:port` of its DevTools endpoint.
    devtools: String,
}

impl Chromium {
    async fn start() -> Chromium {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-extensions",
            ])
            .args([
                "--disable-background-networking",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run chromium");
        let stderr = tokio::process::ChildStderr::from_std(child.stderr.take().unwrap()).unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let find = async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(rest) = line.split("ws://").nth(1) {
                    return rest.split('/').next().unwrap().to_owned();
                }
            }
            panic!("chromium exited without a DevTools endpoint");
        };
        let devtools = tokio::time::timeout(Duration::from_secs(60), find).await.expect("chromium started");
        // Keep draining its stderr so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Chromium { child, _profile: profile, devtools }
    }

    /// A new page's DevTools session.
    async fn page(&self) -> Cdp {
        let addr: std::net::SocketAddr = self.devtools.parse().unwrap();
        let req = http::Request::put(url(addr, "/json/new?about:blank")).body(full("")).unwrap();
        let target = Client::http1().send(req).await.json();
        Cdp::connect(target["webSocketDebuggerUrl"].as_str().unwrap()).await
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The rows of a table as text cells.
async fn table(cdp: &mut Cdp, id: &str) -> Vec<Vec<String>> {
    let v = cdp
        .eval(&format!(
            "JSON.stringify([...document.querySelectorAll('#{id} tbody tr')].map(tr => [...tr.children].map(td => td.textContent)))"
        ))
        .await;
    serde_json::from_str(v.as_str().unwrap_or("[]")).unwrap()
}

/// Polls `table` until `ok` holds (the page refreshes every 2 s), up to 30 s.
async fn until(cdp: &mut Cdp, id: &str, ok: impl Fn(&[Vec<String>]) -> bool) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for _ in 0..150 {
        rows = table(cdp, id).await;
        if ok(&rows) {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("#{id} never matched: {rows:?}");
}

#[tokio::test]
async fn the_dashboard_loads_without_errors_shows_the_routes_and_follows_traffic() {
    if !sluice_tests::have(
        sluice_tests::runs("chromium", &["--version"]),
        "chromium",
        "apt-get install -y chromium",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let up = TestServer::named("app").await;
    let gw = gateway(&format!(
        "version: 1\nserver:\n  call_log: {{ path: {} }}\nadmin: {{ address: 127.0.0.1:0 }}\n\
         listeners:\n  - name: public\n    address: 127.0.0.1:0\n\
         upstreams:\n  app:\n    targets:\n      - address: {}\n\
         routes:\n  - name: orders\n    match: {{ path_prefix: /orders }}\n    target: {{ upstream: app }}\n\
         \x20 - name: hello\n    match: {{ path: /hello }}\n    target: {{ static: {{ body: hi }} }}\n",
        dir.path().join("calls.db").display(),
        up.addr
    ))
    .await;
    let chromium = Chromium::start().await;
    let mut cdp = chromium.page().await;
    cdp.call("Runtime.enable", json!({})).await;
    cdp.call("Log.enable", json!({})).await;
    cdp.call("Page.navigate", json!({ "url": url(gw.addr("admin"), "/") })).await;

    let rows = until(&mut cdp, "routes", |rows| rows.iter().any(|r| r[0] == "orders")).await;
    let names: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(names, ["orders", "hello"], "the configured routes");
    let requests = |rows: &[Vec<String>], route: &str| -> Option<u64> {
        rows.iter().find(|r| r[0] == route).and_then(|r| r[7].parse().ok())
    };
    assert_eq!(requests(&rows, "orders"), Some(0));
    let targets = until(&mut cdp, "targets", |rows| !rows.is_empty()).await;
    assert_eq!((targets[0][1].as_str(), targets[0][2].as_str()), (up.addr.to_string().as_str(), "up"));

    // Traffic: the counts and the recent-calls table follow.
    let client = Client::http1();
    for _ in 0..5 {
        assert_eq!(client.get(&url(gw.addr("public"), "/orders/7")).await.status, 200);
    }
    client.get(&url(gw.addr("public"), "/hello")).await;
    until(&mut cdp, "routes", |rows| {
        requests(rows, "orders") == Some(5) && requests(rows, "hello") == Some(1)
    })
    .await;
    let calls = until(&mut cdp, "calls", |rows| rows.len() == 6).await;
    assert!(
        calls.iter().filter(|r| r[1] == "orders" && r[4] == "/orders/7" && r[5] == "200").count() == 5,
        "{calls:?}"
    );
    // A reload shows in the history.
    let reload = Client::http1()
        .send(http::Request::post(url(gw.addr("admin"), "/-/reload")).body(full("")).unwrap())
        .await;
    assert_eq!(reload.status, 200, "{}", reload.text());
    until(&mut cdp, "reloads", |rows| rows.iter().any(|r| r.get(1).is_some_and(|c| c == "generation 2")))
        .await;
    let state = cdp.eval("document.getElementById('state').textContent").await;
    assert_eq!(state, "live");
    let node = cdp.eval("document.getElementById('node').textContent").await;
    assert!(
        node.as_str().unwrap().contains(&gw.addr("public").to_string()),
        "the page says which node: {node}"
    );

    assert!(cdp.errors().is_empty(), "console errors: {:#?}", cdp.errors());
}
