//! HTTP/1.1 request heads and raw responses for the lean connection layer: the WebSocket
//! upgrade and a connection's first SSE `GET`, which never reach actix-web (see `accept`).
//! httparse reads the head; what is answered is built here as bytes (refusals as the contract's
//! JSON errors, the SSE head with chunked framing).

use bytes::Bytes;

use crate::auth::token_of;
use crate::error::ApiError;

/// Largest request head accepted.
pub const MAX_HEAD: usize = 8192;

/// What the upgrade request asked for.
pub struct Upgrade {
    pub accept: String,
    /// `Authorization: Bearer …`, else `?token=` of the request line.
    pub token: Option<String>,
    /// Bytes the client sent after the request head (its first frames).
    pub rest: Vec<u8>,
}

/// Reads and checks an upgrade request head in `head` (the whole of it, `\r\n\r\n` included).
/// `Ok(None)`: incomplete.
pub fn parse_upgrade(buf: &[u8]) -> Result<Option<Upgrade>, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let used = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err("malformed HTTP request"),
    };
    if req.method != Some("GET") {
        return Err("a WebSocket upgrade must be a GET");
    }
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return Err("expected a WebSocket upgrade (Upgrade: websocket, Connection: Upgrade)");
    }
    if header("sec-websocket-version") != Some("13") {
        return Err("only WebSocket version 13 is supported");
    }
    let key = header("sec-websocket-key").ok_or("missing Sec-WebSocket-Key")?;
    let query = req
        .path
        .and_then(|p| p.split_once('?'))
        .map(|(_, q)| q)
        .unwrap_or("");
    let token = token_of(header("authorization"), query).map(str::to_owned);
    Ok(Some(Upgrade {
        accept: tungstenite::handshake::derive_accept_key(key.as_bytes()),
        token,
        rest: buf[used..].to_vec(),
    }))
}

pub fn switching_protocols(accept: &str) -> Vec<u8> {
    format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").into_bytes()
}

/// A refusal as a complete HTTP response (the connection closes after it).
pub fn refusal(e: &ApiError) -> Vec<u8> {
    let status = e.status();
    let mut extra = String::new();
    if let Some(ms) = e.retry_after_ms() {
        extra = format!("Retry-After: {}\r\n", ms.div_ceil(1000));
    }
    let body = e.body().to_string();
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    )
    .into_bytes()
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// A connection's first SSE request, as the lean SSE server needs it.
pub struct SseHead {
    /// The path without its query string.
    pub path: String,
    /// The raw query string (may be empty).
    pub query: String,
    /// `Authorization: Bearer …`, else `?token=`.
    pub token: Option<String>,
    pub last_event_id: Option<String>,
}

/// Reads an SSE `GET` head in `buf`. `Ok(None)`: incomplete.
pub fn parse_sse(buf: &[u8]) -> Result<Option<SseHead>, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err("malformed HTTP request"),
    }
    if req.method != Some("GET") {
        return Err("an SSE stream must be a GET");
    }
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| std::str::from_utf8(h.value).map_err(|_| "header value is not UTF-8"))
            .transpose()
    };
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let token = token_of(header("authorization")?, query).map(str::to_owned);
    Ok(Some(SseHead {
        path: path.to_owned(),
        query: query.to_owned(),
        token,
        last_event_id: header("last-event-id")?.map(str::to_owned),
    }))
}

/// The head of an SSE answer: chunked, and the connection closes when the stream ends (it
/// never goes back to serving requests).
pub fn sse_head(headers: &[(&str, &str)]) -> Bytes {
    let mut head = String::from("HTTP/1.1 200 OK\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    Bytes::from(head)
}

/// One chunk of a chunked body.
pub fn chunk(data: &[u8]) -> Bytes {
    let mut v = format!("{:x}\r\n", data.len()).into_bytes();
    v.reserve(data.len() + 2);
    v.extend_from_slice(data);
    v.extend_from_slice(b"\r\n");
    Bytes::from(v)
}

/// The end of a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_heads_are_checked() {
        let ok = b"GET /api/v1/ws?token=abc HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\nXY";
        let u = parse_upgrade(ok).unwrap().unwrap();
        assert_eq!(u.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(u.token.as_deref(), Some("abc"));
        assert_eq!(u.rest, b"XY");
        assert!(parse_upgrade(&ok[..40]).unwrap().is_none());
        let plain = b"GET /api/v1/ws HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(parse_upgrade(plain).is_err());
    }

    #[test]
    fn sse_heads_give_path_query_token_and_resume_position() {
        let head = b"GET /api/v1/stream/subscribe?collection=a&token=t1 HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 42\r\n\r\n";
        let h = parse_sse(head).unwrap().unwrap();
        assert_eq!(h.path, "/api/v1/stream/subscribe");
        assert_eq!(h.query, "collection=a&token=t1");
        assert_eq!(h.token.as_deref(), Some("t1"));
        assert_eq!(h.last_event_id.as_deref(), Some("42"));
        assert!(parse_sse(&head[..30]).unwrap().is_none());
        let bearer = b"GET /api/v1/stream/search?x=1 HTTP/1.1\r\nAuthorization: Bearer k\r\n\r\n";
        assert_eq!(
            parse_sse(bearer).unwrap().unwrap().token.as_deref(),
            Some("k")
        );
        assert!(parse_sse(b"POST /api/v1/stream/search HTTP/1.1\r\n\r\n").is_err());
    }

    #[test]
    fn refusals_are_json_errors_with_status_and_retry_hint() {
        let e = ApiError::RateLimited {
            class: "stream",
            retry_ms: 1500,
        };
        let text = String::from_utf8(refusal(&e)).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
            "{text}"
        );
        assert!(text.contains("Retry-After: 2\r\n"));
        assert!(text.ends_with(&e.body().to_string()));
        assert_eq!(&chunk(b"abc")[..], b"3\r\nabc\r\n");
    }
}
