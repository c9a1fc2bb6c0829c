//! Verification keys: parsed once (PEM, JWK, JWKS, HMAC secret) into a [`Key`] whose
//! type fixes the algorithms it accepts, so an HMAC token can never be checked against
//! an RSA or EC public key (algorithm confusion).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use serde_json::Value;
use sluice_plugin_sdk::crypto::{self, Hash, PublicKey, Scheme};

/// Smallest RSA modulus accepted (RFC 7518 §3.3).
pub const MIN_RSA_BITS: usize = 2048;
/// Smallest HMAC secret accepted, in bytes.
pub const MIN_HMAC_BYTES: usize = 32;

/// A JWS algorithm this plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// HMAC SHA-256.
    HS256,
    /// HMAC SHA-384.
    HS384,
    /// HMAC SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 SHA-512.
    RS512,
    /// RSASSA-PSS SHA-256.
    PS256,
    /// RSASSA-PSS SHA-384.
    PS384,
    /// RSASSA-PSS SHA-512.
    PS512,
    /// ECDSA P-256 SHA-256.
    ES256,
    /// ECDSA P-384 SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

impl Alg {
    /// Every algorithm, for messages.
    pub const ALL: [Alg; 12] = [
        Alg::HS256,
        Alg::HS384,
        Alg::HS512,
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
    ];

    /// The algorithm named `s` (the JWS `alg` value), if implemented.
    pub fn parse(s: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.name() == s)
    }

    /// The JWS name.
    pub fn name(self) -> &'static str {
        match self {
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }
}

/// The key material.
#[derive(Clone)]
pub enum KeyKind {
    /// An HMAC secret.
    Hmac(Vec<u8>),
    /// An RSA public key.
    Rsa(rsa::RsaPublicKey),
    /// A P-256 public key.
    P256(p256::ecdsa::VerifyingKey),
    /// A P-384 public key.
    P384(p384::ecdsa::VerifyingKey),
    /// An Ed25519 public key.
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl KeyKind {
    /// The algorithms this kind of key can verify.
    fn accepts(&self, alg: Alg) -> bool {
        use Alg::*;
        match self {
            KeyKind::Hmac(_) => matches!(alg, HS256 | HS384 | HS512),
            KeyKind::Rsa(_) => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::P256(_) => alg == ES256,
            KeyKind::P384(_) => alg == ES384,
            KeyKind::Ed25519(_) => alg == EdDSA,
        }
    }

    /// The key as the host's `crypto` import takes it (`None` for HMAC secrets).
    fn public_key(&self) -> Option<PublicKey> {
        match self {
            KeyKind::Hmac(_) => None,
            KeyKind::Rsa(k) => Some(PublicKey::Rsa((k.n().to_bytes_be(), k.e().to_bytes_be()))),
            KeyKind::P256(k) => Some(PublicKey::P256(k.to_encoded_point(false).as_bytes().to_vec())),
            KeyKind::P384(k) => Some(PublicKey::P384(k.to_encoded_point(false).as_bytes().to_vec())),
            KeyKind::Ed25519(k) => Some(PublicKey::Ed25519(k.to_bytes().to_vec())),
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            KeyKind::Hmac(_) => "an HMAC secret",
            KeyKind::Rsa(_) => "an RSA key",
            KeyKind::P256(_) => "a P-256 key",
            KeyKind::P384(_) => "a P-384 key",
            KeyKind::Ed25519(_) => "an Ed25519 key",
        }
    }
}

/// A verification key with its id and, if pinned, its one algorithm.
#[derive(Clone)]
pub struct Key {
    /// The `kid` tokens name it by.
    pub kid: Option<String>,
    /// The one algorithm it is pinned to, if any.
    pub alg: Option<Alg>,
    /// The key.
    pub kind: KeyKind,
    /// The key in the form the host's `crypto` import verifies with.
    public: Option<PublicKey>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("kind", &self.kind.describe())
            .finish()
    }
}

