//! API keys: kept only as SHA-256 digests, looked up by digest and compared in
//! constant time. The lookup's timing can only tell an attacker about digests, which
//! does not help find a key.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use sluice_plugin_sdk::Consumer;
use subtle::ConstantTimeEq;

use crate::config::ApiKeyConfig;
use crate::identity;
use crate::source::Source;

/// Configured API keys.
pub struct ApiKeys {
    /// Where keys are read from.
    pub sources: Vec<Source>,
    by_digest: HashMap<[u8; 32], Consumer>,
}

impl ApiKeys {
    /// Builds the key table, naming the field of any bad entry.
    pub fn new(c: &ApiKeyConfig) -> Result<ApiKeys, String> {
        let sources = c
            .sources
            .iter()
            .map(Source::from_config)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("api_key.sources: {e}"))?;
        if sources.is_empty() {
            return Err("api_key.sources: give at least one source".into());
        }
        let mut by_digest = HashMap::new();
        for (i, k) in c.keys.iter().enumerate() {
            let at = format!("api_key.keys[{i}]");
            let digest: [u8; 32] = match (&k.key, &k.sha256, &k.secret) {
                (Some(key), None, None) => digest_of(key, &at)?,
                (None, Some(hex), None) => {
                    parse_hex32(hex).ok_or_else(|| format!("{at}.sha256: expected 64 hex digits"))?
                }
                (None, None, Some(name)) => {
                    let key = sluice_plugin_sdk::secrets::get(name).ok_or_else(|| {
                        format!("{at}.secret: the secret `{name}` is not granted to the plugin")
                    })?;
                    digest_of(&key, &at)?
                }
                _ => return Err(format!("{at}: give exactly one of `key`, `sha256` and `secret`")),
            };
            if k.consumer.is_empty() {
                return Err(format!("{at}.consumer: must not be empty"));
            }
            let consumer = Consumer { name: k.consumer.clone(), groups: k.groups.clone() };
            identity::check_consumer_config(&format!("{at}.consumer"), &format!("{at}.groups"), &consumer)?;
            if by_digest.insert(digest, consumer).is_some() {
                return Err(format!("{at}: the same key is listed twice"));
            }
        }
        if by_digest.is_empty() {
            return Err("api_key.keys: give at least one key".into());
        }
        Ok(ApiKeys { sources, by_digest })
    }

    /// The consumer of `key`, if it is one of ours.
    pub fn lookup(&self, key: &str) -> Option<&Consumer> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let (stored, consumer) = self.by_digest.get_key_value(&digest)?;
        bool::from(stored.ct_eq(&digest)).then_some(consumer)
    }
}

fn digest_of(key: &str, at: &str) -> Result<[u8; 32], String> {
    if key.is_empty() {
        return Err(format!("{at}: the key is empty"));
    }
    Ok(Sha256::digest(key.as_bytes()).into())
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}
