//! Secret params (`param token { secret = true }`): their values are masked in the run's log
//! and redacted wherever they turn up in what tasks print, return or record.
//!
//! Redaction finds a value as written and in the encodings a server or program plausibly
//! echoes it in, character by character, so a mix of forms is found too: JSON escapes
//! (`\u0073`, `\/`, `\"`, `\n`, with the backslash itself escaped any number of times, as when
//! an error body holding escapes is stored inside JSON), percent-encoding (`%73`, a key echoed
//! in a URL) and HTML character references (`&#115;`, `&#x73;`). It cannot catch a value a
//! program transforms otherwise (base64, reversed) or prints split across two writes that
//! straddle a log flush; values shorter than [`MIN_REDACTED`] characters are masked in the
//! params but not searched for in output, since replacing them everywhere would mangle it.

use std::borrow::Cow;

/// What a secret param's value is stored as.
pub(crate) const MASK: &str = "********";

/// The shortest value searched for in output.
pub(crate) const MIN_REDACTED: usize = 4;

/// Replaces secret values in text.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// Each value's characters and what replaces it, longest first, so a value containing
    /// another is replaced whole.
    values: Vec<(Vec<char>, String)>,
    /// Bytes a match can start with (indexed by byte): most bytes of a text are skipped at a
    /// glance.
    starts: Vec<bool>,
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
        let chars: Vec<char> = value.chars().collect();
        if self.starts.is_empty() {
            self.starts = vec![false; 256];
            for b in [b'\\', b'%', b'&'] {
                self.starts[b as usize] = true;
            }
        }
        let mut first = [0u8; 4];
        chars[0].encode_utf8(&mut first);
        self.starts[first[0] as usize] = true;
        self.values.push((chars, with));
        self.values.sort_by_key(|(v, _)| std::cmp::Reverse(v.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every secret value replaced, in any form it is found in.
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        match self.redact_bytes(text.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            // Matches start and end on character boundaries (a literal character or an ASCII
            // escape), so what is left is UTF-8; the fallback never runs.
            Cow::Owned(bytes) => Cow::Owned(
                String::from_utf8(bytes)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            ),
        }
    }

    /// Bytes a program printed (UTF-8 or not), with every secret value replaced.
    pub fn redact_bytes<'b>(&self, bytes: &'b [u8]) -> Cow<'b, [u8]> {
        let mut out: Option<Vec<u8>> = None;
        let mut copied = 0;
        let mut i = 0;
        if self.values.is_empty() {
            return Cow::Borrowed(bytes);
        }
        while i < bytes.len() {
            if !self.starts[bytes[i] as usize] {
                i += 1;
                continue;
            }
            let found = self
                .values
                .iter()
                .find_map(|(v, with)| match_value(bytes, i, v).map(|end| (end, with)));
            match found {
                Some((end, with)) => {
                    let o = out.get_or_insert_with(|| Vec::with_capacity(bytes.len()));
                    o.extend_from_slice(&bytes[copied..i]);
                    o.extend_from_slice(with.as_bytes());
                    copied = end;
                    i = end;
                }
                None => i += 1,
            }
        }
        match out {
            None => Cow::Borrowed(bytes),
            Some(mut o) => {
                o.extend_from_slice(&bytes[copied..]);
                Cow::Owned(o)
            }
        }
    }
}

/// `text` with `value` replaced by `with` in any form it is found in (see the module's note);
/// for text that may echo a single key, such as a provider's error body.
pub(crate) fn replace_value(text: String, value: &str, with: &str) -> String {
    let mut r = Redactor::default();
    r.add(value, with.to_string());
    match r.redact(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(clean) => clean,
    }
}

/// Where a match of `value` starting at byte `at` ends, if one does.
fn match_value(bytes: &[u8], at: usize, value: &[char]) -> Option<usize> {
    let mut i = at;
    for &c in value {
        i = match_char(bytes, i, c)?;
    }
    Some(i)
}

/// Where one encoded or literal `c` starting at byte `at` ends.
fn match_char(bytes: &[u8], at: usize, c: char) -> Option<usize> {
    let rest = bytes.get(at..)?;
    let mut buf = [0u8; 4];
    let literal = c.encode_utf8(&mut buf).as_bytes();
    let encoded = match rest.first()? {
        b'\\' => json_escape(rest, c),
        b'%' => percent_escape(rest, c),
        b'&' => html_reference(rest, c),
        _ => None,
    };
    // Or the character as written (a `\`, `%` or `&` in the value itself included).
    encoded
        .or_else(|| rest.starts_with(literal).then_some(literal.len()))
        .map(|n| at + n)
}

