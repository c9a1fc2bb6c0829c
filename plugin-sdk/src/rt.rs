//! The glue behind [`export!`](crate::export): keeps the configured plugin of this
//! instance and forwards every export to it. Not public API.

use std::cell::RefCell;
use std::rc::Rc;

use crate::bindings::sluice::plugin::types as wit;
use crate::{Plugin, Request, Response};

thread_local! {
    static PLUGIN: RefCell<Option<Rc<dyn std::any::Any>>> = const { RefCell::new(None) };
}

fn get<P: Plugin>() -> Rc<P> {
    let any = PLUGIN.with(|p| p.borrow().clone()).expect("the host calls configure before any phase");
    any.downcast::<P>().unwrap_or_else(|_| unreachable!("one plugin type per component"))
}

/// Parses `config` into `P` and runs [`Plugin::init`]. A problem with one field is
/// reported as ``invalid config at `PATH`: MESSAGE``, `PATH` written as in the
/// gateway's YAML (`rules[0].header`), so the gateway can point at that field of
/// its config file; a field `P` does not read is such a problem unless
/// [`Plugin::ACCEPT_UNKNOWN_FIELDS`].
pub fn parse<P: Plugin>(config: &str) -> Result<P, String> {
    let config = if config.trim().is_empty() { "{}" } else { config };
    let mut unknown: Vec<String> = Vec::new();
    let mut json = serde_json::Deserializer::from_str(config);
    let mut note = |path: serde_ignored::Path<'_>| unknown.push(ignored_path(&path));
    let watched = serde_ignored::Deserializer::new(&mut json, &mut note);
    let parsed: Result<P, _> = serde_path_to_error::deserialize(watched);
    let unknown_field = |unknown: &[String]| {
        let path = unknown.first()?;
        let field = path.rsplit(['.', '[']).next().unwrap_or(path).trim_end_matches(']');
        Some(format!("invalid config at `{path}`: unknown field `{field}`"))
    };
    let mut p = match parsed {
        Ok(p) => p,
        // A typo of a required field reads best as the typo, not as the missing field.
        Err(_) if !P::ACCEPT_UNKNOWN_FIELDS && !unknown.is_empty() => {
            return Err(unknown_field(&unknown).unwrap_or_default());
        }
        Err(e) => {
            let path = error_path(e.path());
            let inner = e.into_inner();
            // The JSON's own line and column mean nothing to whoever wrote the YAML.
            let text = inner.to_string();
            let message = match text.rsplit_once(" at line ") {
                Some((m, _)) if inner.line() > 0 => m.to_owned(),
                _ => text,
            };
            return Err(match path {
                Some(path) => format!("invalid config at `{path}`: {message}"),
                None => format!("invalid config: {message}"),
            });
        }
    };
    json.end().map_err(|e| format!("invalid config: {e}"))?;
    if !P::ACCEPT_UNKNOWN_FIELDS
        && let Some(e) = unknown_field(&unknown)
    {
        return Err(e);
    }
    p.init()?;
    Ok(p)
}

/// A path of serde_path_to_error as YAML writes it; `None` at the root.
fn error_path(path: &serde_path_to_error::Path) -> Option<String> {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    (!out.is_empty()).then_some(out)
}

/// A path of serde_ignored as YAML writes it.
fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        Path::Map { parent, key } => match ignored_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => {
            ignored_path(parent)
        }
    }
}

/// `info` export (the host calls it after `configure`).
pub fn info<P: Plugin>() -> wit::PluginInfo {
    let configured = PLUGIN.with(|p| p.borrow().clone());
    let phases = match configured.and_then(|any| any.downcast::<P>().ok()) {
        Some(p) => p.phases(),
        None => P::PHASES,
    };
    wit::PluginInfo { phases }
}

/// `configure` export.
pub fn configure<P: Plugin>(config: &str) -> Result<(), String> {
    let p = parse::<P>(config)?;
    PLUGIN.with(|slot| *slot.borrow_mut() = Some(Rc::new(p)));
    Ok(())
}

/// `on-request` export.
pub fn on_request<P: Plugin>(req: &wit::Request) -> wit::Decision {
    get::<P>().on_request(&mut Request::host(req)).into_wit()
}

/// `on-response` export.
pub fn on_response<P: Plugin>(resp: &wit::Response) -> wit::Decision {
    get::<P>().on_response(&mut Response::host(resp)).into_wit()
}

/// `on-response-chunk` export.
pub fn on_response_chunk<P: Plugin>(chunk: Vec<u8>, last: bool) -> Vec<u8> {
    get::<P>().on_response_chunk(chunk, last)
}

#[cfg(test)]
mod tests {
    use super::parse;
    use crate::Plugin;

    #[derive(serde::Deserialize)]
    struct Strict {
        required_header: String,
        #[serde(default)]
        rules: Vec<Rule>,
        #[serde(default)]
        verbose: bool,
    }

    #[derive(serde::Deserialize)]
    struct Rule {
        #[allow(dead_code)]
        header: String,
        #[allow(dead_code)]
        max: u32,
    }

    impl Plugin for Strict {}

    #[derive(serde::Deserialize)]
    struct Lenient {
        #[serde(default)]
        name: String,
    }

    impl Plugin for Lenient {
        const ACCEPT_UNKNOWN_FIELDS: bool = true;
    }

    fn error<P: Plugin>(json: &str) -> String {
        parse::<P>(json).err().expect("the config is rejected")
    }

    #[test]
    fn fields_nobody_reads_are_errors_named_by_their_yaml_path() {
        assert_eq!(
            error::<Strict>(r#"{"required_header":"x","verbos":true}"#),
            "invalid config at `verbos`: unknown field `verbos`"
        );
        assert_eq!(
            error::<Strict>(r#"{"required_header":"x","rules":[{"header":"a","max":1,"mx":2}]}"#),
            "invalid config at `rules[0].mx`: unknown field `mx`"
        );
        // A typo of a required field is reported as the typo.
        assert_eq!(
            error::<Strict>(r#"{"required_heder":"x"}"#),
            "invalid config at `required_heder`: unknown field `required_heder`"
        );
        let ok = parse::<Strict>(r#"{"required_header":"x","verbose":true}"#).unwrap();
        assert!(ok.verbose && ok.required_header == "x" && ok.rules.is_empty());
    }

    #[test]
    fn a_wrong_value_names_its_field_without_json_positions() {
        assert_eq!(
            error::<Strict>(r#"{"required_header":"x","rules":[{"header":"a","max":"ten"}]}"#),
            "invalid config at `rules[0].max`: invalid type: string \"ten\", expected u32"
        );
        assert_eq!(error::<Strict>("{}"), "invalid config: missing field `required_header`");
    }

    #[test]
    fn a_plugin_may_accept_extra_fields() {
        assert_eq!(parse::<Lenient>(r#"{"name":"a","anything":[1,2]}"#).unwrap().name, "a");
    }
}
