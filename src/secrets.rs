//! Secret params (`param token { secret = true }`): their values are masked in the run's log
//! and redacted wherever they turn up in what tasks print, return or record.
//!
//! Redaction replaces the value as written and as JSON escapes it. It cannot catch a value a
//! program transforms (base64, reversed) or prints split across two writes that straddle a
//! log flush; values shorter than [`MIN_REDACTED`] characters are masked in the params but not
//! searched for in output, since replacing them everywhere would mangle it.

use std::borrow::Cow;

/// What a secret param's value is stored as.
pub(crate) const MASK: &str = "********";

/// The shortest value searched for in output.
pub(crate) const MIN_REDACTED: usize = 4;

/// Replaces secret values in text.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// Each value's forms (as written, JSON-escaped) and what replaces them.
    forms: Vec<(String, String)>,
}

impl Redactor {
    /// A redactor for `(name, value)` pairs.
    pub fn new<'a>(secrets: impl IntoIterator<Item = (&'a str, &'a str)>) -> Redactor {
        let mut r = Redactor::default();
        for (name, value) in secrets {
            r.add(value, format!("[secret param {name}]"));
        }
        r
    }

    /// Also redacts the API keys of providers, `(variable, key)` pairs: a program that finds
    /// a key some other way must not get it into the log.
    pub fn with_keys<'a>(mut self, keys: impl IntoIterator<Item = (&'a str, &'a str)>) -> Redactor {
        for (variable, key) in keys {
            self.add(key, format!("[key in {variable}]"));
        }
        self
    }

    fn add(&mut self, value: &str, with: String) {
        if value.chars().count() < MIN_REDACTED {
            return;
        }
        let escaped = serde_json::to_string(value).unwrap_or_default();
        let escaped = escaped.trim_matches('"');
        if escaped != value {
            self.forms.push((escaped.to_string(), with.clone()));
        }
        self.forms.push((value.to_string(), with));
        // Longer forms first, so a value containing another is replaced whole.
        self.forms.sort_by_key(|(f, _)| std::cmp::Reverse(f.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }

    /// `text` with every secret value replaced.
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut out = Cow::Borrowed(text);
        for (form, with) in &self.forms {
            if out.contains(form.as_str()) {
                out = Cow::Owned(out.replace(form.as_str(), with));
            }
        }
        out
    }

    /// Bytes a program printed, with every secret value replaced.
    pub fn redact_bytes<'b>(&self, bytes: &'b [u8]) -> Cow<'b, [u8]> {
        if self.is_empty() {
            return Cow::Borrowed(bytes);
        }
        match std::str::from_utf8(bytes) {
            Ok(text) => match self.redact(text) {
                Cow::Borrowed(_) => Cow::Borrowed(bytes),
                Cow::Owned(s) => Cow::Owned(s.into_bytes()),
            },
            // Not UTF-8: search the raw bytes for each form.
            Err(_) => {
                let mut out = bytes.to_vec();
                for (form, with) in &self.forms {
                    out = replace_bytes(&out, form.as_bytes(), with.as_bytes());
                }
                Cow::Owned(out)
            }
        }
    }
}

fn replace_bytes(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_replaced_as_written_and_as_json_escapes_them() {
        let r = Redactor::new([("token", "s3cr\"et-42"), ("pin", "123")]);
        assert_eq!(
            r.redact("auth s3cr\"et-42 ok"),
            "auth [secret param token] ok"
        );
        assert_eq!(
            r.redact(r#"{"out":"s3cr\"et-42"}"#),
            r#"{"out":"[secret param token]"}"#
        );
        // Too short to search for: masked in params only.
        assert_eq!(r.redact("pin 123"), "pin 123");
        let bytes = b"\xff s3cr\"et-42 \xfe";
        assert_eq!(
            &*r.redact_bytes(bytes),
            b"\xff [secret param token] \xfe".as_slice()
        );
    }
}
