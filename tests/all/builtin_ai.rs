//! The built-in `ai` plugin end to end: a real gateway in front of the test LLM server
//! (`llm_server`), which speaks OpenAI, Anthropic and Gemini. Clients speak OpenAI's
//! chat-completions format (plain and streamed) or call prompt-template routes.

use std::io::{Read, Write};
use std::time::Duration;

use http::Request;
use serde_json::{Value, json};
use sluice::Gateway;
use tempfile::TempDir;

use crate::harness::{Client, Reply, dead_addr, full, gateway, url};
use crate::llm_server::{LlmServer, PROMPT_TOKENS, answer_for};

/// Stands for the test LLM server's base URL in plugin configs.
const LLM_URL: &str = "http://llm.test";

/// The gateway and the LLM server behind it.
/// The plugins' clock in budget tests: 2023-11-14T22:13:30Z, mid-minute and mid-day.
const FIXED_NOW_MS: u64 = 1_700_000_010_000;

struct Ai {
    gw: Gateway,
    llm: LlmServer,
    _dir: TempDir,
}

/// Models clients name (alias → provider): `gpt` (OpenAI), `claude` (Anthropic),
/// `gemini` (Gemini), all served by the test server through the `llm` pool.
fn providers() -> Value {
    let price = json!({"input_per_1k": 1.0, "output_per_1k": 2.0});
    json!([
        {"name": "oa", "kind": "openai", "upstream": "llm", "api_key_secret": "oa-key",
         "models": {"gpt": "gpt-test"}, "price": price},
        {"name": "ant", "kind": "anthropic", "upstream": "llm", "api_key_secret": "ant-key",
         "models": {"claude": "claude-test"}, "price": price},
        {"name": "gem", "kind": "gemini", "upstream": "llm", "api_key_secret": "gem-key",
         "models": {"gemini": "gemini-test"}, "price": price}
    ])
}

fn chat_config() -> Value {
    json!({"mode": "chat", "providers": providers()})
}

impl Ai {
    /// A gateway whose `llm` pool has `targets` (the test server when empty) and these
    /// routes: (name, match, plugin config).
    async fn start(routes: &[(&str, &str, Value)]) -> Ai {
        Self::start_with_targets(routes, &[]).await
    }

    /// [`Ai::start`] with the plugins' clock standing still mid-minute and mid-day,
    /// so a budget window never turns over during a test.
    async fn start_at_a_fixed_time(routes: &[(&str, &str, Value)]) -> Ai {
        Self::start_with(routes, &[], Some(FIXED_NOW_MS)).await
    }

    async fn start_with_targets(
        routes: &[(&str, &str, Value)],
        extra_targets: &[std::net::SocketAddr],
    ) -> Ai {
        Self::start_with(routes, extra_targets, None).await
    }

    async fn start_with(
        routes: &[(&str, &str, Value)],
        extra_targets: &[std::net::SocketAddr],
        fixed_now_ms: Option<u64>,
    ) -> Ai {
        let llm = LlmServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let mut secrets = String::new();
        for (name, value) in [("oa-key", "sk-openai"), ("ant-key", "sk-ant"), ("gem-key", "gem-key-1")] {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("{value}\n")).unwrap();
            secrets.push_str(&format!("{name}: {{ file: {:?} }}, ", path.display().to_string()));
        }
        let mut targets = String::new();
        for t in extra_targets.iter().chain([&llm.addr()]) {
            targets.push_str(&format!("      - address: {t}\n"));
        }
        let llm_addr = llm.addr();
        // `unreachable`: a pool whose only target refuses connections.
        let dead = dead_addr().await;
        let mut yaml = format!(
            "version: 1\nadmin: {{ address: 127.0.0.1:0 }}\nlisteners:\n  - name: public\n    address: 127.0.0.1:0\n\
             upstreams:\n  llm:\n    targets:\n{targets}    health: {{ passive: {{ failures: 0 }} }}\n  unreachable:\n    targets:\n      - address: {dead}\n    retries: {{ attempts: 0 }}\nroutes:\n"
        );
        for (name, matcher, config) in routes {
            let config = config.to_string().replace(LLM_URL, &format!("http://{llm_addr}"));
            // Routes named `auth-*` authenticate first: API keys `k-ann` and `k-bob` in
            // `x-api-key` are the consumers `ann` and `bob`.
            let auth = if name.starts_with("auth-") {
                format!(
                    "      - name: auth\n        config: {{ api_key: {{ keys: [{{ key: k-ann, consumer: ann }}, {{ key: k-bob, consumer: bob }}] }} }}\n        grants: {{ kv: true, http: {{ allow: [] }}, secrets: {{ {secrets} }} }}\n"
                )
            } else if name.starts_with("sdk-") {
                // Routes named `sdk-*` take the key the way SDKs send it:
                // `Authorization: Bearer gateway-token` is the consumer `sdk`.
                "      - name: auth\n        config: { api_key: { sources: [{ bearer: authorization }], keys: [{ key: gateway-token, consumer: sdk }] } }\n".to_owned()
            } else {
                String::new()
            };
            yaml.push_str(&format!(
                "  - name: {name}\n    match: {matcher}\n    target: {{ upstream: llm }}\n    plugins:\n{auth}      - name: ai\n        config: {config}\n        grants: {{ kv: true, http: {{ allow: [\"{llm_addr}\"] }}, secrets: {{ {secrets} }} }}\n        limits: {{ deadline: 2s }}\n"
            ));
        }
        let gw = match fixed_now_ms {
            None => gateway(&yaml).await,
            Some(now_ms) => sluice::Gateway::builder()
                .config_yaml(&yaml)
                .unwrap()
                .load_options(sluice::plugins::LoadOptions {
                    clock: sluice::plugins::host_api::PluginClock::Fixed { now_ms },
                    ..Default::default()
                })
                .start()
                .await
                .unwrap(),
        };
        Ai { gw, llm, _dir: dir }
    }

    fn url(&self, path: &str) -> String {
        url(self.gw.addr("public"), path)
    }

    async fn post(&self, path: &str, body: &Value) -> Reply {
        let req = Request::post(self.url(path))
            .header("content-type", "application/json")
            .header("authorization", "Bearer gateway-token")
            .body(full(body.to_string()))
            .unwrap();
        Client::http1().send(req).await
    }

    async fn chat(&self, body: &Value) -> Reply {
        self.post("/v1/chat/completions", body).await
    }

    async fn metrics(&self) -> String {
        Client::http1().get(&url(self.gw.addr("admin"), "/metrics")).await.text()
    }
}

