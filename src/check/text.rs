//! The checked model as deterministic text, for snapshots and for comparing a
//! file with its formatted text (`fmt` must not change meaning). Spans are left out on purpose.

use std::fmt::Write;
use std::time::Duration;

use super::ir::*;

pub fn to_text(wf: &Workflow) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "workflow {}", wf.name);
    if let Some(d) = &wf.description {
        let _ = writeln!(out, "  description: {d:?}");
    }
    settings(&mut out, &wf.settings);
    for m in &wf.modules {
        let _ = writeln!(
            out,
            "  use {:?} defines [{}]",
            m.written,
            m.functions.join(", ")
        );
    }
    for p in &wf.params {
        let mut extra = String::new();
        if p.secret {
            extra.push_str(" secret");
        }
        if let Some(env) = &p.env {
            extra.push_str(&format!(" env={env}"));
        }
        match &p.default {
            Some(v) => {
                let _ = writeln!(out, "  param {}{extra} = {}", p.name, value(v));
            }
            None => {
                let _ = writeln!(out, "  param {}{extra} (required)", p.name);
            }
        }
    }
    for a in &wf.agents {
        agent(&mut out, a);
    }
    for r in &wf.enforce {
        let _ = writeln!(out, "  enforce {}", rule(r));
    }
    for p in &wf.phases {
        phase(&mut out, wf, p);
    }
    match &wf.feedback {
        Some(f) => {
            let _ = writeln!(
                out,
                "  feedback to {} {}",
                wf.phase(f.target).name,
                rule(&f.rule)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "  feedback (default: highest severity of the last phase)"
            );
        }
    }
    out
}

/// The model item by item, each with a name a person knows it by (`task `build``) and its
/// text: two versions of a workflow are compared item by item (`resume` with an amended file).
pub(crate) fn items(wf: &Workflow) -> Vec<(String, String)> {
    let mut items = Vec::new();
    let mut s = String::new();
    if let Some(d) = &wf.description {
        let _ = writeln!(s, "description {d:?}");
    }
    settings(&mut s, &wf.settings);
    items.push(("the workflow's settings".to_string(), s));
    for p in &wf.params {
        let text = format!(
            "{} secret={} env={:?}",
            p.default.as_ref().map_or("required".to_string(), value),
            p.secret,
            p.env
        );
        items.push((format!("param `{}`", p.name), text));
    }
    for a in &wf.agents {
        let mut s = String::new();
        agent(&mut s, a);
        items.push((format!("agent `{}`", a.name), s));
    }
    let mut s = String::new();
    for r in &wf.enforce {
        let _ = writeln!(s, "enforce {}", rule(r));
    }
    items.push(("the workflow's enforce rules".to_string(), s));
    for p in &wf.phases {
        let mut s = String::new();
        phase_rules(&mut s, wf, p);
        items.push((format!("phase `{}`", p.name), s));
        for id in &p.tasks {
            let mut s = String::new();
            task(&mut s, wf, wf.task(*id));
            items.push((format!("task `{}`", wf.task(*id).name), s));
        }
    }
    let feedback = wf.feedback.as_ref().map_or(String::new(), |f| {
        format!("to {} {}", wf.phase(f.target).name, rule(&f.rule))
    });
    items.push(("the feedback rule".to_string(), feedback));
    items
}

fn settings(out: &mut String, s: &WorkflowSettings) {
    let _ = writeln!(
        out,
        "  settings: max_feedback_loops={} on_max_loops={:?} min_success_rate={} agent_wait={} timeout={} max_parallel={} on_escalation={}",
        s.max_feedback_loops,
        s.on_max_loops,
        s.min_success_rate,
        dur(s.agent_wait),
        dur(s.timeout),
        s.max_parallel.map_or("unlimited".to_string(), |n| n.to_string()),
        s.on_escalation.map_or("default".to_string(), |e| format!("{e:?}")),
    );
}

