//! The `http` agent: one request per attempt, its method, URL, headers and body rendered from
//! templates by the executor. 2xx completes the task with the JSON body (or `{ body }`); other
//! statuses map onto typed errors: 429 is RATE_LIMITED with the server's `Retry-After`, 408,
//! 425, 500, 502, 503, 504 and 529 (overloaded) are retryable, other 4xx are fatal. A connection that fails or
//! resets is retryable. Dropping the attempt (timeout, cancellation) drops the request.

use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{AgentEnv, AgentFuture, Renderer};
use crate::check::ir;
use crate::model::{ErrorCode, TaskError};

/// Response bodies larger than this are refused rather than read into memory.
pub(crate) const BODY_LIMIT: usize = 10 << 20;

/// A request for one attempt, rendered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HttpCall {
    pub method: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Statuses that are the service's verdict: the task fails, without retry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fail_on_status: Vec<u16>,
}

/// Renders an http pool's URL, headers and body.
pub(super) fn prepare(
    h: &ir::HttpAgent,
    agent: &str,
    r: &Renderer<'_>,
) -> Result<HttpCall, TaskError> {
    let what = |part: &str| format!("`{part}` of agent `{agent}`");
    let url = r.render(&h.url, &what("url"))?;
    let headers = h
        .headers
        .iter()
        .map(|(k, v)| Ok((k.clone(), r.render(v, &what("headers"))?)))
        .collect::<Result<Vec<_>, TaskError>>()?;
    let body = r.render_opt(h.body.as_ref(), &what("body"))?;
    Ok(HttpCall {
        method: h.method.clone(),
        url,
        headers,
        body,
        fail_on_status: h.fail_on_status.clone(),
    })
}

/// rustls needs its crypto provider chosen once per process.
pub(crate) fn install_crypto() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The HTTP client of http agents and LLM providers: rustls, Conductor's user agent, a 10 s
/// connect timeout, and `timeout` for a whole request when given.
pub(crate) fn client(timeout: Option<Duration>) -> Result<reqwest::Client, String> {
    install_crypto();
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("conductor/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10));
    if let Some(t) = timeout {
        builder = builder.timeout(t);
    }
    builder
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {e}"))
}

/// Sends one attempt's request.
pub(super) fn execute(call: HttpCall, env: &AgentEnv) -> AgentFuture {
    let client = env.http_client();
    Box::pin(async move {
        let client = client?;
        let method = reqwest::Method::from_bytes(call.method.as_bytes()).map_err(|_| {
            TaskError::fatal(
                ErrorCode::InvalidInput,
                format!("bad method `{}`", call.method),
            )
        })?;
        let mut request = client.request(method, &call.url);
        for (k, v) in &call.headers {
            request = request.header(k, v);
        }
        if let Some(body) = call.body {
            request = request.body(body);
        }
        let (status, retry_after, text) = exchange(request, &call.url).await?;
        if (200..300).contains(&status) {
            return Ok(match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(json) => json,
                Err(_) => serde_json::json!({ "body": text }),
            });
        }
        let error = status_error(
            status,
            retry_after,
            format!("{} {}", call.method, call.url),
            &text,
        );
        if call.fail_on_status.contains(&status) {
            return Err(TaskError::failure(error.code, error.message));
        }
        Err(error)
    })
}

/// Sends a request and reads its whole body (up to [`BODY_LIMIT`]): the status, the server's
/// `Retry-After`, the body as text. Transport failures are typed errors.
pub(crate) async fn exchange(
    request: reqwest::RequestBuilder,
    url: &str,
) -> Result<(u16, Option<Duration>, String), TaskError> {
    let mut response = request.send().await.map_err(|e| transport_error(url, &e))?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let too_large = || {
        TaskError::fatal(
            ErrorCode::InvalidOutput,
            format!(
                "the response of {url} is larger than {} MiB",
                BODY_LIMIT >> 20
            ),
        )
    };
    if response
        .content_length()
        .is_some_and(|n| n as usize > BODY_LIMIT)
    {
        return Err(too_large());
    }
    // Read as a stream and count: a body without a length cannot grow past the limit.
    let mut bytes: Vec<u8> = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(url, &e))?
    {
        if bytes.len() + chunk.len() > BODY_LIMIT {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok((
        status,
        retry_after,
        String::from_utf8_lossy(&bytes).into_owned(),
    ))
}

/// The typed error for a non-2xx status: 429 is RATE_LIMITED (with the server's delay); 408,
/// 425, 5xx and 529 (overloaded) are retryable; other statuses are fatal. `what` names the
/// request; an excerpt of the body explains it.
pub(crate) fn status_error(
    status: u16,
    retry_after: Option<Duration>,
    what: String,
    body: &str,
) -> TaskError {
    let excerpt: String = body.trim().chars().take(300).collect();
    let message = format!(
        "{what} answered {status}{}{}",
        reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .map(|r| format!(" {r}"))
            .unwrap_or_default(),
        if excerpt.is_empty() {
            String::new()
        } else {
            format!(": {excerpt}")
        }
    );
    let mut error = match status {
        429 => TaskError::retryable(ErrorCode::RateLimited, message),
        408 | 425 | 500 | 502 | 503 | 504 | 529 => TaskError::retryable(ErrorCode::Http, message),
        _ => TaskError::fatal(ErrorCode::Http, message),
    };
    error.retry_after_ms = retry_after.map(|d| d.as_millis() as u64);
    error
}

/// A failure before any status: retryable unless the request itself is malformed.
pub(crate) fn transport_error(url: &str, e: &reqwest::Error) -> TaskError {
    let mut cause = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = format!("{cause}: {s}");
        source = s.source();
    }
    if e.is_timeout() {
        TaskError::retryable(
            ErrorCode::Timeout,
            format!("request to {url} timed out: {cause}"),
        )
    } else if e.is_builder() {
        TaskError::fatal(
            ErrorCode::InvalidInput,
            format!("bad request to {url}: {cause}"),
        )
    } else {
        TaskError::retryable(
            ErrorCode::Transient,
            format!("request to {url} failed: {cause}"),
        )
    }
}

/// `Retry-After` as seconds, or as an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(3600)));
    }
    let when = httpdate_parse(value)?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
            .min(Duration::from_secs(3600)),
    )
}

fn httpdate_parse(value: &str) -> Option<std::time::SystemTime> {
    // IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`: humantime reads its RFC 3339 form.
    let parts: Vec<&str> = value.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let month = match *month {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    humantime::parse_rfc3339(&format!("{year}-{month:02}-{day:0>2}T{time}Z")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
