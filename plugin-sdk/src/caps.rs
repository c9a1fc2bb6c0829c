//! Capabilities: host functions the operator grants per plugin. Calling one makes the
//! component import it. In native tests they run against the fakes of
//! [`testing`](crate::testing) (kv in memory, outbound HTTP refused).

/// Structured logging into the gateway's log, tagged with plugin and route.
pub mod log {
    pub use crate::bindings::sluice::plugin::log::Level;

    /// Writes one log line.
    pub fn log(level: Level, message: &str) {
        #[cfg(target_arch = "wasm32")]
        crate::bindings::sluice::plugin::log::log(level, message);
        #[cfg(not(target_arch = "wasm32"))]
        crate::testing::LOGS.with(|l| l.borrow_mut().push(format!("{level:?}: {message}")));
    }

    /// Logs at info level.
    pub fn info(message: &str) {
        log(Level::Info, message)
    }

    /// Logs at warn level.
    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }

    /// Logs at error level.
    pub fn error(message: &str) {
        log(Level::Error, message)
    }

    /// Attaches `key=value` to the access-log line of the request being handled
    /// (shown as `plugin.key=value`); works in every phase, streamed chunks included.
    pub fn annotate(key: &str, value: &str) {
        #[cfg(target_arch = "wasm32")]
        crate::bindings::sluice::plugin::log::annotate(key, value);
        #[cfg(not(target_arch = "wasm32"))]
        crate::testing::ANNOTATIONS.with(|a| a.borrow_mut().push((key.to_owned(), value.to_owned())));
    }
}

/// Time.
pub mod clock {
    /// Milliseconds since the Unix epoch.
    pub fn now_ms() -> u64 {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::sluice::plugin::clock::now_ms();
        #[cfg(not(target_arch = "wasm32"))]
        crate::testing::CLOCK_MS.with(|c| c.get()).unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        })
    }

    /// A monotonic clock in nanoseconds.
    pub fn monotonic_ns() -> u64 {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::sluice::plugin::clock::monotonic_ns();
        #[cfg(not(target_arch = "wasm32"))]
        {
            use std::sync::OnceLock;
            static T0: OnceLock<std::time::Instant> = OnceLock::new();
            T0.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
        }
    }
}

/// The shared key-value store (needs `grants: { kv: true }`).
pub mod kv {
    use std::time::Duration;

    pub use crate::bindings::sluice::plugin::kv::KvError;

    fn ms(ttl: Option<Duration>) -> Option<u64> {
        ttl.map(|t| t.as_millis() as u64)
    }

    /// The value of `key`.
    pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::sluice::plugin::kv::get(key);
        #[cfg(not(target_arch = "wasm32"))]
        Ok(crate::testing::KV.with(|k| k.borrow().get(key).cloned()))
    }

    /// Stores `value` under `key`, expiring after `ttl`.
    pub fn set(key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), KvError> {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::sluice::plugin::kv::set(key, value, ms(ttl));
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = ms(ttl);
            crate::testing::KV.with(|k| k.borrow_mut().insert(key.to_owned(), value.to_vec()));
            Ok(())
        }
    }

    /// Removes `key`; true if it was there.
    pub fn delete(key: &str) -> Result<bool, KvError> {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::sluice::plugin::kv::delete(key);
        #[cfg(not(target_arch = "wasm32"))]
        Ok(crate::testing::KV.with(|k| k.borrow_mut().remove(key).is_some()))
    }

    /// Atomically adds `delta` and returns the new value; `ttl` applies on creation.
    pub fn increment(key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, KvError> {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::sluice::plugin::kv::increment(key, delta, ms(ttl));
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = ms(ttl);
            crate::testing::KV.with(|k| {
                let mut k = k.borrow_mut();
                let cur = match k.get(key) {
                    Some(v) => std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok())
                        .ok_or(KvError::NotANumber)?,
                    None => 0,
                };
                let n = cur.saturating_add(delta);
                k.insert(key.to_owned(), n.to_string().into_bytes());
                Ok(n)
            })
        }
    }

    /// Atomically replaces the value if it is `expected` (`None`: absent).
    pub fn compare_and_swap(
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, KvError> {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::sluice::plugin::kv::compare_and_swap(key, expected, new, ms(ttl));
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = ms(ttl);
            crate::testing::KV.with(|k| {
                let mut k = k.borrow_mut();
                if k.get(key).map(Vec::as_slice) != expected {
                    return Ok(false);
                }
                k.insert(key.to_owned(), new.to_vec());
                Ok(true)
            })
        }
    }
}

