//! Run leases: which process drives a run, and at which epoch (its fencing token). Taking a
//! run bumps the epoch, so whatever the previous holder still tries to write is refused by the
//! check every append makes. A lease is renewed on a timer and by every append; it ends when
//! its holder lets go, or when its time runs out (a crashed or cut-off scheduler).

use std::sync::Arc;
use std::time::Duration;

use super::conn::{retrying, Failure};
use super::Inner;
use crate::model::RunId;
use crate::store::{RunLease, StoreError};

/// A run this process holds; let go when dropped.
pub(super) struct Held {
    inner: Arc<Inner>,
    run: RunId,
    epoch: u64,
    /// Dropping it stops the renewals.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl RunLease for Held {}

pub(super) fn acquire(inner: &Arc<Inner>, run: &RunId) -> Result<Held, StoreError> {
    let (i, id) = (inner.clone(), run.clone());
    let db = inner.db.clone();
    let epoch = inner
        .db
        .block(async move { retrying(&db, |db| take(db, i.clone(), id.clone())).await })?;
    let epoch = match epoch {
        Taken::Epoch(e) => e,
        // A new run: it is created already held, at epoch 1 (see `create_run`).
        Taken::NoRun => 1,
        Taken::HeldBy { owner, until } => {
            return Err(StoreError::Held {
                run: run.clone(),
                owner,
                until,
            })
        }
    };
    inner
        .leases
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(run.clone(), epoch);
    let (stop, stopped) = tokio::sync::oneshot::channel();
    inner
        .db
        .handle()
        .spawn(renew(inner.clone(), run.clone(), epoch, stopped));
    Ok(Held {
        inner: inner.clone(),
        run: run.clone(),
        epoch,
        _stop: stop,
    })
}

enum Taken {
    Epoch(u64),
    NoRun,
    HeldBy { owner: String, until: String },
}

async fn take(db: Arc<super::Db>, inner: Arc<Inner>, run: RunId) -> Result<Taken, Failure> {
    let client = db.pool.get().await?;
    let ttl = inner.lease_ttl.as_millis() as f64;
    let row = client
        .query_opt(
            "UPDATE runs SET owner = $2, epoch = epoch + 1,
                 lease_until = clock_timestamp() + $3 * interval '1 millisecond'
             WHERE id = $1 AND (owner IS NULL OR lease_until IS NULL
                                OR lease_until < clock_timestamp())
             RETURNING epoch",
            &[&run.as_str(), &inner.owner, &ttl],
        )
        .await?;
    if let Some(row) = row {
        return Ok(Taken::Epoch(row.get::<_, i64>(0) as u64));
    }
    let row = client
        .query_opt(
            "SELECT owner, epoch, to_char(lease_until AT TIME ZONE 'UTC',
                                          'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
             FROM runs WHERE id = $1",
            &[&run.as_str()],
        )
        .await?;
    Ok(match row {
        None => Taken::NoRun,
        // Our own take whose answer was lost with the connection.
        Some(r) if r.get::<_, Option<String>>(0).as_deref() == Some(inner.owner.as_str()) => {
            Taken::Epoch(r.get::<_, i64>(1) as u64)
        }
        Some(r) => Taken::HeldBy {
            owner: r.get::<_, Option<String>>(0).unwrap_or_default(),
            until: r.get::<_, Option<String>>(2).unwrap_or_default(),
        },
    })
}

/// Renews the lease every third of its time until stopped or lost.
async fn renew(
    inner: Arc<Inner>,
    run: RunId,
    epoch: u64,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let every = inner.lease_ttl / 3;
    let ttl = inner.lease_ttl.as_millis() as f64;
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = tokio::time::sleep(every) => {}
        }
        let renewed = async {
            let client = inner.db.pool.get().await.map_err(Failure::from)?;
            let n = client
                .execute(
                    "UPDATE runs SET lease_until = clock_timestamp() + $4 * interval '1 millisecond'
                     WHERE id = $1 AND owner = $2 AND epoch = $3",
                    &[&run.as_str(), &inner.owner, &(epoch as i64), &ttl],
                )
                .await
                .map_err(Failure::from)?;
            Ok::<u64, Failure>(n)
        };
        match renewed.await {
            Ok(0) => {
                tracing::warn!("run {run}: the lease at epoch {epoch} was taken over; this process writes nothing more of it");
                return;
            }
            Ok(_) => {}
            // An outage: the next renewal (or append) tries again; until the lease runs out
            // nobody else can take the run.
            Err(e) => tracing::warn!("run {run}: cannot renew the lease: {e:?}"),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        {
            let mut leases = self.inner.leases.lock().unwrap_or_else(|e| e.into_inner());
            if leases.get(&self.run) == Some(&self.epoch) {
                leases.remove(&self.run);
            }
        }
        // One try, no waiting out an outage: a lease nobody releases simply runs out.
        let (inner, run, epoch) = (self.inner.clone(), self.run.clone(), self.epoch as i64);
        let _ = self.inner.db.block(async move {
            let released = async {
                let client = inner.db.pool.get().await.map_err(Failure::from)?;
                client
                    .execute(
                        "UPDATE runs SET owner = NULL, lease_until = NULL
                         WHERE id = $1 AND owner = $2 AND epoch = $3",
                        &[&run.as_str(), &inner.owner, &epoch],
                    )
                    .await
                    .map_err(Failure::from)
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), released).await;
            Ok(())
        });
    }
}
