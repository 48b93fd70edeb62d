use super::stream::Split;
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

/// Nesting inside a rule's code that the bracket count before parsing does not see (braces
/// after a quote character it takes for a string, comments inside comments) stops the parser
/// at its stack limit: a clear error at the rule, no overflow.
#[test]
fn deep_nesting_inside_a_rule_is_refused_with_its_cause() {
    for code in [
        format!("let c = '\"'; {}", "{".repeat(200_000)),
        "/*".repeat(200_000),
    ] {
        let text = format!("workflow w {{\n rule r() {{ {code} }}\n}}");
        let msg = parse_err(&text);
        assert!(
            msg.contains("nested too deeply to parse here"),
            "{}",
            &msg[..msg.len().min(300)]
        );
    }
}

#[test]
fn comments_outside_rhai_are_collected() {
    let f = parse_ok(
        "// head\nworkflow w { /* b */ x = 1 // tail\n phase p { gate { // rhai\n true } } }",
    );
    let texts: Vec<&str> = f.comments.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(texts, vec!["// head", "/* b */", "// tail"]);
    // Against a rhai block on both sides, and slashes in strings and arithmetic.
    let f = parse_ok(
        "workflow w { x = \"a//b\" /*c*/phase p { gate {/* in */ 4 / 2 == 2 }// d\n} \
         y = \"\"\"/* not */\"\"\" // e\n}",
    );
    let texts: Vec<&str> = f.comments.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(texts, vec!["/*c*/", "// d", "// e"]);
}

#[test]
fn the_item_by_item_walk_builds_the_same_ast_as_the_whole_parse() {
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    for dir in [
        "examples",
        "tests/fixtures/warnings",
        "tests/fixtures/invalid",
    ] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "cond") {
                files.push(path);
            }
        }
    }
    let mut walked = 0;
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let whole = super::parse_whole(FileId(0), &text);
        match super::stream::parse(FileId(0), &text) {
            Some(streamed) => {
                walked += 1;
                assert_eq!(Ok(streamed), whole, "{}", path.display());
                // Every phase cut into pieces, wherever `task` lines are, on 2 to 5 threads.
                for parts in 2..=5 {
                    let split = Split {
                        min_bytes: 0,
                        min_bodies: 0,
                        parts,
                    };
                    let pieces = super::stream::parse_split(FileId(0), &text, split);
                    assert_eq!(
                        pieces.ok_or(Vec::new()),
                        whole,
                        "{} in {parts}",
                        path.display()
                    );
                }
            }
            None => assert!(
                whole.is_err(),
                "{} parses whole but not item by item",
                path.display()
            ),
        }
    }
    assert!(walked >= 8, "only {walked} files were walked");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
    /// Whatever a mutation does to a well-formed file, the walk either declines it or agrees
    /// with the whole parse.
    #[test]
    fn the_walk_agrees_with_the_whole_parse_on_mutated_files(
        which in 0usize..8,
        at in 0usize..4000,
        cut in 0usize..40,
        insert in "[ {}\"a-z=,\\n/*]{0,6}",
    ) {
        let examples = ["examples/sdlc.cond", "examples/sdlc_mock.cond", "examples/shell_ci.cond",
            "examples/http_probe.cond", "examples/mock_pipeline.cond", "examples/script_scoring.cond",
            "examples/sdlc.cond", "examples/shell_ci.cond"];
        let text = std::fs::read_to_string(examples[which]).unwrap();
        let at = at.min(text.len());
        let mut at = at;
        while !text.is_char_boundary(at) { at -= 1; }
        let mut end = (at + cut).min(text.len());
        while !text.is_char_boundary(end) { end -= 1; }
        let mutated = format!("{}{}{}", &text[..at], insert, &text[end..]);
        let whole = super::parse_whole(FileId(0), &mutated);
        if let Some(streamed) = super::stream::parse(FileId(0), &mutated) {
            proptest::prop_assert_eq!(Ok(streamed), whole.clone());
        }
        let split = Split {
            min_bytes: 0,
            min_bodies: 0,
            parts: 3,
        };
        if let Some(pieces) = super::stream::parse_split(FileId(0), &mutated, split) {
            proptest::prop_assert_eq!(Ok(pieces), whole);
        }
    }
}

