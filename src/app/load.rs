//! Loading a workflow to run it: read, check, plan.

use std::path::Path;

use super::AppError;
use crate::check::ir::Workflow;
use crate::diag::Diagnostic;
use crate::plan::Plan;
use crate::source::SourceMap;

/// A checked, planned workflow, and the warnings its check gave.
pub(crate) struct Loaded {
    pub map: SourceMap,
    pub workflow: Workflow,
    pub plan: Plan,
    pub warnings: Vec<Diagnostic>,
    /// The file's text, stored with the run.
    pub source: String,
}

/// Reads, checks and plans a workflow file.
pub(crate) fn load(path: &Path) -> Result<Loaded, AppError> {
    let mut map = SourceMap::new();
    let text = match crate::check::read_text(path) {
        Ok(text) => text,
        Err(diag) => {
            return Err(AppError::Invalid {
                map: Box::new(map),
                diags: vec![diag],
            })
        }
    };
    let checked = crate::check::check_source(&mut map, &path.display().to_string(), path, &text);
    let Some(workflow) = checked.workflow else {
        return Err(AppError::Invalid {
            map: Box::new(map),
            diags: checked.diags,
        });
    };
    let plan = crate::plan::plan(&workflow).map_err(|e| AppError::Plan(e.to_string()))?;
    crate::compiled();
    Ok(Loaded {
        map,
        workflow,
        plan,
        warnings: checked.diags,
        source: text,
    })
}

/// Warnings for llm agents whose provider the project configuration does not define (or a
/// configuration that does not load): `conductor run` would stop before starting.
pub(crate) fn provider_warnings(
    wf: &Workflow,
    explicit: Option<&std::path::Path>,
    path: &std::path::Path,
) -> Vec<Diagnostic> {
    let llm: Vec<(&crate::check::ir::Agent, &str)> = wf
        .agents
        .iter()
        .filter_map(|a| match &a.kind {
            crate::check::ir::AgentKind::Llm(l) => Some((a, l.provider.as_str())),
            _ => None,
        })
        .collect();
    let Some((first, _)) = llm.first() else {
        return Vec::new();
    };
    let config = match crate::config::Config::from_process_env(explicit, path) {
        Ok(c) => c,
        Err(e) => {
            return vec![Diagnostic::warning(
                first.span,
                format!("the llm agents cannot run: {e}"),
            )]
        }
    };
    // One warning per missing provider, at the first agent that uses it.
    let mut missing: Vec<(&str, Vec<&crate::check::ir::Agent>)> = Vec::new();
    for (a, provider) in llm {
        if config.providers.contains_key(provider) {
            continue;
        }
        match missing.iter_mut().find(|(p, _)| *p == provider) {
            Some((_, agents)) => agents.push(a),
            None => missing.push((provider, vec![a])),
        }
    }
    let where_ = match &config.path {
        Some(p) => format!("`{}` does not define it", p.display()),
        None => "there is no conductor.toml beside the workflow (and no --config)".to_string(),
    };
    missing
        .into_iter()
        .map(|(provider, agents)| {
            let names: Vec<String> = agents.iter().map(|a| format!("`{}`", a.name)).collect();
            Diagnostic::warning(
                agents[0].span,
                format!(
                    "provider `{provider}` (used by {}) is not configured: {where_}",
                    names.join(", ")
                ),
            )
            .with_label("`conductor run` would stop before starting")
            .with_help(format!(
                "add [providers.{provider}] to conductor.toml beside the workflow (or give \
                 --config FILE){}; `--dry-run` needs no provider",
                crate::config::env_kind_var(provider)
                    .map(|v| format!(", or set {v}"))
                    .unwrap_or_default()
            ))
        })
        .collect()
}
