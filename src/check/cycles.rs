//! Dependency cycles among the tasks of a phase, each reported with its path.

use std::collections::BTreeSet;

use super::ir::{Task, TaskId};
use super::Checker;
use crate::diag::Diagnostic;
use crate::source::Span;

#[derive(Clone, Copy, PartialEq)]
enum Mark {
    New,
    OnStack,
    Done,
}

impl Checker<'_> {
    /// Reports every cycle of `after` edges once, as `a → b → a` in run order, at the `after`
    /// entry that closes it.
    pub(super) fn check_cycles(&mut self, tasks: &[Task]) {
        // Tasks with errors are missing from `tasks`, so ids and positions can differ.
        let max_id = tasks.iter().map(|t| t.id.index() + 1).max().unwrap_or(0);
        let mut positions = vec![usize::MAX; max_id];
        for (i, t) in tasks.iter().enumerate() {
            positions[t.id.index()] = i;
        }
        let index_of = |id: TaskId| {
            positions
                .get(id.index())
                .copied()
                .filter(|p| *p != usize::MAX)
        };
        let mut marks = vec![Mark::New; tasks.len()];
        let mut reported: BTreeSet<Vec<usize>> = BTreeSet::new();
        for root in 0..tasks.len() {
            if marks[root] != Mark::New {
                continue;
            }
            // Iterative DFS over "depends on" edges: (task, next dependency to visit).
            let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
            marks[root] = Mark::OnStack;
            while let Some(&mut (node, ref mut next)) = stack.last_mut() {
                let deps = &tasks[node].after;
                if *next >= deps.len() {
                    marks[node] = Mark::Done;
                    stack.pop();
                    continue;
                }
                let dep_pos = *next;
                *next += 1;
                let Some(dep) = index_of(deps[dep_pos]) else {
                    continue;
                };
                match marks[dep] {
                    Mark::New => {
                        marks[dep] = Mark::OnStack;
                        stack.push((dep, 0));
                    }
                    Mark::OnStack => {
                        let from = stack.iter().position(|(n, _)| *n == dep).unwrap_or(0);
                        let mut cycle: Vec<usize> = stack[from..].iter().map(|(n, _)| *n).collect();
                        let mut key = cycle.clone();
                        key.sort_unstable();
                        if reported.insert(key) {
                            // The stack runs from dependents to dependencies; runs go the
                            // other way.
                            cycle.reverse();
                            self.report_cycle(tasks, &cycle, node, dep_pos);
                        }
                    }
                    Mark::Done => {}
                }
            }
        }
    }

    fn report_cycle(&mut self, tasks: &[Task], cycle: &[usize], closing: usize, dep_pos: usize) {
        let mut names: Vec<&str> = cycle.iter().map(|&i| tasks[i].name.as_str()).collect();
        names.push(names[0]);
        let path = names.join(" → ");
        let span = self.after_span(&tasks[closing], dep_pos);
        let message = if cycle.len() == 1 {
            format!("task `{}` depends on itself: {path}", tasks[closing].name)
        } else {
            format!("dependency cycle: {path}")
        };
        self.diags.push(
            Diagnostic::error(span, message)
                .with_label("this `after` closes the cycle")
                .with_help("a task can only run after tasks that do not, in turn, wait for it"),
        );
    }

    /// The span of the `dep_pos`-th name in a task's `after` list.
    fn after_span(&self, task: &Task, dep_pos: usize) -> Span {
        self.after_spans
            .get(task.id, dep_pos)
            .filter(|_| dep_pos < task.after.len())
            .unwrap_or(task.span)
    }
}

/// Where each resolved `after` entry is written, aligned with `Task::after`: one list for
/// every task, and where each task's entries start in it (a vector per task was 40 bytes a
/// task and an allocation).
#[derive(Default)]
pub(super) struct AfterSpans {
    spans: Vec<Span>,
    /// By `TaskId`: the first of the task's spans; `u32::MAX` for a task not checked.
    start: Vec<u32>,
}

impl AfterSpans {
    /// Sized once for `tasks` tasks naming `edges` tasks in all.
    pub(super) fn reserve(&mut self, tasks: usize, edges: usize) {
        self.start.reserve_exact(tasks);
        self.spans.reserve_exact(edges);
    }

    /// The spans pushed next are `id`'s (a task is checked once).
    pub(super) fn begin(&mut self, id: TaskId) {
        if self.start.len() <= id.index() {
            self.start.resize(id.index() + 1, u32::MAX);
        }
        self.start[id.index()] = u32::try_from(self.spans.len()).unwrap_or(u32::MAX);
    }

    pub(super) fn push(&mut self, span: Span) {
        self.spans.push(span);
    }

    fn get(&self, id: TaskId, pos: usize) -> Option<Span> {
        let start = *self.start.get(id.index())?;
        if start == u32::MAX {
            return None;
        }
        self.spans.get(start as usize + pos).copied()
    }
}
