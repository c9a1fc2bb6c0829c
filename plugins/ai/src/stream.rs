//! Streamed completions: provider SSE in, OpenAI `chat.completion.chunk` SSE out,
//! chunk by chunk (only an unfinished line is ever held), ending with `data: [DONE]`,
//! with a usage chunk when the client asked for one.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::config::Kind;
use sluice_plugin_sdk::tokens;

use crate::openai::{self, Usage};
use crate::sse::{Event, Parser};
use crate::{anthropic, gemini};

/// One response's stream state.
#[derive(Debug)]
pub struct Stream {
    kind: Kind,
    sse: Parser,
    include_usage: bool,
    id: String,
    created: u64,
    model: String,
    prompt_tokens: u64,
    output_chars: u64,
    /// The provider's model and the completion so far, when the gateway has that
    /// model's tokenizer: the completion is counted with it.
    counted: Option<(String, String)>,
    /// Text deltas streamed so far: a provider streams about one token per delta, so
    /// without its usage this counts the completion better than characters do.
    output_pieces: u64,
    usage: Option<Usage>,
    /// The role chunk went out.
    started: bool,
    /// `[DONE]` went out.
    done: bool,
    /// Anthropic content block index → OpenAI tool call index.
    tool_blocks: HashMap<u64, usize>,
    next_tool: usize,
}

impl Stream {
    /// A stream for a call to a `kind` provider.
    pub fn new(
        kind: Kind,
        id: &str,
        created: u64,
        model: &str,
        include_usage: bool,
        prompt_tokens: u64,
    ) -> Stream {
        Stream {
            kind,
            sse: Parser::default(),
            include_usage,
            id: id.to_owned(),
            created,
            model: model.to_owned(),
            prompt_tokens,
            output_chars: 0,
            counted: None,
            output_pieces: 0,
            usage: None,
            started: false,
            done: false,
            tool_blocks: HashMap::new(),
            next_tool: 0,
        }
    }