/// The length of a JSON escape of `c` at the start of `rest`: one or more backslashes (an
/// escape stored inside JSON has its backslash escaped again), then `uXXXX` (a surrogate pair
/// for a character beyond the BMP), or the character itself (`\/`, `\"`), or a short escape.
fn json_escape(rest: &[u8], c: char) -> Option<usize> {
    let run = rest.iter().take_while(|&&b| b == b'\\').count();
    if c == '\\' {
        // A backslash, escaped any number of times.
        return Some(run);
    }
    let after = &rest[run..];
    let short = match c {
        '"' | '/' | '\'' => Some(c as u8),
        '\n' => Some(b'n'),
        '\t' => Some(b't'),
        '\r' => Some(b'r'),
        '\u{8}' => Some(b'b'),
        '\u{c}' => Some(b'f'),
        _ => None,
    };
    if short.is_some() && after.first().copied() == short {
        return Some(run + 1);
    }
    if after.first() != Some(&b'u') {
        return None;
    }
    let code = c as u32;
    if code <= 0xFFFF {
        return (hex_value(after.get(1..5)?)? == code).then_some(run + 5);
    }
    // A surrogate pair: `\uD8xx` then the low half, escaped as deeply.
    let v = code - 0x10000;
    let (high, low) = (0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
    if hex_value(after.get(1..5)?)? != high {
        return None;
    }
    let second = &after[5..];
    let run2 = second.iter().take_while(|&&b| b == b'\\').count();
    let tail = &second[run2..];
    (run2 > 0 && tail.first() == Some(&b'u') && hex_value(tail.get(1..5)?)? == low)
        .then_some(run + 5 + run2 + 5)
}

/// The length of a percent-encoded ASCII `c` (`%2F`) at `rest`'s start.
fn percent_escape(rest: &[u8], c: char) -> Option<usize> {
    (c.is_ascii() && hex_value(rest.get(1..3)?)? == c as u32).then_some(3)
}

/// The length of an HTML character reference to `c` (`&#115;` or `&#x73;`) at `rest`'s start.
fn html_reference(rest: &[u8], c: char) -> Option<usize> {
    let body = rest.strip_prefix(b"&#")?;
    let end = body.iter().position(|&b| b == b';').filter(|&n| n <= 8)?;
    let digits = std::str::from_utf8(&body[..end]).ok()?;
    let code = match digits.strip_prefix(['x', 'X']) {
        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
        None => digits.parse().ok()?,
    };
    (code == c as u32).then_some(2 + end + 1)
}

/// The value of hex digits (either case), if they all are.
fn hex_value(digits: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(digits).ok()?;
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(text, 16).ok()
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

    #[test]
    fn values_are_found_in_every_escaped_or_encoded_form_and_any_mix_of_them() {
        let r = Redactor::new([]).with_keys([("K", "sk-a/b+c"), ("S", "pa\u{1F511}ss")]);
        for echoed in [
            r"\u0073\u006b\u002d\u0061\u002f\u0062\u002b\u0063",
            r"\u0073k-a/b+\u0063",
            r"\u0073\u006B-a/b+c",
            r"sk-a\/b+c",
            r"\\u0073k-a\\/b+c",
            r"\\\\u0073k-a/b+c",
            "sk%2Da%2fb%2Bc",
            "&#115;k-a&#x2F;b+c",
            r"pa\ud83d\udd11ss",
            r"pa\\ud83d\\udd11ss",
        ] {
            let text = format!(r#"{{"error": "bad key {echoed}!"}}"#);
            let clean = r.redact(&text);
            assert!(
                clean == r#"{"error": "bad key [key in K]!"}"#
                    || clean == r#"{"error": "bad key [key in S]!"}"#,
                "{echoed}: {clean}"
            );
        }
        // Near misses stay as they are.
        for text in [r"\u0073k-a/b+d", "sk%2Xa/b+c", "&#115k-a/b+c", "sk-a/b"] {
            assert_eq!(r.redact(text), text);
        }
        assert_eq!(
            replace_value(r"key \u0073k-a/b+c".into(), "sk-a/b+c", "[redacted]"),
            "key [redacted]"
        );
    }
}
