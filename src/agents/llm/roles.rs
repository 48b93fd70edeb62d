//! Roles: the system prompt each role's model gets, the JSON it must answer with, and the
//! validation of that answer.
//!
//! | role | output |
//! |---|---|
//! | coder, test_data, tester, devops, deployer | `{files: [{path, content}], summary}` |
//! | reviewer | `{approved, score, findings, recommendations}` (+ optional `summary`) |
//! | monitor | `{severity, summary, findings, metrics}` |
//!
//! Extra fields are kept. `files` become artifacts written into the run's workspace, so paths
//! must be relative and stay inside it.

use serde_json::{json, Map, Value};

use crate::check::ir::Role;

const JSON_RULE: &str = "Answer with one JSON object and nothing else: no prose before or \
after it, no Markdown code fences.";

const FILES_SHAPE: &str = r#"{"files": [{"path": "relative/path", "content": "the whole file"}], "summary": "what you did, in one or two sentences"}"#;

/// The system prompt of a role.
pub fn system_prompt(role: Role) -> String {
    let (who, shape) = match role {
        Role::Coder => (
            "You are the coder of a software delivery team. You implement the requested \
             change as complete files. Every file you return replaces the file at that path in \
             the workspace, so return whole files, not diffs. Keep the code small, \
             dependency-free and runnable as is.",
            FILES_SHAPE,
        ),
        Role::Reviewer => (
            "You are the code reviewer of a software delivery team. You read the change and \
             judge whether it does what was asked, safely. Approve it only if it can ship. \
             `score` is your confidence in the change from 0 to 100; `findings` are the \
             problems you found (each a short sentence); `recommendations` what to do next.",
            r#"{"approved": true, "score": 85, "findings": ["..."], "recommendations": ["..."], "summary": "..."}"#,
        ),
        Role::TestData => (
            "You write test data for a software delivery team: fixtures that exercise the \
             change, including edge cases, as files.",
            FILES_SHAPE,
        ),
        Role::Tester => (
            "You are the tester of a software delivery team. You write automated tests for the \
             change, as files that the team's test command will run. Test behaviour a user \
             relies on, including failure cases.",
            FILES_SHAPE,
        ),
        Role::Devops => (
            "You are the devops engineer of a software delivery team. You write the \
             configuration the service needs to run (environment files, service definitions, \
             build scripts), as files.",
            FILES_SHAPE,
        ),
        Role::Deployer => (
            "You are the deployer of a software delivery team. You write the scripts that start \
             and stop the service, as files. Scripts must be POSIX sh, idempotent, and print \
             what they did.",
            FILES_SHAPE,
        ),
        Role::Monitor => (
            "You are the monitor of a software delivery team. You read what was observed about \
             the running service and judge its health. `severity` is one of ok, info, warning, \
             error, critical: error or critical sends the change back to development, so use \
             them only for real problems, and say in `summary` what must be fixed. `findings` \
             are the facts you base it on; `metrics` are numbers or short values you read.",
            r#"{"severity": "ok", "summary": "...", "findings": ["..."], "metrics": {"name": 1}}"#,
        ),
    };
    format!("{who}\n\n{JSON_RULE}\nThe object has this shape:\n{shape}")
}

/// The system prompt when an agent has neither a role nor its own `system`.
pub fn generic_system_prompt() -> String {
    format!("You are an agent of a software delivery team. {JSON_RULE}")
}

/// The JSON schema of a role's answer (for providers that enforce one).
pub fn schema(role: Option<Role>) -> Value {
    // A finding may be a sentence or an object (`{"message": ..., "line": ...}`).
    let strings = json!({ "type": "array", "items": { "type": ["string", "object"] } });
    match role {
        None => json!({ "type": "object" }),
        Some(Role::Reviewer) => json!({
            "type": "object",
            "required": ["approved", "score", "findings", "recommendations"],
            "properties": {
                "approved": { "type": "boolean" },
                "score": { "type": "number", "minimum": 0, "maximum": 100 },
                "findings": strings,
                "recommendations": strings,
                "summary": { "type": "string" }
            }
        }),
        Some(Role::Monitor) => json!({
            "type": "object",
            "required": ["severity", "summary", "findings", "metrics"],
            "properties": {
                "severity": { "enum": ["ok", "info", "warning", "error", "critical",
                                       "none", "low", "medium", "high"] },
                "summary": { "type": "string" },
                "findings": strings,
                "metrics": { "type": "object" }
            }
        }),
        Some(_) => json!({
            "type": "object",
            "required": ["files", "summary"],
            "properties": {
                "files": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["path", "content"],
                        "properties": {
                            "path": { "type": "string" },
                            "content": { "type": "string" }
                        }
                    }
                },
                "summary": { "type": "string" }
            }
        }),
    }
}