    /// Translates one body chunk.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut events = Vec::new();
        self.sse.push(bytes, &mut events);
        let mut out = Vec::new();
        for e in events {
            self.event(e, &mut out);
        }
        out
    }

    /// The end of the body: whatever is pending, the usage chunk, `[DONE]`.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut events = Vec::new();
        self.sse.finish(&mut events);
        let mut out = Vec::new();
        for e in events {
            self.event(e, &mut out);
        }
        self.done(&mut out);
        out
    }

    /// `include_usage` and the usage chunk not seen from the provider yet.
    fn usage_chunk_due(&self) -> bool {
        self.include_usage && (self.kind != Kind::Openai || self.usage.is_none())
    }

    /// Counts the completion with the tokenizer of `model` (the provider's), when the
    /// gateway has it and the provider reports no usage.
    pub fn counted_by(mut self, model: &str) -> Stream {
        if tokens::count(model, "").is_some() {
            self.counted = Some((model.to_owned(), String::new()));
        }
        self
    }

    /// The usage: the provider's, else an estimate. The completion is counted with
    /// the model's tokenizer when the gateway has it ([`Stream::counted_by`]), else as
    /// one token per streamed delta (how OpenAI-compatible servers and Anthropic
    /// stream), except for Gemini, whose chunks carry many tokens: characters / 4
    /// there.
    pub fn usage(&self) -> Usage {
        self.usage.unwrap_or_else(|| {
            let output = match &self.counted {
                Some((model, text)) => openai::text_tokens(model, text),
                None if self.kind != Kind::Gemini && self.output_pieces > 0 => self.output_pieces,
                None => self.output_chars.div_ceil(4),
            };
            Usage::estimate(self.prompt_tokens, output)
        })
    }

    /// Counts a streamed piece of the completion.
    fn streamed(&mut self, text: &str) {
        if !text.is_empty() {
            if let Some((_, so_far)) = &mut self.counted {
                so_far.push_str(text);
            }
            self.output_chars += text.chars().count() as u64;
            self.output_pieces += 1;
        }
    }

    fn done(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.done = true;
        if self.usage_chunk_due() {
            openai::sse(out, &openai::usage_chunk(&self.id, self.created, &self.model, self.usage()));
        }
        out.extend_from_slice(openai::DONE);
    }

    fn emit(&mut self, out: &mut Vec<u8>, delta: Value, finish: Option<&str>) {
        if !self.started {
            self.started = true;
            let role = openai::chunk(
                &self.id,
                self.created,
                &self.model,
                json!({"role": "assistant", "content": ""}),
                None,
            );
            openai::sse(out, &role);
        }
        openai::sse(out, &openai::chunk(&self.id, self.created, &self.model, delta, finish));
    }

    fn event(&mut self, e: Event, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if self.kind == Kind::Openai {
            return self.openai_event(e, out);
        }
        let Ok(v) = serde_json::from_str::<Value>(&e.data) else { return };
        match self.kind {
            Kind::Anthropic => self.anthropic_event(&v, out),
            _ => self.gemini_event(&v, out),
        }
    }

    /// OpenAI-compatible: passed through with the alias as `model`, usage noted, the
    /// usage chunk the gateway asked for dropped unless the client asked for it too.
    fn openai_event(&mut self, e: Event, out: &mut Vec<u8>) {
        if e.data.trim() == "[DONE]" {
            // An OpenAI-compatible server that sends no usage gets an estimated one.
            return self.done(out);
        }
        let Ok(mut v) = serde_json::from_str::<Value>(&e.data) else { return };
        for c in v.get("choices").and_then(Value::as_array).into_iter().flatten() {
            let text = c.pointer("/delta/content").and_then(Value::as_str).unwrap_or("");
            self.streamed(text);
        }
        if let Some(u) = openai::usage(&v) {
            self.usage = Some(u);
            if !self.include_usage {
                if v.get("choices").and_then(Value::as_array).is_none_or(Vec::is_empty) {
                    return;
                }
                if let Some(o) = v.as_object_mut() {
                    o.remove("usage");
                }
            }
        }
        // The client sees the model it asked for (the alias), never the provider's name.
        if v.get("model").is_some() {
            v["model"] = Value::String(self.model.clone());
        }
        openai::sse(out, &v);
    }

    fn anthropic_event(&mut self, v: &Value, out: &mut Vec<u8>) {
        match v.get("type").and_then(Value::as_str).unwrap_or("") {
            "message_start" => {
                let m = &v["message"];
                if let Some(id) = m.get("id").and_then(Value::as_str) {
                    self.id = format!("chatcmpl-{id}");
                }
                self.usage = m.get("usage").and_then(anthropic::usage);
                self.started = true;
                let role = openai::chunk(
                    &self.id,
                    self.created,
                    &self.model,
                    json!({"role": "assistant", "content": ""}),
                    None,
                );
                openai::sse(out, &role);
            }
            "content_block_start" => {
                let block = &v["content_block"];
                if block.get("type").and_then(Value::as_str) == Some("tool_use") {
                    let index = self.next_tool;
                    self.next_tool += 1;
                    self.tool_blocks.insert(v.get("index").and_then(Value::as_u64).unwrap_or(0), index);
                    let call = json!({"index": index, "id": block["id"], "type": "function",
                                      "function": {"name": block["name"], "arguments": ""}});
                    self.emit(out, json!({"tool_calls": [call]}), None);
                }
            }
            "content_block_delta" => {
                let d = &v["delta"];
                match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = d.get("text").and_then(Value::as_str).unwrap_or("");
                        self.streamed(text);
                        self.emit(out, json!({"content": text}), None);
                    }
                    Some("input_json_delta") => {
                        let block = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                        let index = self.tool_blocks.get(&block).copied().unwrap_or(0);
                        let part = d.get("partial_json").and_then(Value::as_str).unwrap_or("");
                        self.streamed(part);
                        self.emit(
                            out,
                            json!({"tool_calls": [{"index": index, "function": {"arguments": part}}]}),
                            None,
                        );
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(u) = v.get("usage") {
                    let input = self.usage.map_or(0, |u| u.input);
                    let later = anthropic::usage(u).unwrap_or_default();
                    // Later events carry cumulative counts; input may be absent there.
                    self.usage =
                        Some(Usage { input: input.max(later.input), output: later.output, estimated: false });
                }
                if let Some(stop) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.emit(out, json!({}), Some(anthropic::finish_reason(stop)));
                }
            }
            "message_stop" => self.done(out),
            "error" => {
                let e = anthropic::error(500, v);
                openai::sse(out, &e.to_json());
                self.done(out);
            }
            _ => {} // ping, content_block_stop
        }
    }

    fn gemini_event(&mut self, v: &Value, out: &mut Vec<u8>) {
        if let Some(u) = gemini::usage(v) {
            self.usage = Some(u);
        }
        if let Some(e) = v.get("error") {
            let status = e.get("code").and_then(Value::as_u64).unwrap_or(500) as u16;
            openai::sse(out, &gemini::error(status, v).to_json());
            return self.done(out);
        }
        let Some(c) = v.pointer("/candidates/0") else { return };
        let (text, calls) = gemini::candidate_parts(c, &mut self.next_tool);
        if !text.is_empty() {
            self.streamed(&text);
            self.emit(out, json!({"content": text}), None);
        }
        if !calls.is_empty() {
            self.emit(out, json!({"tool_calls": calls}), None);
        }
        if let Some(reason) = c.get("finishReason").and_then(Value::as_str) {
            self.emit(out, json!({}), Some(gemini::finish_reason(reason, self.next_tool > 0)));
        }
    }
}

