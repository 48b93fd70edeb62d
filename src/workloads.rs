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
    let n = n.max(3);
    let mut out = String::with_capacity(n * 40);
    let _ = writeln!(out, "workflow bench_{} {{", shape.name().replace('-', "_"));
    let _ = writeln!(out, "    agent m {{ kind = \"mock\", count = {count} }}");
    out.push_str("    phase p {\n");
    match shape {
        Shape::Chain => {
            out.push_str("        task t0 on m\n");
            for i in 1..n {
                let _ = writeln!(out, "        task t{i} on m after t{}", i - 1);
            }
        }
        Shape::FanOut => {
            out.push_str("        task src on m\n");
            for i in 0..n - 2 {
                let _ = writeln!(out, "        task t{i} on m after src");
            }
            out.push_str("        task sink on m after ");
            for i in 0..n - 2 {
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "t{i}");
            }
            out.push('\n');
        }
    }
    out.push_str("    }\n}\n");
    out
}
