//! The glue behind [`export!`](crate::export): keeps the configured plugin of this
//! instance and forwards every export to it. Not public API.

use std::cell::RefCell;
use std::rc::Rc;

use crate::bindings::sluice::plugin::types as wit;
use crate::{Plugin, Request, Response};

thread_local! {
    static PLUGIN: RefCell<Option<Rc<dyn std::any::Any>>> = const { RefCell::new(None) };
}

fn get<P: Plugin>() -> Rc<P> {
    let any = PLUGIN.with(|p| p.borrow().clone()).expect("the host calls configure before any phase");
    any.downcast::<P>().unwrap_or_else(|_| unreachable!("one plugin type per component"))
}

/// Parses `config` into `P` and runs [`Plugin::init`].
pub fn parse<P: Plugin>(config: &str) -> Result<P, String> {
    let config = if config.trim().is_empty() { "{}" } else { config };
    let mut p: P = serde_json::from_str(config).map_err(|e| format!("invalid config: {e}"))?;
    p.init()?;
    Ok(p)
}

/// `info` export (the host calls it after `configure`).
pub fn info<P: Plugin>() -> wit::PluginInfo {
    let configured = PLUGIN.with(|p| p.borrow().clone());
    let phases = match configured.and_then(|any| any.downcast::<P>().ok()) {
        Some(p) => p.phases(),
        None => P::PHASES,
    };
    wit::PluginInfo { phases }
}

/// `configure` export.
pub fn configure<P: Plugin>(config: &str) -> Result<(), String> {
    let p = parse::<P>(config)?;
    PLUGIN.with(|slot| *slot.borrow_mut() = Some(Rc::new(p)));
    Ok(())
}

/// `on-request` export.
pub fn on_request<P: Plugin>(req: &wit::Request) -> wit::Decision {
    get::<P>().on_request(&mut Request::host(req)).into_wit()
}

/// `on-response` export.
pub fn on_response<P: Plugin>(resp: &wit::Response) -> wit::Decision {
    get::<P>().on_response(&mut Response::host(resp)).into_wit()
}

/// `on-response-chunk` export.
pub fn on_response_chunk<P: Plugin>(chunk: Vec<u8>, last: bool) -> Vec<u8> {
    get::<P>().on_response_chunk(chunk, last)
}