fn agent(out: &mut String, a: &Agent) {
    let _ = writeln!(
        out,
        "  agent {} kind={} count={} retry={} backoff={} timeout={} breaker=({}, {})",
        a.name,
        a.kind.name(),
        a.count,
        a.retry.map_or("-".to_string(), |n| n.to_string()),
        a.backoff.map_or("-".to_string(), backoff),
        a.timeout.map_or("-".to_string(), dur),
        a.breaker.failures,
        dur(a.breaker.cooldown),
    );
    agent_kind(out, &a.kind);
}

fn phase(out: &mut String, wf: &Workflow, p: &Phase) {
    let _ = writeln!(
        out,
        "  phase {}{} min_success_rate={}",
        p.name,
        if p.always { " always" } else { "" },
        p.min_success_rate.map_or_else(
            || format!("{} (workflow)", wf.settings.min_success_rate),
            |r| r.to_string()
        )
    );
    for r in &p.enforce {
        let _ = writeln!(out, "    enforce {}", rule(r));
    }
    for id in &p.tasks {
        task(out, wf, wf.task(*id));
    }
    gate(out, p);
}

/// A phase without its tasks: its settings and rules.
fn phase_rules(out: &mut String, wf: &Workflow, p: &Phase) {
    let _ = writeln!(
        out,
        "settings always={} min_success_rate={}",
        p.always,
        p.min_success_rate.unwrap_or(wf.settings.min_success_rate)
    );
    for r in &p.enforce {
        let _ = writeln!(out, "enforce {}", rule(r));
    }
    gate(out, p);
}

fn gate(out: &mut String, p: &Phase) {
    match &p.gate {
        Some(g) => {
            let _ = writeln!(out, "    gate {}", rule(g));
        }
        None => {
            let _ = writeln!(out, "    gate (default: success_rate >= min_success_rate)");
        }
    }
}

fn task(out: &mut String, wf: &Workflow, t: &Task) {
    let after: Vec<&str> = t.after.iter().map(|d| wf.task(*d).name.as_str()).collect();
    let _ = writeln!(
        out,
        "    task {} on {} after [{}] retry={} backoff={} timeout={} cache={} effect={:?}",
        t.name,
        wf.agent(t.agent).name,
        after.join(", "),
        t.retry,
        backoff(t.backoff),
        dur(t.timeout),
        t.cache,
        t.effect,
    );
    if !t.retry_on_exit.is_empty() {
        let _ = writeln!(out, "      retry_on_exit {:?}", t.retry_on_exit);
    }
    if let Some(f) = &t.fan_out {
        fan_out(out, f);
    }
    if let Some(w) = &t.when {
        let _ = writeln!(out, "      when {}", rule(w));
    }
    if let Some(p) = &t.prompt {
        let _ = writeln!(out, "      prompt {}", template(p));
    }
    for (k, v) in t.input.iter().flat_map(|i| &i.values) {
        let _ = writeln!(out, "      input {k} = {}", value(v));
    }
}

