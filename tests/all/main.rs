//! End-to-end tests: real gateways, real upstreams, real sockets on 127.0.0.1:0.
//! One binary, many modules (one link, fast CI).

mod admin_token;
mod builtin_ai;
mod builtin_auth;
mod builtin_cors;
mod builtin_rate_limit;
mod builtin_transform;
mod call_log;
mod config_ui;
mod dashboard;
mod devkit;
mod functions;
mod fuzz;
mod harness;
mod hostile;
mod hostile_plugins;
mod idle;
mod instance_pool;
mod kv_redis;
mod lifecycle;
mod limits;
mod llm_server;
mod mcp;
mod metrics;
mod plugins;
mod proxying;
mod quickstart;
mod reload;
mod resilience;
mod routing;
mod split;
mod tls_h2;
mod trace_context;
mod workers;
