//! The checked model (IR): every name resolved to an id, every setting typed and defaulted,
//! every rule compiled, every template parsed. Owned, `Send + Sync + 'static`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;

use crate::policy::{CompiledRule, ModuleSet, RuleKind};
use crate::source::Span;
use crate::template::{TemplateId, Templates, Tree};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub u32);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentId(pub u32);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhaseId(pub u32);

impl TaskId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl AgentId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl PhaseId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A checked workflow, ready to be planned.
#[derive(Clone, Debug)]
pub struct Workflow {
    pub name: String,
    pub description: Option<String>,
    /// The file it was read from; `use` paths and working directories resolve from here.
    pub path: PathBuf,
    pub settings: WorkflowSettings,
    pub params: Vec<Param>,
    pub agents: Vec<Agent>,
    pub phases: Vec<Phase>,
    /// Every task of every phase in declaration order; `TaskId` indexes this.
    pub tasks: Vec<Task>,
    /// Workflow-level `enforce` rules, applied to every task before its phase's.
    pub enforce: Vec<Rule>,
    pub feedback: Option<Feedback>,
    pub modules: Vec<Module>,
    /// The merged code of every module, for named rules and `script` agents.
    pub module_set: ModuleSet,
    /// Which finished tasks a template or a `when` rule reads (a run keeps views of those).
    pub(crate) tasks_read: crate::template::TasksRead,
    /// Every template of the workflow, compiled.
    pub(crate) templates: Templates,
    /// The `budget` and `on_budget` settings of the workflow, its phases, agents and tasks.
    pub budgets: Budgets,
    /// Every file it imports (directly or through other imports), once each.
    pub imports: Vec<super::ImportedFile>,
    pub span: Span,
}

impl Workflow {
    pub fn task(&self, id: TaskId) -> &Task {
        &self.tasks[id.index()]
    }

    pub fn agent(&self, id: AgentId) -> &Agent {
        &self.agents[id.index()]
    }

    pub fn phase(&self, id: PhaseId) -> &Phase {
        &self.phases[id.index()]
    }

    pub fn task_by_name(&self, name: &str) -> Option<&Task> {
        self.tasks.iter().find(|t| t.name == name)
    }

    /// The phases a run goes through before it ends, in order (not the `always` ones).
    pub fn normal_phases(&self) -> impl Iterator<Item = &Phase> {
        self.phases.iter().filter(|p| !p.always)
    }

    /// The `always` phases, in order.
    pub fn always_phases(&self) -> impl Iterator<Item = &Phase> {
        self.phases.iter().filter(|p| p.always)
    }

