//! The echo target: answers with a JSON description of the request as the gateway
//! would forward it. The quick start uses it so it runs with nothing else.

use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};

use crate::body::{Body, full};
use crate::error::ProxyError;
use crate::router::PathParams;

/// Bodies up to this size are echoed as text (when UTF-8); larger ones only by size.
const ECHO_BODY_TEXT_LIMIT: usize = 64 * 1024;

/// Reads the request (body limited to `max_body`) and describes it as JSON.
pub async fn respond<B>(
    req: Request<B>,
    status: StatusCode,
    route: &str,
    params: &PathParams,
    max_body: u64,
) -> Result<Response<Body>, ProxyError>
where
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: Into<crate::body::BoxError>,
{
    let (parts, body) = req.into_parts();
    let limited = http_body_util::Limited::new(body, usize::try_from(max_body).unwrap_or(usize::MAX));
    let bytes = match limited.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ProxyError::BodyTooLarge { limit: max_body });
        }
        Err(e) => return Err(ProxyError::ClientBody(e)),
    };
    let mut headers = Map::new();
    for name in parts.headers.keys() {
        let values: Vec<Value> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let v = if values.len() == 1 {
            values.into_iter().next().unwrap_or(Value::Null)
        } else {
            Value::Array(values)
        };
        headers.insert(name.as_str().to_owned(), v);
    }
    let params: Map<String, Value> =
        params.iter().map(|(k, v)| (k.to_string(), Value::String(v.clone()))).collect();
    let text = (bytes.len() <= ECHO_BODY_TEXT_LIMIT).then(|| std::str::from_utf8(&bytes).ok()).flatten();
    let doc = json!({
        "route": route,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "params": params,
        "headers": headers,
        "body_bytes": bytes.len(),
        "body": text,
    });
    let mut out = serde_json::to_vec_pretty(&doc).map_err(|e| ProxyError::Internal(e.to_string()))?;
    out.push(b'\n');
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(out))
        .map_err(|e| ProxyError::Internal(e.to_string()))
}
