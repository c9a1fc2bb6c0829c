//! One request through a function: a fresh instance in a task of its own, the
//! response head handed back as soon as the function sets it, and its body streamed
//! while the function runs on. How the run ended travels to the end of the body, so
//! a function that fails mid-body ends the client's response with an error rather
//! than a clean-looking truncation.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt as _;
use tokio::sync::oneshot;
use wasmtime::Store;
use wasmtime::component::Resource;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p2::types::{HostIncomingRequest, HostResponseOutparam};

use super::Function;
use super::error::{FunctionError, FunctionErrorKind};
use super::state::{FunctionState, on_tick};
use crate::body::{self, Body, BoxError};

/// What the function's task reports when it ends.
type Outcome = Result<(), FunctionErrorKind>;

impl Function {
    /// Serves `req` (whose head the route's chain has already seen) with a fresh
    /// instance; `https` when the client came over TLS. The error is the function's
    /// fault when it set no response; a fault after that ends the response body
    /// with an error, and is logged.
    pub async fn serve<B>(&self, req: Request<B>, https: bool) -> Result<Response<Body>, FunctionError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let Ok(place) = Arc::clone(&self.places).try_acquire_owned() else {
            return Err(self.error(FunctionErrorKind::Busy(self.limits.max_concurrent)));
        };
        let mut store = self.store();
        let req =
            req.map(|b| b.map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(e.into().to_string()))));
        let scheme = if https { Scheme::Https } else { Scheme::Http };
        let (head_tx, head_rx) = oneshot::channel();
        let answered = Arc::new(AtomicBool::new(false));
        let set = Arc::clone(&answered);
        let mut http = store.data_mut().http();
        let incoming = http.new_incoming_request(scheme, req);
        let out = http.new_response_outparam_from_callback(move |resp| {
            set.store(true, Ordering::Release);
            let _ = head_tx.send(resp);
        });
        let (incoming, out) = match (incoming, out) {
            (Ok(i), Ok(o)) => (i, o),
            (Err(e), _) | (_, Err(e)) => return Err(self.error(FunctionErrorKind::Request(format!("{e:#}")))),
        };

        let done_rx = self.spawn(store, incoming, out, place, answered);
        match head_rx.await {
            Ok(Ok(resp)) => Ok(response(resp, done_rx)),
            Ok(Err(code)) => Err(self.error(FunctionErrorKind::Answered(format!("{code:?}")))),
            Err(_) => {
                let kind = match done_rx.await {
                    Ok(Err(kind)) => kind,
                    Ok(Ok(())) => FunctionErrorKind::NoResponse,
                    Err(_) => FunctionErrorKind::Trap("the function's task ended without a word".into()),
                };
                Err(self.error(kind))
            }
        }
    }

    /// A fresh store under the function's memory cap and deadline.
    fn store(&self) -> Store<FunctionState> {
        let state = FunctionState::new(self.limits.memory, self.limits.deadline, Arc::clone(&self.outgoing));
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_callback(on_tick);
        // Before instantiating: a deadline of 0 would trap at once.
        store.set_epoch_deadline(1);
        store
    }

    /// Runs the function in a task of its own (it may go on writing its body after
    /// `serve` returned), holding its `place` until it ends; the receiver gets how it
    /// ended.
    fn spawn(
        &self,
        mut store: Store<FunctionState>,
        incoming: Resource<HostIncomingRequest>,
        out: Resource<HostResponseOutparam>,
        place: tokio::sync::OwnedSemaphorePermit,
        answered: Arc<AtomicBool>,
    ) -> oneshot::Receiver<Outcome> {
        let (done_tx, done_rx) = oneshot::channel::<Outcome>();
        let pre = self.pre.clone();
        let limits = self.limits;
        let (route, component) = (Arc::clone(&self.route), Arc::clone(&self.component));
        tokio::spawn(async move {
            let _place = place;
            let ran = tokio::time::timeout(limits.timeout, call(&pre, &mut store, incoming, out)).await;
            let outcome = match ran {
                Err(_) => Err(FunctionErrorKind::Timeout(limits.timeout)),
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(FunctionErrorKind::from_call(&e, store.data(), limits.deadline)),
            };
            // Dropping the store drops what the function left unanswered.
            drop(store);
            if let Err(kind) = &outcome
                && answered.load(Ordering::Acquire)
            {
                // Before a response, the proxy logs the error it answers with.
                tracing::warn!(%route, function = %component, error = %kind, "function failed after it answered; its response body was cut short");
            }
            let _ = done_tx.send(outcome);
        });
        done_rx
    }
}

/// Instantiates the function and calls its handler.
async fn call(
    pre: &ProxyPre<FunctionState>,
    store: &mut Store<FunctionState>,
    req: Resource<HostIncomingRequest>,
    out: Resource<HostResponseOutparam>,
) -> wasmtime::Result<()> {
    let proxy = pre.instantiate_async(&mut *store).await?;
    proxy.wasi_http_incoming_handler().call_handle(&mut *store, req, out).await
}

/// The gateway's response for the function's: hop-by-hop headers go, and the body
/// reports how the function ended.
fn response(resp: Response<HyperOutgoingBody>, done: oneshot::Receiver<Outcome>) -> Response<Body> {
    let mut resp = resp.map(|inner| body::boxed(FunctionBody { inner, done: Some(done) }));
    crate::proxy::headers::strip_hop_by_hop(resp.headers_mut(), false);
    resp
}

pin_project_lite::pin_project! {
    /// A function's response body: the frames it writes, then — when it stops writing —
    /// how its run ended: cleanly (the body ends) or with a fault (an error frame, so
    /// the client sees a broken response rather than a short one).
    struct FunctionBody {
        #[pin]
        inner: HyperOutgoingBody,
        done: Option<oneshot::Receiver<Outcome>>,
    }
}

impl http_body::Body for FunctionBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Some(frame) = ready!(this.inner.poll_frame(cx)) {
            return Poll::Ready(Some(frame.map_err(|e| Box::new(e) as BoxError)));
        }
        let Some(done) = this.done.as_mut() else { return Poll::Ready(None) };
        let outcome = ready!(Pin::new(done).poll(cx));
        *this.done = None;
        match outcome {
            Ok(Err(kind)) => Poll::Ready(Some(Err(Box::new(kind)))),
            Ok(Ok(())) | Err(_) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
