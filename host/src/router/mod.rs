//! The router: host + method + path (+ headers) → the index of the winning route.
//! (Stub: the real matcher replaces this.)

use std::sync::Arc;

use http::{HeaderMap, Method};

use crate::config::{Problem, RouteConfig};

/// Path parameters captured by `{name}` segments, in pattern order.
pub type PathParams = Vec<(Arc<str>, String)>;

/// The result of a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// Index of the route in the slice given to [`Router::build`].
    pub route: usize,
    /// Captured path parameters.
    pub params: PathParams,
}

/// A compiled, immutable routing table.
#[derive(Debug, Default)]
pub struct Router {
    routes: usize,
}

impl Router {
    /// Compiles `routes` (a subset of the config's routes, with their positions in the
    /// config for error paths: `(config_index, route)`).
    pub fn build(routes: &[(usize, &RouteConfig)]) -> Result<Router, Vec<Problem>> {
        Ok(Router { routes: routes.len() })
    }

    /// Finds the most specific route for a request. `host` is the request's host
    /// without port, as sent (not yet lowercased).
    pub fn find(
        &self,
        _host: Option<&str>,
        _method: &Method,
        _path: &str,
        _headers: &HeaderMap,
    ) -> Option<RouteMatch> {
        (self.routes > 0).then(|| RouteMatch { route: 0, params: Vec::new() })
    }
}
