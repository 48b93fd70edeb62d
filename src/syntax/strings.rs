//! Decoding of string literals: escapes, and the indentation rule of `"""` strings.

pub(super) struct Decoded {
    pub value: String,
    pub template: String,
    /// (byte offset into the raw body, length, message) of each bad escape.
    pub errors: Vec<(usize, usize, String)>,
}

/// The template source standing for a literal `{` written `\{`.
const LITERAL_BRACE: &str = "{{ \"{\" }}";

/// Decodes a string body. For `"""` strings the common leading indentation is removed, along
/// with a first line and a last line that hold only whitespace.
pub(super) fn decode(raw: &str, triple: bool) -> Decoded {
    let mut errors = Vec::new();
    let text = if triple { dedent(raw) } else { raw.to_string() };
    // Escapes are validated on the raw body so error offsets point at what was written.
    let mut chars = raw.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some((_, 'n' | 't' | '\\' | '"' | '{')) => {}
                Some((_, other)) => errors.push((
                    i,
                    1 + other.len_utf8(),
                    format!("unknown escape `\\{other}`"),
                )),
                None => errors.push((i, 1, "a string cannot end with `\\`".to_string())),
            }
        }
    }
    let mut value = String::with_capacity(text.len());
    let mut template = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            value.push(c);
            template.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => push_both(&mut value, &mut template, '\n'),
            Some('t') => push_both(&mut value, &mut template, '\t'),
            Some('{') => {
                value.push('{');
                template.push_str(LITERAL_BRACE);
            }
            // `\\`, `\"`; unknown escapes were reported above and keep their character.
            Some(other) => push_both(&mut value, &mut template, other),
            None => {}
        }
    }
    Decoded {
        value,
        template,
        errors,
    }
}

fn push_both(a: &mut String, b: &mut String, c: char) {
    a.push(c);
    b.push(c);
}

/// Removes the common indentation of a `"""` body, and a whitespace-only first and last line.
pub fn dedent(raw: &str) -> String {
    let mut lines: Vec<&str> = raw.split('\n').collect();
    if lines.len() > 1 && lines[0].trim().is_empty() {
        lines.remove(0);
    }
    if lines.len() > 1 && lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start_matches([' ', '\t']).len())
        .min()
        .unwrap_or(0);
    let out: Vec<&str> = lines
        .iter()
        .map(|l| {
            let l = l.strip_suffix('\r').unwrap_or(l);
            if l.trim().is_empty() {
                ""
            } else {
                &l[indent.min(l.len())..]
            }
        })
        .collect();
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_decode_and_brace_escape_stays_literal_in_templates() {
        let d = decode(r#"a\n\t\\\"\{{ x }}"#, false);
        assert_eq!(d.value, "a\n\t\\\"{{ x }}");
        assert_eq!(d.template, "a\n\t\\\"{{ \"{\" }}{ x }}");
        assert!(d.errors.is_empty());
    }

    #[test]
    fn unknown_escape_is_reported_at_its_offset() {
        let d = decode(r"ab\qc", false);
        assert_eq!(d.errors, vec![(2, 2, "unknown escape `\\q`".to_string())]);
    }

    #[test]
    fn triple_strings_lose_common_indentation() {
        let d = decode(
            "\n        Implement: x\n          indented\n\n        end\n        ",
            true,
        );
        assert_eq!(d.value, "Implement: x\n  indented\n\nend");
    }
}
