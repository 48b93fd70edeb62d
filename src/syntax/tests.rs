use super::*;
use crate::source::SourceMap;

fn parse_ok(text: &str) -> ast::File {
    let mut map = SourceMap::new();
    let file = map.add("t.cond", "t.cond", text);
    match parse(file, text) {
        Ok((ast, diags)) => {
            assert!(diags.is_empty(), "{diags:?}");
            ast
        }
        Err(d) => panic!("did not parse: {d:?}"),
    }
}

fn parse_err(text: &str) -> String {
    let mut map = SourceMap::new();
    let file = map.add("t.cond", "t.cond", text);
    match parse(file, text) {
        Ok(_) => panic!("parsed"),
        Err(d) => d[0].message.clone(),
    }
}

#[test]
fn rhai_braces_in_strings_and_comments_do_not_count() {
    let f = parse_ok(
        r#"workflow w { phase p { gate { let s = "}"; /* } */ // }
            s == "}" } } }"#,
    );
    let ast::Item::Phase(p) = &f.workflow.items[0] else {
        panic!()
    };
    let ast::PhaseItem::Gate(g) = &p.items[0] else {
        panic!()
    };
    let ast::Rule::Block(b) = &g.rule else {
        panic!()
    };
    assert!(b.raw.contains(r#"s == "}""#));
}

#[test]
fn commas_between_items_are_optional() {
    let a = parse_ok(r#"workflow w { agent a { kind = "mock", count = 2 } }"#);
    let b = parse_ok("workflow w { agent a {\n kind = \"mock\"\n count = 2\n} }");
    let settings = |f: &ast::File| match &f.workflow.items[0] {
        ast::Item::Agent(a) => a
            .settings
            .iter()
            .map(|s| s.name.name.clone())
            .collect::<Vec<_>>(),
        _ => panic!(),
    };
    assert_eq!(settings(&a), settings(&b));
}

#[test]
fn syntax_errors_say_what_was_expected_in_words() {
    let msg = parse_err("workflow w { phase p { task a on m afterr b } }");
    assert!(msg.starts_with("expected"), "{msg}");
    let msg = parse_err("workflow w { phase p { task a on } }");
    assert!(msg.contains("a name"), "{msg}");
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let text = format!("workflow w {{ x = {} }}", "[".repeat(100_000));
    let msg = parse_err(&text);
    assert!(msg.contains("nested"), "{msg}");
}

#[test]
fn comments_outside_rhai_are_collected() {
    let f = parse_ok(
        "// head\nworkflow w { /* b */ x = 1 // tail\n phase p { gate { // rhai\n true } } }",
    );
    let texts: Vec<&str> = f.comments.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(texts, vec!["// head", "/* b */", "// tail"]);
}
