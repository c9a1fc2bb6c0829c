//! JWT (JWS compact serialization) verification: size and encoding checks, the
//! header's `alg` against the key's type, the signature, then the claims. Verified
//! tokens are remembered until they expire, as Envoy's `jwt_authn` does: looked up by
//! a randomly keyed SipHash and confirmed by a constant-time comparison of the whole
//! token (SHA-256 in Wasm cost more than checking an HS256 signature on the host).

pub mod keys;
mod object;
mod remote;

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use sluice_plugin_sdk::crypto::constant_time_eq;
use sluice_plugin_sdk::{Consumer, log};

use crate::config::{JwtConfig, parse_duration_ms};
use crate::identity;
use crate::source::Source;
use keys::{Alg, Key};
use object::{NotAnObject, Object};
pub use remote::RemoteJwks;

/// A configured JWT verifier.
pub struct Jwt {
    /// Where tokens are read from.
    pub sources: Vec<Source>,
    keys: Vec<Key>,
    remote: Option<RemoteJwks>,
    algorithms: Option<Vec<Alg>>,
    issuer: Option<Vec<String>>,
    audience: Option<Vec<String>>,
    required_claims: Vec<String>,
    leeway_s: i64,
    max_token_bytes: usize,
    consumer_claim: String,
    groups_claim: Option<String>,
    cache: RefCell<TokenCache>,
    /// The last few header segments read and what they said: tokens from one issuer
    /// share their header, so it is decoded once.
    headers: RefCell<Vec<HeaderMemo>>,
}

/// A header segment, its algorithm and its key id.
type HeaderMemo = (Box<str>, Alg, Option<Box<str>>);

/// Header segments remembered by [`Jwt::header`].
const HEADER_MEMO: usize = 4;

/// Verified tokens by keyed hash (the token itself is kept and compared in constant
/// time), with what must be re-checked on every use.
struct TokenCache {
    max: usize,
    hasher: RandomState,
    entries: HashMap<u64, (Box<str>, Verified)>,
}

#[derive(Clone)]
struct Verified {
    consumer: Consumer,
    exp: Option<i64>,
    nbf: Option<i64>,
}

impl TokenCache {
    /// The cache key of `token` (`None` when the cache is off: no hashing at all).
    fn key(&self, token: &str) -> Option<u64> {
        (self.max > 0).then(|| self.hasher.hash_one(token))
    }

    fn get(&self, key: u64, token: &str) -> Option<Verified> {
        let (cached, v) = self.entries.get(&key)?;
        constant_time_eq(cached.as_bytes(), token.as_bytes()).then(|| v.clone())
    }

    fn insert(&mut self, key: u64, token: &str, v: Verified) {
        if self.entries.len() >= self.max {
            // Simple and bounded: start over. Clients re-sending tokens refill it.
            self.entries.clear();
        }
        self.entries.insert(key, (token.into(), v));
    }
}