/// The value of the `ai` plugin counter `name` whose labels include every `labels` pair.
fn counter(metrics: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("sluice_plugin_custom_total{plugin=\"ai\""))
        .filter(|l| l.contains(&format!("name=\"{name}\"")))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

fn messages(user: &str) -> Value {
    json!([{"role": "system", "content": "You are terse."}, {"role": "user", "content": user}])
}

/// The `data:` payloads of an SSE body.
fn sse(reply: &Reply) -> Vec<String> {
    reply.text().split("\n\n").filter_map(|e| e.trim().strip_prefix("data: ").map(str::to_owned)).collect()
}

fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

#[tokio::test]
async fn chat_completions_through_openai_anthropic_and_gemini() {
    let ai = Ai::start(&[("chat", "{ path: /v1/chat/completions }", chat_config())]).await;
    for model in ["gpt", "claude", "gemini"] {
        let reply = ai
            .chat(&json!({"model": model, "messages": messages("hello there"), "temperature": 0.3,
                                    "max_tokens": 99, "stop": ["STOP"]}))
            .await;
        assert_eq!(reply.status, 200, "{model}: {}", reply.text());
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let c = reply.json();
        assert_eq!(c["object"], "chat.completion", "{model}: {c}");
        assert_eq!(c["model"], model, "the client sees the alias it asked for, not the provider's model");
        assert_eq!(c["choices"][0]["message"]["role"], "assistant");
        assert_eq!(c["choices"][0]["message"]["content"], answer_for("hello there"), "{model}");
        assert_eq!(c["choices"][0]["finish_reason"], "stop", "{model}");
        let out = words(&answer_for("hello there"));
        assert_eq!(
            c["usage"],
            json!({"prompt_tokens": PROMPT_TOKENS, "completion_tokens": out, "total_tokens": PROMPT_TOKENS + out}),
            "{model}"
        );

        let seen = ai.llm.last();
        assert!(seen.headers.get("accept-encoding").is_none(), "{model}");
        let auth = |h: &str| seen.headers.get(h).map(|v| v.to_str().unwrap().to_owned());
        match model {
            "gpt" => {
                assert_eq!(seen.path, "/v1/chat/completions");
                assert_eq!(
                    auth("authorization").as_deref(),
                    Some("Bearer sk-openai"),
                    "the provider key replaces the client's"
                );
                assert_eq!(seen.body["model"], "gpt-test");
                assert_eq!(seen.body["messages"], messages("hello there"));
            }
            "claude" => {
                assert_eq!(seen.path, "/v1/messages");
                assert_eq!(auth("x-api-key").as_deref(), Some("sk-ant"));
                assert_eq!(auth("anthropic-version").as_deref(), Some("2023-06-01"));
                assert_eq!(auth("authorization"), None, "the client's credentials never reach the provider");
                assert_eq!(seen.body["model"], "claude-test");
                assert_eq!(seen.body["system"], "You are terse.");
                assert_eq!(
                    seen.body["messages"],
                    json!([{"role": "user", "content": [{"type": "text", "text": "hello there"}]}])
                );
                assert_eq!(seen.body["max_tokens"], 99);
                assert_eq!(seen.body["stop_sequences"], json!(["STOP"]));
                assert_eq!(seen.body["temperature"], 0.3);
            }
            _ => {
                assert_eq!(seen.path, "/v1beta/models/gemini-test:generateContent");
                assert_eq!(auth("x-goog-api-key").as_deref(), Some("gem-key-1"));
                assert_eq!(auth("authorization"), None);
                assert_eq!(seen.body["systemInstruction"], json!({"parts": [{"text": "You are terse."}]}));
                assert_eq!(
                    seen.body["contents"],
                    json!([{"role": "user", "parts": [{"text": "hello there"}]}])
                );
                assert_eq!(seen.body["generationConfig"]["maxOutputTokens"], 99);
                assert_eq!(seen.body["generationConfig"]["stopSequences"], json!(["STOP"]));
            }
        }
    }

    let models = Client::http1().get(&ai.url("/v1/models")).await;
    assert_eq!(models.status, 404, "only the route's path is served");
    let unknown = ai.chat(&json!({"model": "nope", "messages": messages("x")})).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"]["code"], "model_not_found");
    let bad = ai.post("/v1/chat/completions", &json!({"model": "gpt"})).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["param"], "messages");
}

