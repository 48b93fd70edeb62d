//! What an attempt leaves besides its result, as it happens: the model calls it made (so a
//! stopped attempt still has its tokens counted), the budgets' gate its calls go through, and
//! the output its program printed — kept
//! bounded (the head and the tail of each stream, with a mark for what was cut), handed to
//! the store piece by piece while the attempt runs, and its tail kept for the attempt's event.

use std::sync::{Arc, Mutex, MutexGuard};

use super::gate::{CallAsk, CallGate, CallOutcome, Reservation};
use crate::model::{LlmCall, LogChunk, LogStream, OutputTail, Spend, TaskError};

/// Bytes of each stream kept from its start, and from its end.
pub const LOG_HEAD: usize = 64 * 1024;
pub const LOG_TAIL: usize = 64 * 1024;
/// Bytes of each stream's end kept in the attempt's event.
pub const EVENT_TAIL: usize = 4 * 1024;

/// Shared between an attempt's agent and the worker that runs it.
#[derive(Clone, Default)]
pub struct Trace {
    inner: Arc<Mutex<Inner>>,
    /// Where model calls are reserved and settled, when the run has budgets.
    gate: Option<Arc<dyn CallGate>>,
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trace")
            .field("inner", &self.inner)
            .field("gate", &self.gate.is_some())
            .finish()
    }
}

#[derive(Debug, Default)]
struct Inner {
    calls: Vec<LlmCall>,
    /// The worst case of calls reserved and not settled yet, and of calls cut off.
    open: Spend,
    cut_off: Spend,
    streams: [Stream; 2],
    /// Pieces not yet handed to the store.
    pending: Vec<LogChunk>,
    seq: u32,
}

#[derive(Debug, Default)]
struct Stream {
    total: usize,
    /// The end of the stream past its head, at most [`LOG_TAIL`] bytes.
    tail: Vec<u8>,
    /// Bytes cut between the head and the tail.
    cut: usize,
    /// The last [`EVENT_TAIL`] bytes, whatever part they were in.
    last: Vec<u8>,
}

fn index(stream: LogStream) -> usize {
    match stream {
        LogStream::Stderr => 1,
        _ => 0,
    }
}

impl Trace {
    /// A trace whose model calls go through `gate`.
    pub fn with_gate(gate: Arc<dyn CallGate>) -> Trace {
        Trace {
            inner: Arc::default(),
            gate: Some(gate),
        }
    }