/// Outbound HTTP (needs `grants: { http: { allow: [...] } }`).
pub mod http {
    pub use crate::bindings::sluice::plugin::http::{HttpError, IncomingResponse, OutgoingRequest};

    /// Sends `request` and waits for the whole response.
    pub fn send(request: &OutgoingRequest) -> Result<IncomingResponse, HttpError> {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::sluice::plugin::http::send(request);
        #[cfg(not(target_arch = "wasm32"))]
        Err(HttpError::NotAllowed(format!("no outbound http in native tests ({})", request.url)))
    }

    /// A `GET` of `url`.
    pub fn get(url: &str) -> Result<IncomingResponse, HttpError> {
        send(&OutgoingRequest {
            method: "GET".into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout_ms: None,
        })
    }
}

/// Secrets granted by the operator.
pub mod secrets {
    /// The secret `name`, if granted.
    pub fn get(name: &str) -> Option<String> {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::sluice::plugin::secrets::get(name);
        #[cfg(not(target_arch = "wasm32"))]
        crate::testing::SECRETS.with(|s| s.borrow().get(name).cloned())
    }
}

/// Plugin-defined metrics, exported by the gateway with the plugin's name.
pub mod metrics {
    /// Adds to a counter.
    pub fn counter_add(name: &str, value: u64) {
        #[cfg(target_arch = "wasm32")]
        crate::bindings::sluice::plugin::metrics::counter_add(name, value);
        #[cfg(not(target_arch = "wasm32"))]
        crate::testing::COUNTERS.with(|c| c.borrow_mut().push((name.to_owned(), Vec::new(), value)));
    }

    /// Adds to the series of counter `name` with these labels (exported as
    /// `sluice_plugin_custom_total{plugin, name, <labels>}`). Label names are
    /// `[a-zA-Z_][a-zA-Z0-9_]*`, not `plugin` or `name`.
    pub fn counter_add_labeled(name: &str, labels: &[(&str, &str)], value: u64) {
        let labels: Vec<(String, String)> =
            labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        #[cfg(target_arch = "wasm32")]
        crate::bindings::sluice::plugin::metrics::counter_add_labeled(name, &labels, value);
        #[cfg(not(target_arch = "wasm32"))]
        crate::testing::COUNTERS.with(|c| c.borrow_mut().push((name.to_owned(), labels, value)));
    }

    /// Records a histogram observation.
    pub fn histogram_record(name: &str, value: f64) {
        #[cfg(target_arch = "wasm32")]
        crate::bindings::sluice::plugin::metrics::histogram_record(name, value);
        #[cfg(not(target_arch = "wasm32"))]
        let _ = (name, value);
    }
}

/// Signature checks and MACs computed natively by the host (always granted): use these
/// instead of compiling RSA or elliptic-curve arithmetic into the plugin, which runs
/// tens of times slower as Wasm. In native tests they run on the same library the host
/// uses (`ring`).
pub mod crypto {
    pub use crate::bindings::sluice::plugin::crypto::{Hash, PublicKey, Scheme};

    /// True if `signature` over `message` verifies with `key` under `scheme` (ECDSA
    /// signatures in JWS's fixed `r || s` form).
    pub fn verify(scheme: Scheme, key: &PublicKey, message: &[u8], signature: &[u8]) -> bool {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::sluice::plugin::crypto::verify(scheme, key, message, signature);
        #[cfg(not(target_arch = "wasm32"))]
        native::verify(scheme, key, message, signature)
    }

