//! `sluice import openapi SPEC`: a Sluice config from an OpenAPI 3.0/3.1 document.
//!
//! - an upstream per distinct server (`servers[].url`: scheme, host and port; `https`
//!   gets TLS and a `Host` header naming the server), unless `--upstream` names one
//!   the operator's config already has;
//! - a route per path: the template's `{param}` segments in the router's syntax
//!   (names limited to letters, digits and `_`), the path's operations as
//!   `match.methods`, the name from the `operationId` when the path has one
//!   operation, else a slug of the path;
//! - on each route, `openapi-validate` with `spec: { $file: SPEC }` pinned to the
//!   route's template.
//!
//! A server URL's path (`https://api.example.com/v1`) is part of the routes' paths.
//! `--prefix /api` puts the routes under `/api` and strips it again (a `transform`
//! plugin) before the request goes upstream.

use serde_json::Value;

use super::yaml::Yaml;
use super::{ImportError, token};

/// The plugin `sluice import openapi` puts on each route.
pub const VALIDATE_PLUGIN: &str = "openapi-validate";
/// Default listener address of the generated config.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// What `sluice import openapi` was asked.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// What the generated `$file` reference says: the spec's path as the config will
    /// find it (relative paths resolve against the config's folder).
    pub spec_ref: String,
    /// Route to this upstream of the operator's config instead of the servers.
    pub upstream: Option<String>,
    /// Serve the API under this path prefix.
    pub prefix: Option<String>,
    /// The generated listener's address. Default [`DEFAULT_LISTEN`].
    pub listen: Option<String>,
}

/// One server URL, taken apart.
#[derive(Debug, Clone, PartialEq)]
struct Server {
    tls: bool,
    host: String,
    port: u16,
    /// The URL's path without a trailing `/` (`""` for none).
    base: String,
}

fn server(v: &Value, at: &str) -> Result<Option<Server>, ImportError> {
    let url = v
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| ImportError::at(format!("{at}/url"), "required"))?;
    // Server variables: `{region}` replaced by its default.
    let mut resolved = url.to_owned();
    while let Some(open) = resolved.find('{') {
        let close = resolved[open..]
            .find('}')
            .map(|c| open + c)
            .ok_or_else(|| ImportError::at(format!("{at}/url"), format!("unclosed `{{` in `{url}`")))?;
        let name = &resolved[open + 1..close];
        let default =
            v.pointer(&format!("/variables/{}/default", token(name))).and_then(Value::as_str).ok_or_else(
                || ImportError::at(format!("{at}/variables"), format!("variable `{name}` has no default")),
            )?;
        resolved.replace_range(open..=close, default);
    }
    let (tls, rest) = if let Some(r) = resolved.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = resolved.strip_prefix("http://") {
        (false, r)
    } else if resolved.starts_with('/') || resolved.is_empty() {
        // A URL relative to where the document is served: no host to forward to.
        return Ok(None);
    } else {
        return Err(ImportError::at(
            format!("{at}/url"),
            format!("`{url}`: only http:// and https:// servers are supported"),
        ));
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
            let port =
                p.parse().map_err(|_| ImportError::at(format!("{at}/url"), format!("`{url}`: bad port")))?;
            (h.to_owned(), port)
        }
        _ => (authority.to_owned(), if tls { 443 } else { 80 }),
    };
    if host.is_empty() {
        return Err(ImportError::at(format!("{at}/url"), format!("`{url}` names no host")));
    }
    Ok(Some(Server { tls, host, port, base: path.trim_end_matches('/').to_owned() }))
}

/// A name the config accepts (letters, digits, `_ - .`, at most 64 characters).
fn name_of(s: &str) -> String {
    let mut out: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() || "_-.".contains(c) { c } else { '-' }).collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    let out = out.trim_matches('-');
    let out: String = out.chars().take(64).collect();
    if out.is_empty() { "root".to_owned() } else { out }
}

fn unique(name: String, taken: &mut Vec<String>) -> String {
    let mut candidate = name.clone();
    let mut n = 2;
    while taken.contains(&candidate) {
        candidate = format!("{}-{n}", name.chars().take(60).collect::<String>());
        n += 1;
    }
    taken.push(candidate.clone());
    candidate
}

