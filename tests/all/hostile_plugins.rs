//! Hostile plugins: a plugin granted nothing reads no file, no environment and no
//! network; thousands of faults in a row leave the gateway serving, every one under
//! the entry's policy, and no instance behind.

use sluice::plugins::pool::{CallPath, Made};
use sluice::plugins::stats::stats_for;
use sluice_tests::plugins as wasm;

use crate::harness::{Client, Reply, TestServer, full, url};
use crate::plugins::{Plugins, upstream};

#[tokio::test]
async fn a_plugin_granted_nothing_reads_no_file_no_environment_and_no_network() {
    // Something to reach if the sandbox let it: a listening socket and a real file.
    let bait = TestServer::named("reached").await;
    let p = Plugins::with(&[("prober", wasm::PROBER)]);
    let secret = p.path().join("secret.txt");
    std::fs::write(&secret, "s3cr3t").unwrap();
    // (The test process has an environment of its own, PATH and HOME at least, for
    // the plugin to see if the sandbox passed it on.)
    assert!(std::env::vars().count() > 0);
    let gw = p
        .start(&format!(
            "routes:\n  - name: r\n    match: {{ path_prefix: / }}\n    target: {{ echo: {{}} }}\n    plugins:\n      - name: prober\n        config: {{ path: {:?}, addr: \"{}\" }}\n",
            secret.display().to_string(),
            bait.addr
        ))
        .await;
    let reply = Client::http1().get(&url(gw.addr("public"), "/")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = |h: &str| reply.header(h).unwrap_or_default().to_owned();
    assert!(seen("x-file").starts_with("denied"), "x-file: {}", seen("x-file"));
    assert_eq!(seen("x-env"), "empty");
    assert!(seen("x-net").starts_with("denied"), "x-net: {}", seen("x-net"));
    assert_eq!(bait.connections.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing reached the bait");
}

/// A plugin that loops holds its worker thread once: that call, on the synchronous
/// path, marks its entry, and from then on the entry's calls yield to the requests
/// around them until their deadline. Client and gateway share this test's one
/// thread, so a call that held the thread would finish (at its deadline) before any
/// other request got an answer.
#[tokio::test]
async fn a_looping_plugin_holds_its_thread_once_and_then_yields_to_other_requests() {
    let p = Plugins::with(&[("looper-yields", wasm::LOOPER)]);
    let gw = p
        .start(
            "routes:\n  - name: loop\n    match: { path_prefix: /loop }\n    target: { echo: {} }\n    plugins:\n      - name: looper-yields\n        limits: { deadline: 2s }\n  - name: plain\n    match: { path_prefix: /plain }\n    target: { static: { status: 200, body: plain } }\n",
        )
        .await;
    let addr = gw.addr("public");
    let stats = stats_for("looper-yields");
    let pool = gw.snapshot().plugin_pools().into_iter().find(|p| &**p.plugin() == "looper-yields").unwrap();
    assert_eq!(pool.path(), CallPath::Sync, "it imports nothing that waits");

    let first = Client::http1().get(&url(addr, "/loop")).await;
    assert_eq!(first.status, 503, "{}", first.text());
    assert_eq!(first.json()["error"]["code"], "plugin_timeout");
    assert_eq!(stats.yields(), 0, "a call on the synchronous path cannot yield");
    assert_eq!(pool.path(), CallPath::Async, "the long call moved its entry");

    let looping = tokio::spawn(async move { Client::http1().get(&url(addr, "/loop")).await });
    // This loop runs only when the looping call lets the thread go.
    while stats.yields() == 0 {
        assert!(!looping.is_finished(), "the call finished without yielding once");
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let plain = Client::http1().get(&url(addr, "/plain")).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.text(), "plain");
    assert!(!looping.is_finished(), "/plain was answered while the plugin still looped");
    let second = looping.await.unwrap();
    assert_eq!(second.json()["error"]["code"], "plugin_timeout", "it is still stopped at its deadline");
    assert_eq!(stats.errors_of("deadline"), 2);
    assert!(stats.async_calls() > 0);
    let metrics = sluice::observability::admin::metrics(&gw);
    let line = format!("sluice_plugin_yields_total{{plugin=\"looper-yields\"}} {}", stats.yields());
    assert!(metrics.contains(&line), "{line} in\n{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_faults_in_a_row_each_get_the_policy_and_leave_no_instance_behind() {
    const FAULTS: usize = 10_000;
    let up = TestServer::named("upstream").await;
    let p = Plugins::with(&[("panicker-10k", wasm::PANICKER), ("panicker-10k-open", wasm::PANICKER)]);
    let gw = p
        .start(&format!(
            "{}routes:\n  - name: closed\n    match: {{ path_prefix: /closed }}\n    target: {{ upstream: app }}\n    plugins:\n      - name: panicker-10k\n  - name: open\n    match: {{ path_prefix: /open }}\n    target: {{ upstream: app }}\n    plugins:\n      - {{ name: panicker-10k-open, on_error: fail_open }}\n  - name: plain\n    match: {{ path_prefix: /plain }}\n    target: {{ upstream: app }}\n",
            upstream(up.addr)
        ))
        .await;
    let addr = gw.addr("public");
    // Two clients in parallel, one per route, each on its keep-alive connection.
    let hammer = |path: &'static str, want: u16| {
        tokio::spawn(async move {
            let client = Client::http1();
            for i in 0..FAULTS / 2 {
                let reply = client.get(&url(addr, path)).await;
                assert_eq!(reply.status, want, "{path}, request {i}: {}", reply.text());
            }
        })
    };
    let (closed, open) = (hammer("/closed", 500), hammer("/open", 200));
    closed.await.unwrap();
    open.await.unwrap();
    for (plugin, path) in [("panicker-10k", "/closed"), ("panicker-10k-open", "/open")] {
        let stats = stats_for(plugin);
        assert_eq!(stats.errors_of("trap"), (FAULTS / 2) as u64, "{plugin}: one fault per request");
        // Every faulted instance was dropped and replaced: nothing leaked, nothing busy.
        let pool = gw.snapshot().plugin_pools().into_iter().find(|p| &**p.plugin() == plugin).unwrap();
        assert_eq!(pool.live(), 0, "{plugin} ({path}): faulted instances are not kept");
        assert_eq!(
            stats.made(Made::Request),
            (FAULTS / 2 - 1) as u64,
            "{plugin}: one fresh instance per fault"
        );
    }
    // The gateway goes on serving every route.
    let client = Client::http1();
    assert_eq!(client.get(&url(addr, "/plain")).await.text(), "upstream");
    assert_eq!(client.get(&url(addr, "/open")).await.text(), "upstream");
}

/// Sends `script` (and `response_script`) to the `scripted` plugin.
async fn scripted(
    client: &Client,
    addr: std::net::SocketAddr,
    path: &str,
    script: &str,
    response: &str,
) -> Reply {
    let mut req = http::Request::get(url(addr, path)).header("x-script", script);
    if !response.is_empty() {
        req = req.header("x-script-response", response);
    }
    client.send(req.body(full("")).unwrap()).await
}

#[tokio::test]
async fn what_a_plugin_hands_the_host_is_bounded_and_a_flood_is_a_fault_under_the_policy() {
    let up = TestServer::named("upstream").await;
    let p = Plugins::with(&[("scripted-flood", wasm::SCRIPTED), ("scripted-flood-open", wasm::SCRIPTED)]);
    let gw = p
        .start(&format!(
            "{}routes:\n  - name: closed\n    match: {{ path_prefix: /closed }}\n    target: {{ upstream: app }}\n    plugins:\n      - name: scripted-flood\n        grants: {{ kv: true }}\n        limits: {{ deadline: 2s }}\n  - name: open\n    match: {{ path_prefix: /open }}\n    target: {{ echo: {{}} }}\n    plugins:\n      - {{ name: scripted-flood-open, on_error: fail_open, grants: {{ kv: true }}, limits: {{ deadline: 2s }} }}\n",
            upstream(up.addr)
        ))
        .await;
    let addr = gw.addr("public");
    let client = Client::http1_max_headers(4096);
    // Each flood is far past its bound (1,024 headers, response edits or context
    // entries per request; see SECURITY.md) and would grow the host's memory, or
    // overflow a header map, if the host took it.
    let floods = [
        ("request headers", "ah x-flood v *40000", ""),
        ("distinct request headers", "sh x-{i} v *40000", ""),
        ("response edits", "ea x-flood v *40000", ""),
        ("request context", "cx k{i} v *40000", ""),
        ("response headers", "", "ah x-flood v *40000"),
        ("an answer's headers", "rsh 40000", ""),
    ];
    for (what, script, response) in floods {
        let before = stats_for("scripted-flood").errors_of("output");
        let reply = scripted(&client, addr, "/closed", script, response).await;
        assert_eq!(reply.status, 500, "{what}: {}", reply.text());
        assert_eq!(reply.json()["error"]["code"], "plugin_failed", "{what}");
        assert_eq!(stats_for("scripted-flood").errors_of("output"), before + 1, "{what}: an output fault");
        // Failing open, the plugin is skipped and the request goes on (with what the
        // plugin changed before the fault, as the SDK documents; the echo target
        // takes any number of headers).
        let before = stats_for("scripted-flood-open").errors_of("output");
        let reply = scripted(&client, addr, "/open", script, response).await;
        assert_eq!(reply.status, 200, "{what}, open: {}", reply.text());
        assert_eq!(stats_for("scripted-flood-open").errors_of("output"), before + 1, "{what}, open");
    }
    // Up to the bound is fine (the echo target takes any number of headers).
    let reply = scripted(&client, addr, "/open", "ah x-many v *1000", "ah x-many v *1000").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.headers.get_all("x-many").iter().count(), 1000);
    // A 1 GiB body is past the plugin's memory cap: a memory fault, not a host copy.
    let before = stats_for("scripted-flood").errors_of("memory");
    let reply = scripted(&client, addr, "/closed", "sb 1073741824", "").await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert_eq!(stats_for("scripted-flood").errors_of("memory"), before + 1);
    assert_eq!(scripted(&client, addr, "/closed", "", "").await.text(), "upstream", "still serving");
}

/// A resource handle the plugin was not given in this call (kept from an earlier
/// call, or made up) reaches nothing: the call traps under the entry's policy.
#[tokio::test]
async fn a_stale_or_forged_resource_handle_is_a_trap_under_the_policy() {
    let p = Plugins::with(&[("scripted-stale", wasm::SCRIPTED)]);
    let gw = p
        .start("routes:\n  - name: r\n    match: { path_prefix: / }\n    target: { echo: {} }\n    plugins:\n      - name: scripted-stale\n        grants: { kv: true }\n")
        .await;
    let (addr, client) = (gw.addr("public"), Client::http1());
    let stats = stats_for("scripted-stale");
    // In the response phase no `request` handle is live: the request phase's (any of
    // the first few, whichever it was) is stale, and the rest never existed.
    let forged = ["0", "1", "2", "3", "4", "4294967295"];
    for (n, handle) in forged.iter().enumerate() {
        let reply = scripted(&client, addr, "/", "", &format!("stale {handle}")).await;
        assert_eq!(reply.status, 500, "response phase, handle {handle}: {}", reply.text());
        assert_eq!(reply.json()["error"]["code"], "plugin_failed");
        assert_eq!(stats.errors_of("trap"), n as u64 + 1, "handle {handle}: one trap");
    }
    // In the request phase, a handle past any the call was given.
    let reply = scripted(&client, addr, "/", "stale 4294967295", "").await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert_eq!(stats.errors_of("trap"), forged.len() as u64 + 1);
    // The faulted instances were dropped; the route goes on serving.
    let reply = scripted(&client, addr, "/", "sh x-a b", "").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(stats.errors().iter().map(|(_, n)| n).sum::<u64>(), forged.len() as u64 + 1);
}

#[tokio::test]
async fn a_plugin_cannot_answer_with_an_informational_status() {
    let p = Plugins::with(&[("scripted-status", wasm::SCRIPTED)]);
    let gw = p
        .start("routes:\n  - name: r\n    match: { path_prefix: / }\n    target: { echo: {} }\n    plugins:\n      - name: scripted-status\n        grants: { kv: true }\n")
        .await;
    let (addr, client) = (gw.addr("public"), Client::http1());
    for status in ["100", "101", "103"] {
        // An answer with it is an invalid return: the gateway's 500, not a switch.
        let before = stats_for("scripted-status").errors_of("bad_return");
        let reply = scripted(&client, addr, "/", &format!("rs {status} x"), "").await;
        assert_eq!(reply.status, 500, "answer {status}: {}", reply.text());
        assert_eq!(reply.json()["error"]["code"], "plugin_failed");
        assert_eq!(stats_for("scripted-status").errors_of("bad_return"), before + 1);
        // `set-status` refuses it (the plugin ignores the refusal): the echo's 200 stays.
        let reply = scripted(&client, addr, "/", "", &format!("st {status}")).await;
        assert_eq!(reply.status, 200, "set-status {status}: {}", reply.text());
    }
}
