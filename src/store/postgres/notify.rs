//! Wake-ups over LISTEN/NOTIFY: new events of a run (`events --follow`), results for a run's
//! scheduler, new work for workers. One connection per process listens, started on first use
//! and reconnected after an outage. Notifications only make things faster: everyone who waits
//! also polls, so a lost notification (or a listener that is down) costs latency, not
//! correctness.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;

use super::conn::Db;
use crate::model::RunId;

pub(super) const EVENTS: &str = "conductor_events";
pub(super) const RESULTS: &str = "conductor_results";
pub(super) const WORK: &str = "conductor_work";

#[derive(Default)]
struct Registry {
    /// Per channel, per payload (a run id; empty for work).
    waiting: HashMap<(&'static str, String), Arc<Notify>>,
}

pub(super) struct Signals {
    db: Arc<Db>,
    started: OnceLock<()>,
    registry: Arc<Mutex<Registry>>,
}

impl Signals {
    pub fn new(db: Arc<Db>) -> Signals {
        Signals {
            db,
            started: OnceLock::new(),
            registry: Arc::default(),
        }
    }

    /// The wake-up for one channel and payload, the listener started if it is not yet.
    pub fn get(&self, channel: &'static str, payload: &str) -> Arc<Notify> {
        self.started.get_or_init(|| {
            self.db
                .handle()
                .spawn(listen(self.db.clone(), self.registry.clone()));
        });
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .waiting
            .entry((channel, payload.to_string()))
            .or_default()
            .clone()
    }

    /// Blocks until new events of `run` are announced, or `timeout`.
    pub fn wait_events(&self, run: &RunId, timeout: Duration) {
        let signal = self.get(EVENTS, run.as_str());
        let _ = self.db.block(async move {
            let _ = tokio::time::timeout(timeout, signal.notified()).await;
            Ok(())
        });
    }
}

async fn listen(db: Arc<Db>, registry: Arc<Mutex<Registry>>) {
    loop {
        if let Err(e) = listen_once(&db, &registry).await {
            tracing::debug!("the notification listener stopped: {e}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn listen_once(
    db: &Arc<Db>,
    registry: &Arc<Mutex<Registry>>,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = db.config.connect(tokio_postgres::NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx
                        .send((n.channel().to_string(), n.payload().to_string()))
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {EVENTS}; LISTEN {RESULTS}; LISTEN {WORK}"))
        .await?;
    // Whatever was announced while nobody listened is looked for now.
    wake_all(registry);
    while let Some((channel, payload)) = rx.recv().await {
        let registry = registry.lock().unwrap_or_else(|e| e.into_inner());
        let key_channel = match channel.as_str() {
            EVENTS => EVENTS,
            RESULTS => RESULTS,
            _ => WORK,
        };
        let payload = if key_channel == WORK { "" } else { &payload };
        if let Some(n) = registry.waiting.get(&(key_channel, payload.to_string())) {
            n.notify_one();
        }
    }
    driver.abort();
    wake_all(registry);
    Ok(())
}

fn wake_all(registry: &Mutex<Registry>) {
    for n in registry
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .waiting
        .values()
    {
        n.notify_one();
    }
}