/// The route path of a template: each `{param}` segment with a router-safe name.
fn route_path(template: &str, at: &str) -> Result<String, ImportError> {
    if !template.starts_with('/') {
        return Err(ImportError::at(at, format!("`{template}` must start with `/`")));
    }
    let mut names: Vec<String> = Vec::new();
    let mut segs = Vec::new();
    for seg in template[1..].split('/') {
        if !seg.contains(['{', '}']) {
            segs.push(seg.to_owned());
            continue;
        }
        let name = seg
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .filter(|n| !n.is_empty() && !n.contains(['{', '}']));
        let Some(name) = name else {
            return Err(ImportError::at(
                at,
                format!("`{seg}`: the router takes parameters only as whole segments (`/files/{{name}}`)"),
            ));
        };
        let safe: String =
            name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
        let safe = unique(safe, &mut names);
        segs.push(format!("{{{safe}}}"));
    }
    Ok(format!("/{}", segs.join("/")))
}

/// The upstreams made from servers, by server.
#[derive(Default)]
struct Upstreams {
    list: Vec<(String, Server)>,
    names: Vec<String>,
}

impl Upstreams {
    fn name_for(&mut self, s: &Server) -> String {
        if let Some((name, _)) =
            self.list.iter().find(|(_, x)| x.host == s.host && x.port == s.port && x.tls == s.tls)
        {
            return name.clone();
        }
        let name = unique(name_of(&s.host), &mut self.names);
        self.list.push((name.clone(), s.clone()));
        name
    }

    fn yaml(&self) -> Yaml {
        Yaml::Map(
            self.list
                .iter()
                .map(|(name, s)| {
                    let default_port = if s.tls { 443 } else { 80 };
                    let host_header = if s.port == default_port {
                        s.host.clone()
                    } else {
                        format!("{}:{}", s.host, s.port)
                    };
                    let mut up = vec![
                        (
                            "targets".to_owned(),
                            Yaml::List(vec![Yaml::map([(
                                "address",
                                Yaml::str(format!("{}:{}", s.host, s.port)),
                            )])]),
                        ),
                        ("host_header".to_owned(), Yaml::str(host_header)),
                    ];
                    if s.tls {
                        up.push(("tls".to_owned(), Yaml::Map(Vec::new())));
                    }
                    (name.clone(), Yaml::Map(up))
                })
                .collect(),
        )
    }
}

/// The first usable server of a `servers` list at `at`, if the list is there.
fn first_server(list: Option<&Value>, at: &str) -> Result<Option<Option<Server>>, ImportError> {
    let Some(list) = list else { return Ok(None) };
    let list = list.as_array().ok_or_else(|| ImportError::at(at, "must be a list"))?;
    match list.first() {
        Some(s) => Ok(Some(server(s, &format!("{at}/0"))?)),
        None => Ok(None),
    }
}

/// The config for `doc` as YAML text.
pub fn import(doc: &Value, opts: &ImportOptions) -> Result<String, ImportError> {
    let version = doc.get("openapi").and_then(Value::as_str).unwrap_or("");
    if !(version.starts_with("3.0") || version.starts_with("3.1")) {
        let found = doc
            .get("swagger")
            .map_or_else(|| format!("{:?}", doc.get("openapi")), |v| format!("swagger {v}"));
        return Err(ImportError::at(
            "/openapi",
            format!("an OpenAPI 3.0 or 3.1 document is needed, found {found}"),
        ));
    }
    if let Some(p) = &opts.prefix
        && (!p.starts_with('/') || p.ends_with('/'))
    {
        return Err(ImportError::option(format!("--prefix `{p}` must start with `/` and not end with one")));
    }
    let mut importer = Importer::new(doc, opts)?;
    let paths = match doc.get("paths") {
        Some(Value::Object(p)) => p,
        _ => return Err(ImportError::at("/paths", "the document has no paths")),
    };
    let mut routes = Vec::new();
    for (template, item) in paths {
        if let Some(route) = importer.route(template, item)? {
            routes.push(route);
        }
    }
    if routes.is_empty() {
        return Err(ImportError::at("/paths", "the document has no operations"));
    }
    Ok(importer.document(routes))
}

/// The state of one import: upstreams made so far, route names taken.
struct Importer<'a> {
    doc: &'a Value,
    opts: &'a ImportOptions,
    prefix: String,
    upstreams: Upstreams,
    /// The first document-level server: where routes go by default.
    default_server: Option<Server>,
    route_names: Vec<String>,
}