    /// The code of every `use`d module, in `use` order.
    pub fn module_sources(&self) -> Vec<std::sync::Arc<str>> {
        self.modules.iter().map(|m| m.source.clone()).collect()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct WorkflowSettings {
    pub max_feedback_loops: u32,
    pub on_max_loops: OnMaxLoops,
    pub min_success_rate: f64,
    pub agent_wait: Duration,
    pub timeout: Duration,
    /// `None`: unlimited.
    pub max_parallel: Option<u32>,
    /// `None`: "ask" on a terminal, "abort" otherwise (decided when the run starts).
    pub on_escalation: Option<OnEscalation>,
    /// `outputs = { name = "{{ … }}" }`: what the run gives a parent run, rendered at its end.
    pub(crate) outputs: Vec<(String, crate::template::Tree)>,
}

impl Default for WorkflowSettings {
    fn default() -> WorkflowSettings {
        WorkflowSettings {
            max_feedback_loops: 3,
            on_max_loops: OnMaxLoops::Complete,
            min_success_rate: 1.0,
            agent_wait: Duration::from_secs(60),
            timeout: Duration::from_secs(3600),
            max_parallel: None,
            on_escalation: None,
            outputs: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnMaxLoops {
    Complete,
    Fail,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnEscalation {
    Ask,
    Abort,
    Skip,
}

/// `budget = { tokens = N, usd = X, llm_calls = N, wall = 30m }`: limits on the model calls of
/// everything the setting's owner contains.
#[derive(Clone, Debug, PartialEq)]
pub struct Budget {
    pub tokens: Option<u64>,
    pub usd: Option<f64>,
    pub llm_calls: Option<u64>,
    pub wall: Option<Duration>,
    pub span: Span,
}

/// What happens when a model call does not fit in a budget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBudget {
    /// The task fails with BUDGET_EXCEEDED; it is not retried.
    #[default]
    Fail,
    /// The task is escalated: retry (after raising the budget), skip or abort.
    Escalate,
    /// No new model calls, tasks or feedback passes; running work finishes, then the `always`
    /// phases run.
    WrapUp,
}

impl OnBudget {
    pub const ALL: [(&'static str, OnBudget); 3] = [
        ("fail", OnBudget::Fail),
        ("escalate", OnBudget::Escalate),
        ("wrap_up", OnBudget::WrapUp),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OnBudget::Fail => "fail",
            OnBudget::Escalate => "escalate",
            OnBudget::WrapUp => "wrap_up",
        }
    }
}

/// A phase's, agent's or task's own `budget` and `on_budget`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scoped {
    pub budget: Option<Budget>,
    pub on_budget: Option<OnBudget>,
}

/// Every `budget` and `on_budget` setting of a workflow, by owner.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Budgets {
    pub workflow: Scoped,
    pub phases: BTreeMap<PhaseId, Scoped>,
    pub agents: BTreeMap<AgentId, Scoped>,
    pub tasks: BTreeMap<TaskId, Scoped>,
}

impl Budgets {
    /// Whether any budget is set.
    pub fn any(&self) -> bool {
        let set = |s: &Scoped| s.budget.is_some();
        set(&self.workflow)
            || self.phases.values().any(set)
            || self.agents.values().any(set)
            || self.tasks.values().any(set)
    }

    /// What happens when a call of `task` does not fit: the task's own `on_budget`, else its
    /// agent's, else its phase's, else the workflow's, else "fail".
    pub fn on_budget(&self, task: &Task) -> OnBudget {
        let own = |s: Option<&Scoped>| s.and_then(|s| s.on_budget);
        own(self.tasks.get(&task.id))
            .or_else(|| own(self.agents.get(&task.agent)))
            .or_else(|| own(self.phases.get(&task.phase)))
            .or(self.workflow.on_budget)
            .unwrap_or_default()
    }

    /// The budgets that contain a call of `task`, innermost last: the workflow's, its
    /// phase's, its agent's, its own.
    pub fn containing<'a>(&'a self, task: &Task) -> impl Iterator<Item = (Owner, &'a Budget)> {
        let budget = |s: Option<&'a Scoped>| s.and_then(|s| s.budget.as_ref());
        [
            (Owner::Workflow, self.workflow.budget.as_ref()),
            (
                Owner::Phase(task.phase),
                budget(self.phases.get(&task.phase)),
            ),
            (
                Owner::Agent(task.agent),
                budget(self.agents.get(&task.agent)),
            ),
            (Owner::Task(task.id), budget(self.tasks.get(&task.id))),
        ]
        .into_iter()
        .filter_map(|(o, b)| Some((o, b?)))
    }
}

/// Who a setting belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    Workflow,
    Phase(PhaseId),
    Agent(AgentId),
    Task(TaskId),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: String,
    /// `None`: the param is required (unless `env` gives it).
    pub default: Option<Value>,
    /// Never stored or printed in clear: masked in the log, redacted in what tasks print.
    pub secret: bool,
    /// An environment variable the value comes from when `--param` does not give it.
    pub env: Option<String>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct Module {
    /// As written after `use`.
    pub written: String,
    /// Resolved against the workflow file's folder.
    pub path: PathBuf,
    pub functions: Vec<String>,
    /// The module's code, for agents that run elsewhere.
    pub source: std::sync::Arc<str>,
}

/// A pool of `count` identical agent instances named `NAME-01`, `NAME-02`, ….
#[derive(Clone, Debug)]
pub struct Agent {
    pub id: AgentId,
    pub name: String,
    pub kind: AgentKind,
    pub count: u32,
    pub retry: Option<u32>,
    pub backoff: Option<Backoff>,
    pub timeout: Option<Duration>,
    pub breaker: Breaker,
    /// Where its attempts run (`placement`, `labels`).
    pub placement: Placement,
    pub span: Span,
}

/// Where a pool's attempts run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Placement {
    /// In the scheduler's process (the default).
    #[default]
    Local,
    /// On `conductor worker` processes that serve the pool and have these labels.
    Workers {
        labels: std::collections::BTreeMap<String, String>,
    },
}

impl Agent {
    /// The instance names of the pool, `NAME-01` upwards.
    pub fn instance_name(&self, index: u32) -> String {
        format!("{}-{:02}", self.name, index + 1)
    }
}

#[derive(Clone, Debug)]
pub enum AgentKind {
    Llm(LlmAgent),
    Shell(ShellAgent),
    Http(HttpAgent),
    Script(ScriptAgent),
    Mock(MockAgent),
    /// A person decides: the task waits for approve or reject.
    Approval,
    /// `task t on workflow "f.cond"`: each attempt is a run of another workflow (a child run).
    Child(ChildAgent),
}

/// The pool of one child-run task (`on workflow "f.cond"`); see `check/child.rs`.
#[derive(Clone, Debug)]
pub struct ChildAgent {
    /// As written after `on workflow`.
    pub written: String,
    /// Resolved against the parent file's folder.
    pub path: PathBuf,
    /// The task's `params = { … }`, rendered for each attempt.
    pub(crate) params: crate::template::Tree,
    /// The names the child workflow declares in its `outputs`.
    pub outputs: Vec<String>,
}

impl AgentKind {
    pub fn name(&self) -> &'static str {
        match self {
            AgentKind::Llm(_) => "llm",
            AgentKind::Shell(_) => "shell",
            AgentKind::Http(_) => "http",
            AgentKind::Script(_) => "script",
            AgentKind::Mock(_) => "mock",
            AgentKind::Approval => "approval",
            AgentKind::Child(_) => "workflow",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct LlmAgent {
    pub provider: String,
    pub model: Option<String>,
    pub role: Option<Role>,
    pub system: Option<Template>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Coder,
    Reviewer,
    TestData,
    Tester,
    Devops,
    Deployer,
    Monitor,
}

impl Role {
    pub const ALL: [(&'static str, Role); 7] = [
        ("coder", Role::Coder),
        ("reviewer", Role::Reviewer),
        ("test_data", Role::TestData),
        ("tester", Role::Tester),
        ("devops", Role::Devops),
        ("deployer", Role::Deployer),
        ("monitor", Role::Monitor),
    ];

    pub fn as_str(self) -> &'static str {
        Role::ALL
            .iter()
            .find(|(_, r)| *r == self)
            .map_or("coder", |(n, _)| n)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ShellAgent {
    /// argv; each element is a template rendered into exactly one argument.
    pub command: Vec<Template>,
    pub workdir: Option<Template>,
    pub env: IndexMap<String, Template>,
    /// Exit codes a failed command is retried for (its tasks' default).
    pub retry_on_exit: Vec<i32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HttpAgent {
    pub url: Template,
    pub method: String,
    pub headers: IndexMap<String, Template>,
    pub body: Option<Template>,
    /// Statuses that are the service's verdict: the task fails, without retry.
    pub fail_on_status: Vec<u16>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ScriptAgent {
    pub function: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MockAgent {
    pub latency: Duration,
    pub fail_first: u32,
    pub fail_rate: f64,
    pub seed: u64,
    pub error: ErrorClass,
    /// `log`: a file (relative to the workflow's folder) each execution appends a line to.
    pub log: Option<PathBuf>,
    pub output: Value,
    /// `output` with its templates compiled, rendered per attempt.
    pub(crate) output_tree: Tree,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    Retryable,
    Fatal,
}

/// `circuit_breaker = breaker(failures, cooldown)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Breaker {
    pub failures: u32,
    pub cooldown: Duration,
}

impl Default for Breaker {
    fn default() -> Breaker {
        Breaker {
            failures: 5,
            cooldown: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backoff {
    Fixed(Duration),
    /// Doubling from `initial`, capped at `max`, with jitter.
    Exponential {
        initial: Duration,
        max: Duration,
    },
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::Exponential {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Phase {
    pub id: PhaseId,
    pub name: String,
    /// Overrides the workflow's `min_success_rate` for the default gate.
    pub min_success_rate: Option<f64>,
    /// `always = true`: runs once after the run ends COMPLETED or FAILED, after the normal
    /// phases (cleanup, reports).
    pub always: bool,
    pub tasks: Vec<TaskId>,
    pub gate: Option<Rule>,
    pub enforce: Vec<Rule>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct Task {
    pub id: TaskId,
    pub name: String,
    pub phase: PhaseId,
    pub agent: AgentId,
    pub after: Vec<TaskId>,
    /// Boxed, as the rarer settings are: a 100k-task file keeps one `Task` per task.
    pub prompt: Option<Box<Template>>,
    /// `None` without an `input` setting (boxed: most tasks have none).
    pub input: Option<Box<Input>>,
    /// Effective values: the task's own, else its agent's, else the language default.
    pub retry: u32,
    /// Exit codes a failed command is retried for (the task's, else its shell agent's).
    pub retry_on_exit: Vec<i32>,
    pub backoff: Backoff,
    pub timeout: Duration,
    pub cache: bool,
    pub effect: Effect,
    pub when: Option<Box<Rule>>,
    /// `matrix` or `for_each`: the task runs once per item, as instances `name[key]`.
    pub fan_out: Option<Box<FanOut>>,
    pub span: Span,
}

/// A task's `input` map.
#[derive(Clone, Debug)]
pub struct Input {
    pub values: IndexMap<String, Value>,
    /// The same with its templates compiled, rendered per attempt.
    pub(crate) tree: Tree,
}

/// A task that runs once per item.
#[derive(Clone, Debug)]
pub struct FanOut {
    pub source: FanOutSource,
    /// A matrix's keys in declaration order: an instance is named by its values for them.
    pub axes: Vec<String>,
    /// Names each instance (`test[linux-3.12]`); by default the item's values.
    pub key: Option<Template>,
    /// A longer list fails the task (default 256).
    pub max_items: u32,
    /// How many instances run at once (within the pool's `count`).
    pub max_parallel: Option<u32>,
    /// One failed instance cancels the queued and running others.
    pub fail_fast: bool,
    pub succeed_when: SucceedWhen,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum FanOutSource {
    /// A static matrix, expanded by `check`: each combination, in order.
    Matrix(Vec<serde_json::Value>),
    /// A template yielding a JSON array, rendered when the task's turn comes.
    ForEach(Template),
}

impl FanOut {
    /// How many instances a static matrix has; `None` for a list known only at run time.
    pub fn static_count(&self) -> Option<usize> {
        match &self.source {
            FanOutSource::Matrix(items) => Some(items.len()),
            FanOutSource::ForEach(_) => None,
        }
    }

    /// `×4 (matrix)` or `× up to 256 (for_each)`, as the plan shows a fan-out task.
    pub fn describe(&self) -> String {
        match self.static_count() {
            Some(n) => format!("×{n} (matrix)"),
            None => format!("× up to {} (for_each)", self.max_items),
        }
    }

    /// How many of its instances can be ready at once, as far as `check` can tell: a matrix's
    /// size (under `max_parallel`); one for a list known only at run time.
    pub fn static_width(&self) -> usize {
        let n = self.static_count().unwrap_or(1);
        self.max_parallel.map_or(n, |m| n.min(m as usize))
    }
}

/// When a fanned-out task as a whole has completed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SucceedWhen {
    All,
    Any,
    /// At least this share of the instances that ran.
    Rate(f64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    Pure,
    Idempotent,
    External,
}

#[derive(Clone, Debug)]
pub struct Feedback {
    pub target: PhaseId,
    pub rule: Rule,
    pub span: Span,
}

/// A compiled rule and where it came from.
#[derive(Clone, Debug)]
pub struct Rule {
    pub kind: RuleKind,
    pub source: RuleSource,
    pub compiled: CompiledRule,
    /// `file:line:col` of the rule, for messages at run time.
    pub location: String,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum RuleSource {
    /// Inline code, its indentation normalised.
    Inline(String),
    Named {
        name: String,
        args: Vec<Value>,
    },
}

/// A string that may hold `{{ … }}` / `{% … %}`; its syntax was checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    /// Jinja source (a `\{` of the file stands here as a literal brace).
    pub source: String,
    /// The text as the author meant it, for display.
    pub text: String,
    /// Whether it contains any tag; a plain string renders as itself.
    pub dynamic: bool,
    /// The compiled template in [`Workflow::templates`], when `dynamic`.
    pub(crate) id: Option<TemplateId>,
    /// A `command` element that is one expression: a list value becomes one argument per
    /// item ([`crate::template::split_argv`]).
    pub expands: bool,
    pub span: Span,
}

/// A literal value of the language, as tasks, params and rules see it.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Duration(Duration),
    List(Vec<Value>),
    Map(IndexMap<String, Value>),
}

impl Value {
    /// The value as JSON; durations become milliseconds, as rules and templates see them.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Value::from(*f),
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Duration(d) => {
                serde_json::Value::from(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            }
            Value::List(items) => items.iter().map(Value::to_json).collect(),
            Value::Map(map) => serde_json::Value::Object(
                map.iter().map(|(k, v)| (k.clone(), v.to_json())).collect(),
            ),
        }
    }
}
