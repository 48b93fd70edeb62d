//! What executing calls needs in this process: the workflow's folder and the run's workspace,
//! the providers (built once, with keys read from the environment here and nowhere else), one
//! HTTP client, and compiled script modules.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use super::llm::{self, Provider, Recorder};
use crate::check::ir::{AgentKind, Workflow};
use crate::config::Config;
use crate::model::{ErrorCode, TaskError};
use crate::policy::ModuleSet;

/// How to build an [`AgentEnv`].
#[derive(Clone, Default)]
pub struct AgentEnvOptions {
    /// Where relative paths (a shell `workdir`) resolve from: the workflow's folder.
    pub base: PathBuf,
    /// The run's working folder: shell agents start there, files are written there.
    pub workspace: Option<PathBuf>,
    pub config: Arc<Config>,
    /// `--record`: every provider exchange is written to this cassette.
    pub recorder: Option<Arc<Recorder>>,
    /// Secret params' values, redacted in what programs print.
    pub redactor: Arc<crate::secrets::Redactor>,
    /// Environment variables secret params come from: programs do not see them.
    pub secret_env: Vec<String>,
    /// Runs child-run tasks (`on workflow "f.cond"`); `None` where they cannot run.
    pub children: Option<Arc<dyn super::child::ChildRunner>>,
}

/// Why a workflow's agents cannot run here.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    #[error("agent `{agent}`: {cause}")]
    Provider {
        agent: String,
        cause: llm::ProviderError,
    },
    #[error("agent `{agent}` names no `model`, and provider `{provider}` sets none")]
    NoModel { agent: String, provider: String },
    #[error("cannot set up the HTTP client: {0}")]
    Http(String),
}

/// The resources of the agents of one process.
pub struct AgentEnv {
    pub(crate) base: PathBuf,
    pub(crate) workspace: Option<PathBuf>,
    pub(crate) config: Arc<Config>,
    recorder: Option<Arc<Recorder>>,
    /// Environment variables programs must not see: the providers' API keys (a shell task may
    /// run code a model wrote, and its output is stored).
    pub(crate) scrub: Arc<[String]>,
    pub(crate) redactor: Arc<crate::secrets::Redactor>,
    providers: Mutex<HashMap<String, Arc<dyn Provider>>>,
    http: OnceLock<Result<reqwest::Client, String>>,
    scripts: Mutex<HashMap<u64, Arc<ModuleSet>>>,
    pub(crate) children: Option<Arc<dyn super::child::ChildRunner>>,
}

impl AgentEnv {
    pub fn new(options: AgentEnvOptions) -> AgentEnv {
        if let Some(r) = &options.recorder {
            r.redact_with(options.redactor.clone());
        }
        let scrub = options
            .config
            .providers
            .values()
            .filter_map(|p| p.api_key_env.clone())
            .chain(options.secret_env.iter().cloned())
            .collect();
        AgentEnv {
            base: options.base,
            workspace: options.workspace,
            config: options.config,
            recorder: options.recorder,
            scrub,
            redactor: options.redactor,
            providers: Mutex::new(HashMap::new()),
            http: OnceLock::new(),
            scripts: Mutex::new(HashMap::new()),
            children: options.children,
        }
    }

    /// Checks that every pool of `wf` can run here — each llm pool's provider is configured,
    /// its key is set and a model is known — and keeps the workflow's compiled modules for
    /// its script agents. A dry run calls no agent, so it needs none of this.
    pub fn prepare_for(&self, wf: &Workflow, dry_run: bool) -> Result<(), SetupError> {
        self.lock_scripts().insert(
            super::script::modules_hash(&wf.module_sources()),
            Arc::new(wf.module_set.clone()),
        );
        if dry_run {
            return Ok(());
        }
        for agent in &wf.agents {
            match &agent.kind {
                AgentKind::Llm(l) => {
                    self.provider_named(&l.provider)
                        .map_err(|cause| SetupError::Provider {
                            agent: agent.name.clone(),
                            cause,
                        })?;
                    if llm::model_for(l, &self.config).is_none() {
                        return Err(SetupError::NoModel {
                            agent: agent.name.clone(),
                            provider: l.provider.clone(),
                        });
                    }
                }
                AgentKind::Http(_) => {
                    self.http_client()
                        .map_err(|e| SetupError::Http(e.message))?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn provider_named(&self, name: &str) -> Result<Arc<dyn Provider>, llm::ProviderError> {
        let mut providers = self.providers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = providers.get(name) {
            return Ok(p.clone());
        }
        let p = llm::provider(name, &self.config, self.recorder.as_ref())?;
        providers.insert(name.to_string(), p.clone());
        Ok(p)
    }

    /// The provider of this name, built on first use.
    pub(crate) fn provider(&self, name: &str) -> Result<Arc<dyn Provider>, TaskError> {
        self.provider_named(name)
            .map_err(|e| TaskError::fatal(ErrorCode::Fatal, e.to_string()))
    }

    /// The HTTP client of http agents.
    pub(crate) fn http_client(&self) -> Result<reqwest::Client, TaskError> {
        self.http
            .get_or_init(|| super::http::client(None))
            .clone()
            .map_err(|e| TaskError::fatal(ErrorCode::Fatal, e))
    }

    fn lock_scripts(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ModuleSet>>> {
        self.scripts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The compiled modules of these sources, compiled on first use.
    pub(crate) fn modules(&self, sources: &[Arc<str>]) -> Result<Arc<ModuleSet>, TaskError> {
        let key = super::script::modules_hash(sources);
        if let Some(m) = self.lock_scripts().get(&key) {
            return Ok(m.clone());
        }
        let mut compiled = Vec::with_capacity(sources.len());
        for s in sources {
            let m = crate::policy::PolicyHost::get()
                .compile_module(s)
                .map_err(|p| {
                    TaskError::fatal(
                        ErrorCode::InvalidInput,
                        format!("a script module does not compile: {}", p.message),
                    )
                })?;
            compiled.push(m);
        }
        let set = Arc::new(ModuleSet::new(&compiled));
        self.lock_scripts().insert(key, set.clone());
        Ok(set)
    }
}
