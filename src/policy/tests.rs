use super::*;

#[test]
fn engine_provides_helpers_and_standard_functions() {
    let host = PolicyHost::get();
    for name in [
        "pass",
        "fail",
        "allow",
        "deny",
        "ok",
        "critical",
        "count_status",
        "len",
        "abs",
    ] {
        assert!(host.provides(name), "engine should provide `{name}`");
    }
    assert!(!host.provides("open_file"));
    assert!(!host.provides("eval"));
}