#[tokio::test]
async fn streams_become_openai_chunks_with_usage_and_done() {
    let ai = Ai::start(&[("stream", "{ path: /v1/chat/completions }", chat_config())]).await;
    let text = "stream me please";
    let out = words(&answer_for(text));
    for model in ["gpt", "claude", "gemini"] {
        let reply = ai
            .chat(&json!({"model": model, "stream": true, "stream_options": {"include_usage": true}, "messages": messages(text)}))
            .await;
        assert_eq!(reply.status, 200, "{model}: {}", reply.text());
        assert_eq!(reply.header("content-type"), Some("text/event-stream"), "{model}");
        let events = sse(&reply);
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{model}: {events:?}");
        let chunks: Vec<Value> =
            events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
        assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"), "{model}: {chunks:?}");
        assert!(chunks.iter().all(|c| c["model"] == model), "every chunk names the alias: {chunks:?}");
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant", "{model}");
        let content: String = chunks
            .iter()
            .filter_map(|c| c.pointer("/choices/0/delta/content").and_then(Value::as_str))
            .collect();
        assert_eq!(content, answer_for(text), "{model}");
        let finish: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c.pointer("/choices/0/finish_reason"))
            .filter(|f| !f.is_null())
            .collect();
        assert_eq!(finish, [&json!("stop")], "{model}");
        let usage = chunks.last().unwrap();
        assert_eq!(usage["choices"], json!([]), "{model}");
        assert_eq!(usage["usage"]["prompt_tokens"], PROMPT_TOKENS, "{model}");
        assert_eq!(usage["usage"]["completion_tokens"], out, "{model}");

        let seen = ai.llm.last();
        match model {
            "gpt" => assert_eq!(seen.body["stream"], true),
            "claude" => assert_eq!(seen.body["stream"], true),
            _ => {
                assert_eq!(seen.path, "/v1beta/models/gemini-test:streamGenerateContent");
                assert_eq!(seen.query.as_deref(), Some("alt=sse"));
            }
        }
    }

    // Without include_usage there is no usage chunk, even though the gateway asked the
    // OpenAI provider for one (it needs it for accounting).
    let reply = ai.chat(&json!({"model": "gpt", "stream": true, "messages": messages(text)})).await;
    assert_eq!(ai.llm.last().body["stream_options"]["include_usage"], true);
    let events = sse(&reply);
    assert!(events.iter().all(|e| !e.contains("\"usage\"")), "{events:?}");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));

    // Streams are accounted too.
    let metrics = ai.metrics().await;
    for provider in ["oa", "ant", "gem"] {
        let labels =
            [("route", "stream"), ("provider", provider), ("type", "output"), ("source", "provider")];
        assert!(counter(&metrics, "ai_tokens", &labels) >= out, "{provider}: {metrics}");
    }
}

#[tokio::test]
async fn tool_calls_and_results_translate_both_ways() {
    let ai = Ai::start(&[("tools", "{ path: /v1/chat/completions }", chat_config())]).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    for model in ["claude", "gemini", "gpt"] {
        let reply = ai.chat(&json!({"model": model, "messages": messages("what is the weather?"), "tools": tools, "tool_choice": "auto"})).await;
        assert_eq!(reply.status, 200, "{model}: {}", reply.text());
        let c = reply.json();
        assert_eq!(c["choices"][0]["finish_reason"], "tool_calls", "{model}: {c}");
        let call = &c["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "get_weather", "{model}");
        let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"city": "Paris"}), "{model}");
        let seen = ai.llm.last();
        match model {
            "claude" => {
                assert_eq!(seen.body["tools"][0]["name"], "get_weather");
                assert_eq!(seen.body["tools"][0]["input_schema"]["required"], json!(["city"]));
                assert_eq!(seen.body["tool_choice"], json!({"type": "auto"}));
            }
            "gemini" => {
                assert_eq!(seen.body["tools"][0]["functionDeclarations"][0]["name"], "get_weather");
                assert_eq!(seen.body["toolConfig"]["functionCallingConfig"]["mode"], "AUTO");
            }
            _ => assert_eq!(seen.body["tools"], tools),
        }

        // The tool's result goes back in the next turn.
        let id = call["id"].as_str().unwrap();
        let history = json!([
            {"role": "user", "content": "what is the weather?"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": id, "content": "{\"sky\":\"clear\"}"},
            {"role": "user", "content": "thanks"}
        ]);
        let reply = ai.chat(&json!({"model": model, "messages": history, "tools": tools})).await;
        assert_eq!(reply.status, 200, "{model}: {}", reply.text());
        let seen = ai.llm.last();
        match model {
            "claude" => {
                assert_eq!(seen.body["messages"][1]["content"][0]["type"], "tool_use");
                assert_eq!(seen.body["messages"][1]["content"][0]["input"], json!({"city": "Paris"}));
                assert_eq!(seen.body["messages"][2]["content"][0]["type"], "tool_result");
                assert_eq!(seen.body["messages"][2]["content"][0]["tool_use_id"], id);
            }
            "gemini" => {
                assert_eq!(seen.body["contents"][1]["parts"][0]["functionCall"]["name"], "get_weather");
                assert_eq!(seen.body["contents"][2]["parts"][0]["functionResponse"]["name"], "get_weather");
                assert_eq!(
                    seen.body["contents"][2]["parts"][0]["functionResponse"]["response"],
                    json!({"sky": "clear"})
                );
            }
            _ => assert_eq!(seen.body["messages"], history),
        }
    }

    // Streamed tool calls from Anthropic arrive as OpenAI tool-call deltas.
    let reply = ai
        .chat(&json!({"model": "claude", "stream": true, "messages": messages("weather?"), "tools": tools}))
        .await;
    let events = sse(&reply);
    let chunks: Vec<Value> = events.iter().filter_map(|e| serde_json::from_str(e).ok()).collect();
    let calls: Vec<&Value> =
        chunks.iter().filter_map(|c| c.pointer("/choices/0/delta/tool_calls/0")).collect();
    assert_eq!(calls[0]["id"], "toolu_1", "{events:?}");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let args: String =
        calls.iter().filter_map(|c| c.pointer("/function/arguments").and_then(Value::as_str)).collect();
    assert_eq!(args, "{\"city\":\"Paris\"}");
    assert!(chunks.iter().any(|c| c.pointer("/choices/0/finish_reason") == Some(&json!("tool_calls"))));
}