impl Jwt {
    /// Builds the verifier from its config, naming the field of any bad value.
    pub fn new(c: &JwtConfig) -> Result<Jwt, String> {
        let sources = c
            .sources
            .iter()
            .map(Source::from_config)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("jwt.sources: {e}"))?;
        if sources.is_empty() {
            return Err("jwt.sources: give at least one source".into());
        }
        let mut keys = Vec::new();
        for (i, k) in c.keys.iter().enumerate() {
            keys.push(inline_key(k).map_err(|e| format!("jwt.keys[{i}]: {e}"))?);
            if k.jwk.as_ref().is_some_and(keys::is_private) {
                log::warn(&format!(
                    "jwt.keys[{i}]: the JWK is a private key (it has `d`); only its public part is used: \
                     configure the public key and keep the private one out of the gateway's config"
                ));
            }
        }
        if let Some(doc) = &c.jwks {
            let found = keys::from_jwks(doc, true).map_err(|e| format!("jwt.jwks: {e}"))?;
            if let Some(s) = found.invalid.first() {
                return Err(format!("jwt.jwks: {s}"));
            }
            if found.keys.is_empty() {
                return Err(format!("jwt.jwks: {}", found.no_keys()));
            }
            for k in &found.private {
                log::warn(&format!(
                    "jwt.jwks: {k} is a private key (it has `d`); only its public part is used: \
                     configure the public key and keep the private one out of the gateway's config"
                ));
            }
            keys.extend(found.keys);
        }
        let ttl = parse_duration_ms(&c.jwks_cache_ttl).map_err(|e| format!("jwt.jwks_cache_ttl: {e}"))?;
        let min_refresh =
            parse_duration_ms(&c.jwks_min_refresh).map_err(|e| format!("jwt.jwks_min_refresh: {e}"))?;
        let remote = match &c.jwks_url {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                // Fetched by the first request that needs it: the host allows no
                // outbound calls during `configure`.
                Some(RemoteJwks::new(url.clone(), ttl, min_refresh))
            }
            Some(url) => return Err(format!("jwt.jwks_url: `{url}` is not an http:// or https:// URL")),
            None => None,
        };
        if keys.is_empty() && remote.is_none() {
            return Err("jwt: give `keys`, `jwks` or `jwks_url`".into());
        }
        let algorithms = match &c.algorithms {
            None => None,
            Some(list) => {
                let mut algs = Vec::new();
                for a in list {
                    algs.push(Alg::parse(a).ok_or_else(|| {
                        let known: Vec<_> = Alg::ALL.iter().map(|a| a.name()).collect();
                        format!(
                            "jwt.algorithms: unsupported algorithm `{a}` (supported: {})",
                            known.join(", ")
                        )
                    })?);
                }
                Some(algs)
            }
        };
        if let Some(algs) = &algorithms
            && remote.is_none()
        {
            warn_unverifiable(algs, &keys);
        }
        let leeway = parse_duration_ms(&c.leeway).map_err(|e| format!("jwt.leeway: {e}"))?;
        if c.max_token_bytes == 0 {
            return Err("jwt.max_token_bytes: must be positive".into());
        }
        Ok(Jwt {
            sources,
            keys,
            remote,
            algorithms,
            issuer: c.issuer.clone(),
            audience: c.audience.clone(),
            required_claims: c.required_claims.clone(),
            leeway_s: i64::try_from(leeway / 1000).unwrap_or(i64::MAX),
            max_token_bytes: c.max_token_bytes,
            consumer_claim: c.consumer_claim.clone(),
            groups_claim: c.groups_claim.clone(),
            cache: RefCell::new(TokenCache {
                max: c.cache_entries,
                hasher: RandomState::new(),
                entries: HashMap::new(),
            }),
            headers: RefCell::new(Vec::with_capacity(HEADER_MEMO)),
        })
    }

    /// Verifies `token` at `now_ms`: the consumer it names, or why it is refused (an
    /// `error_description` safe to show the client).
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<Consumer, String> {
        if token.len() > self.max_token_bytes {
            return Err(format!("token is larger than {} bytes", self.max_token_bytes));
        }
        let now = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
        let key = self.cache.borrow().key(token);
        if let Some(v) = key.and_then(|k| self.cache.borrow().get(k, token)) {
            self.check_times(v.exp, v.nbf, now)?;
            return Ok(v.consumer);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("token is not a JWS in compact form (header.payload.signature)".into());
        };
        let (alg, kid) = self.header(h)?;
        let payload = URL_SAFE_NO_PAD.decode(p).map_err(|_| "payload is not base64url")?;
        let claims = Object::parse(&payload).map_err(|e| format!("payload {}", not_object(e)))?;
        let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| "signature is not base64url")?;
        let signed = &token.as_bytes()[..h.len() + 1 + p.len()];
        self.check_signature(alg, kid.as_deref(), signed, &sig, now_ms)?;
        let v = self.check_claims(&claims, now)?;
        if let Some(k) = key {
            self.cache.borrow_mut().insert(k, token, v.clone());
        }
        Ok(v.consumer)
    }

    /// The algorithm and key id of header segment `h`, remembered for the next
    /// tokens with the same segment.
    fn header(&self, h: &str) -> Result<(Alg, Option<Box<str>>), String> {
        if let Some((_, alg, kid)) = self.headers.borrow().iter().find(|(seg, _, _)| &**seg == h) {
            return Ok((*alg, kid.clone()));
        }
        let bytes = URL_SAFE_NO_PAD.decode(h).map_err(|_| "header is not base64url")?;
        let header = Object::parse(&bytes).map_err(|e| format!("header {}", not_object(e)))?;
        let alg = self.alg(&header)?;
        let kid = header.str("kid").map_err(|()| "kid is not a string")?.map(Box::from);
        let mut memo = self.headers.borrow_mut();
        if memo.len() == HEADER_MEMO {
            memo.remove(0);
        }
        memo.push((h.into(), alg, kid.clone()));
        Ok((alg, kid))
    }

    fn alg(&self, header: &Object<'_>) -> Result<Alg, String> {
        let name = header.str("alg").ok().flatten().ok_or("header has no alg")?;
        let name = name.as_ref();
        if name.eq_ignore_ascii_case("none") {
            return Err("unsigned tokens (alg none) are not accepted".into());
        }
        let alg = Alg::parse(name).ok_or_else(|| format!("algorithm {name} is not supported"))?;
        if self.algorithms.as_ref().is_some_and(|list| !list.contains(&alg)) {
            return Err(format!("algorithm {name} is not accepted"));
        }
        // RFC 7515 §4.1.11: extensions we do not understand must be refused.
        if header.contains("crit") {
            return Err("critical header extensions are not supported".into());
        }
        Ok(alg)
    }

    fn check_signature(
        &self,
        alg: Alg,
        kid: Option<&str>,
        msg: &[u8],
        sig: &[u8],
        now_ms: u64,
    ) -> Result<(), String> {
        if let Some(r) = &self.remote
            && r.refresh_if_stale(now_ms)
        {
            self.cache.borrow_mut().entries.clear();
        }
        let matches =
            |k: &Key| k.accepts(alg) && (kid.is_none() || k.kid.is_none() || k.kid.as_deref() == kid);
        let mut tried = false;
        for key in self.keys.iter().filter(|k| matches(k)) {
            tried = true;
            if key.verify(alg, msg, sig) {
                return Ok(());
            }
        }
        if let Some(r) = &self.remote {
            let known = |r: &RemoteJwks| {
                r.with_keys(|keys| keys.iter().any(|k| kid.is_some() && k.kid.as_deref() == kid))
            };
            // An unknown kid may be a rotated key: fetch again, at most every `jwks_min_refresh`.
            if kid.is_some() && !known(r) && r.refresh(now_ms) {
                self.cache.borrow_mut().entries.clear();
            }
            let (remote_tried, ok) = r.with_keys(|keys| {
                let mut tried = false;
                for key in keys.iter().filter(|k| matches(k)) {
                    tried = true;
                    if key.verify(alg, msg, sig) {
                        return (true, true);
                    }
                }
                (tried, false)
            });
            if ok {
                return Ok(());
            }
            tried |= remote_tried;
        }
        if !tried {
            return Err(match kid {
                Some(k) => format!("no {} key with kid {k}", alg.name()),
                None => format!("no key for algorithm {}", alg.name()),
            });
        }
        Err("signature verification failed".into())
    }

    fn check_times(&self, exp: Option<i64>, nbf: Option<i64>, now: i64) -> Result<(), String> {
        if exp.is_some_and(|exp| now.saturating_sub(self.leeway_s) >= exp) {
            return Err("token expired".into());
        }
        if nbf.is_some_and(|nbf| now.saturating_add(self.leeway_s) < nbf) {
            return Err("token not yet valid".into());
        }
        Ok(())
    }

    fn check_claims(&self, claims: &Object<'_>, now: i64) -> Result<Verified, String> {
        for c in &self.required_claims {
            if !claims.contains(c) {
                return Err(format!("token has no {c} claim"));
            }
        }
        let exp = numeric_date(claims, "exp")?;
        let nbf = numeric_date(claims, "nbf")?;
        if numeric_date(claims, "iat")?.is_some_and(|iat| now.saturating_add(self.leeway_s) < iat) {
            return Err("token issued in the future".into());
        }
        self.check_times(exp, nbf, now)?;
        if let Some(issuers) = &self.issuer {
            let iss = claims.str("iss").ok().flatten();
            if !iss.is_some_and(|i| issuers.iter().any(|x| *x == i)) {
                return Err("issuer not accepted".into());
            }
        }
        if let Some(audiences) = &self.audience {
            let ok = match claims.get::<Value>("aud") {
                Some(Value::String(a)) => audiences.contains(&a),
                Some(Value::Array(list)) => {
                    list.iter().filter_map(Value::as_str).any(|a| audiences.iter().any(|x| x == a))
                }
                _ => false,
            };
            if !ok {
                return Err("audience not accepted".into());
            }
        }
        let name = match claims.str(&self.consumer_claim) {
            Ok(Some(s)) => s.into_owned(),
            _ => claims
                .get::<serde_json::Number>(&self.consumer_claim)
                .map(|n| n.to_string())
                .unwrap_or_default(),
        };
        if name.is_empty() {
            return Err(format!("token has no {} claim naming the consumer", self.consumer_claim));
        }
        // Refused, not encoded: a name or group that cannot be forwarded as it is
        // must not become an identity at all.
        if let Some(why) = identity::unfit(&name) {
            return Err(format!("the {} claim {why}", self.consumer_claim));
        }
        let groups: Vec<String> = match self.groups_claim.as_ref().and_then(|g| claims.get::<Value>(g)) {
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        if let Some(why) = groups.iter().find_map(|g| identity::unfit(g)) {
            let claim = self.groups_claim.as_deref().unwrap_or_default();
            return Err(format!("the {claim} claim {why}"));
        }
        Ok(Verified { consumer: Consumer { name, groups }, exp, nbf })
    }
}

