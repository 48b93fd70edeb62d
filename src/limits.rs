//! Every bound on what a run consumes that is not a setting of the language, in one place.
//!
//! Each limit turns input that would otherwise exhaust memory, the stack or time into a clear
//! error naming the limit. `docs/operations.md` ("Limits") lists every one with its value:
//! change both together.

use std::time::Duration;

/// JSON values a run stores — task outputs (model replies, shell stdout, http bodies, script
/// results), `--param` values, literal values of the workflow — may nest at most this deep.
/// Deeper values are refused before they are stored: readers of the log (serde_json stops at
/// 128 levels, and the log wraps each value in a few levels of its own) must always be able to
/// read what was written.
pub const MAX_VALUE_DEPTH: usize = 64;

/// An expression in a template may nest at most this deep, counting each operator, filter,
/// test, attribute or index lookup and bracket in a row. The template engine recurses once per
/// level when it compiles, so a longer chain would overflow the stack.
pub const MAX_TEMPLATE_DEPTH: usize = 64;

/// Instructions one template render may execute (a loop's every turn counts).
pub const TEMPLATE_FUEL: u64 = 1_000_000;

/// Nested macro calls in one template render.
pub const TEMPLATE_RECURSION: usize = 32;

/// Bytes one template render may produce, its `{% set %}` blocks and macro calls included.
pub const TEMPLATE_OUTPUT: usize = 8 << 20;

/// Wall-clock time one template render may take, when the task's own `timeout` is not
/// shorter.
pub const TEMPLATE_TIME: Duration = Duration::from_secs(10);

/// Memory a template that computes (loops, assignments, macros, `*`) may use while it renders
/// in its own process.
pub const TEMPLATE_MEMORY: u64 = 512 << 20;

/// Bytes of a `conductor.toml` (or `--config` file) read: a configuration is small, and an
/// endless file (`--config /dev/zero`) must end in an error, not fill memory.
pub const MAX_CONFIG_SIZE: u64 = 1 << 20;

/// Bytes of a cassette (`--record` / a `replay` provider's file) read.
pub const MAX_CASSETTE_SIZE: u64 = 256 << 20;

/// Wall-clock time one evaluation of a rule (`gate`, `enforce`, `when`, `feedback`) may take.
/// Rules run on the scheduler: a rule whose every step is cheap enough to stay under the
/// operation limit (`policy::MAX_OPERATIONS`) but slow (cloning a large map in a loop) would
/// block the run and Ctrl-C for minutes. A `script` agent has no budget of its own: its task's
/// `timeout` stops it.
pub const RULE_TIME: Duration = Duration::from_secs(1);

/// How long a write waits for another process to release a store's write lock (concurrent
/// runs, `gc`) before it fails, naming the store and the wait. A healthy writer holds the lock
/// for milliseconds; waiting is retried with backoff up to this bound.
pub const STORE_LOCK_WAIT: Duration = Duration::from_secs(60);

/// Bytes a task's output may take as JSON, files included. A larger output fails its attempt
/// (`INVALID_OUTPUT`) before anything is stored: every event holding it is read back whole by
/// `show`, `resume` and the dashboard. Agents have their own, smaller bounds on what they read
/// (a shell program's stdout, an http body), so this catches what is built from several.
pub const MAX_OUTPUT_SIZE: usize = 16 << 20;

/// Bytes of one file (`files: [{path, content}]`) of an output.
pub const MAX_ARTIFACT_SIZE: usize = 8 << 20;

/// Files one attempt's output may write.
pub const MAX_ARTIFACTS: usize = 1000;

/// The size of `value` as compact JSON, counted without building the text; stops counting
/// (returning more than `limit`) once past `limit`.
pub fn json_size(value: &serde_json::Value, limit: usize) -> usize {
    struct Count {
        n: usize,
        limit: usize,
    }
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.n += buf.len();
            if self.n > self.limit {
                // Enough is known: stop serialising.
                return Err(std::io::Error::other("over the limit"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count { n: 0, limit };
    let _ = serde_json::to_writer(&mut count, value);
    count.n
}

/// Where a JSON value first nests deeper than [`MAX_VALUE_DEPTH`], as a path (`json.a[0].b`);
/// `None` when it does not. Walks without recursion, so any depth can be measured.
pub fn too_deep(value: &serde_json::Value) -> Option<String> {
    if depth(value) <= MAX_VALUE_DEPTH {
        return None;
    }
    // Rare: find the way down, naming each step.
    let (mut at, mut path) = (value, String::new());
    for _ in 0..MAX_VALUE_DEPTH {
        let deepest = children(at).max_by_key(|(_, c)| depth(c));
        let Some((step, child)) = deepest else { break };
        path.push_str(&step);
        at = child;
    }
    Some(short_path(path.trim_start_matches('.')))
}

/// A path down a deep value, cut to its first steps.
pub fn short_path(path: &str) -> String {
    match path.char_indices().nth(48) {
        Some((i, _)) => format!("{}…", &path[..i]),
        None => path.to_string(),
    }
}

/// How deeply a JSON value nests: 0 for a scalar, 1 for `[1]`.
pub fn depth(value: &serde_json::Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            serde_json::Value::Array(items) => {
                deepest = deepest.max(d + 1);
                stack.extend(items.iter().map(|i| (i, d + 1)));
            }
            serde_json::Value::Object(map) => {
                deepest = deepest.max(d + 1);
                stack.extend(map.values().map(|i| (i, d + 1)));
            }
            _ => {}
        }
    }
    deepest
}

fn children(v: &serde_json::Value) -> Box<dyn Iterator<Item = (String, &serde_json::Value)> + '_> {
    match v {
        serde_json::Value::Array(items) => {
            Box::new(items.iter().enumerate().map(|(i, c)| (format!("[{i}]"), c)))
        }
        serde_json::Value::Object(map) => Box::new(map.iter().map(|(k, c)| (format!(".{k}"), c))),
        _ => Box::new(std::iter::empty()),
    }
}

/// The depth of JSON text (its deepest bracket, strings skipped), measured without parsing it.
pub fn text_depth(text: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> serde_json::Value {
        let mut v = serde_json::json!(1);
        for i in 0..depth {
            v = if i % 2 == 0 {
                serde_json::json!([v])
            } else {
                serde_json::json!({ "a": v })
            };
        }
        v
    }

    #[test]
    fn depth_is_measured_with_the_path_where_it_crosses() {
        assert_eq!(too_deep(&nested(MAX_VALUE_DEPTH)), None);
        let path = too_deep(&nested(MAX_VALUE_DEPTH + 1)).expect("too deep");
        assert!(path.starts_with("[0].a[0].a"), "{path}");
        assert_eq!(depth(&serde_json::json!([])), 1);
        assert_eq!(depth(&serde_json::json!({"a": [{}]})), 3);
        assert_eq!(text_depth(&nested(100).to_string()), 100);
        assert_eq!(text_depth(r#"{"a": "[[[[", "b": [1]}"#), 2);
    }
}