#[tokio::test]
async fn provider_errors_become_openai_errors_with_the_status() {
    let ai = Ai::start(&[("errors", "{ path: /v1/chat/completions }", chat_config())]).await;
    for (model, status) in [("gpt", 429), ("claude", 429), ("gemini", 400), ("claude", 500), ("gpt", 400)] {
        for stream in [false, true] {
            let reply = ai.chat(&json!({"model": model, "stream": stream, "messages": messages(&format!("ERROR {status}"))})).await;
            assert_eq!(reply.status, status, "{model} {stream}: {}", reply.text());
            assert_eq!(reply.header("content-type"), Some("application/json"));
            let e = reply.json();
            assert_eq!(e["error"]["message"], format!("test error {status}"), "{model}: {e}");
            assert!(e["error"]["type"].is_string(), "{e}");
        }
    }
    let e = ai.chat(&json!({"model": "claude", "messages": messages("ERROR 429")})).await.json();
    assert_eq!(
        (e["error"]["type"].as_str(), e["error"]["code"].as_str()),
        (Some("rate_limit_error"), Some("rate_limit_exceeded"))
    );
}

fn prompt_config(output: &str, user: &str, schema: Value, output_schema: Option<Value>) -> Value {
    let mut prompt = json!({"model": "claude", "system": "Summarize in {{params.lang}}, tone {{headers.x-tone|neutral}}.",
                            "user": user, "input_schema": schema, "output": output});
    if let Some(s) = output_schema {
        prompt["output_schema"] = s;
    }
    json!({"mode": "prompt", "providers": providers(), "prompt": prompt})
}

#[tokio::test]
async fn prompt_template_routes_validate_render_and_shape_the_answer() {
    let input = json!({"type": "object", "required": ["text"],
                       "properties": {"text": {"type": "string", "minLength": 1}, "json": {"type": "string"}}});
    let out_schema =
        json!({"type": "object", "required": ["summary"], "properties": {"summary": {"type": "string"}}});
    let ai = Ai::start(&[
        (
            "summarize",
            "{ path: \"/api/summarize/{lang}\" }",
            prompt_config("text", "Text: {{text}}", input.clone(), None),
        ),
        (
            "summarize-json",
            "{ path: \"/api/json/{lang}\" }",
            prompt_config("json", "RAW {{json}}", input.clone(), Some(out_schema)),
        ),
        (
            "summarize-full",
            "{ path: \"/api/full/{lang}\" }",
            prompt_config("openai", "{{text}}", input, None),
        ),
    ])
    .await;
    let req = Request::post(ai.url("/api/summarize/fr"))
        .header("x-tone", "dry")
        .body(full(json!({"text": "a long story"}).to_string()))
        .unwrap();
    let reply = Client::http1().send(req).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(reply.text(), answer_for("Text: a long story"));
    let seen = ai.llm.last();
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.body["system"], "Summarize in fr, tone dry.");

    // Invalid input: 400 naming the field, and the provider is not called.
    let calls = ai.llm.seen().len();
    for (body, field, message) in [
        (json!({}), "text", "missing required field `text`"),
        (json!({"text": 5}), "text", "field `text` must be of type string"),
        (json!({"text": ""}), "text", "field `text` must have at least 1 characters"),
    ] {
        let reply = ai.post("/api/summarize/fr", &body).await;
        assert_eq!(reply.status, 400, "{}", reply.text());
        let e = reply.json();
        assert_eq!(e["error"]["param"], field);
        assert_eq!(e["error"]["message"], message);
    }
    assert_eq!(ai.post("/api/summarize/fr", &json!("not an object")).await.status, 400);
    assert_eq!(ai.llm.seen().len(), calls);

    // JSON output: parsed, validated against the output schema.
    let ok = ai.post("/api/json/en", &json!({"text": "t", "json": "{\"summary\": \"short\"}"})).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json(), json!({"summary": "short"}));
    let wrong = ai.post("/api/json/en", &json!({"text": "t", "json": "{\"other\": 1}"})).await;
    assert_eq!(wrong.status, 502, "{}", wrong.text());
    assert!(
        wrong.json()["error"]["message"].as_str().unwrap().contains("missing required field `summary`"),
        "{}",
        wrong.text()
    );
    let not_json = ai.post("/api/json/en", &json!({"text": "t", "json": "no json here"})).await;
    assert_eq!(not_json.status, 502);
    assert_eq!(not_json.json()["error"]["type"], "invalid_model_output");

    // The full OpenAI completion.
    let full_reply = ai.post("/api/full/en", &json!({"text": "x y"})).await;
    assert_eq!(full_reply.json()["choices"][0]["message"]["content"], answer_for("x y"));
    assert_eq!(full_reply.json()["usage"]["prompt_tokens"], PROMPT_TOKENS);
}

