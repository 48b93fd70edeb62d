//! The application layer: what the command line (and later the dashboard) calls. It opens
//! stores, lays out workspaces, holds runs, loads and checks workflows, starts and resumes
//! runs, and cleans up — returning typed errors; it prints nothing.

mod error;
mod inspect;
mod load;
mod runs;
pub mod stores;
pub mod workspace;

pub use error::AppError;
pub use inspect::{export_artifacts, find_run, gc, load_run, parse_age};
pub use load::{load, provider_warnings, Loaded};
pub use runs::{
    parse_decision, parse_params, resume, start, Prepared, Resume, Start, Stopped, Watch,
};
pub use stores::StoreSpec;
