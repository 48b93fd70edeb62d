//! Reading `conductor.toml` and the environment: what is accepted, and what is refused with which message.

use super::*;

fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    std::fs::write(&path, text).unwrap();
    let wf = dir.path().join("wf.cond");
    Config::discover(
        None,
        &wf,
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
}

#[test]
fn reads_providers_with_defaults() {
    let c = load(
        "[providers.default]\nkind = \"openai\"\nmodel = \"gpt-4o-mini\"\n\
         [providers.local]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:11434/v1/\"\n\
         [providers.claude]\nkind = \"anthropic\"\nmodel = \"claude-sonnet-4-5\"\n",
        &[],
    )
    .unwrap();
    let d = &c.providers["default"];
    assert_eq!(d.base_url, "https://api.openai.com/v1");
    assert_eq!(d.max_tokens_field, "max_completion_tokens");
    assert_eq!(c.providers["local"].max_tokens_field, "max_tokens");
    assert_eq!(d.api_key_env.as_deref(), Some("OPENAI_API_KEY"));
    let local = &c.providers["local"];
    assert_eq!(local.base_url, "http://127.0.0.1:11434/v1");
    assert_eq!(local.api_key_env, None);
    assert_eq!(
        c.providers["claude"].api_key_env.as_deref(),
        Some("ANTHROPIC_API_KEY")
    );
}

#[test]
fn environment_overrides_and_creates_providers() {
    let c = load(
        "[providers.my-llm]\nkind = \"replay\"\ncassette = \"a.json\"\n",
        &[
            ("CONDUCTOR_PROVIDERS_MY_LLM_KIND", "openai"),
            (
                "CONDUCTOR_PROVIDERS_MY_LLM_BASE_URL",
                "http://127.0.0.1:9/v1",
            ),
            ("CONDUCTOR_PROVIDERS_MY_LLM_API_KEY_ENV", "MY_KEY"),
            ("CONDUCTOR_PROVIDERS_OTHER_KIND", "anthropic"),
            ("CONDUCTOR_PROVIDERS_OTHER_MAX_TOKENS", "99"),
            ("UNRELATED", "x"),
        ],
    )
    .unwrap();
    let p = &c.providers["my-llm"];
    assert_eq!(p.kind, ProviderKind::Openai);
    assert_eq!(p.base_url, "http://127.0.0.1:9/v1");
    assert_eq!(p.api_key_env.as_deref(), Some("MY_KEY"));
    assert_eq!(c.providers["other"].max_tokens, Some(99));
}

#[test]
fn reads_prices_by_model_with_a_fallback() {
    let c = load(
        "[providers.default]\nkind = \"openai\"\n\
         [providers.default.prices]\n\
         \"gpt-4o-mini\" = { input = 0.15, output = 0.6, cached_input = 0.075 }\n\
         \"*\" = { input = 2, output = 8 }\n",
        &[],
    )
    .unwrap();
    let p = c.price("default", "gpt-4o-mini").unwrap();
    assert_eq!((p.input, p.output, p.cached_input), (0.15, 0.6, 0.075));
    let other = c.price("default", "gpt-5").unwrap();
    assert_eq!(
        other.cached_input, 2.0,
        "cached input costs the input price by default"
    );
    assert_eq!(c.price("other", "gpt-4o-mini"), None);
    let e = load(
        "[providers.default]\nkind = \"openai\"\n[providers.default.prices]\n\
         m = { input = -1, output = 1 }\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("the input price of `m` is -1"), "{e}");
    let e = load(
        "[providers.default]\nkind = \"openai\"\n[providers.default.prices]\n\
         m = { input = 1, ouput = 1 }\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("ouput"), "{e}");
}

#[test]
fn refuses_keys_in_files_and_bad_values() {
    let e = load(
        "[providers.default]\nkind = \"openai\"\napi_key = \"sk-secret\"\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("api_key_env"), "{e}");
    assert!(!e.contains("sk-secret"), "{e}");
    let e = load("[providers.default]\nkind = \"gpt\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown kind `gpt`"), "{e}");
    let e = load("[providers.default]\nkind = \"replay\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs `cassette"), "{e}");
    let e = load("[providers.default\nkind = 1", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("conductor.toml") && e.contains("line 1"), "{e}");
    // A misspelt key field: the error names the field and place, never the line's text.
    let e = load(
        "[providers.default]\nkind = \"openai\"\napikey = \"sk-planted-9d2f\"\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("line 3") && e.contains("apikey"), "{e}");
    assert!(!e.contains("sk-planted-9d2f"), "{e}");
    let e = load(
        "[providers.default]\nkind = \"openai\"\nbase_url = \"https://u:sk-x@h/v1\"\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("must not carry credentials"), "{e}");
    let e = load("", &[("CONDUCTOR_PROVIDERS_X_SPEED", "1")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("CONDUCTOR_PROVIDERS_X_SPEED"), "{e}");
}