#[tokio::test]
async fn usage_and_cost_are_counted_by_route_consumer_provider_and_model() {
    let ai = Ai::start(&[("metered", "{ path: /v1/chat/completions }", chat_config())]).await;
    let text = "one two three";
    let out = words(&answer_for(text));
    ai.chat(&json!({"model": "claude", "messages": messages(text)})).await;
    ai.chat(&json!({"model": "claude", "stream": true, "messages": messages(text)})).await;
    ai.chat(&json!({"model": "gemini", "messages": messages("NOUSAGE please")})).await;
    // An OpenAI-compatible stream without usage: its completion counted one token per
    // streamed delta, which on this server (one word a delta) is the real count.
    let quiet = "NOUSAGE four words here";
    ai.chat(&json!({"model": "gpt", "stream": true, "messages": messages(quiet)})).await;
    let m = ai.metrics().await;
    let base = [("route", "metered"), ("consumer", "anonymous"), ("provider", "ant"), ("model", "claude")];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
        base.iter().chain(extra).copied().collect()
    };
    assert_eq!(counter(&m, "ai_requests", &with(&[("status", "200")])), 2, "{m}");
    // Both names of the model: the alias (`model`) and what it resolved to.
    assert_eq!(counter(&m, "ai_requests", &with(&[("provider_model", "claude-test")])), 2, "{m}");
    assert_eq!(
        counter(&m, "ai_tokens", &with(&[("type", "input"), ("source", "provider")])),
        2 * PROMPT_TOKENS,
        "{m}"
    );
    assert_eq!(
        counter(&m, "ai_tokens", &with(&[("type", "output"), ("source", "provider")])),
        2 * out,
        "{m}"
    );
    // 1.0 per 1000 input tokens and 2.0 per 1000 output tokens, in millionths.
    assert_eq!(counter(&m, "ai_cost_micros", &with(&[])), 2 * (PROMPT_TOKENS * 1000 + out * 2000), "{m}");
    // Gemini gave no usage: estimated, and marked as such.
    assert!(
        counter(&m, "ai_tokens", &[("provider", "gem"), ("source", "estimate"), ("type", "output")]) > 0,
        "{m}"
    );
    assert_eq!(
        counter(
            &m,
            "ai_tokens",
            &[("route", "metered"), ("provider", "oa"), ("source", "estimate"), ("type", "output")]
        ),
        words(&answer_for(quiet)),
        "{m}"
    );
}

/// Without provider usage, a call to an OpenAI model is counted with that model's
/// tokenizer: within 10% of what the tokenizer and OpenAI's chat format say (the prompt
/// here is mostly the format's overhead per message, and the answer is numbers, which
/// four characters a token both undercount by half or more).
#[tokio::test]
async fn without_provider_usage_an_openai_models_tokens_are_estimated_with_its_tokenizer() {
    let config = json!({"mode": "chat", "providers": [
        {"name": "oa", "kind": "openai", "upstream": "llm", "api_key_secret": "oa-key",
         "models": {"mini": "gpt-4o-mini"}}
    ]});
    let ai = Ai::start(&[("counted", "{ path: /v1/chat/completions }", config)]).await;
    let answer = (1..=40).map(|n| n.to_string()).collect::<Vec<_>>().join(" ");
    let last = format!("RAW NOUSAGE {answer}");
    let msgs = json!([
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": last}
    ]);
    let o200k = tiktoken_rs::o200k_base().unwrap();
    let n = |t: &str| o200k.encode_ordinary(t).len() as u64;
    let prompt = 3 + msgs
        .as_array()
        .unwrap()
        .iter()
        .map(|m| 3 + n(m["role"].as_str().unwrap()) + n(m["content"].as_str().unwrap()))
        .sum::<u64>();
    let near = |what: &str, estimate: u64, real: u64| {
        assert!(estimate.abs_diff(real) * 10 <= real, "{what}: estimated {estimate}, real {real}");
    };

    let whole = ai.chat(&json!({"model": "mini", "messages": msgs})).await;
    assert_eq!(whole.status, 200, "{}", whole.text());
    let (usage, text) = (&whole.json()["usage"], whole.json()["choices"][0]["message"]["content"].clone());
    assert_eq!(usage["estimated"], true, "the server sent no usage: {usage}");
    near("prompt", usage["prompt_tokens"].as_u64().unwrap(), prompt);
    near("completion", usage["completion_tokens"].as_u64().unwrap(), n(text.as_str().unwrap()));

    let body =
        json!({"model": "mini", "stream": true, "stream_options": {"include_usage": true}, "messages": msgs});
    let streamed = ai.chat(&body).await;
    let events: Vec<Value> =
        sse(&streamed).iter().filter(|e| *e != "[DONE]").map(|e| serde_json::from_str(e).unwrap()).collect();
    let text: String =
        events.iter().filter_map(|e| e.pointer("/choices/0/delta/content").and_then(Value::as_str)).collect();
    let usage = &events.last().unwrap()["usage"];
    assert_eq!(usage["estimated"], true, "{usage}");
    near("streamed prompt", usage["prompt_tokens"].as_u64().unwrap(), prompt);
    near("streamed completion", usage["completion_tokens"].as_u64().unwrap(), n(&text));
}

#[tokio::test]
async fn an_exhausted_token_or_cost_budget_is_a_429_before_the_provider_is_called() {
    // Each call uses 12 + 3 tokens, costing 0.012 + 0.006: two calls use up 20 tokens
    // or 0.03, and the third is refused. The clock stands still, so no minute or day
    // turns over in between.
    for (route, budget, message) in [
        (
            "budget-tokens",
            json!({"tokens_per_minute": 20}),
            "the tokens per minute budget of this consumer is used up",
        ),
        ("budget-cost", json!({"cost_per_day": 0.03}), "the daily cost budget of this consumer is used up"),
    ] {
        let mut config = chat_config();
        config["budgets"] = budget;
        let ai = Ai::start_at_a_fixed_time(&[(route, "{ path: /v1/chat/completions }", config)]).await;
        let body = json!({"model": "gpt", "messages": messages("a b")});
        let chat = || ai.chat(&body);
        for call in 1..=2 {
            let reply = chat().await;
            assert_eq!(reply.status, 200, "{route}, call {call}: {}", reply.text());
        }
        let calls = ai.llm.seen().len();
        for _ in 0..2 {
            let reply = chat().await;
            assert_eq!(reply.status, 429, "{route}: {}", reply.text());
            assert_eq!(reply.json()["error"]["code"], "budget_exceeded");
            assert_eq!(reply.json()["error"]["message"], message);
            assert!(reply.header("retry-after").is_some());
        }
        assert_eq!(ai.llm.seen().len(), calls, "{route}: a refused call never reaches the provider");
    }
}

