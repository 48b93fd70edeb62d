//! Compiling and rendering templates.

use super::*;

fn set(sources: &[&str]) -> (Templates, Vec<TemplateId>) {
    let mut b = TemplatesBuilder::default();
    let ids = sources.iter().map(|s| b.add(s).unwrap().0).collect();
    (b.finish(), ids)
}

#[test]
fn templates_compile_once_and_render_by_id() {
    let (t, ids) = set(&["hello {{ params.who }}", "{{ loop_count + 1 }}"]);
    let ctx = Context::from_serialize(&serde_json::json!({
        "params": { "who": "world" }, "loop_count": 2
    }));
    assert_eq!(t.render(ids[0], &ctx, &"x", true).unwrap(), "hello world");
    assert_eq!(t.render(ids[1], &ctx, &"x", true).unwrap(), "3");
}

#[test]
fn a_template_of_one_variable_renders_as_the_engine_would() {
    let ctx = Context::from_serialize(&serde_json::json!({
        "params": { "who": "world", "n": 3, "list": ["a"], "safe": "<b> & {{ x }}" },
        "loop_count": 2,
    }));
    let sources = [
        "{{ params.who }}",
        "{{params.safe}}",
        "{{ params.n }}",
        "{{ params.list }}",
        "{{ loop_count }}",
        "{{- params.who -}}",
        "{{ params.who }} ",
    ];
    let (t, ids) = set(&sources);
    let engine = |source: &str| render_source(source, &ctx_json(&ctx), "x", true).unwrap();
    for (source, id) in sources.iter().zip(ids) {
        assert_eq!(
            t.render(id, &ctx, &"x", true).unwrap(),
            engine(source),
            "{source}"
        );
    }
    assert_eq!(
        lookup_path("{{ tasks.build.output }}").as_deref(),
        Some(&["tasks".into(), "build".into(), "output".into()][..])
    );
    for not_one in [
        "{{ a }}{{ b }}",
        "{{ a | upper }}",
        "{{ a[0] }}",
        "{{- a }}",
        "x {{ a }}",
    ] {
        assert_eq!(lookup_path(not_one), None, "{not_one}");
    }
    // An undefined variable is still the engine's error.
    let (t, ids) = set(&["{{ params.whom }}"]);
    let err = t.render(ids[0], &ctx, &"x", true).unwrap_err();
    assert!(err.0.ends_with("`params.whom` is not defined"), "{}", err.0);
    assert_eq!(t.render(ids[0], &ctx, &"x", false).unwrap(), "");
}

#[test]
fn the_tasks_templates_read_are_known_by_name_unless_read_whole() {
    let read = |sources: &[&str]| {
        let mut b = TemplatesBuilder::default();
        for s in sources {
            b.add(s).unwrap();
        }
        b.tasks_read().clone()
    };
    assert_eq!(read(&["{{ params.p }}"]), TasksRead::None);
    assert_eq!(
        read(&[
            "{{ tasks.build.output.sha }}",
            "{% if tasks.test.status %}x{% endif %}"
        ]),
        TasksRead::Named(["build".to_string(), "test".to_string()].into())
    );
    for whole in [
        "{{ tasks['build'].output }}",
        "{{ tasks | length }}",
        "{% set t = tasks %}{{ t.build }}",
        "{% for n in tasks %}{{ n }}{% endfor %}",
    ] {
        assert_eq!(
            read(&["{{ tasks.a.output }}", whole]),
            TasksRead::All,
            "{whole}"
        );
    }
    assert!(TasksRead::All.reads("anything"));
    assert!(!read(&["{{ tasks.a.output }}"]).reads("b"));
}

fn ctx_json(ctx: &Context) -> serde_json::Value {
    to_json(&ctx.0)
}

