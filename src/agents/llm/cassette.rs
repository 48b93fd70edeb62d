//! Cassettes: provider exchanges recorded to a JSON file (`conductor run --record FILE`) and
//! answered from it by the `replay` provider, offline.
//!
//! An exchange is matched by role, task and request hash ([`ChatRequest::hash`]: the system
//! prompt and the messages). A request the cassette does not hold is a REPLAY_MISS naming the
//! task, the role, the hash and the start of the prompt.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ChatFuture, ChatReply, ChatRequest, Provider};
use crate::model::{ErrorCode, TaskError};

pub(super) const CASSETTE_VERSION: u32 = 1;

/// Why a cassette cannot be read or written, naming the file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CassetteError(pub String);

/// A recorded conversation turn: what was asked and what came back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    pub task: String,
    pub role: String,
    pub request_hash: String,
    /// The request as sent (model, system, messages, temperature, max_tokens), for reading.
    pub request: serde_json::Value,
    pub reply: ChatReply,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cassette {
    pub version: u32,
    pub exchanges: Vec<Exchange>,
}

impl Cassette {
    pub fn load(path: &Path) -> Result<Cassette, CassetteError> {
        let read =
            crate::files::read_limited(path, crate::limits::MAX_CASSETTE_SIZE).and_then(|b| {
                String::from_utf8(b).map_err(|_| std::io::Error::other("it is not UTF-8 text"))
            });
        let text = read.map_err(|e| {
            CassetteError(format!(
                "cannot read the cassette `{}`: {e}",
                path.display()
            ))
        })?;
        let cassette: Cassette = serde_json::from_str(&text).map_err(|e| {
            CassetteError(format!(
                "`{}` is not a cassette (a file `conductor run --record` writes): {e}",
                path.display()
            ))
        })?;
        if cassette.version != CASSETTE_VERSION {
            return Err(CassetteError(format!(
                "the cassette `{}` has version {}, this build reads version {CASSETTE_VERSION}",
                path.display(),
                cassette.version
            )));
        }
        Ok(cassette)
    }

    /// Writes the cassette whole, through a temporary file and a rename: a reader never sees
    /// half of it. Exchanges are sorted by task, role and hash, so recording the same run
    /// twice writes the same file, whatever order concurrent tasks finished in.
    pub fn save(&self, path: &Path) -> Result<(), CassetteError> {
        let mut sorted = self.clone();
        sorted.exchanges.sort_by(|a, b| {
            (&a.task, &a.role, &a.request_hash).cmp(&(&b.task, &b.role, &b.request_hash))
        });
        let text =
            serde_json::to_string_pretty(&sorted).map_err(|e| CassetteError(e.to_string()))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text + "\n")
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| {
                CassetteError(format!(
                    "cannot write the cassette `{}`: {e}",
                    path.display()
                ))
            })
    }
}

type Key = (String, String, String);

/// Answers from a cassette.
pub struct ReplayProvider {
    path: PathBuf,
    replies: HashMap<Key, ChatReply>,
    /// How many exchanges each task has, for the message of a miss.
    per_task: HashMap<String, usize>,
}

impl ReplayProvider {
    pub fn open(path: &Path) -> Result<ReplayProvider, CassetteError> {
        let cassette = Cassette::load(path)?;
        let mut per_task = HashMap::new();
        let mut replies = HashMap::new();
        for e in cassette.exchanges {
            *per_task.entry(e.task.clone()).or_insert(0) += 1;
            replies.insert((e.role, e.task, e.request_hash), e.reply);
        }
        Ok(ReplayProvider {
            path: path.to_path_buf(),
            replies,
            per_task,
        })
    }
}

impl Provider for ReplayProvider {
    fn complete<'a>(&'a self, req: &'a ChatRequest) -> ChatFuture<'a> {
        Box::pin(async move {
            let hash = req.hash();
            let key = (req.role.clone(), req.task.clone(), hash.clone());
            if let Some(reply) = self.replies.get(&key) {
                return Ok(reply.clone());
            }
            let last = req.messages.last().map_or("", |m| m.content.as_str());
            let excerpt: String = last.chars().take(160).collect();
            let known = self.per_task.get(&req.task).copied().unwrap_or(0);
            Err(TaskError::fatal(
                ErrorCode::ReplayMiss,
                format!(
                    "the cassette `{}` has no reply for task `{}` (role {}) with request hash \
                     {}; it holds {known} exchange(s) for this task, so the prompt, an upstream \
                     output or the system prompt differs from the recording. The request's last \
                     message begins: {:?}. Record again with `conductor run --record`.",
                    self.path.display(),
                    req.task,
                    req.role,
                    &hash[..16],
                    excerpt,
                ),
            ))
        })
    }

    fn replays(&self) -> bool {
        true
    }
}