    /// The budgets' gate, when the run has budgets.
    pub fn gate(&self) -> Option<&Arc<dyn CallGate>> {
        self.gate.as_ref()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves a model call's worst case, when the run has budgets (`None`: it has none).
    /// The trace keeps what is reserved and not settled, and what was cut off, for the
    /// attempt's event.
    pub async fn reserve(&self, ask: &CallAsk) -> Option<Result<Reservation, TaskError>> {
        let gate = self.gate.as_ref()?;
        let r = match gate.reserve(ask).await {
            Ok(r) => r,
            Err(e) => return Some(Err(e)),
        };
        let worst = r.worst();
        {
            let mut i = self.lock();
            i.open = i.open.plus(worst);
        }
        let inner = self.inner.clone();
        Some(Ok(r.also(move |outcome| {
            let mut i = inner.lock().unwrap_or_else(|e| e.into_inner());
            i.open = i.open.minus(worst);
            if *outcome == CallOutcome::CutOff {
                i.cut_off = i.cut_off.plus(worst);
            }
        })))
    }

    /// Whether a refused call means only that the attempt's own allowance is used up.
    pub fn allowance(&self) -> bool {
        self.gate.as_ref().is_some_and(|g| g.allowance())
    }

    /// What the attempt's calls that got no reply may have spent: those cut off, and those
    /// still running (the attempt is being stopped).
    pub fn cut_off(&self) -> Spend {
        let i = self.lock();
        i.cut_off.plus(i.open)
    }

    pub fn push_call(&self, call: LlmCall) {
        self.lock().calls.push(call);
    }

    pub fn take_calls(&self) -> Vec<LlmCall> {
        std::mem::take(&mut self.lock().calls)
    }

    /// A program printed `bytes` on `stream`.
    pub fn output(&self, stream: LogStream, bytes: &[u8]) {
        let mut inner = self.lock();
        let s = &mut inner.streams[index(stream)];
        let head = LOG_HEAD.saturating_sub(s.total).min(bytes.len());
        s.total += bytes.len();
        keep_last(&mut s.last, bytes, EVENT_TAIL);
        let rest = &bytes[head..];
        if !rest.is_empty() {
            let before = s.tail.len() + rest.len();
            keep_last(&mut s.tail, rest, LOG_TAIL);
            s.cut += before.saturating_sub(LOG_TAIL);
        }
        if head > 0 {
            let seq = inner.seq;
            inner.seq += 1;
            inner.pending.push(LogChunk {
                seq,
                stream,
                data: bytes[..head].to_vec(),
            });
        }
    }

    /// The pieces printed since the last call, for the store.
    pub fn take_pending(&self) -> Vec<LogChunk> {
        std::mem::take(&mut self.lock().pending)
    }

    /// The attempt is over: the remaining pieces (each stream's tail, after a mark of what was
    /// cut) and the tails for its event.
    pub fn finish(&self) -> (Vec<LogChunk>, OutputTail) {
        let mut inner = self.lock();
        let mut chunks = std::mem::take(&mut inner.pending);
        for stream in [LogStream::Stdout, LogStream::Stderr] {
            let (tail, cut) = {
                let s = &mut inner.streams[index(stream)];
                (std::mem::take(&mut s.tail), s.cut)
            };
            if cut > 0 {
                let seq = inner.seq;
                inner.seq += 1;
                chunks.push(LogChunk {
                    seq,
                    stream: LogStream::Marker,
                    data: format!("\n[… {cut} bytes of {} cut …]\n", stream.as_str()).into_bytes(),
                });
            }
            if !tail.is_empty() {
                let seq = inner.seq;
                inner.seq += 1;
                chunks.push(LogChunk {
                    seq,
                    stream,
                    data: tail,
                });
            }
        }
        let text = |i: usize| String::from_utf8_lossy(&inner.streams[i].last).into_owned();
        let tail = OutputTail {
            stdout: text(0),
            stderr: text(1),
        };
        (chunks, tail)
    }
}

/// Appends `bytes` to `buf`, keeping its last `limit` bytes.
fn keep_last(buf: &mut Vec<u8>, bytes: &[u8], limit: usize) {
    if bytes.len() >= limit {
        buf.clear();
        buf.extend_from_slice(&bytes[bytes.len() - limit..]);
        return;
    }
    buf.extend_from_slice(bytes);
    if buf.len() > limit {
        let excess = buf.len() - limit;
        buf.drain(..excess);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_goes_out_live_the_tail_at_the_end_and_the_cut_is_marked() {
        let t = Trace::default();
        let block = vec![b'x'; 32 * 1024];
        for _ in 0..10 {
            t.output(LogStream::Stdout, &block); // 320 KiB in all
        }
        t.output(LogStream::Stderr, b"boom\n");
        let live: usize = t.take_pending().iter().map(|c| c.data.len()).sum();
        assert_eq!(
            live,
            LOG_HEAD + 5,
            "the head of stdout and all of stderr went out live"
        );
        let (rest, tail) = t.finish();
        let marker = rest.iter().find(|c| c.stream == LogStream::Marker).unwrap();
        let cut = 320 * 1024 - LOG_HEAD - LOG_TAIL;
        assert_eq!(
            String::from_utf8_lossy(&marker.data),
            format!("\n[… {cut} bytes of stdout cut …]\n")
        );
        let kept_tail: usize = rest
            .iter()
            .filter(|c| c.stream == LogStream::Stdout)
            .map(|c| c.data.len())
            .sum();
        assert_eq!(kept_tail, LOG_TAIL);
        assert_eq!(tail.stderr, "boom\n");
        assert_eq!(tail.stdout.len(), EVENT_TAIL);
        let seqs: Vec<u32> = rest.iter().map(|c| c.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "pieces are in order");
    }
}
