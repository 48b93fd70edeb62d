//! Generators of large workflows for benchmarks and scale tests (not a user command).

use std::fmt::Write;

/// The two shapes that stress a scheduler differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `t0 → t1 → … → tN-1`: nothing runs in parallel.
    Chain,
    /// `src → (t0 … tN-3) → sink`: everything in the middle runs at once.
    FanOut,
}

impl Shape {
    pub fn name(self) -> &'static str {
        match self {
            Shape::Chain => "chain",
            Shape::FanOut => "fan-out",
        }
    }
}

/// A workflow of `n` mock tasks (n ≥ 3) in one phase, on a pool of `count` zero-latency mocks.
pub fn workflow(shape: Shape, n: usize, count: u32) -> String {
    generate(shape, n, count, None)
}

/// The input every task of [`templated_fan_out`] renders.
const TEMPLATED_BODY: &str = " { input = { v = \"{{ params.p }}\" } }";

/// [`Shape::FanOut`] where every task renders a template at dispatch: the workflow declares
/// `param p = "x"` and each task has `{ input = { v = "{{ params.p }}" } }`.
pub fn templated_fan_out(n: usize, count: u32) -> String {
    generate(Shape::FanOut, n, count, Some(TEMPLATED_BODY))
}

/// [`Shape::FanOut`] written as one `for_each` task: `src` outputs a list of `n - 2` numbers,
/// `t` fans out over it, `sink` runs after every instance. The same work as the declared
/// fan-out of `n` tasks, for comparing what an instance costs with what a task costs.
pub fn for_each_fan_out(n: usize, count: u32) -> String {
    let items = n.max(3) - 2;
    let mut out = String::with_capacity(items * 8 + 400);
    out.push_str(
        "workflow bench_for_each {\n    agent lister { kind = \"mock\", output = { items = [",
    );
    for i in 0..items {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{i}");
    }
    out.push_str("] } }\n");
    let _ = writeln!(out, "    agent m {{ kind = \"mock\", count = {count} }}");
    out.push_str("    phase p {\n        task src on lister\n");
    let _ = writeln!(
        out,
        "        task t on m after src {{ for_each = \"{{{{ tasks.src.output.items }}}}\", max_items = {items} }}"
    );
    out.push_str("        task sink on m after t\n    }\n}\n");
    out
}

/// `n` tasks (n ≥ 1), each on the undeclared agent `nope`: one error diagnostic per task.
pub fn unknown_agents(n: usize) -> String {
    let n = n.max(1);
    let mut out = String::with_capacity(n * 30 + 64);
    out.push_str("workflow bench_diagnostics {\n    phase p {\n");
    for i in 0..n {
        let _ = writeln!(out, "        task t{i} on nope");
    }
    out.push_str("    }\n}\n");
    out
}

/// The text of a workflow of `shape`; `body`, when given, follows every task's header.
fn generate(shape: Shape, n: usize, count: u32, body: Option<&str>) -> String {
    let n = n.max(3);
    let body = body.unwrap_or("");
    let mut out = String::with_capacity(n * (40 + body.len()));
    let _ = writeln!(out, "workflow bench_{} {{", shape.name().replace('-', "_"));
    if !body.is_empty() {
        out.push_str("    param p = \"x\"\n");
    }
    let _ = writeln!(out, "    agent m {{ kind = \"mock\", count = {count} }}");
    out.push_str("    phase p {\n");
    match shape {
        Shape::Chain => {
            let _ = writeln!(out, "        task t0 on m{body}");
            for i in 1..n {
                let _ = writeln!(out, "        task t{i} on m after t{}{body}", i - 1);
            }
        }
        Shape::FanOut => {
            let _ = writeln!(out, "        task src on m{body}");
            for i in 0..n - 2 {
                let _ = writeln!(out, "        task t{i} on m after src{body}");
            }
            out.push_str("        task sink on m after ");
            for i in 0..n - 2 {
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "t{i}");
            }
            let _ = writeln!(out, "{body}");
        }
    }
    out.push_str("    }\n}\n");
    out
}
