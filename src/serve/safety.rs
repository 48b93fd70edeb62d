//! Who may use the dashboard: loopback by default; a token for any other address; every
//! state-changing request carries the token and comes from the dashboard's own origin (a page
//! on another site cannot make the browser act for its user: no CSRF).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::Server;

/// The header that carries the token (`Authorization: Bearer T` is accepted too).
pub(crate) const TOKEN_HEADER: &str = "x-conductor-token";

/// A non-loopback address needs a token: a dashboard can retry and decide runs.
pub(crate) fn listen_allowed(addr: &SocketAddr, has_token: bool) -> Result<(), String> {
    if addr.ip().is_loopback() || has_token {
        return Ok(());
    }
    Err(format!(
        "`--listen {addr}` is reachable from other machines: give `--token` (or `--token-file`) so only holders of the token can act on runs, or listen on 127.0.0.1"
    ))
}

/// Checks every request: the token when the server has one (always for state-changing
/// requests), and the origin of state-changing requests.
pub(crate) async fn guard(
    State(server): State<Arc<Server>>,
    request: Request,
    next: Next,
) -> Response {
    let changes = !matches!(*request.method(), Method::GET | Method::HEAD);
    let headers = request.headers();
    // The page and its assets load without a token: the page asks for it and sends it.
    let path = request.uri().path();
    let page = path == "/" || path.starts_with("/assets/");
    match &server.token {
        Some(token) if !page && !token_matches(headers, request.uri().query(), token) => {
            return ApiError::Unauthorized.into_response();
        }
        Some(_) => {}
        // Without a token the server listens on loopback; a page elsewhere that renames its
        // own host to 127.0.0.1 (DNS rebinding) still sends its own name as `Host`.
        None if !loopback_host(headers) => {
            return ApiError::Forbidden(
                "the dashboard answers only requests addressed to a loopback name (localhost, 127.0.0.1, [::1]); give `--token` to serve other names".into(),
            )
            .into_response();
        }
        None => {}
    }
    if changes {
        if let Err(e) = same_origin(headers) {
            return e.into_response();
        }
    }
    next.run(request).await
}

/// Whether `Host` names this machine's loopback interface.
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        // HTTP/1.0 without `Host`: not a browser.
        return true;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The token from the header, `Authorization: Bearer`, or (for the event stream, which a
/// browser's `EventSource` opens without headers) the `token` query parameter.
fn token_matches(headers: &HeaderMap, query: Option<&str>, token: &str) -> bool {
    let given = headers
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_string)
        })
        .or_else(|| query.and_then(query_token));
    given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes()))
}

fn query_token(query: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| percent_decode(v))
}

/// `%XX` and `+` as a form encodes them.
fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Compares without stopping at the first difference, so timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A state-changing request must come from the dashboard's own page: its `Origin` (or, when
/// a browser sends none, its `Referer`) names the host the request was sent to. A request
/// with neither is a program's (curl, a test), not a page's, and is let through: the token
/// is what guards it.
fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    let Some(origin) = origin else {
        return Ok(());
    };
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .map(|rest| rest.split('/').next().unwrap_or(""));
    match authority {
        Some(a) if !host.is_empty() && a.eq_ignore_ascii_case(host) => Ok(()),
        _ => Err(ApiError::Forbidden(format!(
            "a request from `{origin}` may not change runs on `{host}`: actions are accepted only from the dashboard's own page"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{header, HeaderMap, HeaderValue};

    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_public_address_needs_a_token() {
        let public: SocketAddr = "0.0.0.0:8787".parse().unwrap();
        let err = listen_allowed(&public, false).unwrap_err();
        assert!(err.contains("--token"), "{err}");
        assert!(listen_allowed(&public, true).is_ok());
        assert!(listen_allowed(&"127.0.0.1:0".parse().unwrap(), false).is_ok());
        assert!(listen_allowed(&"[::1]:0".parse().unwrap(), false).is_ok());
    }

    #[test]
    fn another_sites_page_cannot_act() {
        let ok = headers(&[
            (header::HOST, "127.0.0.1:8787"),
            (header::ORIGIN, "http://127.0.0.1:8787"),
        ]);
        assert!(same_origin(&ok).is_ok());
        let evil = headers(&[
            (header::HOST, "127.0.0.1:8787"),
            (header::ORIGIN, "http://evil.example"),
        ]);
        assert!(same_origin(&evil).is_err());
        let referer = headers(&[
            (header::HOST, "127.0.0.1:8787"),
            (header::REFERER, "http://evil.example/page"),
        ]);
        assert!(same_origin(&referer).is_err());
    }

    #[test]
    fn only_loopback_names_without_a_token() {
        for host in ["localhost:1", "127.0.0.1:8787", "[::1]:80", "127.0.0.1"] {
            assert!(loopback_host(&headers(&[(header::HOST, host)])), "{host}");
        }
        for host in ["evil.example:8787", "10.0.0.1:80", "[2001:db8::1]:80"] {
            assert!(!loopback_host(&headers(&[(header::HOST, host)])), "{host}");
        }
    }

    #[test]
    fn tokens_compare_whole_and_decode_from_the_query() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert_eq!(
            query_token("after=3&token=a%2Bb+c").as_deref(),
            Some("a+b c")
        );
        assert_eq!(percent_decode("100%"), "100%");
    }
}
