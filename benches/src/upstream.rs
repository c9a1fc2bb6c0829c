//! `bench-upstream`: the upstream server of the load benches.
//!
//! A tiny, fast HTTP/1.1 server that answers every request (any method, any path)
//! with `200 OK` and a small fixed body, keeping connections alive and with
//! `TCP_NODELAY` set. Every peer of a comparison (nginx, HAProxy, Sluice) proxies to
//! the same instance, so its cost cancels out of the ratios.
//!
//! ```text
//! bench-upstream [--addr 127.0.0.1:9000] [--threads 1] [--body-bytes N]
//! ```
//!
//! `--body-bytes N` answers with an `N`-byte body instead of the small fixed one (the
//! slow-reader memory bench streams large responses to clients that do not read).
//!
//! `--threads 1` (the default) runs a single-threaded runtime; more threads use the
//! multi-threaded one. A request body, when there is one, is read and discarded so
//! the connection stays reusable. The process prints `listening on ADDR` once bound
//! and runs until killed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The fixed response body (small, like the reference figures' "tiny body").
const BODY: &[u8] = b"hello from bench-upstream\n";

const USAGE: &str = "usage: bench-upstream [--addr HOST:PORT] [--threads N]\n\
\n  --addr HOST:PORT   address to listen on (default 127.0.0.1:9000)\
\n  --threads N        runtime worker threads (default 1)\
\n  --body-bytes N     answer with an N-byte body (default: a 26-byte greeting)";

#[derive(Debug)]
struct Args {
    addr: SocketAddr,
    threads: usize,
    body: Bytes,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args { addr: "127.0.0.1:9000".parse()?, threads: 1, body: Bytes::from_static(BODY) };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        let mut value = |name: &str| -> anyhow::Result<String> {
            inline.clone().or_else(|| it.next()).with_context(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "--addr" => {
                let v = value("--addr")?;
                args.addr = v.parse().with_context(|| format!("invalid --addr {v:?}"))?;
            }
            "--threads" => {
                let v = value("--threads")?;
                args.threads = v.parse().with_context(|| format!("invalid --threads {v:?}"))?;
                if args.threads == 0 {
                    bail!("--threads must be at least 1");
                }
            }
            "--body-bytes" => {
                let v = value("--body-bytes")?;
                let n: usize = v.parse().with_context(|| format!("invalid --body-bytes {v:?}"))?;
                args.body = Bytes::from(vec![b'x'; n]);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(args)
}

async fn answer(req: Request<Incoming>, body: Bytes) -> Result<Response<Full<Bytes>>, Infallible> {
    if !req.body().is_end_stream() {
        // Read and drop the body so the connection can carry the next request.
        let _ = req.into_body().collect().await;
    }
    let mut resp = Response::new(Full::new(body));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(resp)
}

async fn serve(addr: SocketAddr, body: Bytes) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                eprintln!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(move |req| answer(req, body.clone())))
                .await;
        });
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench-upstream: {e:#}");
            return ExitCode::from(2);
        }
    };
    let rt = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench-upstream: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(args.addr, args.body)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-upstream: {e:#}");
            ExitCode::FAILURE
        }
    }
}