/// Reads a model's reply as the role's output: the JSON object (a Markdown fence around it is
/// tolerated), checked against the role's shape. The error says what is wrong in words the
/// model can act on.
pub fn parse_reply(role: Option<Role>, text: &str) -> Result<Value, InvalidReply> {
    reply_value(role, text).map_err(InvalidReply)
}

/// Why a model's reply cannot be used, in words the model can act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidReply(pub String);

fn reply_value(role: Option<Role>, text: &str) -> Result<Value, String> {
    let body = strip_fence(text.trim());
    let value: Value = serde_json::from_str(body).map_err(|e| {
        if body.is_empty() {
            "the reply is empty".to_string()
        } else {
            format!("the reply is not valid JSON ({e})")
        }
    })?;
    let Value::Object(map) = value else {
        return Err(format!(
            "the reply must be a JSON object, not {}",
            kind_of(&value)
        ));
    };
    let mut map = map;
    if let Some(role) = role {
        validate(role, &map)?;
        if role == Role::Monitor {
            // `"Error "` reads as `error` for the default feedback; rules comparing strings
            // should see it the same way.
            if let Some(Value::String(s)) = map.get_mut("severity") {
                *s = s.trim().to_ascii_lowercase();
            }
        }
    }
    Ok(Value::Object(map))
}

fn strip_fence(text: &str) -> &str {
    let Some(rest) = text.strip_prefix("```") else {
        return text;
    };
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_alphanumeric());
    rest.strip_suffix("```").unwrap_or(rest).trim()
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn field<'a>(map: &'a Map<String, Value>, name: &str) -> Result<&'a Value, String> {
    map.get(name)
        .ok_or_else(|| format!("the field `{name}` is missing"))
}

fn expect(ok: bool, name: &str, want: &str, got: &Value) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("`{name}` must be {want}, not {}", kind_of(got)))
    }
}

fn string_list(map: &Map<String, Value>, name: &str) -> Result<(), String> {
    let v = field(map, name)?;
    let Value::Array(items) = v else {
        return expect(false, name, "an array of strings", v);
    };
    for (i, item) in items.iter().enumerate() {
        // A finding written as an object (`{"message": ...}`) is fine too.
        expect(
            item.is_string() || item.is_object(),
            &format!("{name}[{i}]"),
            "a string",
            item,
        )?;
    }
    Ok(())
}

fn validate(role: Role, map: &Map<String, Value>) -> Result<(), String> {
    match role {
        Role::Reviewer => {
            let approved = field(map, "approved")?;
            expect(approved.is_boolean(), "approved", "true or false", approved)?;
            let score = field(map, "score")?;
            expect(score.is_number(), "score", "a number from 0 to 100", score)?;
            let s = score.as_f64().unwrap_or(-1.0);
            if !(0.0..=100.0).contains(&s) {
                return Err(format!("`score` must be from 0 to 100, not {s}"));
            }
            string_list(map, "findings")?;
            string_list(map, "recommendations")?;
            if let Some(summary) = map.get("summary") {
                expect(summary.is_string(), "summary", "a string", summary)?;
            }
        }
        Role::Monitor => {
            let severity = field(map, "severity")?;
            let word = severity.as_str().unwrap_or("");
            if crate::policy::Severity::parse(word).is_none() {
                return Err(format!(
                    "`severity` must be one of ok, info, warning, error, critical (or none, low, \
                     medium, high), not {severity}"
                ));
            }
            let summary = field(map, "summary")?;
            expect(summary.is_string(), "summary", "a string", summary)?;
            string_list(map, "findings")?;
            let metrics = field(map, "metrics")?;
            expect(metrics.is_object(), "metrics", "an object", metrics)?;
        }
        Role::Coder | Role::TestData | Role::Tester | Role::Devops | Role::Deployer => {
            let summary = field(map, "summary")?;
            expect(summary.is_string(), "summary", "a string", summary)?;
            let files = field(map, "files")?;
            let Value::Array(files) = files else {
                return expect(false, "files", "an array of {path, content}", files);
            };
            for (i, f) in files.iter().enumerate() {
                let Value::Object(f) = f else {
                    return expect(
                        false,
                        &format!("files[{i}]"),
                        "an object {path, content}",
                        f,
                    );
                };
                let path = field(f, "path").map_err(|e| format!("files[{i}]: {e}"))?;
                let Value::String(path) = path else {
                    return expect(false, &format!("files[{i}].path"), "a string", path);
                };
                check_path(path).map_err(|e| format!("files[{i}].path: {e}"))?;
                let content = field(f, "content").map_err(|e| format!("files[{i}]: {e}"))?;
                expect(
                    content.is_string(),
                    &format!("files[{i}].content"),
                    "a string",
                    content,
                )?;
            }
        }
    }
    Ok(())
}