fn inline_key(k: &crate::config::JwtKeyConfig) -> Result<Key, String> {
    let given = [k.pem.is_some(), k.jwk.is_some(), k.secret.is_some(), k.secret_name.is_some()];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err("give exactly one of `pem`, `jwk`, `secret` and `secret_name`".into());
    }
    if let Some(pem) = &k.pem {
        let kind = keys::from_pem(pem).map_err(|e| format!("pem {e}"))?;
        return Key::new(k.kid.clone(), k.alg.as_deref(), kind).map_err(|e| format!("alg: {e}"));
    }
    if let Some(jwk) = &k.jwk {
        let kid = k.kid.as_deref().or_else(|| jwk.get("kid").and_then(Value::as_str));
        let mut key = keys::from_jwk(jwk, true).map_err(|e| match kid {
            Some(kid) => format!("jwk (kid {kid}) {e}"),
            None => format!("jwk {e}"),
        })?;
        if k.kid.is_some() {
            key.kid = k.kid.clone();
        }
        if let Some(a) = &k.alg {
            key = Key::new(key.kid, Some(a), key.kind).map_err(|e| format!("alg: {e}"))?;
        }
        return Ok(key);
    }
    let secret = match (&k.secret, &k.secret_name) {
        (Some(s), _) => s.clone(),
        (None, Some(name)) => sluice_plugin_sdk::secrets::get(name)
            .ok_or_else(|| format!("secret_name: the secret `{name}` is not granted to the plugin"))?,
        (None, None) => unreachable!("one source is given"),
    };
    let kind = keys::hmac_secret(secret.as_bytes()).map_err(|e| format!("secret: {e}"))?;
    Key::new(k.kid.clone(), k.alg.as_deref(), kind).map_err(|e| format!("alg: {e}"))
}