/// A large file whose phases are cut into pieces parsed on threads, with lines that look like
/// tasks where no task starts (in strings, comments, rhai and a task's body): the pieces that
/// start there are thrown away, and the AST is the whole parse's.
#[test]
fn a_large_phase_parsed_in_pieces_builds_the_same_ast_as_the_whole_parse() {
    use std::fmt::Write as _;
    let mut text = String::from("workflow big {\n    agent m { kind = \"mock\" }\n");
    for phase in 0..3 {
        let _ = writeln!(text, "    phase p{phase} {{");
        for i in 0..3000 {
            let _ = match i % 7 {
                0 => writeln!(
                    text,
                    "        task t{i} on m {{ prompt = \"\"\"\n        task fake{i} on m\n\"\"\" }}"
                ),
                // A piece started here parses, and closes the phase early.
                1 => writeln!(text, "        /*\n        task fake{i} on m\n    }}\n        */"),
                2 => writeln!(
                    text,
                    "        task t{i} on m {{ when {{ let s = \"{{\";\n        task == 1 }} }}"
                ),
                3 => writeln!(text, "        task t{i} on m,\n        task u{i} on m after t{i}"),
                4 => writeln!(text, "        gate {{ true }}"),
                _ => writeln!(text, "        task t{i} on m {{\n        retries = 1 }}"),
            };
        }
        text.push_str("    }\n");
    }
    text.push_str("}\n");
    let whole = super::parse_whole(FileId(0), &text);
    assert!(whole.is_ok(), "{:?}", whole.err());
    // The phases are cut, and some cuts fall on lines where no task starts.
    let mut fake = 0;
    for (at, _) in text.match_indices("    phase p") {
        let items = at + text[at..].find('{').unwrap() + 1;
        for parts in [2, 3, 4, 8] {
            let split = Split {
                min_bytes: 64 * 1024,
                min_bodies: 0,
                parts,
            };
            let cuts = super::stream::cuts(&text, items, split);
            assert_eq!(cuts.len(), parts - 1, "{parts} pieces");
            fake += cuts
                .iter()
                .filter(|&&c| {
                    text[c..].starts_with("task fake") || text[c..].starts_with("task ==")
                })
                .count();
        }
    }
    assert!(fake > 0, "no cut fell where no task starts");
    for parts in [2, 3, 4, 8] {
        let split = Split {
            min_bytes: 64 * 1024,
            min_bodies: 0,
            parts,
        };
        let pieces = super::stream::parse_split(FileId(0), &text, split);
        assert_eq!(pieces.ok_or(Vec::new()), whole, "{parts} pieces");
    }
}