impl<'a> Importer<'a> {
    /// Reads the document's servers: each is an upstream (unless `--upstream`).
    fn new(doc: &'a Value, opts: &'a ImportOptions) -> Result<Self, ImportError> {
        let servers: Vec<Option<Server>> = match doc.get("servers") {
            Some(Value::Array(list)) => list
                .iter()
                .enumerate()
                .map(|(i, s)| server(s, &format!("/servers/{i}")))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(ImportError::at("/servers", "must be a list")),
            None => Vec::new(),
        };
        let mut upstreams = Upstreams::default();
        if opts.upstream.is_none() {
            for s in servers.iter().flatten() {
                upstreams.name_for(s);
            }
        }
        Ok(Self {
            doc,
            opts,
            prefix: opts.prefix.clone().unwrap_or_default(),
            upstreams,
            default_server: servers.first().cloned().flatten(),
            route_names: Vec::new(),
        })
    }

    /// The route of one path item; `None` when it has no operations.
    fn route(&mut self, template: &str, item: &Value) -> Result<Option<Yaml>, ImportError> {
        let at = format!("/paths/{}", token(template));
        if let Some(r) = item.get("$ref") {
            return Err(ImportError::at(
                format!("{at}/$ref"),
                format!("path item references ({r}) are not supported"),
            ));
        }
        let ops: Vec<(&str, &Value)> =
            super::METHODS.iter().filter_map(|m| item.get(*m).map(|op| (*m, op))).collect();
        if ops.is_empty() {
            return Ok(None);
        }
        let server = match first_server(item.get("servers"), &format!("{at}/servers"))? {
            Some(s) => s,
            None => self.default_server.clone(),
        };
        let base = server.as_ref().map(|s| s.base.clone()).unwrap_or_default();
        let upstream = match (&self.opts.upstream, &server) {
            (Some(name), _) => name.clone(),
            (None, Some(s)) => self.upstreams.name_for(s),
            (None, None) => {
                return Err(ImportError::at(
                    if self.doc.get("servers").is_some() { "/servers/0/url" } else { "/servers" },
                    "no http(s) server URL to forward to: give the document one, or pass --upstream NAME",
                ));
            }
        };
        let path = format!("{}{base}{}", self.prefix, route_path(template, &at)?);
        let name = match ops.as_slice() {
            [(_, op)] => op.get("operationId").and_then(Value::as_str).map(name_of),
            _ => None,
        };
        let name = unique(name.unwrap_or_else(|| name_of(template)), &mut self.route_names);
        let methods = ops.iter().map(|(m, _)| Yaml::str(m.to_ascii_uppercase())).collect();
        Ok(Some(Yaml::map([
            ("name", Yaml::str(name)),
            ("match", Yaml::map([("path", Yaml::str(path)), ("methods", Yaml::List(methods))])),
            ("target", Yaml::map([("upstream", Yaml::str(upstream))])),
            ("plugins", self.plugins(template, &base)),
        ])))
    }

    /// A route's chain: `openapi-validate` pinned to its template, and with
    /// `--prefix` a `transform` stripping the prefix again.
    fn plugins(&self, template: &str, base: &str) -> Yaml {
        let prefix = &self.prefix;
        let mut validate = vec![
            ("spec".to_owned(), Yaml::map([("$file", Yaml::str(self.opts.spec_ref.clone()))])),
            ("path".to_owned(), Yaml::str(template)),
        ];
        if !prefix.is_empty() || !base.is_empty() {
            validate.push(("prefix".to_owned(), Yaml::str(format!("{prefix}{base}"))));
        }
        let mut plugins =
            vec![Yaml::map([("name", Yaml::str(VALIDATE_PLUGIN)), ("config", Yaml::Map(validate))])];
        if !prefix.is_empty() {
            let strip = Yaml::map([(
                "request",
                Yaml::map([("path", Yaml::map([("strip_prefix", Yaml::str(prefix.clone()))]))]),
            )]);
            plugins.push(Yaml::map([("name", Yaml::str("transform")), ("config", strip)]));
        }
        Yaml::List(plugins)
    }

