//! The consumer's identity on its way upstream: which names and groups may be a
//! consumer's, and the forwarded headers (`x-consumer`, `x-consumer-groups`).
//!
//! A name or group with a control character (CR, LF, NUL, DEL, …) is never accepted,
//! from any credential: it cannot be a header value, so forwarding it would fail, and
//! the upstream would be left with whatever the client sent itself. Config values are
//! checked at load; token claims when the token is verified (the token is refused).
//!
//! The client's own copies of the forwarded headers are removed before anything is
//! decided, and a forwarded header the host refuses is a plugin fault: the upstream
//! only ever sees the identity this plugin established, or nothing.

use sluice_plugin_sdk::{Consumer, HeaderError, Request};

use crate::config::ForwardConfig;

/// Why `value` cannot be a consumer's name or group (`contains the control character
/// U+000A`), or `None` when it can.
pub fn unfit(value: &str) -> Option<String> {
    let c = value.chars().find(|c| c.is_control())?;
    Some(format!("contains the control character U+{:04X}", u32::from(c)))
}

/// Checks a configured consumer name or group at `field`.
pub fn check_config(field: &str, value: &str) -> Result<(), String> {
    match unfit(value) {
        None => Ok(()),
        Some(why) => Err(format!(
            "{field}: {value:?} {why}; consumer names and groups are forwarded in request headers"
        )),
    }
}

/// Checks a configured consumer's name and groups; `field` names the name's field,
/// `groups_field` the list.
pub fn check_consumer_config(field: &str, groups_field: &str, c: &Consumer) -> Result<(), String> {
    check_config(field, &c.name)?;
    for (i, g) in c.groups.iter().enumerate() {
        check_config(&format!("{groups_field}[{i}]"), g)?;
    }
    Ok(())
}

/// The checked headers the consumer is forwarded in.
#[derive(Debug, Clone)]
pub struct Forward {
    consumer_header: String,
    groups_header: String,
}

impl Forward {
    /// Checks the configured headers: valid names, not gateway-managed, two distinct
    /// headers, and none of them where a credential is read (`credentials`: the
    /// header sources of the configured methods, with the field that names each),
    /// since the client's copies are removed before credentials are read.
    pub fn new(c: &ForwardConfig, credentials: &[(String, String)]) -> Result<Forward, String> {
        let check = |field: &str, h: &str| {
            if !sluice_plugin_sdk::is_header_name(h) {
                return Err(format!("{field}: `{h}` is not a valid name"));
            }
            let name = h.to_ascii_lowercase();
            if sluice_plugin_sdk::is_managed_header(&name) {
                return Err(format!("{field}: `{name}` is managed by the gateway; plugins cannot set it"));
            }
            if let Some((_, at)) = credentials.iter().find(|(header, _)| *header == name) {
                return Err(format!(
                    "{field}: `{name}` is where credentials are read ({at}); client-sent copies of the \
                     forwarded headers are removed before authentication, so pick another header"
                ));
            }
            Ok(name)
        };
        let consumer_header = check("forward.consumer_header", &c.consumer_header)?;
        let groups_header = check("forward.groups_header", &c.groups_header)?;
        if consumer_header == groups_header {
            return Err(format!("forward.groups_header: `{groups_header}` is also forward.consumer_header"));
        }
        Ok(Forward { consumer_header, groups_header })
    }

    /// Removes whatever the client sent in the forwarded headers. `Err` (a plugin
    /// fault) when the host refuses.
    pub fn clear(&self, req: &mut Request<'_>) -> Result<(), String> {
        for h in [&self.consumer_header, &self.groups_header] {
            req.remove_header(h).map_err(|e| refused("remove", h, e))?;
        }
        Ok(())
    }

    /// Forwards `consumer` (after [`Forward::clear`]): its name, and its groups
    /// comma-separated when it has any. `Err` (a plugin fault) when the host refuses.
    pub fn write(&self, req: &mut Request<'_>, consumer: &Consumer) -> Result<(), String> {
        let h = &self.consumer_header;
        req.set_header(h, &consumer.name).map_err(|e| refused("set", h, e))?;
        if !consumer.groups.is_empty() {
            let h = &self.groups_header;
            req.set_header(h, &consumer.groups.join(",")).map_err(|e| refused("set", h, e))?;
        }
        Ok(())
    }
}

/// The fault message for a header change the host refused.
pub fn refused(op: &str, header: &str, e: HeaderError) -> String {
    let why = match e {
        HeaderError::InvalidName => "invalid name",
        HeaderError::InvalidValue => "invalid value",
        HeaderError::Forbidden => "header managed by the gateway",
    };
    format!("could not {op} the header `{header}` ({why})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin_sdk::testing::FakeRequest;

    #[test]
    fn control_characters_are_unfit_and_everything_else_fits() {
        for bad in ["a\rb", "a\nb", "a\0b", "a\u{7f}b", "a\u{1}b", "\tadmin", "a\u{85}b"] {
            assert!(unfit(bad).is_some(), "{bad:?}");
        }
        assert_eq!(unfit("ad\nmin").as_deref(), Some("contains the control character U+000A"));
        for good in ["alice", "svc:billing", "Zoë", "group with spaces", "a,b", ""] {
            assert_eq!(unfit(good), None, "{good:?}");
        }
    }

    fn forward(consumer: &str, groups: &str) -> Result<Forward, String> {
        let c = ForwardConfig { consumer_header: consumer.into(), groups_header: groups.into() };
        Forward::new(&c, &[("x-api-key".into(), "api_key.sources[0]".into())])
    }

    #[test]
    fn forwarded_headers_are_checked_at_load() {
        assert!(forward("x-consumer", "x-consumer-groups").is_ok());
        let cases = [
            (forward("bad header", "g"), "forward.consumer_header: `bad header` is not a valid name"),
            (forward("c", "Connection"), "forward.groups_header: `connection` is managed by the gateway"),
            (forward("X-Api-Key", "g"), "forward.consumer_header: `x-api-key` is where credentials are read"),
            (forward("x-who", "X-Who"), "forward.groups_header: `x-who` is also forward.consumer_header"),
        ];
        for (result, needle) in cases {
            let e = result.unwrap_err();
            assert!(e.contains(needle), "`{e}` lacks `{needle}`");
        }
    }

    #[test]
    fn clear_then_write_leaves_only_the_consumer() {
        let f = forward("x-consumer", "x-consumer-groups").unwrap();
        let mut req = FakeRequest::new("GET", "/")
            .with_header("x-consumer", "admin")
            .with_header("X-Consumer", "root")
            .with_header("x-consumer-groups", "admins");
        f.clear(&mut req.as_request()).unwrap();
        assert!(req.headers.get_all("x-consumer").is_empty() && req.header("x-consumer-groups").is_none());
        f.write(&mut req.as_request(), &Consumer { name: "alice".into(), groups: vec![] }).unwrap();
        assert_eq!(req.headers.get_all("x-consumer"), ["alice"]);
        assert_eq!(req.header("x-consumer-groups"), None, "no groups: no header");
        // A value the host refuses is an error, never a silent skip.
        let bad = Consumer { name: "al\r\nice".into(), groups: vec![] };
        let e = f.write(&mut req.as_request(), &bad).unwrap_err();
        assert_eq!(e, "could not set the header `x-consumer` (invalid value)");
    }
}
