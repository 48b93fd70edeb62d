//! Embedding Conductor in a Rust program: load and check a workflow, plan it, run it with
//! params, a store and an observer, and read the final state.
//!
//!     cargo run --example embed

use std::path::Path;
use std::sync::Arc;

use conductor::exec::{run, RunOptions};
use conductor::model::RunStatus;
use conductor::report::JsonLines;
use conductor::store::{MemoryStore, Store};
use conductor::{check_file, SourceMap};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = Path::new("examples/mock_pipeline.cond");
    let mut map = SourceMap::new();
    let checked = check_file(&mut map, path);
    let Some(workflow) = checked.workflow else {
        // The same rendering `conductor check` prints.
        eprint!("{}", conductor::diag::render(&map, &checked.diags, false));
        anyhow::bail!("{} does not check", path.display());
    };
    let plan = conductor::plan::plan(&workflow)?;

    let store = Arc::new(MemoryStore::new());
    let mut options = RunOptions::new(store.clone());
    options.file = path.display().to_string();
    // Every event as a JSON line on stderr, as `conductor run --json` prints them on stdout.
    options
        .observers
        .push(Box::new(JsonLines::new(std::io::stderr())));

    let run_id = options.run_id.clone();
    let state = run(Arc::new(workflow), Arc::new(plan), options).await?;

    println!(
        "run {} ended {}",
        state.workflow_id,
        state.status().as_str()
    );
    for task in &state.tasks {
        println!(
            "  {:<10} {:<10} {} attempt(s)",
            task.task,
            task.status.as_str(),
            task.attempts
        );
    }
    println!("{} events recorded", store.events(&run_id)?.len());
    anyhow::ensure!(
        state.status() == RunStatus::Completed,
        "the run did not complete"
    );
    Ok(())
}