/// Collects exchanges during a run and keeps the cassette file current after each one, so a
/// run that is stopped half way still leaves what it recorded.
pub struct Recorder {
    path: PathBuf,
    cassette: Mutex<Cassette>,
    /// Secret params' values, replaced before an exchange is written.
    redactor: Mutex<Option<Arc<crate::secrets::Redactor>>>,
}

impl Recorder {
    /// Starts recording to `path`; the file is written at the first exchange. An existing
    /// cassette is extended: a request recorded again replaces its earlier exchange. Two runs
    /// must not record to one file at the same time: each keeps its own copy.
    pub fn create(path: &Path) -> Result<Recorder, CassetteError> {
        let cassette = if path.exists() {
            Cassette::load(path)?
        } else {
            Cassette {
                version: CASSETTE_VERSION,
                exchanges: Vec::new(),
            }
        };
        // Fail now, not at the first exchange, when the folder is missing.
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !dir.is_dir() {
            return Err(CassetteError(format!(
                "cannot record to `{}`: the folder `{}` does not exist",
                path.display(),
                dir.display()
            )));
        }
        Ok(Recorder {
            path: path.to_path_buf(),
            cassette: Mutex::new(cassette),
            redactor: Mutex::new(None),
        })
    }

    /// Secret values to keep out of the cassette.
    pub(crate) fn redact_with(&self, redactor: Arc<crate::secrets::Redactor>) {
        *self.redactor.lock().unwrap_or_else(|e| e.into_inner()) = Some(redactor);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn record(&self, req: &ChatRequest, reply: &ChatReply) -> Result<(), CassetteError> {
        let exchange = Exchange {
            task: req.task.clone(),
            role: req.role.clone(),
            request_hash: req.hash(),
            request: json!({
                "model": req.model,
                "system": req.system,
                "messages": req.messages,
                "temperature": req.temperature,
                "max_tokens": req.max_tokens,
            }),
            reply: reply.clone(),
        };
        let exchange = match &*self.redactor.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(r) if !r.is_empty() => redact_exchange(r, exchange)?,
            _ => exchange,
        };
        let mut cassette = self.cassette.lock().unwrap_or_else(|e| e.into_inner());
        cassette.exchanges.retain(|e| {
            (&e.role, &e.task, &e.request_hash)
                != (&exchange.role, &exchange.task, &exchange.request_hash)
        });
        cassette.exchanges.push(exchange);
        cassette.save(&self.path)
    }
}

/// An exchange with secret values replaced (through its JSON: they may be anywhere in it).
fn redact_exchange(
    r: &crate::secrets::Redactor,
    exchange: Exchange,
) -> Result<Exchange, CassetteError> {
    let json = serde_json::to_string(&exchange).map_err(|e| CassetteError(e.to_string()))?;
    match r.redact(&json) {
        std::borrow::Cow::Borrowed(_) => Ok(exchange),
        std::borrow::Cow::Owned(clean) => serde_json::from_str(&clean).map_err(|_| {
            CassetteError("an exchange held a secret param's value that could not be redacted; it was not recorded".into())
        }),
    }
}

/// A provider whose successful exchanges are recorded.
pub(super) struct Recording {
    pub inner: Arc<dyn Provider>,
    pub recorder: Arc<Recorder>,
}

impl Provider for Recording {
    fn complete<'a>(&'a self, req: &'a ChatRequest) -> ChatFuture<'a> {
        Box::pin(async move {
            let reply = self.inner.complete(req).await?;
            // A cassette that cannot be written must not pass unnoticed: the attempt fails.
            self.recorder
                .record(req, &reply)
                .map_err(|e| TaskError::fatal(ErrorCode::Fatal, e.0))?;
            Ok(reply)
        })
    }

    fn replays(&self) -> bool {
        self.inner.replays()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_cassettes_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.json");
        let e = ReplayProvider::open(&missing).err().unwrap().to_string();
        assert!(
            e.contains("missing.json") && e.contains("cannot read"),
            "{e}"
        );
        let garbage = dir.path().join("garbage.json");
        std::fs::write(&garbage, b"\x00\xff{not json").unwrap();
        let e = ReplayProvider::open(&garbage).err().unwrap().to_string();
        assert!(e.contains("garbage.json") && e.contains("UTF-8"), "{e}");
        std::fs::write(&garbage, "{not json").unwrap();
        let e = ReplayProvider::open(&garbage).err().unwrap().to_string();
        assert!(
            e.contains("garbage.json") && e.contains("is not a cassette"),
            "{e}"
        );
        let future = dir.path().join("future.json");
        std::fs::write(&future, r#"{"version": 99, "exchanges": []}"#).unwrap();
        let e = ReplayProvider::open(&future).err().unwrap().to_string();
        assert!(e.contains("version 99"), "{e}");
        let e = Recorder::create(&dir.path().join("no/such/folder/c.json"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
    }
}