fn agent_kind(out: &mut String, kind: &AgentKind) {
    match kind {
        AgentKind::Llm(l) => {
            let _ = writeln!(
                out,
                "    provider={:?} model={} role={} temperature={} max_tokens={}",
                l.provider,
                l.model
                    .as_deref()
                    .map_or("-".to_string(), |m| format!("{m:?}")),
                l.role.map_or("-", Role::as_str),
                l.temperature.map_or("-".to_string(), |t| t.to_string()),
                l.max_tokens.map_or("-".to_string(), |t| t.to_string()),
            );
            if let Some(s) = &l.system {
                let _ = writeln!(out, "    system {}", template(s));
            }
        }
        AgentKind::Shell(s) => {
            let argv: Vec<String> = s.command.iter().map(template).collect();
            let _ = writeln!(out, "    command [{}]", argv.join(", "));
            if let Some(w) = &s.workdir {
                let _ = writeln!(out, "    workdir {}", template(w));
            }
            for (k, v) in &s.env {
                let _ = writeln!(out, "    env {k} = {}", template(v));
            }
            if !s.retry_on_exit.is_empty() {
                let _ = writeln!(out, "    retry_on_exit {:?}", s.retry_on_exit);
            }
        }
        AgentKind::Http(h) => {
            let _ = writeln!(out, "    {} {}", h.method, template(&h.url));
            for (k, v) in &h.headers {
                let _ = writeln!(out, "    header {k} = {}", template(v));
            }
            if let Some(b) = &h.body {
                let _ = writeln!(out, "    body {}", template(b));
            }
            if !h.fail_on_status.is_empty() {
                let _ = writeln!(out, "    fail_on_status {:?}", h.fail_on_status);
            }
        }
        AgentKind::Script(s) => {
            let _ = writeln!(out, "    function {}", s.function);
        }
        AgentKind::Approval => {}
        AgentKind::Child(c) => {
            let _ = writeln!(
                out,
                "    workflow {:?} outputs [{}]",
                c.written,
                c.outputs.join(", ")
            );
        }
        AgentKind::Mock(m) => {
            let _ = writeln!(
                out,
                "    latency={} fail_first={} fail_rate={} seed={} error={:?} output={}",
                dur(m.latency),
                m.fail_first,
                m.fail_rate,
                m.seed,
                m.error,
                value(&m.output),
            );
        }
    }
}

fn rule(r: &Rule) -> String {
    match &r.source {
        RuleSource::Inline(code) => format!("{{ {} }}", code.replace('\n', "\n        ")),
        RuleSource::Named { name, args } => {
            let args: Vec<String> = args.iter().map(value).collect();
            format!("{name}({})", args.join(", "))
        }
    }
}

/// A fan-out: a matrix as its expanded combinations, one per line, in instance order.
fn fan_out(out: &mut String, f: &crate::check::ir::FanOut) {
    use crate::check::ir::{FanOutSource, SucceedWhen};
    let succeed = match f.succeed_when {
        SucceedWhen::All => "all".to_string(),
        SucceedWhen::Any => "any".to_string(),
        SucceedWhen::Rate(r) => r.to_string(),
    };
    let max_parallel = f.max_parallel.map_or("-".to_string(), |m| m.to_string());
    let _ = writeln!(
        out,
        "      fan_out max_items={} max_parallel={max_parallel} fail_fast={} succeed_when={succeed}",
        f.max_items, f.fail_fast
    );
    if let Some(k) = &f.key {
        let _ = writeln!(out, "        key {}", template(k));
    }
    match &f.source {
        FanOutSource::Matrix(items) => {
            let _ = writeln!(out, "        matrix axes [{}]", f.axes.join(", "));
            for (i, item) in items.iter().enumerate() {
                let _ = writeln!(out, "        [{i}] {item}");
            }
        }
        FanOutSource::ForEach(t) => {
            let _ = writeln!(out, "        for_each {}", template(t));
        }
    }
}

fn template(t: &Template) -> String {
    if t.dynamic {
        format!("template {:?}", t.source)
    } else {
        format!("{:?}", t.text)
    }
}

fn value(v: &Value) -> String {
    match v {
        Value::Str(s) => format!("{s:?}"),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => format!("{f:?}"),
        Value::Bool(b) => b.to_string(),
        Value::Duration(d) => dur(*d),
        Value::List(items) => {
            let items: Vec<String> = items.iter().map(value).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Map(m) => {
            let entries: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k} = {}", value(v)))
                .collect();
            format!("{{ {} }}", entries.join(", "))
        }
    }
}

fn backoff(b: Backoff) -> String {
    match b {
        Backoff::Fixed(d) => format!("fixed({})", dur(d)),
        Backoff::Exponential { initial, max } => {
            format!("exponential({}, {})", dur(initial), dur(max))
        }
    }
}

/// A duration in the language's own notation, in the largest exact unit.
pub fn dur(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".to_string()
    } else if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1_000 == 0 {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}
