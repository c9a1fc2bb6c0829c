//! `crypto`: signature checks and HMACs with `ring`, natively — an RS256 check that
//! takes about a millisecond as Wasm takes tens of microseconds here. No authority:
//! always granted.

use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey, VerificationAlgorithm};

use crate::plugins::bindings::sluice::plugin::crypto::{Hash, Host, PublicKey, Scheme};
use crate::plugins::state::PluginState;

/// Checks `sig` over `msg`; `false` for anything wrong, never an error.
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

/// The HMAC of `msg` under `key`.
pub fn hmac(hash: Hash, key: &[u8], msg: &[u8]) -> Vec<u8> {
    let alg = match hash {
        Hash::Sha256 => ring::hmac::HMAC_SHA256,
        Hash::Sha384 => ring::hmac::HMAC_SHA384,
        Hash::Sha512 => ring::hmac::HMAC_SHA512,
    };
    ring::hmac::sign(&ring::hmac::Key::new(alg, key), msg).as_ref().to_vec()
}

impl Host for PluginState {
    fn verify(
        &mut self,
        scheme: Scheme,
        key: PublicKey,
        message: Vec<u8>,
        signature: Vec<u8>,
    ) -> wasmtime::Result<bool> {
        Ok(verify(scheme, &key, &message, &signature))
    }

    fn hmac(&mut self, hash: Hash, key: Vec<u8>, message: Vec<u8>) -> wasmtime::Result<Vec<u8>> {
        Ok(hmac(hash, &key, &message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac(Hash::Sha256, b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn a_key_of_the_wrong_type_or_garbage_is_false_not_a_panic() {
        assert!(!verify(Scheme::Es256, &PublicKey::Ed25519(vec![0; 32]), b"m", &[0; 64]));
        assert!(!verify(Scheme::Rs256, &PublicKey::Rsa((vec![1], vec![3])), b"m", &[0; 256]));
        assert!(!verify(Scheme::Eddsa, &PublicKey::Ed25519(vec![7; 3]), b"m", &[0; 64]));
    }
}