impl Key {
    /// A key of `kind`, checking that a pinned `alg` suits it.
    pub fn new(kid: Option<String>, alg: Option<&str>, kind: KeyKind) -> Result<Key, String> {
        let alg = match alg {
            None => None,
            Some(a) => {
                let parsed = Alg::parse(a).ok_or_else(|| format!("unsupported algorithm `{a}`"))?;
                if !kind.accepts(parsed) {
                    return Err(format!("algorithm {a} cannot be used with {}", kind.describe()));
                }
                Some(parsed)
            }
        };
        let public = kind.public_key();
        Ok(Key { kid, alg, kind, public })
    }

    /// True if this key may verify a token signed with `alg`.
    pub fn accepts(&self, alg: Alg) -> bool {
        self.kind.accepts(alg) && self.alg.is_none_or(|a| a == alg)
    }

    /// Checks `sig` over `msg` with `alg`. `false` for a wrong signature, a malformed
    /// one, or an algorithm the key does not accept.
    pub fn verify(&self, alg: Alg, msg: &[u8], sig: &[u8]) -> bool {
        if !self.accepts(alg) {
            return false;
        }
        // The arithmetic runs natively in the host (`crypto`): as Wasm, an RS256 check
        // took about 1.5 ms and an ES256 one 2.3 ms; natively they take microseconds.
        let hmac = |hash: Hash| match &self.kind {
            KeyKind::Hmac(k) => crypto::constant_time_eq(&crypto::hmac(hash, k, msg), sig),
            _ => false,
        };
        let scheme = match alg {
            Alg::HS256 => return hmac(Hash::Sha256),
            Alg::HS384 => return hmac(Hash::Sha384),
            Alg::HS512 => return hmac(Hash::Sha512),
            Alg::RS256 => Scheme::Rs256,
            Alg::RS384 => Scheme::Rs384,
            Alg::RS512 => Scheme::Rs512,
            Alg::PS256 => Scheme::Ps256,
            Alg::PS384 => Scheme::Ps384,
            Alg::PS512 => Scheme::Ps512,
            Alg::ES256 => Scheme::Es256,
            Alg::ES384 => Scheme::Es384,
            Alg::EdDSA => Scheme::Eddsa,
        };
        self.public.as_ref().is_some_and(|key| crypto::verify(scheme, key, msg, sig))
    }
}

fn check_rsa(k: rsa::RsaPublicKey) -> Result<KeyKind, String> {
    // The modulus's length in bits from its highest set bit: a 2041-bit modulus
    // takes 256 bytes, and counting bytes would round it up to 2048.
    let bits = k.n().bits();
    if bits < MIN_RSA_BITS {
        return Err(format!("RSA key of {bits} bits is too short (at least {MIN_RSA_BITS})"));
    }
    Ok(KeyKind::Rsa(k))
}

/// An HMAC secret.
pub fn hmac_secret(secret: &[u8]) -> Result<KeyKind, String> {
    if secret.len() < MIN_HMAC_BYTES {
        return Err(format!(
            "HMAC secret of {} bytes is too short (at least {MIN_HMAC_BYTES})",
            secret.len()
        ));
    }
    Ok(KeyKind::Hmac(secret.to_vec()))
}