/// Warns about algorithms of the `algorithms` list no configured key verifies
/// (without a JWKS URL, the keys are all known at load).
fn warn_unverifiable(algorithms: &[Alg], keys: &[Key]) {
    let unverifiable: Vec<&str> =
        algorithms.iter().filter(|a| !keys.iter().any(|k| k.accepts(**a))).map(|a| a.name()).collect();
    if unverifiable.is_empty() {
        return;
    }
    let consequence = if unverifiable.len() == algorithms.len() {
        "every token will be refused"
    } else {
        "tokens signed with them will be refused"
    };
    log::warn(&format!(
        "jwt.algorithms: no configured key verifies {}: {consequence}",
        unverifiable.join(", ")
    ));
}

fn not_object(e: NotAnObject) -> &'static str {
    match e {
        NotAnObject::NotJson => "is not JSON",
        NotAnObject::NotObject => "is not a JSON object",
    }
}

fn numeric_date(claims: &Object<'_>, name: &str) -> Result<Option<i64>, String> {
    if !claims.contains(name) {
        return Ok(None);
    }
    let n = claims.get::<serde_json::Number>(name);
    match n.and_then(|n| n.as_i64().or_else(|| n.as_f64().map(|f| f as i64))) {
        Some(t) => Ok(Some(t)),
        None => Err(format!("{name} is not a number")),
    }
}
