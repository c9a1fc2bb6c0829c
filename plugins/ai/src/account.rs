//! Accounting and budgets: tokens and cost per call as labeled metrics and access-log
//! annotations, and per-consumer budgets (tokens per minute, cost per UTC day) kept
//! in the gateway's `kv` store so they hold across instances (Redis). A budget is
//! the route's own unless its config names a `shared` one.
//!
//! A call is admitted while its consumer's budget is not yet exhausted; its actual
//! usage is added when the response ends, so one call may overshoot by its own size.

use std::time::Duration;

use sluice_plugin_sdk::{Consumer, kv, log, metrics};

use crate::call::Call;
use crate::config::{BudgetsConfig, PriceConfig};
use crate::openai::{ApiError, Usage};

const MINUTE_MS: u64 = 60_000;
const DAY_MS: u64 = 86_400_000;

/// Millionths of the price currency in one unit.
pub const MICROS: f64 = 1_000_000.0;

/// Which budget a call counts against: the route's own (or the `shared` one it
/// names), of the consumer, else of the client IP.
pub fn budget_key(
    b: Option<&BudgetsConfig>,
    route: &str,
    consumer: Option<&Consumer>,
    client_ip: &str,
) -> String {
    let scope = match b.and_then(|b| b.shared.as_deref()) {
        Some(name) => format!("shared:{name}"),
        None => format!("route:{route}"),
    };
    match consumer {
        Some(c) => format!("{scope}|c:{}", c.name),
        None => format!("{scope}|ip:{client_ip}"),
    }
}

fn tokens_key(who: &str, now_ms: u64) -> String {
    format!("tpm:{who}:{}", now_ms / MINUTE_MS)
}

fn cost_key(who: &str, now_ms: u64) -> String {
    format!("cost:{who}:{}", now_ms / DAY_MS)
}

fn read(key: &str) -> Result<i64, String> {
    match kv::get(key) {
        Ok(Some(v)) => Ok(String::from_utf8_lossy(&v).trim().parse().unwrap_or(0)),
        Ok(None) => Ok(0),
        Err(e) => Err(format!("{e:?}")),
    }
}

/// `Err` (a `429` in OpenAI's shape, with `retry-after` seconds) when a budget is used
/// up. A kv store that cannot be reached lets the call through (logged).
pub fn check(b: &BudgetsConfig, who: &str, now_ms: u64) -> Result<(), (ApiError, u64)> {
    let exhausted = |what: &str, retry_ms: u64| {
        let e = ApiError::new(
            429,
            "rate_limit_error",
            Some("budget_exceeded"),
            format!("the {what} budget of this consumer is used up"),
        );
        (e, retry_ms.div_ceil(1000).max(1))
    };
    if let Some(limit) = b.tokens_per_minute {
        match read(&tokens_key(who, now_ms)) {
            Ok(used) if used >= limit as i64 => {
                return Err(exhausted("tokens per minute", MINUTE_MS - now_ms % MINUTE_MS));
            }
            Ok(_) => {}
            Err(e) => log::warn(&format!("token budget not checked (kv unavailable): {e}")),
        }
    }
    if let Some(limit) = b.cost_per_day {
        match read(&cost_key(who, now_ms)) {
            Ok(used) if used as f64 >= limit * MICROS => {
                return Err(exhausted("daily cost", DAY_MS - now_ms % DAY_MS));
            }
            Ok(_) => {}
            Err(e) => log::warn(&format!("cost budget not checked (kv unavailable): {e}")),
        }
    }
    Ok(())
}

/// The cost of `u` in millionths of the price currency.
pub fn cost_micros(price: PriceConfig, u: Usage) -> u64 {
    let cost = (u.input as f64 * price.input_per_1k + u.output as f64 * price.output_per_1k) / 1000.0;
    (cost * MICROS).round() as u64
}

/// Records a finished call: metrics, access-log annotations, budget counters.
pub fn record(
    call: &Call,
    provider: &str,
    price: PriceConfig,
    budgets: Option<&BudgetsConfig>,
    u: Usage,
    status: u16,
) {
    let cost = cost_micros(price, u);
    let source = if u.estimated { "estimate" } else { "provider" };
    let status = status.to_string();
    // `model` is the alias the client asked for, `provider_model` what it resolved to
    // (both bounded by the config), everywhere: metrics, the access log, the answer.
    let base = [
        ("route", call.route.as_str()),
        ("consumer", call.consumer.as_str()),
        ("provider", provider),
        ("model", call.alias.as_str()),
        ("provider_model", call.model.as_str()),
    ];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
        base.iter().copied().chain(extra.iter().copied()).collect()
    };
    let mut requests = with(&[]);
    requests.push(("status", status.as_str()));
    metrics::counter_add_labeled("ai_requests", &requests, 1);
    if u.input + u.output > 0 {
        metrics::counter_add_labeled("ai_tokens", &with(&[("type", "input"), ("source", source)]), u.input);
        metrics::counter_add_labeled("ai_tokens", &with(&[("type", "output"), ("source", source)]), u.output);
        metrics::counter_add_labeled("ai_cost_micros", &with(&[("source", source)]), cost);
    }
    log::annotate("provider", provider);
    log::annotate("model", &call.alias);
    log::annotate("provider_model", &call.model);
    log::annotate("tokens_in", &u.input.to_string());
    log::annotate("tokens_out", &u.output.to_string());
    log::annotate("cost", &format!("{:.6}", cost as f64 / MICROS));
    if u.estimated {
        log::annotate("usage", "estimated");
    }
    let Some(b) = budgets else { return };
    let now = sluice_plugin_sdk::clock::now_ms();
    let result = (|| {
        if b.tokens_per_minute.is_some() {
            let ttl = Some(Duration::from_millis(2 * MINUTE_MS));
            kv::increment(&tokens_key(&call.budget_key, now), (u.input + u.output) as i64, ttl)?;
        }
        if b.cost_per_day.is_some() {
            kv::increment(
                &cost_key(&call.budget_key, now),
                cost as i64,
                Some(Duration::from_millis(2 * DAY_MS)),
            )?;
        }
        Ok::<_, kv::KvError>(())
    })();
    if let Err(e) = result {
        log::warn(&format!("budget not updated (kv unavailable): {e:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_counted_in_micros() {
        let price = PriceConfig { input_per_1k: 0.5, output_per_1k: 1.5 };
        assert_eq!(cost_micros(price, Usage { input: 1000, output: 2000, estimated: false }), 3_500_000);
        assert_eq!(cost_micros(price, Usage { input: 1, output: 0, estimated: false }), 500);
    }

    #[test]
    fn budgets_refuse_once_used_up() {
        let b = BudgetsConfig { tokens_per_minute: Some(10), cost_per_day: None, shared: None };
        let now = 1_000 * MINUTE_MS + 15_000;
        assert!(check(&b, "c:ann", now).is_ok());
        kv::increment(&tokens_key("c:ann", now), 10, None).unwrap();
        let (e, retry) = check(&b, "c:ann", now).unwrap_err();
        assert_eq!((e.status, retry), (429, 45));
        assert!(check(&b, "c:bob", now).is_ok(), "budgets are per consumer");
        assert!(check(&b, "c:ann", now + MINUTE_MS).is_ok(), "a new minute starts afresh");
        let c = BudgetsConfig { tokens_per_minute: None, cost_per_day: Some(0.001), shared: None };
        kv::increment(&cost_key("c:ann", now), 1000, None).unwrap();
        assert_eq!(
            check(&c, "c:ann", now).unwrap_err().0.message,
            "the daily cost budget of this consumer is used up"
        );
    }
}