/// A PEM public key: SPKI (`PUBLIC KEY`: RSA, P-256, P-384, Ed25519) or PKCS#1
/// (`RSA PUBLIC KEY`).
pub fn from_pem(pem: &str) -> Result<KeyKind, String> {
    let pem = pem.trim();
    if pem.contains("PRIVATE KEY") {
        return Err("is a private key: give the public key".into());
    }
    if pem.contains("BEGIN CERTIFICATE") {
        return Err("is a certificate: give its public key (`openssl x509 -pubkey -noout`)".into());
    }
    if pem.contains("BEGIN RSA PUBLIC KEY") {
        return rsa::RsaPublicKey::from_pkcs1_pem(pem)
            .map_err(|e| format!("bad PKCS#1 RSA key: {e}"))
            .and_then(check_rsa);
    }
    if !pem.contains("BEGIN PUBLIC KEY") {
        return Err("is not a PEM public key (`-----BEGIN PUBLIC KEY-----`)".into());
    }
    if let Ok(k) = rsa::RsaPublicKey::from_public_key_pem(pem) {
        return check_rsa(k);
    }
    if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_pem(pem) {
        return Ok(KeyKind::P256(k));
    }
    if let Ok(k) = p384::ecdsa::VerifyingKey::from_public_key_pem(pem) {
        return Ok(KeyKind::P384(k));
    }
    if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
        return Ok(KeyKind::Ed25519(k));
    }
    Err("is not an RSA, P-256, P-384 or Ed25519 public key".into())
}

fn member<'a>(jwk: &'a serde_json::Map<String, Value>, name: &str) -> Result<&'a str, String> {
    jwk.get(name).and_then(Value::as_str).ok_or_else(|| format!("has no `{name}` string"))
}

fn b64_member(jwk: &serde_json::Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD.decode(member(jwk, name)?).map_err(|_| format!("`{name}` is not base64url"))
}

fn fixed<const N: usize>(v: Vec<u8>, name: &str) -> Result<[u8; N], String> {
    v.try_into().map_err(|v: Vec<u8>| format!("`{name}` is {} bytes, expected {N}", v.len()))
}

/// Why a JWK is not for verifying signatures, if it is not: its `use` (RFC 7517
/// §4.2) is not `sig`, or its `key_ops` (§4.3) do not include `verify`. The reason
/// reads like `use enc` or `key_ops without verify`.
pub fn not_for_verification(jwk: &Value) -> Option<String> {
    if let Some(u) = jwk.get("use") {
        match u.as_str() {
            Some("sig") => {}
            Some(other) => return Some(format!("use {other}")),
            None => return Some("`use` not a string".into()),
        }
    }
    if let Some(ops) = jwk.get("key_ops") {
        let Some(ops) = ops.as_array().filter(|ops| ops.iter().all(Value::is_string)) else {
            return Some("`key_ops` not a list of strings".into());
        };
        if !ops.iter().any(|op| op == "verify") {
            return Some("key_ops without verify".into());
        }
    }
    None
}

/// True for a private JWK (it has the private exponent or scalar `d`).
pub fn is_private(jwk: &Value) -> bool {
    jwk.get("d").is_some()
}

/// A JWK for verifying signatures: one whose `use` or `key_ops` says otherwise (an
/// encryption key) is refused. Private members (`d`, ...) are ignored; `oct` keys
/// only when `allow_oct`.
pub fn from_jwk(jwk: &Value, allow_oct: bool) -> Result<Key, String> {
    let obj = jwk.as_object().ok_or("is not a JSON object")?;
    if let Some(why) = not_for_verification(jwk) {
        return Err(format!("is not a signature-verification key ({why})"));
    }
    let kid = obj.get("kid").and_then(Value::as_str).map(str::to_owned);
    let alg = obj.get("alg").and_then(Value::as_str);
    let kind = match member(obj, "kty")? {
        "RSA" => {
            let n = rsa::BigUint::from_bytes_be(&b64_member(obj, "n")?);
            let e = rsa::BigUint::from_bytes_be(&b64_member(obj, "e")?);
            check_rsa(rsa::RsaPublicKey::new(n, e).map_err(|e| format!("bad RSA key: {e}"))?)?
        }
        "EC" => match member(obj, "crv")? {
            "P-256" => {
                let x: [u8; 32] = fixed(b64_member(obj, "x")?, "x")?;
                let y: [u8; 32] = fixed(b64_member(obj, "y")?, "y")?;
                let point = p256::EncodedPoint::from_affine_coordinates(&x.into(), &y.into(), false);
                KeyKind::P256(
                    p256::ecdsa::VerifyingKey::from_encoded_point(&point)
                        .map_err(|_| "not a point of P-256")?,
                )
            }
            "P-384" => {
                let x: [u8; 48] = fixed(b64_member(obj, "x")?, "x")?;
                let y: [u8; 48] = fixed(b64_member(obj, "y")?, "y")?;
                let point = p384::EncodedPoint::from_affine_coordinates(&x.into(), &y.into(), false);
                KeyKind::P384(
                    p384::ecdsa::VerifyingKey::from_encoded_point(&point)
                        .map_err(|_| "not a point of P-384")?,
                )
            }
            other => return Err(format!("unsupported curve `{other}` (P-256 or P-384)")),
        },
        "OKP" => match member(obj, "crv")? {
            "Ed25519" => {
                let x: [u8; 32] = fixed(b64_member(obj, "x")?, "x")?;
                KeyKind::Ed25519(
                    ed25519_dalek::VerifyingKey::from_bytes(&x).map_err(|_| "not an Ed25519 point")?,
                )
            }
            other => return Err(format!("unsupported curve `{other}` (Ed25519)")),
        },
        "oct" if allow_oct => hmac_secret(&b64_member(obj, "k")?)?,
        "oct" => return Err("symmetric (`oct`) keys are not accepted from a JWKS URL".into()),
        other => return Err(format!("unsupported key type `{other}`")),
    };
    Key::new(kid, alg, kind)
}

