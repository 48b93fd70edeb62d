//! Fan-out at run time. When a task with `matrix` or `for_each` gets its turn, its items are
//! computed (a matrix's were expanded by `check`; a `for_each` template is rendered now, over
//! its finished upstream tasks) and recorded — `fan_out_expanded`, each instance `task[key]`
//! with its index and item — before any instance runs. Each instance is then a task of its
//! own (attempts, retries, breaker, dead letters, logs, cache), up to `max_parallel` at once.
//! When the last one is final, `succeed_when` decides the task as a whole, and only then are
//! its dependents released.

use std::collections::HashSet;

use serde_json::Value;

use super::dispatcher::{Dispatcher, TaskRt};
use crate::check::fanout::{clean_key, default_key};
use crate::check::ir::{FanOut, FanOutSource, SucceedWhen, TaskId};
use crate::model::{ErrorCode, EventKind, InstanceInfo, SkipReason, TaskError, TaskStatus};

impl Dispatcher {
    /// A declared task with `matrix` or `for_each` (an instance never fans out again).
    pub(super) fn fans_out(&self, t: TaskId) -> bool {
        self.tasks[t.index()].group.is_none()
            && t.index() < self.run.wf.tasks.len()
            && self.run.wf.task(t).fan_out.is_some()
    }

    /// The fan-out's turn: its items, recorded, then its instances queued.
    pub(super) fn expand(&mut self, t: TaskId) {
        let wf = self.run.wf.clone();
        let Some(fan) = wf.task(t).fan_out.as_ref() else {
            return;
        };
        let instances = match self.items(fan).and_then(|items| self.instances(fan, items)) {
            Ok(i) => i,
            Err(error) => return self.fail_task(t, error),
        };
        if instances.is_empty() {
            let detail = "its list of items is empty".to_string();
            return self.skip(t, SkipReason::EmptyFanOut, Some(detail));
        }
        self.record(EventKind::FanOutExpanded {
            task: self.name(t),
            instances,
        });
        let ids = self.state.tasks[t.index()].instances.clone();
        self.grow_runtime();
        let limit = fan.max_parallel.unwrap_or(u32::MAX);
        let group = &mut self.tasks[t.index()];
        group.open = ids.len() as u32;
        group.queued = None;
        group.running_instances = 0;
        for (n, &i) in ids.iter().enumerate() {
            let it = TaskId(i);
            self.tasks[i as usize] = TaskRt {
                group: Some(t),
                ..TaskRt::default()
            };
            if (n as u32) < limit {
                self.tasks[t.index()].running_instances += 1;
                self.ready.push_back(it);
            } else {
                self.tasks[t.index()]
                    .queued
                    .get_or_insert_default()
                    .push_back(it);
            }
        }
    }

    /// Runtime state for every task the state knows (instances are added by expansions).
    pub(super) fn grow_runtime(&mut self) {
        while self.tasks.len() < self.state.tasks.len() {
            self.tasks.push(TaskRt::default());
        }
    }

