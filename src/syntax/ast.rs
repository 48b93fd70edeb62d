//! The owned, spanned syntax tree of one `.cond` file: what the author wrote, in the order
//! written, before any name is resolved. `fmt` prints it back; `check` lowers it to the IR.

use crate::source::Span;

#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct File {
    pub workflow: Workflow,
    /// Every `//` and `/* */` comment outside rhai blocks, in order (for `fmt`).
    pub comments: Vec<Comment>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Comment {
    pub text: String,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Workflow {
    pub name: Ident,
    pub items: Vec<Item>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Setting(Setting),
    Use(Use),
    Param(Param),
    Agent(Agent),
    Enforce(RuleItem),
    Phase(Phase),
    Feedback(Feedback),
    /// `import "lib/x.cond" as q`.
    Import(Import),
    /// `export agent …`, `export phase …`, `export rule …`: the item, offered to importers.
    Export(Box<Item>, Span),
    /// `rule NAME(a, b) { rhai }`: a named rule written in `.cond`.
    RuleDef(RuleDef),
    /// `phase NAME = template(arg = value, …)`: a copy of a phase template.
    PhaseInstance(PhaseInstance),
}

impl Item {
    pub fn span(&self) -> Span {
        match self {
            Item::Setting(s) => s.span,
            Item::Use(u) => u.span,
            Item::Param(p) => p.span,
            Item::Agent(a) => a.span,
            Item::Enforce(r) => r.span,
            Item::Phase(p) => p.span,
            Item::Feedback(f) => f.span,
            Item::Import(i) => i.span,
            Item::Export(_, span) => *span,
            Item::RuleDef(r) => r.span,
            Item::PhaseInstance(p) => p.span,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Setting {
    pub name: Ident,
    pub value: Value,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Use {
    pub path: StrLit,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Import {
    pub path: StrLit,
    pub alias: Ident,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RuleDef {
    pub name: Ident,
    pub params: Vec<Ident>,
    pub body: RhaiBlock,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PhaseInstance {
    pub name: Ident,
    /// The template, `review` or `q.review`.
    pub template: Ident,
    pub args: Vec<NamedArg>,
    pub span: Span,
}

/// `name = value` in a phase instance's arguments, or `name` / `name = default` in a phase
/// template's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedArg {
    pub name: Ident,
    pub value: Option<Value>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: Ident,
    pub default: Option<Value>,
    /// `param token { secret = true, env = "TOKEN" }`; `None` for the short forms.
    pub settings: Option<Vec<Setting>>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Agent {
    pub name: Ident,
    pub settings: Vec<Setting>,
    pub span: Span,
}

/// `enforce`, `gate` or `when` followed by its rule.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleItem {
    pub rule: Rule,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Feedback {
    pub target: Option<Ident>,
    pub rule: Rule,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Phase {
    pub name: Ident,
    /// `phase review(target, threshold = 0.8) { … }`: a template, run only where instantiated.
    pub params: Option<Vec<NamedArg>>,
    pub items: Vec<PhaseItem>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
/// Each variant boxed: a phase of 100,000 tasks is a vector of pointers, not of the largest
/// variant (208 bytes each when inline).
pub enum PhaseItem {
    Setting(Box<Setting>),
    Task(Box<Task>),
    Gate(Box<RuleItem>),
    Enforce(Box<RuleItem>),
}

impl PhaseItem {
    pub fn span(&self) -> Span {
        match self {
            PhaseItem::Setting(s) => s.span,
            PhaseItem::Task(t) => t.span,
            PhaseItem::Gate(r) | PhaseItem::Enforce(r) => r.span,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    pub name: Ident,
    /// The agent it runs on; for a child run (`on workflow "f.cond"`) the word `workflow`.
    pub agent: Ident,
    /// `on workflow "f.cond"`: the task is a run of that file (a child run).
    pub child: Option<Box<StrLit>>,
    pub after: Vec<Ident>,
    /// `None` when the task has no `{ … }` body at all.
    pub body: Option<Vec<TaskItem>>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TaskItem {
    Setting(Setting),
    When(RuleItem),
}

impl TaskItem {
    pub fn span(&self) -> Span {
        match self {
            TaskItem::Setting(s) => s.span,
            TaskItem::When(r) => r.span,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Rule {
    /// Inline rhai code between braces.
    Block(RhaiBlock),
    /// `name(args)`: calls `fn name(ctx, args…)` of a `use`d module.
    Call(Call),
}

impl Rule {
    /// The inline block, if this rule is one.
    pub fn into_block(self) -> Option<RhaiBlock> {
        match self {
            Rule::Block(b) => Some(b),
            Rule::Call(_) => None,
        }
    }

    pub fn span(&self) -> Span {
        match self {
            Rule::Block(b) => b.span,
            Rule::Call(c) => c.span,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct RhaiBlock {
    /// The code exactly as written between the braces.
    pub raw: String,
    /// Code compiled before `raw` on its first line, binding a rule's or phase template's
    /// arguments (`let min = 0.9; `); empty as written. Never printed by `fmt`.
    pub prelude: String,
    /// Span of `raw` (inside the braces).
    pub code_span: Span,
    /// Span including the braces.
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub name: Ident,
    pub args: Vec<Value>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub kind: ValueKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ValueKind {
    Str(StrLit),
    /// An integer, float or duration token as written; `check` interprets it.
    Number(String),
    Bool(bool),
    List(Vec<Value>),
    Map(Vec<MapEntry>),
    Call(Call),
    /// A bare name where a value was expected (always an error in `check`).
    Bare(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct MapEntry {
    pub key: MapKey,
    pub value: Value,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum MapKey {
    Ident(Ident),
    Str(StrLit),
}

impl MapKey {
    pub fn name(&self) -> &str {
        match self {
            MapKey::Ident(i) => &i.name,
            MapKey::Str(s) => &s.value,
        }
    }

    pub fn span(&self) -> Span {
        match self {
            MapKey::Ident(i) => i.span,
            MapKey::Str(s) => s.span,
        }
    }
}

/// A string literal, escapes decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct StrLit {
    /// The text the string stands for.
    pub value: String,
    /// The same text as template source: `\{` becomes a Jinja literal `{` so it never opens a
    /// template tag; everything else is as in `value`.
    pub template: String,
    /// Written with `"""`.
    pub triple: bool,
    pub span: Span,
}