    /// The whole config text around `routes`.
    fn document(self, routes: Vec<Yaml>) -> String {
        let listen = self.opts.listen.clone().unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listener = Yaml::map([("name", Yaml::str("public")), ("address", Yaml::str(listen))]);
        let mut config =
            vec![("version".to_owned(), Yaml::Int(1)), ("listeners".to_owned(), Yaml::List(vec![listener]))];
        if !self.upstreams.list.is_empty() {
            config.push(("upstreams".to_owned(), self.upstreams.yaml()));
        }
        config.push(("routes".to_owned(), Yaml::List(routes)));
        let title = self.doc.pointer("/info/title").and_then(Value::as_str).unwrap_or("an OpenAPI document");
        let mut text = format!("# Generated by `sluice import openapi` from {title}.\n");
        if let Some(name) = &self.opts.upstream {
            text.push_str(&format!(
                "# Routes forward to the upstream `{name}` of the config this is merged into.\n"
            ));
        }
        text.push_str(&Yaml::Map(config).to_document());
        text
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn opts() -> ImportOptions {
        ImportOptions { spec_ref: "api.yaml".into(), ..ImportOptions::default() }
    }

    fn doc(paths: Value) -> Value {
        json!({"openapi": "3.1.0", "info": {"title": "T", "version": "1"},
               "servers": [{"url": "https://{env}.example.com/v1", "variables": {"env": {"default": "api"}}},
                           {"url": "http://localhost:8081"}],
               "paths": paths})
    }

    #[test]
    fn servers_paths_and_names() {
        let d = doc(json!({
            "/pets": {"get": {"operationId": "listPets"}, "post": {"operationId": "createPet"}},
            "/pets/{pet-id}": {"get": {"operationId": "showPet"}},
            "/health": {"servers": [{"url": "http://127.0.0.1:9000"}], "get": {}}
        }));
        let text = import(&d, &opts()).unwrap();
        let v = crate::config::files::parse_yaml(&text).unwrap();
        let up = &v["upstreams"]["api.example.com"];
        assert_eq!(up["targets"][0]["address"], "api.example.com:443", "{text}");
        assert_eq!(up["host_header"], "api.example.com");
        assert!(up["tls"].is_object());
        assert_eq!(v["upstreams"]["localhost"]["targets"][0]["address"], "localhost:8081");
        assert!(v["upstreams"]["localhost"]["tls"].is_null());
        let routes = v["routes"].as_array().unwrap();
        let by_name =
            |n: &str| routes.iter().find(|r| r["name"] == n).unwrap_or_else(|| panic!("{n}: {text}"));
        let health = by_name("health");
        assert_eq!(health["match"]["path"], "/health", "the path's own server has no base path");
        assert_eq!(health["target"]["upstream"], "127.0.0.1");
        let pets = by_name("pets");
        assert_eq!(pets["match"]["path"], "/v1/pets");
        assert_eq!(pets["match"]["methods"], json!(["GET", "POST"]));
        assert_eq!(pets["target"]["upstream"], "api.example.com");
        let show = by_name("showPet");
        assert_eq!(show["match"]["path"], "/v1/pets/{pet_id}");
        let validate = &show["plugins"][0];
        assert_eq!(validate["name"], "openapi-validate");
        assert_eq!(
            validate["config"],
            json!({"spec": {"$file": "api.yaml"}, "path": "/pets/{pet-id}", "prefix": "/v1"})
        );
    }

    #[test]
    fn upstream_and_prefix_options() {
        let d = doc(json!({"/pets": {"get": {}}}));
        let o = ImportOptions { upstream: Some("pets".into()), prefix: Some("/api".into()), ..opts() };
        let text = import(&d, &o).unwrap();
        let v = crate::config::files::parse_yaml(&text).unwrap();
        assert!(v["upstreams"].is_null(), "{text}");
        let route = &v["routes"][0];
        assert_eq!(route["target"]["upstream"], "pets");
        assert_eq!(route["match"]["path"], "/api/v1/pets");
        assert_eq!(route["plugins"][0]["config"]["prefix"], "/api/v1");
        assert_eq!(route["plugins"][1]["config"]["request"]["path"]["strip_prefix"], "/api");
    }

    #[test]
    fn unsupported_constructs_name_their_pointer() {
        let err = |d: Value| import(&d, &opts()).unwrap_err().to_string();
        assert_eq!(
            err(json!({"swagger": "2.0"})),
            r#"#/openapi: an OpenAPI 3.0 or 3.1 document is needed, found swagger "2.0""#
        );
        let e = err(doc(json!({"/files/{name}.json": {"get": {}}})));
        assert!(
            e.starts_with("#/paths/~1files~1{name}.json: `{name}.json`: the router takes parameters only"),
            "{e}"
        );
        let mut d = doc(json!({"/a": {"get": {}}}));
        d["servers"] = json!([{"url": "/v1"}]);
        assert!(err(d).starts_with("#/servers/0/url: no http(s) server URL"));
        let mut d = doc(json!({"/a": {"get": {}}}));
        d["servers"] = json!([{"url": "ftp://x"}]);
        assert!(err(d).starts_with("#/servers/0/url: `ftp://x`: only http:// and https://"));
    }
}