/// The `data:` payloads of an OpenAI SSE body (for tests).
#[cfg(test)]
pub fn payloads(body: &[u8]) -> Vec<String> {
    let mut p = Parser::default();
    let mut out = Vec::new();
    p.push(body, &mut out);
    p.finish(&mut out);
    out.into_iter().map(|e| e.data).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(s: &mut Stream, input: &str) -> Vec<String> {
        // One byte at a time: the worst split.
        let mut out = Vec::new();
        for b in input.as_bytes() {
            out.extend(s.push(&[*b]));
        }
        out.extend(s.finish());
        payloads(&out)
    }

    fn parse(p: &str) -> Value {
        serde_json::from_str(p).unwrap()
    }

    #[test]
    fn anthropic_events_become_chunks_with_usage_and_done() {
        let input = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-x\",\"usage\":{\"input_tokens\":11,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: ping\ndata: {\"type\":\"ping\"}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"lo\"}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"f\",\"input\":{}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":1}\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":6}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let mut s = Stream::new(Kind::Anthropic, "chatcmpl-x", 1, "alias", true, 40);
        let p = run(&mut s, input);
        assert_eq!(p.last().unwrap(), "[DONE]");
        let chunks: Vec<Value> = p[..p.len() - 1].iter().map(|x| parse(x)).collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunks[0]["id"], "chatcmpl-msg_1");
        assert_eq!(chunks[0]["object"], "chat.completion.chunk");
        let text: String = chunks
            .iter()
            .filter_map(|c| c.pointer("/choices/0/delta/content").and_then(Value::as_str))
            .collect();
        assert_eq!(text, "Hello");
        assert_eq!(chunks[3]["choices"][0]["delta"]["tool_calls"][0]["id"], "toolu_1");
        assert_eq!(chunks[4]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"], "{\"a\":1}");
        assert_eq!(chunks[5]["choices"][0]["finish_reason"], "tool_calls");
        let usage = chunks.last().unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"], json!({"prompt_tokens": 11, "completion_tokens": 6, "total_tokens": 17}));
        assert_eq!(s.usage(), Usage { input: 11, output: 6, estimated: false });
    }

    #[test]
    fn gemini_events_become_chunks_and_done_comes_at_the_end() {
        let input = concat!(
            "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"Hi \"}]}}],\"usageMetadata\":{\"promptTokenCount\":5}}\r\n\r\n",
            "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"there\"}]},\"finishReason\":\"MAX_TOKENS\"}],",
            "\"usageMetadata\":{\"promptTokenCount\":5,\"candidatesTokenCount\":2}}\r\n\r\n",
        );
        let mut s = Stream::new(Kind::Gemini, "chatcmpl-g", 1, "gem", false, 0);
        let p = run(&mut s, input);
        assert_eq!(p.last().unwrap(), "[DONE]");
        let chunks: Vec<Value> = p[..p.len() - 1].iter().map(|x| parse(x)).collect();
        assert_eq!(chunks.len(), 4, "role, two deltas, finish; no usage chunk unless asked: {chunks:?}");
        assert_eq!(chunks[2]["choices"][0]["delta"]["content"], "there");
        assert_eq!(chunks[3]["choices"][0]["finish_reason"], "length");
        assert_eq!(s.usage(), Usage { input: 5, output: 2, estimated: false });
    }

    #[test]
    fn openai_streams_pass_through_and_the_forced_usage_chunk_is_dropped() {
        let input = concat!(
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ab\"}}]}\n\n",
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n",
            "data: [DONE]\n\n",
        );
        let mut s = Stream::new(Kind::Openai, "x", 1, "m", false, 0);
        let p = run(&mut s, input);
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(parse(&p[0])["choices"][0]["delta"]["content"], "ab");
        assert_eq!(p[1], "[DONE]");
        assert_eq!(s.usage(), Usage { input: 3, output: 1, estimated: false });

        let mut s = Stream::new(Kind::Openai, "x", 1, "m", true, 0);
        assert_eq!(run(&mut s, input).len(), 3, "kept when the client asked");

        // A server without usage: the client who asked gets an estimate, marked.
        let no_usage =
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"abcdefgh\"}}]}\n\ndata: [DONE]\n\n";
        let mut s = Stream::new(Kind::Openai, "x", 1, "m", true, 1);
        let p = run(&mut s, no_usage);
        assert_eq!(p.len(), 3, "{p:?}");
        assert_eq!(
            parse(&p[1])["usage"],
            json!({"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2, "estimated": true}),
            "one streamed delta, one token"
        );
    }

    #[test]
    fn without_provider_usage_a_stream_counts_one_token_per_delta() {
        // Ten one-token deltas of two characters: characters / 4 would say 5.
        let deltas: String = (0..10)
            .map(|_| "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" a\"}}]}\n\n")
            .collect();
        let mut s = Stream::new(Kind::Openai, "x", 1, "m", false, 1);
        run(&mut s, &format!("{deltas}data: [DONE]\n\n"));
        assert_eq!(s.usage(), Usage { input: 1, output: 10, estimated: true });
        // One long delta is one piece, not characters / 4.
        let mut s = Stream::new(Kind::Openai, "x", 1, "m", false, 0);
        run(
            &mut s,
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"abcdefghijkl\"}}]}\n\ndata: [DONE]\n\n",
        );
        assert_eq!(s.usage().output, 1);
    }

    #[test]
    fn with_the_models_tokenizer_a_stream_without_usage_is_counted_by_it() {
        let text = "Hello there, this is one long delta of a completion.";
        let one = format!(
            "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}}}}]}}\n\ndata: [DONE]\n\n"
        );
        let mut s = Stream::new(Kind::Openai, "x", 1, "alias", false, 7).counted_by("gpt-4o-mini");
        run(&mut s, &one);
        let real = u64::from(tokens::count("gpt-4o-mini", text).unwrap());
        assert!(real > 1);
        assert_eq!(s.usage(), Usage { input: 7, output: real, estimated: true });
        // A model the gateway has no tokenizer for keeps the delta rule.
        let mut s = Stream::new(Kind::Openai, "x", 1, "alias", false, 7).counted_by("llama-3.1-8b");
        run(&mut s, &one);
        assert_eq!(s.usage().output, 1);
    }

    #[test]
    fn without_provider_usage_the_estimate_is_marked() {
        let mut s = Stream::new(Kind::Gemini, "x", 1, "m", true, 2);
        let p =
            run(&mut s, "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"abcdefgh\"}]}}]}\n\n");
        assert_eq!(s.usage(), Usage { input: 2, output: 2, estimated: true });
        assert_eq!(parse(&p[p.len() - 2])["usage"]["total_tokens"], 4);
    }
}
