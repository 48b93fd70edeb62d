//! `--json`: one JSON object per line for every event; the last line is the final run state.

use std::io::Write;

use crate::exec::Observer;
use crate::model::{Event, RunState};

pub struct JsonLines<W: Write + Send> {
    out: W,
}

impl<W: Write + Send> JsonLines<W> {
    pub fn new(out: W) -> JsonLines<W> {
        JsonLines { out }
    }
}

impl<W: Write + Send> Observer for JsonLines<W> {
    fn event(&mut self, event: &Event, _state: &RunState) {
        if let Ok(line) = serde_json::to_string(event) {
            let _ = writeln!(self.out, "{line}");
        }
    }

    fn finished(&mut self, state: &RunState) {
        if let Ok(line) = serde_json::to_string(&state.view()) {
            let _ = writeln!(self.out, "{line}");
        }
        let _ = self.out.flush();
    }
}
