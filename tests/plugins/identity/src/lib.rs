//! Exercises the per-request parts of the contract: with `role: setter` it makes the
//! `x-as` header the request's consumer (groups from `x-groups`, comma-separated)
//! and keeps the path in its request context; with `role: reader` it reports what it
//! sees (consumer, client IP, path parameters) in `x-seen-*` request headers. In the
//! response phase both report the consumer and their own context value.
use sluice_plugin_sdk::{Consumer, Decision, Plugin, Request, Response, export};

#[derive(serde::Deserialize)]
struct Identity {
    role: String,
}

impl Plugin for Identity {
    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        if self.role == "setter" {
            if let Some(name) = req.header("x-as") {
                let groups = req.header("x-groups").unwrap_or_default();
                let groups = groups.split(',').filter(|g| !g.is_empty()).map(str::to_owned).collect();
                req.set_consumer(Some(Consumer { name, groups }));
            }
            let path = req.path();
            req.set_context("path", &path);
        } else {
            let consumer = req.consumer().map(|c| format!("{}:{}", c.name, c.groups.join("+")));
            let params: Vec<String> = req.path_params().iter().map(|(k, v)| format!("{k}={v}")).collect();
            let ip = req.client_ip();
            // The setter's context is private to it.
            let foreign = req.context("path").unwrap_or_else(|| "-".into());
            req.set_header("x-seen-consumer", consumer.as_deref().unwrap_or("-")).unwrap();
            req.set_header("x-seen-ip", &ip).unwrap();
            let id = req.request_id();
            req.set_header("x-seen-request-id", &id).unwrap();
            req.set_header("x-seen-params", &params.join("&")).unwrap();
            req.set_header("x-seen-foreign-context", &foreign).unwrap();
        }
        Decision::Continue
    }

    fn on_response(&self, resp: &mut Response<'_>) -> Decision {
        let consumer = resp.consumer().map(|c| c.name).unwrap_or_else(|| "-".into());
        let context = resp.context("path").unwrap_or_else(|| "-".into());
        resp.append_header("x-consumer-seen-by", &format!("{}={consumer}", self.role)).unwrap();
        resp.append_header("x-context-seen-by", &format!("{}={context}", self.role)).unwrap();
        Decision::Continue
    }
}

export!(Identity);