#[tokio::test]
async fn a_routes_budget_is_its_own_unless_routes_share_one_by_name() {
    let budget = |shared: Option<&str>| {
        let mut config = chat_config();
        config["budgets"] = json!({"tokens_per_minute": 20});
        if let Some(name) = shared {
            config["budgets"]["shared"] = json!(name);
        }
        config
    };
    let ai = Ai::start_at_a_fixed_time(&[
        ("auth-own-a", "{ path: /own-a }", budget(None)),
        ("auth-own-b", "{ path: /own-b }", budget(None)),
        ("auth-team-a", "{ path: /team-a }", budget(Some("team"))),
        ("auth-team-b", "{ path: /team-b }", budget(Some("team"))),
    ])
    .await;
    let client = Client::http1();
    let call = |path: &str| {
        let req = Request::post(ai.url(path))
            .header("x-api-key", "k-ann")
            .body(full(json!({"model": "gpt", "messages": messages("a b")}).to_string()))
            .unwrap();
        client.send(req)
    };
    // 15 tokens a call against 20: two calls, then the route refuses ann.
    for path in ["/own-a", "/own-a"] {
        assert_eq!(call(path).await.status, 200);
    }
    assert_eq!(call("/own-a").await.status, 429);
    // Another route's budget is its own: ann is served there.
    assert_eq!(call("/own-b").await.status, 200, "spending on one route refuses nowhere else");
    // Two routes naming one shared budget draw on it together.
    assert_eq!(call("/team-a").await.status, 200);
    assert_eq!(call("/team-b").await.status, 200);
    let refused = call("/team-a").await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(call("/team-b").await.status, 429, "the shared budget is used up for both");
}

#[tokio::test]
async fn budgets_and_metrics_are_per_consumer_behind_the_auth_plugin() {
    let mut config = chat_config();
    config["budgets"] = json!({"tokens_per_minute": 20});
    let ai = Ai::start_at_a_fixed_time(&[("auth-budget", "{ path: /v1/chat/completions }", config)]).await;
    let client = Client::http1();
    let call = |key: &'static str| {
        let req = Request::post(ai.url("/v1/chat/completions"))
            .header("x-api-key", key)
            .body(full(json!({"model": "claude", "messages": messages("a b")}).to_string()))
            .unwrap();
        client.send(req)
    };
    // ann uses up her budget: 15 tokens a call, so the third call is refused (the
    // clock stands still: no minute turns over).
    for _ in 0..2 {
        let reply = call("k-ann").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    assert_eq!(call("k-ann").await.status, 429, "ann's budget ran out");
    assert!(
        ai.llm.last().headers.get("x-api-key").is_some_and(|k| k == "sk-ant"),
        "the provider gets its own key"
    );
    // bob has his own.
    let reply = call("k-bob").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let m = ai.metrics().await;
    let ann = counter(&m, "ai_tokens", &[("route", "auth-budget"), ("consumer", "ann"), ("type", "input")]);
    assert_eq!(ann, 2 * PROMPT_TOKENS, "{m}");
    let bob = counter(&m, "ai_tokens", &[("route", "auth-budget"), ("consumer", "bob"), ("type", "input")]);
    assert_eq!(bob, PROMPT_TOKENS, "{m}");
}

#[tokio::test]
async fn a_client_leaving_mid_stream_closes_the_provider_connection() {
    let ai = Ai::start(&[("leave", "{ path: /v1/chat/completions }", chat_config())]).await;
    for (i, model) in ["claude", "gpt", "gemini"].into_iter().enumerate() {
        let body = json!({"model": model, "stream": true, "messages": messages("ENDLESS")}).to_string();
        let addr = ai.gw.addr("public");
        let disconnects = ai.llm.disconnects();
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            write!(
                s,
                "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            // Read until the translated stream has begun, then hang up.
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&seen).contains("more") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "the stream ended early: {}", String::from_utf8_lossy(&seen));
                seen.extend_from_slice(&buf[..n]);
            }
            assert!(String::from_utf8_lossy(&seen).contains("chat.completion.chunk"), "{model}");
        })
        .await
        .unwrap();
        // The gateway drops the upstream body, which the server sees as a closed stream.
        let mut waited = 0;
        while ai.llm.disconnects() == disconnects {
            assert!(waited < 600, "{model}: the provider stream was never cancelled");
            tokio::time::sleep(Duration::from_millis(50)).await;
            waited += 1;
        }
        assert_eq!(ai.llm.disconnects(), i + 1);
    }
}

#[tokio::test]
async fn a_pool_of_provider_targets_covers_a_dead_one() {
    // Connection failures are retried on another target of the pool, POST included,
    // since nothing reached the dead one.
    let dead = dead_addr().await;
    let ai =
        Ai::start_with_targets(&[("pool", "{ path: /v1/chat/completions }", chat_config())], &[dead]).await;
    for _ in 0..4 {
        let reply = ai.chat(&json!({"model": "claude", "messages": messages("hi")})).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.json()["choices"][0]["message"]["content"], answer_for("hi"));
    }
}

