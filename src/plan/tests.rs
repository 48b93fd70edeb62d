use super::*;
use crate::source::SourceMap;

fn plan_of(text: &str) -> (Workflow, Plan) {
    let mut map = SourceMap::new();
    let checked =
        crate::check::check_source(&mut map, "t.cond", std::path::Path::new("t.cond"), text);
    let wf = checked
        .workflow
        .unwrap_or_else(|| panic!("{:?}", checked.diags));
    let plan = plan(&wf).unwrap();
    (wf, plan)
}

fn names(wf: &Workflow, plan: &Plan) -> Vec<String> {
    plan.order
        .iter()
        .map(|n| match plan.node(*n) {
            Node::Task { task, .. } => wf.task(task).name.clone(),
            Node::Gate { phase } => format!("gate:{}", wf.phase(phase).name),
        })
        .collect()
}

#[test]
fn edges_follow_after_phase_order_and_gates() {
    let (wf, plan) = plan_of(
        r#"workflow w {
            agent a { kind = "mock" }
            phase one { task x on a  task y on a after x  task z on a }
            phase two { task u on a  task v on a after u }
        }"#,
    );
    assert_eq!(
        names(&wf, &plan),
        ["x", "y", "z", "gate:one", "u", "v", "gate:two"]
    );
    let gate_one = plan.gate_nodes[0];
    let deps: Vec<_> = plan.dependencies(gate_one).collect();
    assert_eq!(deps.len(), 3, "a gate waits for every task of its phase");
    let u = plan.task_nodes[wf.task_by_name("u").unwrap().id.index()];
    let v = plan.task_nodes[wf.task_by_name("v").unwrap().id.index()];
    assert_eq!(plan.dependencies(u).collect::<Vec<_>>(), vec![gate_one]);
    assert!(
        !plan.dependencies(v).any(|d| d == gate_one),
        "v waits through u, not the gate"
    );
}

#[test]
fn ties_break_in_declaration_order() {
    let (wf, plan) = plan_of(
        r#"workflow w { agent a { kind = "mock" }
            phase p { task c on a after b  task b on a  task a1 on a } }"#,
    );
    assert_eq!(names(&wf, &plan), ["b", "c", "a1", "gate:p"]);
}

#[test]
fn feedback_edge_is_kept_beside_the_dag() {
    let (wf, plan) = plan_of(
        r#"workflow w { agent a { kind = "mock" }
            phase one { task x on a }  phase two { task y on a }
            feedback to one { ok() } }"#,
    );
    let f = plan.feedback.unwrap();
    assert_eq!(f.from, plan.gate_nodes[1]);
    assert_eq!(wf.phase(f.target).name, "one");
    assert!(petgraph::algo::toposort(&plan.graph, None).is_ok());
}

#[test]
fn analysis_finds_critical_path_width_and_queueing() {
    let (_, plan) = plan_of(
        r#"workflow w { agent a { kind = "mock", count = 2 } agent idle { kind = "mock" }
            phase p { task s on a  task f1 on a after s  task f2 on a after s  task f3 on a after s
                      task m on a after f1, f2, f3 } }"#,
    );
    let p = &plan.analysis.phases[0];
    assert_eq!(p.critical_path, ["s", "f1", "m"]);
    assert_eq!(p.width, 3);
    let pool = &plan.analysis.pools[0];
    assert_eq!((pool.peak, pool.queues), (3, true));
    assert_eq!(plan.analysis.unused_agents, ["idle"]);
    assert!(
        plan.analysis.warnings[0].contains("will queue"),
        "{:?}",
        plan.analysis.warnings
    );
}