    /// The HMAC of `message` under `key`.
    pub fn hmac(hash: Hash, key: &[u8], message: &[u8]) -> Vec<u8> {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::sluice::plugin::crypto::hmac(hash, key, message);
        #[cfg(not(target_arch = "wasm32"))]
        native::hmac(hash, key, message)
    }

    /// Compares two byte strings in time independent of where they differ (for MACs).
    pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod native {
        use super::{Hash, PublicKey, Scheme};
        use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey, VerificationAlgorithm};

        pub fn verify(scheme: Scheme, key: &PublicKey, msg: &[u8], sig: &[u8]) -> bool {
            let rsa = |alg: &'static signature::RsaParameters| match key {
                PublicKey::Rsa((n, e)) => RsaPublicKeyComponents { n, e }.verify(alg, msg, sig).is_ok(),
                _ => false,
            };
            let point = |alg: &'static dyn VerificationAlgorithm, raw: &[u8]| {
                UnparsedPublicKey::new(alg, raw).verify(msg, sig).is_ok()
            };
            match (scheme, key) {
                (Scheme::Rs256, _) => rsa(&signature::RSA_PKCS1_2048_8192_SHA256),
                (Scheme::Rs384, _) => rsa(&signature::RSA_PKCS1_2048_8192_SHA384),
                (Scheme::Rs512, _) => rsa(&signature::RSA_PKCS1_2048_8192_SHA512),
                (Scheme::Ps256, _) => rsa(&signature::RSA_PSS_2048_8192_SHA256),
                (Scheme::Ps384, _) => rsa(&signature::RSA_PSS_2048_8192_SHA384),
                (Scheme::Ps512, _) => rsa(&signature::RSA_PSS_2048_8192_SHA512),
                (Scheme::Es256, PublicKey::P256(p)) => point(&signature::ECDSA_P256_SHA256_FIXED, p),
                (Scheme::Es384, PublicKey::P384(p)) => point(&signature::ECDSA_P384_SHA384_FIXED, p),
                (Scheme::Eddsa, PublicKey::Ed25519(k)) => point(&signature::ED25519, k),
                _ => false,
            }
        }

        pub fn hmac(hash: Hash, key: &[u8], msg: &[u8]) -> Vec<u8> {
            let alg = match hash {
                Hash::Sha256 => ring::hmac::HMAC_SHA256,
                Hash::Sha384 => ring::hmac::HMAC_SHA384,
                Hash::Sha512 => ring::hmac::HMAC_SHA512,
            };
            ring::hmac::sign(&ring::hmac::Key::new(alg, key), msg).as_ref().to_vec()
        }
    }
}

/// Token counts by a model's own tokenizer, computed by the host (always granted):
/// the vocabularies are megabytes, kept once per gateway instead of once per plugin
/// instance. In native tests they run on the same library the host uses
/// (`tiktoken-rs`).
pub mod tokens {
    /// How many tokens `text` is for the tokenizer of `model` (an OpenAI model name
    /// such as `gpt-4o` or `gpt-4`), or `None` when the gateway has no tokenizer for it.
    pub fn count(model: &str, text: &str) -> Option<u32> {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::sluice::plugin::tokens::count(model, text);
        #[cfg(not(target_arch = "wasm32"))]
        native::count(model, text)
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod native {
        use tiktoken_rs::tokenizer::{Tokenizer, get_tokenizer};

        pub fn count(model: &str, text: &str) -> Option<u32> {
            let bpe = match get_tokenizer(model)? {
                Tokenizer::O200kBase | Tokenizer::O200kHarmony => tiktoken_rs::o200k_base_singleton(),
                Tokenizer::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
                _ => return None,
            };
            Some(u32::try_from(bpe.encode_ordinary(text).len()).unwrap_or(u32::MAX))
        }
    }
}