#[tokio::test]
async fn an_unreachable_provider_pool_falls_back_to_another_model() {
    // The gateway's own 502 goes through the response phase like a provider's answer.
    let mut config = chat_config();
    config["providers"][1]["upstream"] = json!("unreachable"); // `ant`, the `claude` alias
    config["fallbacks"] = json!({"claude": ["gemini"]});
    for i in 0..3 {
        config["providers"][i]["url"] = json!(LLM_URL);
    }
    let ai = Ai::start(&[("down", "{ path: /v1/chat/completions }", config)]).await;
    let reply = ai.chat(&json!({"model": "claude", "messages": messages("anyone there")})).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["choices"][0]["message"]["content"], answer_for("anyone there"));
    let paths: Vec<String> = ai.llm.seen().iter().map(|s| s.path.clone()).collect();
    assert_eq!(paths, ["/v1beta/models/gemini-test:generateContent"], "only the fallback was reached");
}

#[tokio::test]
async fn a_failing_provider_falls_back_to_another_model() {
    let mut config = chat_config();
    config["fallbacks"] = json!({"claude": ["gemini", "gpt"]});
    // Fallbacks are called directly at their provider's url (the `http` grant).
    config["providers"][1]["url"] = json!(LLM_URL);
    config["providers"][2]["url"] = json!(LLM_URL);
    config["providers"][0]["url"] = json!(LLM_URL);
    let ai = Ai::start(&[("fallback", "{ path: /v1/chat/completions }", config)]).await;

    // Anthropic fails: Gemini answers.
    let reply = ai.chat(&json!({"model": "claude", "messages": messages("FAIL anthropic 503")})).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["choices"][0]["message"]["content"], answer_for("FAIL anthropic 503"));
    assert_eq!(reply.json()["model"], "claude", "a fallback's answer names the alias the client asked for");
    let paths: Vec<String> = ai.llm.seen().iter().map(|s| s.path.clone()).collect();
    assert_eq!(paths, ["/v1/messages", "/v1beta/models/gemini-test:generateContent"]);

    // Streamed: the fallback's answer arrives whole but as OpenAI chunks.
    let reply = ai
        .chat(&json!({"model": "claude", "stream": true, "stream_options": {"include_usage": true}, "messages": messages("FAIL anthropic 429")}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    let events = sse(&reply);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let content: String = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|c| c.pointer("/choices/0/delta/content").and_then(Value::as_str).map(str::to_owned))
        .collect();
    assert_eq!(content, answer_for("FAIL anthropic 429"));
    let models: Vec<Value> = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .map(|c| c["model"].clone())
        .collect();
    assert!(!models.is_empty() && models.iter().all(|m| m == "claude"), "{models:?}");

    // The first fallback fails too: the second answers.
    let reply = ai.chat(&json!({"model": "claude", "messages": messages("FAIL anthropic,gemini 500")})).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(ai.llm.last().path, "/v1/chat/completions");
    assert_eq!(ai.llm.last().headers["authorization"], "Bearer sk-openai");
    // All fail: the first provider's error.
    let reply =
        ai.chat(&json!({"model": "claude", "messages": messages("FAIL anthropic,gemini,openai 529")})).await;
    assert_eq!(reply.status, 503, "{}", reply.text());

    // A status that is not a fallback status is the client's answer.
    let reply = ai.chat(&json!({"model": "claude", "messages": messages("FAIL anthropic 400")})).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"]["message"], "test error 400");

    // Accounting names the provider that answered.
    let m = ai.metrics().await;
    assert_eq!(
        counter(
            &m,
            "ai_requests",
            &[("route", "fallback"), ("provider", "gem"), ("model", "gemini"), ("status", "200")]
        ),
        2,
        "{m}"
    );
    assert_eq!(
        counter(
            &m,
            "ai_requests",
            &[("route", "fallback"), ("provider", "oa"), ("model", "gpt"), ("status", "200")]
        ),
        1,
        "{m}"
    );
}

#[tokio::test]
async fn the_official_openai_python_client_works_against_the_gateway() {
    let present = sluice_tests::runs("python3", &["-c", "import openai"]);
    if !sluice_tests::have(present, "python3 with the `openai` package", "pip install openai==3.54.0") {
        return;
    }
    let log = crate::harness::AccessLog::get();
    let ai = Ai::start(&[("sdk-py", "{ path_prefix: /v1 }", chat_config())]).await;
    let script = r#"
import sys, openai
client = openai.OpenAI(base_url=sys.argv[1], api_key="gateway-token", max_retries=0)
print("models", ",".join(sorted(m.id for m in client.models.list())))
for model in ["gpt", "claude", "gemini"]:
    r = client.chat.completions.create(model=model, messages=[{"role": "system", "content": "terse"}, {"role": "user", "content": "py hello"}])
    print(model, "plain", r.choices[0].message.content, r.choices[0].finish_reason, r.usage.total_tokens)
    s = client.chat.completions.create(model=model, stream=True, stream_options={"include_usage": True},
                                       messages=[{"role": "user", "content": "py stream"}])
    text, usage = "", None
    for chunk in s:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage.total_tokens
    print(model, "stream", text, usage)
# A server that keeps the stream open after [DONE]: the SDK has what it needs and closes
# while the gateway still waits for the body's end.
s = client.chat.completions.create(model="gpt", stream=True, messages=[{"role": "user", "content": "py LINGER"}])
print("linger", "".join(c.choices[0].delta.content or "" for c in s if c.choices))
try:
    client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "ERROR 429"}])
except openai.RateLimitError as e:
    print("error", e.status_code, e.body["message"])
try:
    openai.OpenAI(base_url=sys.argv[1], api_key="wrong-key", max_retries=0).models.list()
