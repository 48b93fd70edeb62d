//! `--json`: one JSON object per line for every event; the last line is the final run state.

use std::io::Write;

use crate::exec::Observer;
use crate::model::{Event, RunState};

/// Lines are buffered and written out after each committed batch, so a reader sees an event
/// only once it is durable, and a batch costs one write, not one per line.
pub struct JsonLines<W: Write + Send> {
    out: std::io::BufWriter<W>,
}

impl<W: Write + Send> JsonLines<W> {
    pub fn new(out: W) -> JsonLines<W> {
        JsonLines {
            out: std::io::BufWriter::with_capacity(64 * 1024, out),
        }
    }
}

impl<W: Write + Send> Observer for JsonLines<W> {
    fn event(&mut self, _event: &Event, _state: &RunState) {}

    fn wants_json(&self) -> bool {
        true
    }

    fn json_line(&mut self, line: &str) {
        let _ = self.out.write_all(line.as_bytes());
        let _ = self.out.write_all(b"\n");
    }

    fn batch_end(&mut self) {
        let _ = self.out.flush();
    }

    fn finished(&mut self, state: &RunState) {
        // Straight into the buffer: the state of a 100k-task run is a 30 MB line, and building
        // it as one string first doubled the run's peak memory at its very end. The view's
        // types always serialise (string keys, no custom errors).
        if serde_json::to_writer(&mut self.out, &state.view()).is_ok() {
            let _ = self.out.write_all(b"\n");
        }
        let _ = self.out.flush();
    }
}