/// A JWKS document's keys, sorted out.
#[derive(Debug, Default)]
pub struct JwksKeys {
    /// The signature-verification keys.
    pub keys: Vec<Key>,
    /// Keys skipped because they are not for verifying signatures (encryption keys),
    /// each as its reason (`use enc`, `key_ops without verify`).
    pub not_for_verification: Vec<String>,
    /// Keys that could not be read, each as `keys[i] <why>`.
    pub invalid: Vec<String>,
    /// Private keys (only their public part is used), each as `keys[i]`.
    pub private: Vec<String>,
}

impl JwksKeys {
    /// Why the document gave no key, for when [`JwksKeys::keys`] is empty.
    pub fn no_keys(&self) -> String {
        let mut reasons: Vec<(&str, usize)> = Vec::new();
        let skipped = self.not_for_verification.iter().map(String::as_str);
        for reason in skipped.chain(self.invalid.iter().map(|_| "invalid")) {
            match reasons.iter_mut().find(|(r, _)| *r == reason) {
                Some((_, n)) => *n += 1,
                None => reasons.push((reason, 1)),
            }
        }
        let total: usize = reasons.iter().map(|(_, n)| n).sum();
        let detail = match reasons.as_slice() {
            [] => "its `keys` list is empty".to_owned(),
            [(reason, _)] => format!("{total} {} skipped: {reason}", plural(total, "key")),
            _ => {
                let each: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
                format!("{total} {} skipped: {}", plural(total, "key"), each.join(", "))
            }
        };
        format!("the JWKS has no signature-verification keys ({detail})")
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 { word.to_owned() } else { format!("{word}s") }
}

/// The keys of a JWKS document: encryption keys (`use` other than `sig`, `key_ops`
/// without `verify`) are skipped, never used to verify signatures.
pub fn from_jwks(doc: &Value, allow_oct: bool) -> Result<JwksKeys, String> {
    let keys = doc.get("keys").and_then(Value::as_array).ok_or("has no `keys` list")?;
    let mut out = JwksKeys::default();
    for (i, k) in keys.iter().enumerate() {
        if let Some(why) = not_for_verification(k) {
            out.not_for_verification.push(why);
            continue;
        }
        match from_jwk(k, allow_oct) {
            Ok(key) => {
                if is_private(k) {
                    out.private.push(format!("keys[{i}]"));
                }
                out.keys.push(key);
            }
            Err(e) => out.invalid.push(format!("keys[{i}] {e}")),
        }
    }
    Ok(out)
}
