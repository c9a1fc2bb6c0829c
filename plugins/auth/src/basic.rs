//! HTTP Basic authentication against bcrypt or argon2 hashes. A verified credential
//! is remembered (as a SHA-256 over user, password and the stored hash, which carries
//! the salt) so repeated requests skip the deliberately slow hash.

use std::cell::RefCell;
use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use sluice_plugin_sdk::Consumer;

use crate::config::BasicConfig;
use crate::identity;

/// A stored password hash.
enum PasswordHash {
    Bcrypt(String),
    Argon2(String),
}

struct User {
    hash: PasswordHash,
    consumer: Consumer,
}

/// Configured Basic users.
pub struct Basic {
    users: HashMap<String, User>,
    cache_max: usize,
    cache: RefCell<HashMap<[u8; 32], Consumer>>,
}

/// Why Basic credentials were refused.
#[derive(Debug, PartialEq, Eq)]
pub enum BasicError {
    /// The header is not `Basic base64(user:password)`.
    Malformed,
    /// Unknown user or wrong password.
    Invalid,
}

impl Basic {
    /// Builds the user table, naming the field of any bad entry.
    pub fn new(c: &BasicConfig) -> Result<Basic, String> {
        let mut users = HashMap::new();
        for (i, u) in c.users.iter().enumerate() {
            let at = format!("basic.users[{i}]");
            if u.username.is_empty() || u.username.contains(':') {
                return Err(format!("{at}.username: must be non-empty and without `:`"));
            }
            let h = u.password_hash.trim();
            let hash = if h.starts_with("$2a$")
                || h.starts_with("$2b$")
                || h.starts_with("$2y$")
                || h.starts_with("$2x$")
            {
                h.parse::<bcrypt::HashParts>()
                    .map_err(|e| format!("{at}.password_hash: bad bcrypt hash: {e}"))?;
                PasswordHash::Bcrypt(h.to_owned())
            } else if h.starts_with("$argon2") {
                argon2::PasswordHash::new(h)
                    .map_err(|e| format!("{at}.password_hash: bad argon2 PHC string: {e}"))?;
                PasswordHash::Argon2(h.to_owned())
            } else {
                return Err(format!(
                    "{at}.password_hash: not a bcrypt (`$2b$...`) or argon2 (`$argon2id$...`) hash; plaintext passwords are not accepted"
                ));
            };
            let consumer = Consumer { name: u.username.clone(), groups: u.groups.clone() };
            identity::check_consumer_config(&format!("{at}.username"), &format!("{at}.groups"), &consumer)?;
            if users.insert(u.username.clone(), User { hash, consumer }).is_some() {
                return Err(format!("{at}.username: `{}` is listed twice", u.username));
            }
        }
        if users.is_empty() {
            return Err("basic.users: give at least one user".into());
        }
        Ok(Basic { users, cache_max: c.cache_entries, cache: RefCell::new(HashMap::new()) })
    }

    /// Checks the credentials of an `Authorization: Basic ...` header value (after
    /// the scheme).
    pub fn verify(&self, encoded: &str) -> Result<Consumer, BasicError> {
        let decoded = STANDARD.decode(encoded.trim()).map_err(|_| BasicError::Malformed)?;
        let decoded = String::from_utf8(decoded).map_err(|_| BasicError::Malformed)?;
        let (user, password) = decoded.split_once(':').ok_or(BasicError::Malformed)?;
        let u = self.users.get(user).ok_or(BasicError::Invalid)?;
        let stored = match &u.hash {
            PasswordHash::Bcrypt(h) | PasswordHash::Argon2(h) => h,
        };
        let mut hasher = Sha256::new();
        for part in [user, password, stored] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        let key: [u8; 32] = hasher.finalize().into();
        if let Some(c) = self.cache.borrow().get(&key) {
            return Ok(c.clone());
        }
        let ok = match &u.hash {
            PasswordHash::Bcrypt(h) => bcrypt::verify(password, h).unwrap_or(false),
            PasswordHash::Argon2(h) => {
                use argon2::PasswordVerifier;
                argon2::PasswordHash::new(h).is_ok_and(|parsed| {
                    argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
                })
            }
        };
        if !ok {
            return Err(BasicError::Invalid);
        }
        if self.cache_max > 0 {
            let mut cache = self.cache.borrow_mut();
            if cache.len() >= self.cache_max {
                cache.clear();
            }
            cache.insert(key, u.consumer.clone());
        }
        Ok(u.consumer.clone())
    }
}
