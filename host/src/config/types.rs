//! Validating newtypes used by the config: durations, byte sizes, names and addresses.
//!
//! Each one parses from the human form operators write in YAML (`"250ms"`, `"16KiB"`,
//! `"api.internal:8080"`) and rejects anything else at deserialization time, so the
//! error carries the YAML location of the bad value.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Implements `Deserialize` (from a string, or an integer where `$int` allows it),
/// `Serialize` (as its `Display` form) and `JsonSchema` for a `FromStr` newtype.
macro_rules! string_newtype {
    ($ty:ty, $expecting:literal, $schema:tt) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<$ty, E> {
                        s.parse().map_err(E::custom)
                    }
                    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<$ty, E> {
                        n.to_string().parse().map_err(E::custom)
                    }
                    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<$ty, E> {
                        n.to_string().parse().map_err(E::custom)
                    }
                }
                d.deserialize_any(V)
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                stringify!($ty).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

/// A duration written as an integer with a unit: `ms`, `s`, `m` or `h` (`"250ms"`, `"30s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    /// A duration of `n` seconds.
    pub const fn secs(n: u64) -> Self {
        Self(Duration::from_secs(n))
    }
    /// A duration of `n` milliseconds.
    pub const fn millis(n: u64) -> Self {
        Self(Duration::from_millis(n))
    }
    /// The wrapped duration.
    pub const fn get(self) -> Duration {
        self.0
    }
}

impl FromStr for ConfigDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| {
            format!("invalid duration `{s}`: expected a number with a unit, like `250ms` or `30s`")
        })?;
        let d = match unit.trim() {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "" => return Err(format!("invalid duration `{s}`: missing unit (ms, s, m or h)")),
            other => {
                return Err(format!("invalid duration `{s}`: unknown unit `{other}` (use ms, s, m or h)"));
            }
        };
        Ok(Self(d))
    }
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(3_600_000) && ms > 0 {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) && ms > 0 {
            write!(f, "{}m", ms / 60_000)
        } else if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

string_newtype!(ConfigDuration, "a duration such as `250ms`, `30s`, `5m` or `1h`", {
    "type": "string",
    "pattern": "^[0-9]+(ms|s|m|h)$",
    "description": "A duration: an integer followed by ms, s, m or h."
});

/// A size in bytes: a plain integer, or an integer with a unit `B`, `KB`, `MB`, `GB`
/// (powers of 1000) or `KiB`, `MiB`, `GiB` (powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `n` kibibytes.
    pub const fn kib(n: u64) -> Self {
        Self(n * 1024)
    }
    /// `n` mebibytes.
    pub const fn mib(n: u64) -> Self {
        Self(n * 1024 * 1024)
    }
    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| {
            format!("invalid size `{s}`: expected a number of bytes, like `16KiB` or `1048576`")
        })?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" | "kB" => 1000,
            "MB" => 1000 * 1000,
            "GB" => 1000 * 1000 * 1000,
            "KiB" => 1024,
            "MiB" => 1024 * 1024,
            "GiB" => 1024 * 1024 * 1024,
            other => {
                return Err(format!(
                    "invalid size `{s}`: unknown unit `{other}` (use B, KB, MB, GB, KiB, MiB or GiB)"
                ));
            }
        };
        n.checked_mul(mult).map(Self).ok_or_else(|| format!("invalid size `{s}`: too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n >= 1 << 30 && n.is_multiple_of(1 << 30) {
            write!(f, "{}GiB", n >> 30)
        } else if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
            write!(f, "{}MiB", n >> 20)
        } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
            write!(f, "{}KiB", n >> 10)
        } else {
            write!(f, "{n}")
        }
    }
}

string_newtype!(ByteSize, "a size such as `16KiB`, `10MB` or a number of bytes", {
    "anyOf": [
        { "type": "integer", "minimum": 0 },
        { "type": "string", "pattern": "^[0-9]+(B|KB|kB|MB|GB|KiB|MiB|GiB)?$" }
    ],
    "description": "A size in bytes, optionally with a unit (KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024)."
});

/// The name of a listener, route or upstream: 1–64 characters from `A-Z a-z 0-9 _ - .`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Name {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 64 {
            return Err(format!("invalid name `{s}`: must be 1 to 64 characters"));
        }
        if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))) {
            return Err(format!(
                "invalid name `{s}`: character `{c}` is not allowed (use A-Z a-z 0-9 _ - .)"
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

string_newtype!(Name, "a name made of A-Z a-z 0-9 _ - .", {
    "type": "string",
    "pattern": "^[A-Za-z0-9_.-]{1,64}$"
});

/// An upstream target address: `host:port`, where host is a DNS name, an IPv4 address
/// or a bracketed IPv6 address (`[::1]:8080`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// The host part, without brackets for IPv6.
    pub host: String,
    /// The TCP port.
    pub port: u16,
}

impl FromStr for HostPort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("invalid address `{s}`: expected `host:port`, like `10.0.0.5:8080` or `api.internal:443`")
        };
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = match host.strip_prefix('[') {
            Some(v6) => {
                let v6 = v6.strip_suffix(']').ok_or_else(bad)?;
                v6.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
                v6
            }
            None => host,
        };
        if host.is_empty()
            || !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        {
            return Err(bad());
        }
        Ok(Self { host: host.to_owned(), port })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

string_newtype!(HostPort, "an address `host:port`", {
    "type": "string",
    "description": "host:port, with IPv6 hosts in brackets"
});

/// A local socket address to listen on, such as `127.0.0.1:8080` or `[::]:443`.
/// Port `0` asks the OS for a free port (the tests do this).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenAddr(pub std::net::SocketAddr);

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse()
            .map(Self)
            .map_err(|_| format!("invalid listen address `{s}`: expected `ip:port`, like `0.0.0.0:8080`"))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

string_newtype!(ListenAddr, "a socket address `ip:port`", {
    "type": "string",
    "description": "ip:port to listen on; IPv6 in brackets"
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!("250ms".parse::<ConfigDuration>().unwrap().get(), Duration::from_millis(250));
        assert_eq!("30s".parse::<ConfigDuration>().unwrap().get(), Duration::from_secs(30));
        assert_eq!("2m".parse::<ConfigDuration>().unwrap().get(), Duration::from_secs(120));
        assert!("30".parse::<ConfigDuration>().unwrap_err().contains("missing unit"));
        assert!("3x".parse::<ConfigDuration>().unwrap_err().contains("unknown unit"));
        assert_eq!(ConfigDuration::millis(1500).to_string(), "1500ms");
        assert_eq!(ConfigDuration::secs(120).to_string(), "2m");
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!("16KiB".parse::<ByteSize>().unwrap(), ByteSize(16 * 1024));
        assert_eq!("10MB".parse::<ByteSize>().unwrap(), ByteSize(10_000_000));
        assert_eq!("512".parse::<ByteSize>().unwrap(), ByteSize(512));
        assert!("1TB".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize::mib(3).to_string(), "3MiB");
    }

    #[test]
    fn names_and_addresses_are_checked() {
        assert!("api-v2.internal".parse::<Name>().is_ok());
        assert!("has space".parse::<Name>().is_err());
        let hp: HostPort = "[::1]:8080".parse().unwrap();
        assert_eq!((hp.host.as_str(), hp.port), ("::1", 8080));
        assert_eq!(hp.to_string(), "[::1]:8080");
        assert!("nohost".parse::<HostPort>().is_err());
        assert!("h:99999".parse::<HostPort>().is_err());
    }
}
