//! Shell commands: a list of argument templates, or one string split into arguments as a
//! shell would.

use super::ir::Template;
use super::Checker;
use crate::diag::Annotate;
use crate::syntax::ast::{self, ValueKind};

impl Checker<'_> {
    /// A list element that is exactly one `{{ expression }}` may yield a list: it is compiled
    /// a second time through the `argv_items` filter, which marks a list so each item becomes
    /// its own argument.
    fn expanding(&mut self, mut t: Template) -> Template {
        let Some(expr) = crate::template::whole_expression(&t.source) else {
            return t;
        };
        if let Ok((id, _)) = self
            .templates
            .add(&format!("{{{{ {expr} | argv_items }}}}"))
        {
            t.id = Some(id);
            t.expands = true;
        }
        t
    }

    /// `command`: a list of argument templates, or one string split as a shell would.
    pub(super) fn command(&mut self, v: &ast::Value) -> Option<Vec<Template>> {
        match &v.kind {
            ValueKind::List(items) if !items.is_empty() => {
                // Every argument is checked, so all bad ones are reported together.
                let mut out = Vec::new();
                for item in items {
                    let arg = self
                        .reader()
                        .string("command", item)
                        .cloned()
                        .and_then(|lit| self.template(&lit, "command"))
                        .map(|t| self.expanding(t));
                    out.push(arg);
                }
                out.into_iter().collect()
            }
            ValueKind::List(_) => {
                self.error(v.span, "`command` is empty")
                    .with_label("no program to run");
                None
            }
            ValueKind::Str(lit) => {
                let words = match split_command(&lit.template) {
                    Ok(words) => words,
                    Err(_) => {
                        self.error(v.span, "`command` has an unclosed quote")
                            .with_label("cannot split into arguments")
                            .help =
                            Some("close the quote, or write the arguments as a list".into());
                        return None;
                    }
                };
                if words.is_empty() {
                    self.error(v.span, "`command` is empty")
                        .with_label("no program to run");
                    return None;
                }
                let mut out = Vec::new();
                for word in words {
                    let piece = ast::StrLit {
                        value: word.clone(),
                        template: word,
                        triple: false,
                        span: lit.span,
                    };
                    out.push(self.template(&piece, "command")?);
                }
                Some(out)
            }
            _ => {
                self.reader().string("command", v);
                None
            }
        }
    }
}

/// Splits a one-string command into words as a shell would, keeping each `{{ … }}` and
/// `{% … %}` tag whole, so a template is one argument however many spaces it holds.
fn split_command(template: &str) -> Result<Vec<String>, shell_words::ParseError> {
    let mut tags = Vec::new();
    let mut masked = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{").into_iter().chain(rest.find("{%")).min() {
        let close_pat = if rest[open..].starts_with("{{") {
            "}}"
        } else {
            "%}"
        };
        let Some(close) = rest[open + 2..].find(close_pat) else {
            break;
        };
        let end = open + 2 + close + 2;
        masked.push_str(&rest[..open]);
        masked.push_str(&format!("\u{E000}{}\u{E001}", tags.len()));
        tags.push(&rest[open..end]);
        rest = &rest[end..];
    }
    masked.push_str(rest);
    let words = shell_words::split(&masked)?;
    Ok(words
        .into_iter()
        .map(|w| {
            let mut out = String::with_capacity(w.len());
            let mut parts = w.split('\u{E000}');
            out.push_str(parts.next().unwrap_or(""));
            for part in parts {
                let (index, tail) = part.split_once('\u{E001}').unwrap_or((part, ""));
                match index.parse::<usize>().ok().and_then(|i| tags.get(i)) {
                    Some(tag) => out.push_str(tag),
                    None => out.push_str(part),
                }
                out.push_str(tail);
            }
            out
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::split_command;

    #[test]
    fn one_string_commands_split_like_a_shell_and_keep_templates_whole() {
        let words =
            split_command(r#"echo "hello world" {{ params.name }} --x={{ a ~ "b c" }}"#).unwrap();
        assert_eq!(
            words,
            vec![
                "echo",
                "hello world",
                "{{ params.name }}",
                r#"--x={{ a ~ "b c" }}"#
            ]
        );
    }
}
