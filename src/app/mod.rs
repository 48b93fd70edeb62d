//! The application layer: what the command line (and later the dashboard) calls. It opens
//! stores, lays out workspaces, holds runs, loads and checks workflows, starts and resumes
//! runs, and cleans up — returning typed errors; it prints nothing.

mod amend;
mod child;
mod error;
mod inspect;
mod load;
mod runs;
pub(crate) mod scheduler;
pub(crate) mod stores;
pub(crate) mod workspace;

pub(crate) use error::AppError;
pub(crate) use inspect::{export_artifacts, find_run, gc, load_run, parse_age};
pub(crate) use load::{load, provider_warnings, Loaded};
pub(crate) use runs::{
    parse_budget, parse_decision, parse_params, read_param_files, resume, start, who, Prepared,
    Resume, Start, Stop, Stopped, StoreLayer, Watch,
};
pub(crate) use stores::StoreSpec;