    /// The items: a matrix's combinations, or the `for_each` template's list.
    fn items(&self, fan: &FanOut) -> Result<Vec<Value>, TaskError> {
        let items = match &fan.source {
            FanOutSource::Matrix(items) => items.clone(),
            FanOutSource::ForEach(template) => {
                let ctx = super::context::template(&self.views, 0, None, None);
                let renderer = crate::agents::Renderer {
                    templates: &self.run.wf.templates,
                    ctx: &ctx,
                    strict: !self.run.dry_run,
                };
                let text = renderer.render(template, "`for_each`")?;
                match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Array(items)) => items,
                    // Upstream outputs are mocks in a dry run: one stand-in item.
                    _ if self.run.dry_run => vec![Value::Null],
                    Ok(other) => {
                        return Err(TaskError::fatal(
                            ErrorCode::InvalidInput,
                            format!(
                                "`for_each` gave {}, not a list: {}",
                                kind_of(&other),
                                crate::text::truncate(&text, 200)
                            ),
                        ))
                    }
                    Err(e) => {
                        return Err(TaskError::fatal(
                            ErrorCode::InvalidInput,
                            format!(
                                "`for_each` is not a JSON list ({e}): {}",
                                crate::text::truncate(&text, 200)
                            ),
                        ))
                    }
                }
            }
        };
        if items.len() > fan.max_items as usize {
            return Err(TaskError::fatal(
                ErrorCode::InvalidInput,
                format!(
                    "`for_each` gave {} items, more than `max_items` ({}); raise `max_items` to run them all",
                    items.len(),
                    fan.max_items
                ),
            ));
        }
        Ok(items)
    }

    /// Each item's instance: its index, its key (rendered, or from its values) and the item.
    fn instances(&self, fan: &FanOut, items: Vec<Value>) -> Result<Vec<InstanceInfo>, TaskError> {
        let mut seen: HashSet<String> = HashSet::with_capacity(items.len());
        let mut out = Vec::with_capacity(items.len());
        for (index, item) in items.into_iter().enumerate() {
            let key = match &fan.key {
                Some(template) => {
                    let ctx = super::context::template(&self.views, 0, None, Some(&item));
                    let renderer = crate::agents::Renderer {
                        templates: &self.run.wf.templates,
                        ctx: &ctx,
                        strict: !self.run.dry_run,
                    };
                    let key = clean_key(&renderer.render(template, "`key`")?);
                    if seen.contains(&key) {
                        return Err(TaskError::fatal(
                            ErrorCode::InvalidInput,
                            format!("two items are both named `{key}` by `key`: instances need distinct names"),
                        ));
                    }
                    key
                }
                None => {
                    // Without `key`, a repeated name gets a number: `a.py`, `a.py~2`.
                    let base = default_key(&item, index, &fan.axes);
                    let mut key = base.clone();
                    let mut n = 1;
                    while seen.contains(&key) {
                        n += 1;
                        key = format!("{base}~{n}");
                    }
                    key
                }
            };
            seen.insert(key.clone());
            out.push(InstanceInfo {
                index: index as u32,
                key,
                item,
            });
        }
        Ok(out)
    }

    /// An instance became final: the next queued one may start; `fail_fast` stops the
    /// others; the last one decides the task.
    pub(super) fn instance_final(&mut self, i: TaskId, g: TaskId) {
        // A sibling cancelled by `fail_fast` does not stop the others again.
        let failed = self.status(i) == TaskStatus::Failed;
        let group = &mut self.tasks[g.index()];
        group.open = group.open.saturating_sub(1);
        group.running_instances = group.running_instances.saturating_sub(1);
        let fail_fast = self
            .run
            .wf
            .task(g)
            .fan_out
            .as_ref()
            .is_some_and(|f| f.fail_fast);
        if failed && fail_fast {
            self.stop_siblings(g, i);
        } else if let Some(next) = self.tasks[g.index()]
            .queued
            .as_mut()
            .and_then(|q| q.pop_front())
        {
            self.tasks[g.index()].running_instances += 1;
            self.ready.push_back(next);
        }
        if self.tasks[g.index()].open == 0 {
            self.finish_group(g);
        }
    }

    /// `fail_fast`: the queued instances are skipped, the running ones cancelled.
    fn stop_siblings(&mut self, g: TaskId, failed: TaskId) {
        let name = self.name(failed);
        let queued = self.tasks[g.index()].queued.take().unwrap_or_default();
        for q in *queued {
            let detail = format!("`fail_fast`: instance `{name}` failed");
            self.skip(q, SkipReason::SiblingFailed, Some(detail));
        }
        let siblings = self.state.tasks[g.index()].instances.clone();
        for s in siblings.into_iter().map(TaskId) {
            match self.status(s) {
                TaskStatus::InProgress => {
                    let why = format!("`fail_fast`: instance `{name}` failed");
                    self.cancel_running(s, &why)
                }
                // Ready or waiting for an instance of the pool: it does not start.
                TaskStatus::Pending => {
                    let detail = format!("`fail_fast`: instance `{name}` failed");
                    self.unqueue(s);
                    self.skip(s, SkipReason::SiblingFailed, Some(detail));
                }
                _ => {}
            }
        }
    }

    /// Forgets `t` wherever it waits to start.
    fn unqueue(&mut self, t: TaskId) {
        self.ready.retain(|r| *r != t);
        self.pending_starts.retain(|(r, _)| *r != t);
        self.deferred.retain(|r| *r != t);
        let rt = &mut self.tasks[t.index()];
        if rt.waiting {
            rt.waiting = false;
            rt.wait_token += 1;
            let p = self.run.wf.task(self.def_id(t)).agent.index();
            self.pools[p].leave(t);
        }
    }

    /// Stops one running attempt: its instance of the pool is freed and the task ends
    /// CANCELLED (its worker's result, if it still arrives, is dropped).
    fn cancel_running(&mut self, t: TaskId, why: &str) {
        let rt = &mut self.tasks[t.index()];
        if let Some(h) = rt.abort.take() {
            h.abort();
        }
        rt.aborted = true;
        if let Some(instance) = rt.held.take() {
            let p = self.run.wf.task(self.def_id(t)).agent.index();
            self.pools[p].release(instance, None);
            self.running = self.running.saturating_sub(1);
        }
        self.cancel_attempt_because(t, why);
        self.task_final(t);
    }

    /// Every instance is final: `succeed_when` decides the task, then its dependents go.
    pub(super) fn finish_group(&mut self, g: TaskId) {
        // Cancelling siblings finishes instances from inside another's finish: decide once.
        if self.status(g).is_final() {
            return;
        }
        let ids = self.state.tasks[g.index()].instances.clone();
        let (mut completed, mut failed, mut by_choice) = (0usize, Vec::new(), 0usize);
        for &i in &ids {
            let r = &self.state.tasks[i as usize];
            match r.status {
                TaskStatus::Completed => completed += 1,
                TaskStatus::Skipped if r.skip_reason.is_some_and(|s| s.by_choice()) => {
                    by_choice += 1
                }
                _ => failed.push(r.task.clone()),
            }
        }
        let counted = ids.len() - by_choice;
        if counted == 0 {
            let detail = format!("all {} of its instances were skipped by choice", ids.len());
            return self.skip(g, SkipReason::WhenFalse, Some(detail));
        }
        let rule = self
            .run
            .wf
            .task(g)
            .fan_out
            .as_ref()
            .map_or(SucceedWhen::All, |f| f.succeed_when);
        let ok = match rule {
            SucceedWhen::All => failed.is_empty(),
            SucceedWhen::Any => completed > 0,
            SucceedWhen::Rate(r) => completed as f64 / counted as f64 >= r,
        };
        let error = (!ok).then(|| {
            let names: Vec<&str> = failed.iter().take(5).map(|n| &**n).collect();
            let more = if failed.len() > 5 { ", …" } else { "" };
            let rule = match rule {
                SucceedWhen::All => "succeed_when = \"all\"".to_string(),
                SucceedWhen::Any => "succeed_when = \"any\"".to_string(),
                SucceedWhen::Rate(r) => format!("succeed_when = {r}"),
            };
            TaskError::failure(
                ErrorCode::Fatal,
                format!(
                    "{} of {counted} instances did not complete ({}{more}); {rule}",
                    failed.len(),
                    names.join(", ")
                ),
            )
        });
        self.record(EventKind::TaskFinished {
            task: self.name(g),
            status: if ok {
                TaskStatus::Completed
            } else {
                TaskStatus::Failed
            },
            error,
        });
        self.task_final(g);
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}
