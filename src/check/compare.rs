//! Two versions of a workflow side by side, for `resume` with an amended file: whether the
//! shape is the same (phases, tasks, dependencies, agents — what the run's log is made of),
//! and, when it is, what changed in words.

use std::collections::{BTreeSet, HashMap};

use super::ir::Workflow;

/// What makes the shape of a run: a difference here means the log no longer fits the file.
pub(crate) fn shape_differences(old: &Workflow, new: &Workflow) -> Vec<String> {
    let mut out = Vec::new();
    let names = |wf: &Workflow| -> Vec<(String, bool)> {
        wf.phases
            .iter()
            .map(|p| (p.name.clone(), p.always))
            .collect()
    };
    let (old_phases, new_phases) = (names(old), names(new));
    if old_phases != new_phases {
        let list = |p: &[(String, bool)]| {
            p.iter()
                .map(|(n, always)| {
                    if *always {
                        format!("{n} (always)")
                    } else {
                        n.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push(format!(
            "the phases are now [{}] (were [{}])",
            list(&new_phases),
            list(&old_phases)
        ));
    }
    let kinds = |wf: &Workflow| -> HashMap<String, &'static str> {
        wf.agents
            .iter()
            .map(|a| (a.name.clone(), a.kind.name()))
            .collect()
    };
    let (old_agents, new_agents) = (kinds(old), kinds(new));
    for a in &old.agents {
        match new_agents.get(&a.name) {
            None => out.push(format!("agent `{}` was removed", a.name)),
            Some(k) if *k != a.kind.name() => out.push(format!(
                "agent `{}` is now a {k} agent (was {})",
                a.name,
                a.kind.name()
            )),
            _ => {}
        }
    }
    for a in &new.agents {
        if !old_agents.contains_key(&a.name) {
            out.push(format!("agent `{}` was added", a.name));
        }
    }
    let shape = |wf: &Workflow| -> HashMap<String, (String, String, BTreeSet<String>)> {
        wf.tasks
            .iter()
            .map(|t| {
                let after = t.after.iter().map(|d| wf.task(*d).name.clone()).collect();
                let phase = wf.phase(t.phase).name.clone();
                (
                    t.name.clone(),
                    (phase, wf.agent(t.agent).name.clone(), after),
                )
            })
            .collect()
    };
    let (old_tasks, new_tasks) = (shape(old), shape(new));
    for t in &old.tasks {
        let (phase, agent, after) = &old_tasks[&t.name];
        let Some((new_phase, new_agent, new_after)) = new_tasks.get(&t.name) else {
            out.push(format!("task `{}` was removed", t.name));
            continue;
        };
        if new_phase != phase {
            out.push(format!(
                "task `{}` moved from phase `{phase}` to `{new_phase}`",
                t.name
            ));
        }
        if new_agent != agent {
            out.push(format!(
                "task `{}` now runs on `{new_agent}` (was `{agent}`)",
                t.name
            ));
        }
        if new_after != after {
            let list = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(", ");
            out.push(format!(
                "task `{}` now comes after [{}] (was [{}])",
                t.name,
                list(new_after),
                list(after)
            ));
        }
    }
    for t in &new.tasks {
        if !old_tasks.contains_key(&t.name) {
            out.push(format!("task `{}` was added", t.name));
        }
    }
    let order = |wf: &Workflow| wf.tasks.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    if out.is_empty() && order(old) != order(new) {
        out.push("the tasks are declared in another order".to_string());
    }
    out
}

/// What changed between two versions of the same shape, one line per item: `task `build`:
/// prompt changed`, `agent `sh`: command, env changed`.
pub(crate) fn changes(old: &Workflow, new: &Workflow) -> Vec<String> {
    let before: HashMap<String, String> = super::text::items(old).into_iter().collect();
    let mut out = Vec::new();
    for (item, text) in super::text::items(new) {
        let Some(was) = before.get(&item) else {
            continue;
        };
        if *was == text {
            continue;
        }
        let old_lines: BTreeSet<&str> = was.lines().collect();
        let new_lines: BTreeSet<&str> = text.lines().collect();
        let mut what: Vec<&str> = Vec::new();
        for line in old_lines.symmetric_difference(&new_lines) {
            let label = line_label(line);
            if !what.contains(&label) {
                what.push(label);
            }
        }
        what.sort_unstable();
        out.push(format!("{item}: {} changed", what.join(", ")));
    }
    out
}

/// What a line of an item's text is about: its first word, or "settings" for the header.
fn line_label(line: &str) -> &'static str {
    let word = line.split_whitespace().next().unwrap_or("");
    const KNOWN: &[&str] = &[
        "prompt",
        "input",
        "when",
        "retry_on_exit",
        "command",
        "workdir",
        "env",
        "header",
        "body",
        "fail_on_status",
        "system",
        "function",
        "enforce",
        "gate",
        "description",
    ];
    KNOWN
        .iter()
        .find(|k| **k == word)
        .copied()
        .unwrap_or("settings")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wf(text: &str) -> Workflow {
        let mut map = crate::source::SourceMap::new();
        let checked =
            super::super::check_source(&mut map, "t.cond", std::path::Path::new("t.cond"), text);
        checked.workflow.expect("checks")
    }

    const BASE: &str = r#"workflow w {
        agent sh { kind = "shell", command = ["echo", "{{ input.x }}"] }
        agent m { kind = "mock" }
        phase p {
            task a on sh { input = { x = "1" } }
            task b on m after a
        }
    }"#;

    #[test]
    fn settings_prompts_and_commands_change_without_changing_the_shape() {
        let changed = BASE
            .replace(r#"{ x = "1" }"#, r#"{ x = "2" }  timeout = 10s"#)
            .replace(r#"["echo","#, r#"["printf","#);
        let (old, new) = (wf(BASE), wf(&changed));
        assert!(shape_differences(&old, &new).is_empty());
        assert_eq!(
            changes(&old, &new),
            [
                "agent `sh`: command changed",
                "task `a`: input, settings changed"
            ]
        );
    }

    #[test]
    fn removed_added_moved_and_rewired_tasks_change_the_shape() {
        let changed = BASE
            .replace("task b on m after a", "task c on m")
            .replace("task a on sh", "task a on m");
        let diffs = shape_differences(&wf(BASE), &wf(&changed));
        assert_eq!(
            diffs,
            [
                "task `a` now runs on `m` (was `sh`)",
                "task `b` was removed",
                "task `c` was added"
            ]
        );
    }
}