use crate::files::check_path;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_roles_need_safe_paths() {
        let ok = r#"{"files": [{"path": "src/app.py", "content": "x"}], "summary": "s"}"#;
        assert!(parse_reply(Some(Role::Coder), ok).is_ok());
        let fenced = format!("```json\n{ok}\n```");
        assert!(parse_reply(Some(Role::Coder), &fenced).is_ok());
        for (reply, want) in [
            (
                r#"{"files": [{"path": "../x", "content": ""}], "summary": ""}"#,
                "leaves the workspace",
            ),
            (
                r#"{"files": [{"path": "/etc/x", "content": ""}], "summary": ""}"#,
                "absolute",
            ),
            (
                r#"{"files": [{"path": "a"}], "summary": ""}"#,
                "`content` is missing",
            ),
            (
                r#"{"files": "a.py", "summary": ""}"#,
                "`files` must be an array",
            ),
            (r#"{"summary": ""}"#, "`files` is missing"),
            ("[1]", "must be a JSON object"),
            ("Sure! Here is the code", "not valid JSON"),
        ] {
            let e = parse_reply(Some(Role::Coder), reply).unwrap_err();
            assert!(e.0.contains(want), "{reply}: {e}");
        }
    }

    #[test]
    fn paths_must_name_a_file_inside_the_workspace() {
        assert!(check_path("a/b.txt").is_ok());
        assert!(check_path("./a.txt").is_ok());
        for bad in [".", "a/", "", "  ", "../a", "/a", "a/../../b", "a\\b"] {
            assert!(check_path(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn reviewer_and_monitor_shapes() {
        let r = r#"{"approved": true, "score": 80, "findings": [], "recommendations": ["x"]}"#;
        assert!(parse_reply(Some(Role::Reviewer), r).is_ok());
        let e = parse_reply(
            Some(Role::Reviewer),
            r#"{"approved": "yes", "score": 80, "findings": [], "recommendations": []}"#,
        )
        .unwrap_err();
        assert!(e.0.contains("`approved` must be true or false"), "{e}");
        let e = parse_reply(
            Some(Role::Reviewer),
            r#"{"approved": true, "score": 800, "findings": [], "recommendations": []}"#,
        )
        .unwrap_err();
        assert!(e.0.contains("from 0 to 100"), "{e}");
        let m = r#"{"severity": "high", "summary": "s", "findings": [], "metrics": {"p99_ms": 3}}"#;
        assert!(parse_reply(Some(Role::Monitor), m).is_ok());
        let m = r#"{"severity": " Error ", "summary": "s", "findings": [], "metrics": {}}"#;
        assert_eq!(
            parse_reply(Some(Role::Monitor), m).unwrap()["severity"],
            "error",
            "rules comparing strings see the word as the default feedback reads it"
        );
        let e = parse_reply(
            Some(Role::Monitor),
            r#"{"severity": "bad", "summary": "s", "findings": [], "metrics": {}}"#,
        )
        .unwrap_err();
        assert!(e.0.contains("`severity` must be one of"), "{e}");
    }
}
