//! `tokens`: token counts by the tokenizers of OpenAI models (`tiktoken-rs`), one
//! shared copy of each vocabulary per process, built the first time a plugin asks for
//! it (~0.1 s; that time is given back to the call's deadline). No authority: always
//! granted.

use std::time::Instant;

use tiktoken_rs::CoreBPE;
use tiktoken_rs::tokenizer::{Tokenizer, get_tokenizer};

use crate::plugins::bindings::sluice::plugin::tokens::Host;
use crate::plugins::state::PluginState;

/// The tokenizer of `model`, if the host has it: the o200k vocabulary (GPT-4o, 4.1,
/// 5, o-series) and cl100k (GPT-4, GPT-3.5). Older vocabularies are left out (they
/// would add megabytes to the binary for models no longer served).
fn tokenizer(model: &str) -> Option<&'static CoreBPE> {
    match get_tokenizer(model)? {
        Tokenizer::O200kBase | Tokenizer::O200kHarmony => Some(tiktoken_rs::o200k_base_singleton()),
        Tokenizer::Cl100kBase => Some(tiktoken_rs::cl100k_base_singleton()),
        Tokenizer::P50kBase | Tokenizer::R50kBase | Tokenizer::P50kEdit | Tokenizer::Gpt2 => None,
    }
}

/// How many tokens `text` is for `model`'s tokenizer.
pub fn count(model: &str, text: &str) -> Option<u32> {
    let bpe = tokenizer(model)?;
    Some(u32::try_from(bpe.encode_ordinary(text).len()).unwrap_or(u32::MAX))
}

impl Host for PluginState {
    fn count(&mut self, model: String, text: String) -> wasmtime::Result<Option<u32>> {
        // The first use of a vocabulary builds it: host work the plugin did not do.
        let started = Instant::now();
        let bpe = tokenizer(&model);
        self.timing.waited(started.elapsed());
        Ok(bpe.map(|bpe| u32::try_from(bpe.encode_ordinary(&text).len()).unwrap_or(u32::MAX)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_models_are_counted_with_their_vocabulary_and_others_are_not() {
        // Known counts (OpenAI's tokenizer page): "hello world" is 2 tokens in both.
        assert_eq!(count("gpt-4o", "hello world"), Some(2));
        assert_eq!(count("gpt-4", "hello world"), Some(2));
        // The vocabularies differ: o200k merges more of this than cl100k.
        let text = "Sluice is a programmable HTTP API gateway; plugins are WebAssembly components.";
        let (o200k, cl100k) = (count("gpt-4o-mini", text).unwrap(), count("gpt-3.5-turbo", text).unwrap());
        assert!(o200k > 5 && cl100k > 5, "{o200k} {cl100k}");
        assert_eq!(count("llama-3.1-8b-instruct", text), None);
        assert_eq!(count("", text), None);
        // Special-token text is ordinary text, not one special token.
        assert!(count("gpt-4o", "<|endoftext|>").unwrap() > 1);
    }
}
