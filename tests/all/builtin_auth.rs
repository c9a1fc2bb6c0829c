//! End-to-end tests of the built-in `auth` plugin through the gateway: the embedded
//! component, real upstreams that report what they saw, real sockets.
//!
//! Tokens and keys are the plugin's fixtures (`plugins/auth/tests-data`, test-only
//! keys generated offline; `tokens.json` holds tokens that expire in 2100).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use hyper::body::Incoming;
use serde_json::{Value, json};
use sluice::Gateway;
use tempfile::TempDir;

use crate::harness::{Client, Reply, TestServer, echo_json, full, url};

const TOKENS: &str = include_str!("../../plugins/auth/tests-data/tokens.json");
const RSA1_PUB: &str = include_str!("../../plugins/auth/tests-data/rsa1.pub.pem");
const EC256_PUB: &str = include_str!("../../plugins/auth/tests-data/ec256.pub.pem");
const JWKS_1: &str = include_str!("../../plugins/auth/tests-data/jwks-1.json");
const JWKS_2: &str = include_str!("../../plugins/auth/tests-data/jwks-2.json");

fn token(name: &str) -> String {
    let tokens: Value = serde_json::from_str(TOKENS).unwrap();
    tokens[name].as_str().unwrap_or_else(|| panic!("no fixture token {name}")).to_owned()
}

/// A gateway folder: a secret file for the `secrets` grant. Compiled plugins are
/// cached under the test target folder, shared by every test of this module.
struct Setup {
    dir: TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("partner.key"), "key-from-a-secret-file\n").unwrap();
        Setup { dir }
    }

    /// A route `name` on `prefix` to the upstream `app` with `auth` configured by
    /// `config` (JSON is YAML), granted `http` (JWKS URLs) and the `partner-key`
    /// secret. (Both are optional capabilities of the built-in: a route that needs
    /// neither grants neither, see `api_keys_need_no_grants`.)
    fn route(&self, name: &str, prefix: &str, config: &Value) -> String {
        format!(
            "  - name: {name}
    match: {{ path_prefix: {prefix} }}
    target: {{ upstream: app }}
    plugins:
      - name: auth
        config: {config}
        grants:
          http: {{ allow: [127.0.0.1] }}
          secrets: {{ partner-key: {{ file: {} }} }}
        limits: {{ deadline: 10s }}
",
            self.dir.path().join("partner.key").display()
        )
    }

    /// The whole config: one listener, the upstream `app` on `upstream`, `routes`.
    fn yaml(&self, upstream: std::net::SocketAddr, routes: &[String]) -> String {
        let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("builtin-auth-cache");
        format!(
            "version: 1\nlisteners:\n  - name: public\n    address: 127.0.0.1:0\nplugins:\n  dir: {}\n  cache_dir: {}\nupstreams:\n  app:\n    targets:\n      - address: {upstream}\nroutes:\n{}",
            self.dir.path().join("plugins").display(),
            cache.display(),
            routes.concat()
        )
    }

    async fn start(&self, upstream: std::net::SocketAddr, routes: &[String]) -> Gateway {
        let yaml = self.yaml(upstream, routes);
        let builder =
            Gateway::builder().config_yaml(&yaml).unwrap_or_else(|e| panic!("config rejected:\n{e}"));
        builder.start().await.unwrap_or_else(|e| panic!("gateway failed to start: {e}"))
    }
}

async fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::get(url(gw.addr("public"), path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Client::http1().send(req.body(full("")).unwrap()).await
}

async fn bearer(gw: &Gateway, path: &str, token: &str) -> Reply {
    get(gw, path, &[("authorization", &format!("Bearer {token}"))]).await
}

/// A `401` in the gateway's JSON error shape with one challenge starting `challenge`.
fn assert_unauthorized(reply: &Reply, challenge: &str) {
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(body["error"]["status"], 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    assert!(body["error"]["message"].is_string());
    let ch =
        reply.header("www-authenticate").unwrap_or_else(|| panic!("no WWW-Authenticate: {}", reply.text()));
    assert!(ch.starts_with(challenge), "`{ch}` does not start with `{challenge}`");
}

fn jwt_config() -> Value {
    json!({"jwt": {
        "keys": [{"kid": "rsa-1", "pem": RSA1_PUB}, {"kid": "ec-1", "pem": EC256_PUB}],
        "issuer": ["https://issuer.test"],
        "audience": ["sluice-tests"],
        "groups_claim": "groups",
    }})
}

#[tokio::test]
async fn api_keys_from_config_and_secrets_forward_the_consumer_upstream() {
    let up = TestServer::echo().await;
    let s = Setup::new();
    let keys = json!({"api_key": {
        "sources": [{"header": "x-api-key"}, {"query": "apikey"}],
        "keys": [
            {"key": "billing-key-1", "consumer": "billing", "groups": ["internal", "paying"]},
            {"secret": "partner-key", "consumer": "partner"},
        ],
    }});
    let mut hidden = keys.clone();
    hidden["hide_credentials"] = json!(true);
    let gw =
        s.start(up.addr, &[s.route("keys", "/keys", &keys), s.route("hidden", "/hidden", &hidden)]).await;

    let ok = get(&gw, "/keys/a", &[("x-api-key", "billing-key-1"), ("x-consumer", "forged-admin")]).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let seen = &ok.json()["headers"];
    assert_eq!(seen["x-consumer"], "billing", "the upstream sees the consumer, not the forged header");
    assert_eq!(seen["x-consumer-groups"], "internal,paying");
    assert_eq!(seen["x-api-key"], "billing-key-1", "credentials are kept by default");

    let from_secret = get(&gw, "/keys/b?apikey=key-from-a-secret-file", &[]).await;
    assert_eq!(from_secret.status, 200, "{}", from_secret.text());
    assert_eq!(from_secret.json()["headers"]["x-consumer"], "partner");

    let seen_before = up.request_count();
    let bad = get(&gw, "/keys/a", &[("x-api-key", "billing-key-2"), ("x-request-id", "auth-test-1")]).await;
    assert_unauthorized(&bad, "Key realm=\"sluice\"");
    assert_eq!(bad.json()["error"]["message"], "invalid api key");
    // The plugin reports the request's id — here the client's, which the listener
    // trusts by default — and the gateway answers with the same.
    assert_eq!(bad.json()["error"]["request_id"], "auth-test-1");
    assert_eq!(bad.header("x-request-id"), Some("auth-test-1"));
    let missing = get(&gw, "/keys/a", &[]).await;
    assert_unauthorized(&missing, "Key realm=\"sluice\"");
    assert_eq!(missing.json()["error"]["message"], "missing credentials");
    assert_eq!(up.request_count(), seen_before, "refused requests never reach the upstream");

    let hid = get(&gw, "/hidden/x?apikey=billing-key-1&keep=1", &[]).await;
    assert_eq!(hid.status, 200);
    assert_eq!(hid.json()["uri"], "/hidden/x?keep=1", "the key left the query");
    let hid = get(&gw, "/hidden/x", &[("x-api-key", "billing-key-1")]).await;
    assert_eq!(hid.json()["headers"]["x-api-key"], Value::Null, "the key header was removed");
}

#[tokio::test]
async fn basic_auth_against_a_bcrypt_hash() {
    let up = TestServer::echo().await;
    let s = Setup::new();
    let config = json!({"basic": {"users": [
        {"username": "alice", "password_hash": token("bcrypt_hash_of_s3cret"), "groups": ["ops"]},
    ]}, "realm": "internal"});
    let gw = s.start(up.addr, &[s.route("basic", "/", &config)]).await;
    // alice:s3cret
    let ok = get(&gw, "/", &[("authorization", "Basic YWxpY2U6czNjcmV0")]).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["headers"]["x-consumer"], "alice");
    assert_eq!(ok.json()["headers"]["x-consumer-groups"], "ops");
    // alice:wrong
    let bad = get(&gw, "/", &[("authorization", "Basic YWxpY2U6d3Jvbmc=")]).await;
    assert_unauthorized(&bad, "Basic realm=\"internal\"");
    let garbage = get(&gw, "/", &[("authorization", "Basic ???")]).await;
    assert_unauthorized(&garbage, "Basic realm=\"internal\"");
    assert_unauthorized(&get(&gw, "/", &[]).await, "Basic realm=\"internal\"");
}

#[tokio::test]
async fn jwt_rs256_and_es256_pass_and_attack_tokens_get_401_with_a_bearer_challenge() {
    let up = TestServer::echo().await;
    let s = Setup::new();
    let gw = s.start(up.addr, &[s.route("jwt", "/", &jwt_config())]).await;
    for name in ["rs256", "es256", "ps256"] {
        let ok = bearer(&gw, "/", &token(name)).await;
        assert_eq!(ok.status, 200, "{name}: {}", ok.text());
        let seen = &ok.json()["headers"];
        assert_eq!(seen["x-consumer"], "alice", "{name}");
        assert_eq!(seen["x-consumer-groups"], "staff", "{name}");
        assert!(
            seen["authorization"].as_str().unwrap().starts_with("Bearer "),
            "the token goes upstream by default"
        );
    }
    let seen_before = up.request_count();
    let oversized = format!("{}.{}.sig", "eyJhbGciOiJSUzI1NiJ9", "A".repeat(9000));
    let attacks = [
        (token("alg_none"), "alg none"),
        (token("hs256_with_rsa_public_key"), "no HS256 key with kid rsa-1"),
        (token("expired"), "token expired"),
        (token("not_yet_valid"), "token not yet valid"),
        (token("wrong_audience"), "audience not accepted"),
        (token("tampered"), "signature verification failed"),
        (oversized, "larger than 8192 bytes"),
        ("e30.e30.%%%".to_owned(), "header has no alg"),
        ("eyJhbGciOiJSUzI1NiJ9.e30.%%%".to_owned(), "signature is not base64url"),
        ("not-a-jwt".to_owned(), "compact form"),
        ("eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln".to_owned(), "payload is not JSON"),
    ];
    for (t, why) in attacks {
        let reply = bearer(&gw, "/", &t).await;
        assert_unauthorized(&reply, "Bearer realm=\"sluice\", error=\"invalid_token\", error_description=\"");
        assert!(
            reply.header("www-authenticate").unwrap().contains(why),
            "{why}: {:?}",
            reply.header("www-authenticate")
        );
        assert!(reply.json()["error"]["message"].as_str().unwrap().contains(why), "{why}");
    }
    let missing = get(&gw, "/", &[]).await;
    assert_unauthorized(&missing, "Bearer realm=\"sluice\"");
    assert!(
        !missing.header("www-authenticate").unwrap().contains("error="),
        "no error code without a token (RFC 6750)"
    );
    assert_eq!(up.request_count(), seen_before, "no refused token reached the upstream");
}

#[tokio::test]
async fn allow_and_deny_by_group_answer_403() {
    let up = TestServer::echo().await;
    let s = Setup::new();
    let mut staff_only = jwt_config();
    staff_only["allow"] = json!({"groups": ["staff"]});
    staff_only["deny"] = json!({"groups": ["suspended"]});
    let mut admins_only = jwt_config();
    admins_only["allow"] = json!({"groups": ["admin"], "consumers": ["root"]});
    let gw = s
        .start(up.addr, &[s.route("staff", "/staff", &staff_only), s.route("admin", "/admin", &admins_only)])
        .await;

    assert_eq!(bearer(&gw, "/staff", &token("rs256")).await.status, 200);
    for (path, t) in [("/staff", "rs256_bob_suspended"), ("/admin", "rs256")] {
        let reply = bearer(&gw, path, &token(t)).await;
        assert_eq!(reply.status, 403, "{path} {t}: {}", reply.text());
        let body = reply.json();
        assert_eq!(body["error"]["status"], 403);
        assert_eq!(body["error"]["code"], "forbidden");
        assert_eq!(reply.header("www-authenticate"), None);
    }
}

/// A JWKS endpoint whose document the test can change; counts its fetches.
async fn jwks_server(doc: &Arc<Mutex<String>>) -> TestServer {
    let doc = Arc::clone(doc);
    TestServer::start(move |_req| {
        let body = doc.lock().unwrap().clone();
        async move { Response::builder().header("content-type", "application/json").body(full(body)).unwrap() }
    })
    .await
}

#[tokio::test]
async fn jwks_rotation_a_new_kid_is_accepted_after_a_refetch_at_most_once_per_interval() {
    let up = TestServer::echo().await;
    let s = Setup::new();
    let rotating = Arc::new(Mutex::new(JWKS_1.to_owned()));
    let rotating_srv = jwks_server(&rotating).await;
    let throttled = Arc::new(Mutex::new(JWKS_1.to_owned()));
    let throttled_srv = jwks_server(&throttled).await;
    let config = |srv: &TestServer, min_refresh: &str| {
        json!({"jwt": {
            "jwks_url": url(srv.addr, "/.well-known/jwks.json"),
            "jwks_min_refresh": min_refresh,
            "audience": ["sluice-tests"],
        }})
    };
    let gw = s
        .start(
            up.addr,
            &[
                s.route("rotating", "/rotating", &config(&rotating_srv, "0s")),
                s.route("throttled", "/throttled", &config(&throttled_srv, "1h")),
            ],
        )
        .await;

    // Fetched when first needed.
    assert_eq!(rotating_srv.request_count(), 0, "no outbound calls at load");
    assert_eq!(bearer(&gw, "/rotating", &token("rs256")).await.status, 200);
    assert_eq!(rotating_srv.request_count(), 1);
    // The IdP has not published rsa-2 yet: a refetch finds nothing.
    assert_unauthorized(&bearer(&gw, "/rotating", &token("rs256_rsa2")).await, "Bearer");
    // It publishes the new key: the unknown kid triggers a refetch, the token passes.
    *rotating.lock().unwrap() = JWKS_2.to_owned();
    let rotated = bearer(&gw, "/rotating", &token("rs256_rsa2")).await;
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    assert_eq!(rotated.json()["headers"]["x-consumer"], "alice");
    assert_eq!(bearer(&gw, "/rotating", &token("rs256")).await.status, 200, "the old key still works");

    // With a 1h minimum interval, unknown kids cannot make the plugin fetch again.
    assert_eq!(bearer(&gw, "/throttled", &token("rs256")).await.status, 200);
    let fetches = throttled_srv.request_count();
    *throttled.lock().unwrap() = JWKS_2.to_owned();
    for _ in 0..3 {
        let refused = bearer(&gw, "/throttled", &token("rs256_rsa2")).await;
        assert_unauthorized(&refused, "Bearer realm=\"sluice\", error=\"invalid_token\"");
    }
    assert_eq!(throttled_srv.request_count(), fetches, "no fetch, however many unknown kids");
}

#[tokio::test]
async fn a_bad_key_in_the_config_fails_the_load_naming_the_field() {
    let s = Setup::new();
    let up = TestServer::echo().await;
    let bad = json!({"jwt": {"keys": [{"kid": "k", "pem": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"}]}});
    let yaml = s.yaml(up.addr, &[s.route("bad", "/", &bad)]);
    let err = match Gateway::builder().config_yaml(&yaml) {
        Ok(b) => match b.start().await {
            Ok(_) => panic!("the config was accepted"),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    };
    assert!(err.contains("jwt.keys[0]: pem is not an RSA, P-256, P-384 or Ed25519 public key"), "{err}");
}

/// RFC 7515 appendix A.1 (HS256), A.2 (RS256) and A.3 (ES256): the examples' keys as
/// JWKs, the examples' tokens.
const RFC_TOKENS: [&str; 3] = [
    "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
    "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw",
    "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q",
];

#[tokio::test]
async fn rfc7515_example_tokens_verify_through_the_gateway() {
    let up = TestServer::echo().await;
    let s = Setup::new();
    let keys = json!([
        {"jwk": {"kty": "oct", "k": "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"}},
        {"jwk": {"kty": "RSA", "e": "AQAB", "n": "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ"}},
        {"jwk": {"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}},
    ]);
    // The examples expired in 2011: the plugin's clock is the gateway's, so only a
    // leeway of decades lets their signatures be what is tested here (the unit tests
    // use a fixed clock instead).
    let old = json!({"jwt": {"keys": keys, "consumer_claim": "iss", "leeway": "250000h"}});
    let current = json!({"jwt": {"keys": keys, "consumer_claim": "iss"}});
    let gw = s.start(up.addr, &[s.route("rfc", "/rfc", &old), s.route("now", "/now", &current)]).await;
    for t in RFC_TOKENS {
        let ok = bearer(&gw, "/rfc", t).await;
        assert_eq!(ok.status, 200, "{t}: {}", ok.text());
        assert_eq!(ok.json()["headers"]["x-consumer"], "joe");
        assert_unauthorized(
            &bearer(&gw, "/now", t).await,
            "Bearer realm=\"sluice\", error=\"invalid_token\", error_description=\"token expired\"",
        );
        // The same payload claiming another issuer, under the original signature.
        let parts: Vec<&str> = t.split('.').collect();
        let forged = format!("{}.eyJpc3MiOiJtYWxsb3J5IiwiZXhwIjoxMzAwODE5MzgwfQ.{}", parts[0], parts[2]);
        assert_unauthorized(
            &bearer(&gw, "/rfc", &forged).await,
            "Bearer realm=\"sluice\", error=\"invalid_token\"",
        );
    }
}

#[tokio::test]
async fn api_keys_need_no_grants_and_an_ungranted_jwks_url_fails_the_request_not_the_load() {
    let up = TestServer::echo().await;
    let setup = Setup::new();
    let plain = |name: &str, prefix: &str, config: &Value| {
        format!(
            "  - name: {name}\n    match: {{ path_prefix: {prefix} }}\n    target: {{ upstream: app }}\n    plugins:\n      - name: auth\n        config: {config}\n"
        )
    };
    let keys = json!({ "api_key": { "keys": [{ "key": "k-0123456789", "consumer": "svc" }] } });
    let jwks = json!({ "jwt": { "jwks_url": "http://127.0.0.1:9/jwks.json" } });
    let gw = setup.start(up.addr, &[plain("keys", "/keys", &keys), plain("jwks", "/jwks", &jwks)]).await;

    let ok = get(&gw, "/keys", &[("x-api-key", "k-0123456789")]).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["headers"]["x-consumer"], "svc");
    // The JWKS fetch is refused by the host when the request needs it (no `http`
    // grant): the request gets an auth failure, the gateway keeps serving.
    let token = "eyJhbGciOiJSUzI1NiIsImtpZCI6Im5vbmUifQ.eyJzdWIiOiJ4In0.c2ln";
    let refused = bearer(&gw, "/jwks", token).await;
    // Refused at once by the host (`not-allowed`, no network), so no key: a 401.
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert_eq!(refused.json()["error"]["code"], "unauthorized");
    assert_eq!(up.request_count(), 1, "only the API-key request reached the upstream");
}

/// An upstream that keeps the headers of every request it gets and answers like
/// [`TestServer::echo`].
async fn recording_upstream() -> (TestServer, Arc<Mutex<Vec<http::HeaderMap>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let server = TestServer::start(move |req: Request<Incoming>| {
        record.lock().unwrap().push(req.headers().clone());
        echo_json(req)
    })
    .await;
    (server, seen)
}

/// The values of `name` in `headers`.
fn values(headers: &http::HeaderMap, name: &str) -> Vec<String> {
    headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect()
}

/// What the client claims about itself, in the headers the plugin forwards.
const FORGED: [(&str, &str); 2] = [("x-consumer", "admin"), ("x-consumer-groups", "admins")];

#[tokio::test]
async fn control_characters_in_the_consumer_or_a_group_get_401_and_forged_identity_never_reaches_the_upstream()
 {
    let (up, seen) = recording_upstream().await;
    let s = Setup::new();
    let mut by_user = jwt_config();
    by_user["jwt"]["consumer_claim"] = json!("user");
    let mut anonymous = jwt_config();
    anonymous["anonymous"] = json!("guest");
    let gw = s
        .start(
            up.addr,
            &[
                s.route("sub", "/sub", &jwt_config()),
                s.route("user", "/user", &by_user),
                s.route("anon", "/anon", &anonymous),
            ],
        )
        .await;
    let tokens: Value = serde_json::from_str(TOKENS).unwrap();
    // `sub_cr`, `user_lf`, `groups_nul`, …: CR, LF, NUL, DEL and U+0001 in the `sub`
    // claim, in the custom consumer claim `user`, and in a group; validly signed.
    let control = tokens["control_characters"].as_object().unwrap();
    assert_eq!(control.len(), 15);
    for (name, t) in control {
        let (place, _) = name.split_once('_').unwrap();
        let path = if place == "user" { "/user" } else { "/sub" };
        let auth = format!("Bearer {}", t.as_str().unwrap());
        let reply = get(&gw, path, &[("authorization", &auth), FORGED[0], FORGED[1]]).await;
        assert_unauthorized(&reply, "Bearer realm=\"sluice\", error=\"invalid_token\", error_description=\"");
        let message = reply.json()["error"]["message"].as_str().unwrap().to_owned();
        let expected = format!("invalid token: the {place} claim contains the control character U+");
        assert!(message.starts_with(&expected), "{name}: {message}");
    }
    assert_eq!(up.request_count(), 0, "no token with a control character reached the upstream");

    // A valid token, an anonymous request and a refused token, each with the forged
    // headers: the upstream sees only the identity the plugin established.
    let auth = format!("Bearer {}", token("rs256"));
    let ok = get(&gw, "/sub", &[("authorization", &auth), FORGED[0], FORGED[1]]).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let guest = get(&gw, "/anon", FORGED.as_slice()).await;
    assert_eq!(guest.status, 200, "{}", guest.text());
    let tampered = format!("Bearer {}", token("tampered"));
    let refused = get(&gw, "/anon", &[("authorization", &tampered), FORGED[0], FORGED[1]]).await;
    assert_unauthorized(&refused, "Bearer realm=\"sluice\", error=\"invalid_token\"");

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "only the valid and the anonymous request went upstream");
    assert_eq!(values(&seen[0], "x-consumer"), ["alice"]);
    assert_eq!(values(&seen[0], "x-consumer-groups"), ["staff"]);
    assert_eq!(values(&seen[1], "x-consumer"), ["guest"]);
    assert_eq!(
        values(&seen[1], "x-consumer-groups"),
        Vec::<String>::new(),
        "the anonymous consumer has none"
    );
}

/// The error a gateway with `routes` fails to load with.
async fn load_error(s: &Setup, up: &TestServer, routes: &[String]) -> String {
    // DEL is not a printable YAML character: write it as a JSON escape.
    let yaml = s.yaml(up.addr, routes).replace('\u{7f}', "\\u007f");
    match Gateway::builder().config_yaml(&yaml) {
        Ok(b) => match b.start().await {
            Ok(_) => panic!("the config was accepted:\n{yaml}"),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn consumer_names_and_groups_with_control_characters_fail_the_load() {
    let up = TestServer::echo().await;
    let s = Setup::new();
    let hash = token("bcrypt_hash_of_s3cret");
    for ch in ['\r', '\n', '\0', '\u{7f}', '\u{1}'] {
        let bad = format!("ops{ch}admin");
        let cases = [
            (json!({"api_key": {"keys": [{"key": "k", "consumer": bad}]}}), "api_key.keys[0].consumer"),
            (
                json!({"api_key": {"keys": [{"key": "k", "consumer": "c", "groups": [bad]}]}}),
                "api_key.keys[0].groups[0]",
            ),
            (
                json!({"basic": {"users": [{"username": bad, "password_hash": hash}]}}),
                "basic.users[0].username",
            ),
            (json!({"api_key": {"keys": [{"key": "k", "consumer": "c"}]}, "anonymous": bad}), "anonymous"),
        ];
        for (config, field) in cases {
            let err = load_error(&s, &up, &[s.route("bad", "/", &config)]).await;
            let expected = format!("{field}: {bad:?} contains the control character U+{:04X}", u32::from(ch));
            assert!(err.contains(&expected), "`{err}` lacks `{expected}`");
        }
    }
}

/// Base64url without padding (JWK members).
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// An RSA JWK whose modulus has exactly `bits` bits. Never used to verify anything:
/// the point is whether the key loads.
fn rsa_jwk_of(bits: usize) -> Value {
    let mut n = vec![0u8; bits.div_ceil(8)];
    n[0] = 1 << ((bits - 1) % 8);
    *n.last_mut().unwrap() |= 1;
    json!({"kty": "RSA", "e": "AQAB", "n": b64url(&n)})
}

#[tokio::test]
async fn rsa_keys_of_2041_to_2047_bits_fail_the_load_naming_their_size_and_2048_bits_load() {
    assert_eq!(b64url(b"\xfb\xff\x01ab"), "-_8BYWI");
    let up = TestServer::echo().await;
    let s = Setup::new();
    for bits in 2040..=2047 {
        let config = json!({"jwt": {"keys": [{"jwk": rsa_jwk_of(bits)}]}});
        let err = load_error(&s, &up, &[s.route("small", "/", &config)]).await;
        let expected = format!("jwt.keys[0]: jwk RSA key of {bits} bits is too short (at least 2048)");
        assert!(err.contains(&expected), "{bits}: `{err}` lacks `{expected}`");
    }
    let config = json!({"jwt": {"keys": [{"jwk": rsa_jwk_of(2048)}]}});
    let gw = s.start(up.addr, &[s.route("big-enough", "/", &config)]).await;
    assert_unauthorized(&get(&gw, "/", &[]).await, "Bearer realm=\"sluice\"");
}

/// The fixtures' `rsa-1` JWK with `extra` members instead of `"use": "sig"`.
fn rsa1_jwk(extra: Value) -> Value {
    let jwks: Value = serde_json::from_str(JWKS_1).unwrap();
    let mut jwk = jwks["keys"][0].clone();
    jwk.as_object_mut().unwrap().remove("use");
    for (k, v) in extra.as_object().unwrap() {
        jwk[k] = v.clone();
    }
    jwk
}

#[tokio::test]
async fn encryption_keys_never_verify_tokens() {
    let up = TestServer::echo().await;
    let s = Setup::new();
    // A configured encryption key fails the load, naming it.
    for (extra, why) in
        [(json!({"use": "enc"}), "use enc"), (json!({"key_ops": ["encrypt"]}), "key_ops without verify")]
    {
        let config = json!({"jwt": {"keys": [{"jwk": rsa1_jwk(extra)}]}});
        let err = load_error(&s, &up, &[s.route("enc", "/", &config)]).await;
        let expected = format!("jwt.keys[0]: jwk (kid rsa-1) is not a signature-verification key ({why})");
        assert!(err.contains(&expected), "`{err}` lacks `{expected}`");
    }
    // A JWKS of encryption keys only fails the load, saying so.
    let only_enc =
        json!({"keys": [rsa1_jwk(json!({"use": "enc"})), rsa1_jwk(json!({"use": "enc", "kid": "b"}))]});
    let err = load_error(&s, &up, &[s.route("enc", "/", &json!({"jwt": {"jwks": only_enc}}))]).await;
    assert!(
        err.contains("jwt.jwks: the JWKS has no signature-verification keys (2 keys skipped: use enc)"),
        "{err}"
    );

    // In a JWKS, inline or fetched, a key whose key_ops lack `verify` is skipped: a
    // token it would verify is refused, the JWKS's signature key still works.
    let mut jwks: Value = serde_json::from_str(JWKS_2).unwrap();
    jwks["keys"][0] = rsa1_jwk(json!({"key_ops": ["encrypt"]}));
    let served = Arc::new(Mutex::new(jwks.to_string()));
    let idp = jwks_server(&served).await;
    let inline = json!({"jwt": {"jwks": jwks}});
    let fetched = json!({"jwt": {"jwks_url": url(idp.addr, "/jwks.json")}});
    let gw = s
        .start(up.addr, &[s.route("inline", "/inline", &inline), s.route("fetched", "/fetched", &fetched)])
        .await;
    for path in ["/inline", "/fetched"] {
        let refused = bearer(&gw, path, &token("rs256")).await;
        assert_unauthorized(&refused, "Bearer realm=\"sluice\", error=\"invalid_token\"");
        assert_eq!(
            refused.json()["error"]["message"],
            "invalid token: no RS256 key with kid rsa-1",
            "{path}"
        );
        let ok = bearer(&gw, path, &token("rs256_rsa2")).await;
        assert_eq!(ok.status, 200, "{path}: {}", ok.text());
    }
    assert_eq!(up.request_count(), 2, "only the rsa-2 tokens reached the upstream");
}

#[tokio::test]
async fn error_answers_of_auth_and_rate_limit_carry_the_gateways_request_id() {
    // The listener sends its ids in `x-trace-id` and never trusts the client's: the
    // `x-request-id` a client sends is just another header, and must not be what the
    // plugins' error bodies report.
    let yaml = "version: 1
listeners:
  - name: public
    address: 127.0.0.1:0
    request_id: { header: x-trace-id, trust_incoming: false }
routes:
  - name: keys
    match: { path_prefix: /keys }
    target: { echo: {} }
    plugins:
      - name: auth
        config: { api_key: { keys: [{ key: right-key, consumer: c }] } }
  - name: limited
    match: { path_prefix: /limited }
    target: { echo: {} }
    plugins:
      - name: rate-limit
        grants: { kv: true }
        config: { key: [ip], limits: [{ name: tiny, rate: 1, per: 1h }] }
";
    let gw = Gateway::builder().config_yaml(yaml).unwrap().start().await.unwrap();
    let sent = [("x-request-id", "from-the-client"), ("x-api-key", "wrong-key")];
    let refused = get(&gw, "/keys/a", &sent).await;
    assert_eq!(refused.status, 401, "{}", refused.text());
    let limited = [get(&gw, "/limited", &sent).await, get(&gw, "/limited", &sent).await];
    assert_eq!(limited[0].status, 200);
    assert_eq!(limited[1].status, 429, "{}", limited[1].text());
    for r in [&refused, &limited[1]] {
        let id = r.header("x-trace-id").expect("the gateway's id header");
        assert_eq!(id.len(), 32, "generated, not the client's");
        assert_eq!(r.json()["error"]["request_id"], id, "{}", r.text());
    }
}