#[test]
fn an_undefined_value_piped_into_filters_is_named_not_the_filter() {
    let ctx = Context::from_serialize(&serde_json::json!({
        "tasks": { "one": { "output": { "stdout": "x" } } }
    }));
    for source in [
        "{{ tasks.one.output.stdot | upper }}",
        "{{ tasks.one.output.stdot|trim|upper }}",
        "{{ tasks.one.output.stdot | replace('a', 'b') | upper }}",
        "{{ tasks.one.output.stdot | tojson }}",
    ] {
        let (t, ids) = set(&[source]);
        let err = t.render(ids[0], &ctx, &"x", true).unwrap_err();
        assert!(
            err.0.ends_with("`tasks.one.output.stdot` is not defined"),
            "{source}: {}",
            err.0
        );
    }
}

#[test]
fn an_undefined_value_is_named_whole() {
    let (t, ids) = set(&["{{ tasks.one.output.stdot }}"]);
    let ctx = Context::from_serialize(&serde_json::json!({
        "tasks": { "one": { "output": { "stdout": "x" } } }
    }));
    let err = t
        .render(ids[0], &ctx, &"`prompt` of task `t`", true)
        .unwrap_err();
    assert_eq!(
        err.0,
        "template `prompt` of task `t`: undefined value: `tasks.one.output.stdot` is not defined"
    );
    // A dry run renders it empty.
    assert_eq!(t.render(ids[0], &ctx, &"x", false).unwrap(), "");
}

#[test]
fn the_same_source_is_compiled_once_and_renders_the_same() {
    let (t, ids) = set(&["{{ params.p }}", "{{ params.q }}", "{{ params.p }}"]);
    assert_eq!(ids[0], ids[2]);
    assert_ne!(ids[0], ids[1]);
    let ctx = Context::from_serialize(&serde_json::json!({ "params": { "p": "a", "q": "b" } }));
    let render = |id| t.render(id, &ctx, &"t", true).unwrap();
    assert_eq!(
        (render(ids[2]), render(ids[1])),
        ("a".to_string(), "b".to_string())
    );
}

#[test]
fn syntax_errors_and_variables_are_reported_at_compile_time() {
    let mut b = TemplatesBuilder::default();
    let err = b.add("{{ oops").unwrap_err();
    assert!(!err.detail.is_empty());
    let (_, vars) = b.add("{{ params.a }} {{ tasks.b.output }}").unwrap();
    assert_eq!(vars, ["params.a", "tasks.b.output"]);
}

#[test]
fn renders_are_bounded_by_instructions_and_output() {
    let (t, ids) = set(&[
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% for i in range(100) %}{{ 'x' * 1000000 }}{% endfor %}",
        "{% for i in range(100) %}{% set y %}{{ 'x' * 1000000 }}{% endset %}{% endfor %}",
        "{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}",
    ]);
    let ctx = Context::default();
    let err = |i: usize| t.render(ids[i], &ctx, &"`x`", true).unwrap_err().0;
    assert!(err(0).contains("instructions"), "{}", err(0));
    assert!(err(1).contains("larger than 8 MiB"), "{}", err(1));
    assert!(err(2).contains("larger than 8 MiB"), "{}", err(2));
    assert!(err(3).contains("recursion limit"), "{}", err(3));
}

#[test]
fn a_chain_too_deep_for_the_parser_is_a_syntax_error_with_its_place() {
    let mut b = TemplatesBuilder::default();
    for source in [
        format!("ok {{{{ {}1 }}}}", "-".repeat(20_000)),
        format!("ok {{{{ x{} }}}}", "|lower".repeat(20_000)),
    ] {
        let err = b.add(&source).unwrap_err();
        assert_eq!(err.range.map(|r| r.start), Some(3));
        assert!(
            err.detail.contains("nested more than 64 levels"),
            "{}",
            err.detail
        );
    }
}

#[test]
fn trees_render_every_template_inside() {
    let (t, ids) = set(&["{{ params.v }}"]);
    let tree = Tree::Map(vec![
        ("a".into(), Tree::Template(ids[0])),
        (
            "b".into(),
            Tree::List(vec![Tree::Plain(serde_json::json!(1))]),
        ),
    ]);
    let ctx = Context::from_serialize(&serde_json::json!({ "params": { "v": "x" } }));
    assert_eq!(
        tree.render(&t, &ctx, &"input", true).unwrap(),
        serde_json::json!({ "a": "x", "b": [1] })
    );
}
