//! What templates read: the attempt's context, and the run's scope (params, feedback and the
//! finished tasks, each converted once).

use std::sync::Arc;

use super::{to_json, CONTEXT_FIELDS};

/// The values a template sees.
#[derive(Clone, Debug, Default)]
pub(crate) struct Context(pub(super) minijinja::Value);

impl Context {
    /// The part of the context a template reads (`reads`: the variables it names), as JSON
    /// for a render process. Of `tasks`, only the tasks it names, unless it reads `tasks`
    /// whole.
    pub(super) fn to_json(&self, reads: &[String]) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for field in CONTEXT_FIELDS {
            let Ok(value) = self.0.get_attr(field) else {
                continue;
            };
            if value.is_undefined() {
                continue;
            }
            let json = if field == "tasks" && !reads.iter().any(|r| r == "tasks") {
                let mut named = serde_json::Map::new();
                for name in reads.iter().filter_map(|r| r.strip_prefix("tasks.")) {
                    let name = name.split('.').next().unwrap_or(name);
                    if let Ok(view) = value.get_attr(name) {
                        if !view.is_undefined() {
                            named.insert(name.to_string(), to_json(&view));
                        }
                    }
                }
                serde_json::Value::Object(named)
            } else {
                to_json(&value)
            };
            out.insert(field.to_string(), json);
        }
        serde_json::Value::Object(out)
    }

    /// A context from any serialisable map of the [`CONTEXT_FIELDS`].
    #[cfg(test)]
    pub(super) fn from_serialize(value: &impl serde::Serialize) -> Context {
        Context(minijinja::Value::from_serialize(value))
    }

    /// The context of one attempt: a handful of pointers, whatever the size of the run, and no
    /// map built for them (a field is looked up when a template reads it).
    pub(crate) fn for_attempt(
        scope: &Scope,
        attempt: u32,
        input: Option<&serde_json::Value>,
        item: Option<&serde_json::Value>,
    ) -> Context {
        Context(minijinja::Value::from_object(AttemptScope {
            scope: scope.clone(),
            attempt,
            input: input.map(minijinja::Value::from_serialize),
            item: item.map(minijinja::Value::from_serialize),
        }))
    }
}

/// What one attempt's templates see: the run's scope and the attempt's own fields.
#[derive(Debug)]
struct AttemptScope {
    scope: Scope,
    attempt: u32,
    input: Option<minijinja::Value>,
    item: Option<minijinja::Value>,
}

impl minijinja::value::Object for AttemptScope {
    fn get_value(self: &Arc<Self>, key: &minijinja::Value) -> Option<minijinja::Value> {
        let s = &self.scope;
        Some(match key.as_str()? {
            "params" => s.params.0.clone(),
            "tasks" => minijinja::Value::from_dyn_object(s.tasks.clone()),
            "feedback" => s.feedback.0.clone(),
            "loop_count" => minijinja::Value::from(s.loop_count),
            "attempt" => minijinja::Value::from(self.attempt),
            "input" => self.input.clone()?,
            "run" => s.run.0.clone(),
            "item" => self.item.clone()?,
            _ => return None,
        })
    }

    fn enumerate(self: &Arc<Self>) -> minijinja::value::Enumerator {
        minijinja::value::Enumerator::Str(&CONTEXT_FIELDS)
    }
}

/// A JSON value converted once for templates (params, the feedback payload).
#[derive(Clone, Debug, Default)]
pub(crate) struct Converted(minijinja::Value);

impl Converted {
    pub(crate) fn new(value: &serde_json::Value) -> Converted {
        Converted(minijinja::Value::from_serialize(value))
    }
}

/// What every template of a run sees besides its attempt: params and feedback converted once
/// per change, and the finished tasks, each converted once when it becomes final.
#[derive(Clone, Debug)]
pub(crate) struct Scope {
    pub(crate) params: Converted,
    pub(crate) tasks: Arc<TaskViews>,
    pub(crate) feedback: Converted,
    pub(crate) loop_count: u32,
    /// `run`: its id, its workspace, its status and error (as the `always` phases see them).
    pub(crate) run: Converted,
}

/// The finished tasks of a run as templates read them (`tasks.build.output`), by name, in
/// declaration order. Looking a task up costs the same at ten tasks as at a hundred thousand;
/// a task's view is converted for templates the first time one reads it (a fan-out task's view
/// holds every instance's output: nobody may read it).
#[derive(Debug)]
pub(crate) struct TaskViews {
    names: std::collections::HashMap<Arc<str>, usize>,
    order: Vec<Arc<str>>,
    views: std::sync::RwLock<Vec<Option<View>>>,
}

/// One final task's view: as JSON, and as templates read it once one has.
#[derive(Debug)]
struct View {
    json: Arc<serde_json::Value>,
    converted: std::sync::OnceLock<minijinja::Value>,
}

impl View {
    fn value(&self) -> minijinja::Value {
        self.converted
            .get_or_init(|| minijinja::Value::from_serialize(&*self.json))
            .clone()
    }
}

impl TaskViews {
    pub(crate) fn new(names: impl IntoIterator<Item = Arc<str>>) -> TaskViews {
        let order: Vec<Arc<str>> = names.into_iter().collect();
        TaskViews {
            names: order
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), i))
                .collect(),
            views: std::sync::RwLock::new(
                std::iter::repeat_with(|| None).take(order.len()).collect(),
            ),
            order,
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Option<View>>> {
        self.views.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Option<View>>> {
        self.views.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Task `i` is final, and templates see it as `view`.
    pub(crate) fn set(&self, i: usize, view: Arc<serde_json::Value>) {
        if let Some(slot) = self.write().get_mut(i) {
            *slot = Some(View {
                json: view,
                converted: std::sync::OnceLock::new(),
            });
        }
    }

    /// Task `i` is not final (again): templates do not see it.
    pub(crate) fn clear(&self, i: usize) {
        if let Some(slot) = self.write().get_mut(i) {
            *slot = None;
        }
    }
}

impl minijinja::value::Object for TaskViews {
    fn get_value(self: &Arc<Self>, key: &minijinja::Value) -> Option<minijinja::Value> {
        let i = *self.names.get(key.as_str()?)?;
        self.read().get(i)?.as_ref().map(View::value)
    }

    fn enumerate(self: &Arc<Self>) -> minijinja::value::Enumerator {
        let views = self.read();
        let keys: Vec<minijinja::Value> = self
            .order
            .iter()
            .zip(views.iter())
            .filter(|(_, v)| v.is_some())
            .map(|(n, _)| minijinja::Value::from(&**n))
            .collect();
        minijinja::value::Enumerator::Values(keys)
    }
}