/// The task lines [`super::stream::simple_task`] reads without pest, each compared with what
/// the grammar's `task` rule and the builder make of it: the same `Task`, spans included, and
/// the same end. Lines it must leave to the grammar give `None`.
#[test]
fn a_simple_task_line_reads_as_the_grammar_reads_it() {
    use pest::Parser as _;
    let taken = [
        "task a on m",
        "task a on m\n  task b on m",
        "task a on m after x\n  task b on m",
        "task a on m after x, y  \n  task b",
        "task a on m after x ,\n y , z\n}",
        "task a on m   \n}",
        "task a on m, task b on m",
        "task\ta\ton\tm\tafter\tb\r\n}",
        "task on on on after after",
        "task task on after after task, on",
        "task a on m afterwards",
        "task a on m after b,c,d,e\n        task",
        "task _x9 on _m0 after _1",
        "task a on m x = 1",
        "task a\n on\n m\n after\n b\n ,\n c",
    ];
    let declined = [
        "task a on m // trailing comment\n}",
        "task a on m /* c */ after b",
        "task a on m { prompt = \"x\" }",
        "task a on m after b {}",
        "task a on pool.m",
        "task a on workflow \"child.cond\"",
        "task a on workflow",
        "task a on m after b,",
        "task a on m after b, }",
        "task a on m after",
        "task é on m",
        "task a on mé",
        "task a on m \u{FEFF}",
        "task a on 9m",
        "task-a on m",
        "tasks a on m",
        "task a b",
    ];
    for line in taken {
        let (fast, end) = super::stream::simple_task(FileId(0), line, 0)
            .unwrap_or_else(|| panic!("{line:?} is left to the grammar"));
        let pair = super::CondParser::parse(super::Rule::task, line)
            .unwrap_or_else(|e| panic!("{line:?} does not parse: {e}"))
            .next()
            .unwrap();
        assert_eq!(end, pair.as_span().end(), "where {line:?} ends");
        let mut b = super::build::Builder::new(FileId(0));
        let built = b.phase_item(pair);
        assert_eq!(
            super::ast::PhaseItem::Task(Box::new(fast)),
            built,
            "{line:?}"
        );
    }
    for line in declined {
        assert!(
            super::stream::simple_task(FileId(0), line, 0).is_none(),
            "{line:?} should be left to the grammar"
        );
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
    /// Phases of task lines built from names, keywords, blanks, commas, comments, bodies and
    /// stray characters: the walk (which reads simple task lines without pest) and the whole
    /// parse agree, or the walk declines.
    #[test]
    fn task_lines_read_without_pest_agree_with_the_whole_parse(
        lines in proptest::collection::vec(
            proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just("task".to_string()),
                    proptest::strategy::Just("on".to_string()),
                    proptest::strategy::Just("after".to_string()),
                    proptest::strategy::Just("workflow".to_string()),
                    "[a-z_][a-z0-9_]{0,3}",
                    "[ \t\n,{}./*é\"=]{1,2}",
                ],
                1..10,
            ),
            1..8,
        ),
        sep in "[ \t\n]{1,3}",
    ) {
        let mut text = String::from("workflow w {\n  agent m { kind = \"mock\" }\n  phase p {\n");
        for words in &lines {
            text.push_str("    task ");
            text.push_str(&words.join(&sep));
            text.push('\n');
        }
        text.push_str("  }\n}\n");
        let whole = super::parse_whole(FileId(0), &text);
        if let Some(streamed) = super::stream::parse(FileId(0), &text) {
            proptest::prop_assert_eq!(Ok(streamed), whole);
        }
    }
}

/// A large phase is cut for threads only when enough of its items have bodies (which pest
/// parses); a phase of simple task lines, however long, is read on one thread.
#[test]
fn a_large_phase_is_cut_only_when_many_of_its_items_have_bodies() {
    use std::fmt::Write as _;
    let phase = |bodies: bool| {
        let mut text =
            String::from("workflow w {\n    agent m { kind = \"mock\" }\n    phase p {\n");
        for i in 0..4000 {
            if bodies {
                let _ = writeln!(text, "        task t{i} on m {{ retries = 1 }}");
            } else {
                let _ = writeln!(text, "        task t{i} on m after a, b, c, d, e");
            }
        }
        text.push_str("    }\n}\n");
        let items = text.find("phase p {").unwrap() + "phase p {".len();
        (text, items)
    };
    let split = Split {
        min_bytes: 64 * 1024,
        min_bodies: 1_000,
        parts: 2,
    };
    let (simple, at) = phase(false);
    assert!(simple.len() > 128 * 1024);
    assert!(super::stream::cuts(&simple, at, split).is_empty());
    let (bodies, at) = phase(true);
    assert_eq!(super::stream::cuts(&bodies, at, split).len(), 1);
    // Either way the pieces parse to the same tree as one walk.
    for text in [simple, bodies] {
        let whole = super::parse_whole(FileId(0), &text);
        let pieces = super::stream::parse_split(FileId(0), &text, split);
        assert_eq!(pieces.ok_or(Vec::new()), whole);
    }
}