except openai.AuthenticationError as e:
    print("auth", e.status_code)
"#;
    let base = ai.url("/v1");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3").args(["-c", script, &base]).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let plain = answer_for("py hello");
    let streamed = answer_for("py stream");
    let total = |a: &str| PROMPT_TOKENS + words(a);
    for model in ["gpt", "claude", "gemini"] {
        assert!(stdout.contains(&format!("{model} plain {plain} stop {}", total(&plain))), "{stdout}");
        assert!(stdout.contains(&format!("{model} stream {streamed} {}", total(&streamed))), "{stdout}");
    }
    assert!(stdout.contains("error 429 test error 429"), "{stdout}");
    assert!(stdout.contains("models claude,gemini,gpt"), "{stdout}");
    // The SDK's `Authorization: Bearer KEY` authenticated it as `sdk`; a wrong key is a 401.
    assert!(stdout.contains("auth 401"), "{stdout}");
    let m = ai.metrics().await;
    let input = counter(&m, "ai_tokens", &[("route", "sdk-py"), ("consumer", "sdk"), ("type", "input")]);
    assert!(input > 0, "the calls were counted for the consumer the bearer key named: {m}");
    assert!(stdout.contains(&format!("linger {}", answer_for("py LINGER"))), "{stdout}");
    // Every call is in the access log complete, with its usage, however the SDK closed
    // the stream (it closes the connection right after `[DONE]`, and the `LINGER`
    // stream's server had not ended it yet): three plain calls, four streamed ones,
    // and the 429.
    let chat = log
        .wait_for(8, |l| {
            l.get("route").is_some_and(|r| r == "sdk-py")
                && l.get("path").is_some_and(|p| p == "/v1/chat/completions")
        })
        .await;
    assert_eq!(chat.len(), 8, "{chat:#?}");
    let ok: Vec<_> = chat.iter().filter(|l| l["status"] == "200").collect();
    assert_eq!(ok.len(), 7, "{chat:#?}");
    // The usage of a stream is accounted in its last chunk call, which may run after
    // the client left: wait for the six lines that carry it.
    let accounted = log
        .wait_for(7, |l| {
            l.get("route").is_some_and(|r| r == "sdk-py")
                && l.get("status").is_some_and(|s| s == "200")
                && l.get("annotations").is_some_and(|a| a.contains("tokens_in=") && a.contains("provider="))
        })
        .await;
    assert_eq!(accounted.len(), 7, "every call's usage is in its line: {chat:#?}");
    for line in ok {
        assert_eq!(line["completed"], "true", "{line:#?}");
    }
}

/// P7 of BENCHMARKS.md, as a measurement (no assertion on time): a streamed
/// completion through the `chat` route vs straight to the same LLM server, for an
/// OpenAI provider (passthrough) and an Anthropic one (translated) — time to the first
/// body byte and to the end of the stream. Run with
/// `cargo test --release -p sluice-tests --test all p7 -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement, not a test"]
async fn p7_streamed_completion_overhead() {
    use std::time::Instant;

    use http_body_util::BodyExt;
    use hyper_util::client::legacy::Client as HyperClient;
    use hyper_util::rt::TokioExecutor;

    let ai = Ai::start(&[("p7", "{ path: /v1/chat/completions }", chat_config())]).await;
    let client: HyperClient<_, crate::harness::TestBody> =
        HyperClient::builder(TokioExecutor::new()).build_http();
    let text = "one two three four five six seven eight nine ten";
    let through =
        |model: &str| json!({"model": model, "stream": true, "messages": messages(text)}).to_string();
    let openai_direct = json!({"model": "gpt-test", "stream": true, "stream_options": {"include_usage": true},
                               "messages": messages(text)});
    let anthropic_direct = json!({"model": "claude-test", "stream": true, "max_tokens": 4096, "system": "You are terse.",
                                  "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]});
    let gw = ai.url("/v1/chat/completions");
    let cases = [
        ("openai direct", url(ai.llm.addr(), "/v1/chat/completions"), openai_direct.to_string()),
        ("openai via gateway", gw.clone(), through("gpt")),
        ("anthropic direct", url(ai.llm.addr(), "/v1/messages"), anthropic_direct.to_string()),
        ("anthropic via gateway (translated)", gw, through("claude")),
    ];
    let mut results: Vec<(&str, Vec<f64>, Vec<f64>)> =
        cases.iter().map(|c| (c.0, Vec::new(), Vec::new())).collect();
    let rounds = 2000;
    for i in 0..rounds * cases.len() {
        let slot = i % cases.len();
        let (_, target, body) = &cases[slot];
        let req = Request::post(target.as_str()).body(full(body.clone())).unwrap();
        let started = Instant::now();
        let resp = client.request(req).await.unwrap();
        let mut body = resp.into_body();
        let mut first = None;
        while let Some(frame) = body.frame().await {
            if frame.unwrap().data_ref().is_some_and(|d| !d.is_empty()) && first.is_none() {
                first = Some(started.elapsed());
            }
        }
        let total = started.elapsed();
        if i >= 200 {
            results[slot].1.push(first.unwrap().as_secs_f64() * 1e6);
            results[slot].2.push(total.as_secs_f64() * 1e6);
        }
    }
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[((v.len() - 1) as f64 * p) as usize]
    };
    for (name, ttfb, total) in &mut results {
        println!(
            "P7 {name}: first byte p50 {:.0} µs p99 {:.0} µs; whole stream p50 {:.0} µs p99 {:.0} µs",
            pct(ttfb, 0.5),
            pct(ttfb, 0.99),
            pct(total, 0.5),
            pct(total, 0.99)
        );
    }
}
