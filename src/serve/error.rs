//! What a request can fail with, as an HTTP status and a JSON body `{"error": "..."}` whose
//! message is the command line's for the same mistake.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::app::AppError;
use crate::exec::ExecError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error(transparent)]
    App(#[from] AppError),
    #[error("this dashboard needs its token: send it as `x-conductor-token` (or `Authorization: Bearer`)")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Internal(String),
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        ApiError::App(AppError::Store(e))
    }
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::App(e) => app_status(e),
        }
    }
}

fn app_status(e: &AppError) -> StatusCode {
    match e {
        AppError::UnknownRun { .. }
        | AppError::UnknownTask { .. }
        | AppError::UnknownDeadLetter(_)
        | AppError::MissingArtifact { .. } => StatusCode::NOT_FOUND,
        AppError::Usage(_) | AppError::AmbiguousRun(..) => StatusCode::BAD_REQUEST,
        AppError::CompletedAlready(_) | AppError::WorkflowGone { .. } => StatusCode::CONFLICT,
        AppError::Exec(
            ExecError::NotWaiting(_)
            | ExecError::UnknownDecisionTask(_)
            | ExecError::NotFailed { .. }
            | ExecError::RetryElsewhere { .. }
            | ExecError::WrongDecision { .. }
            | ExecError::MissingSecret(_)
            | ExecError::ChangedWorkflow { .. },
        ) => StatusCode::CONFLICT,
        AppError::Store(crate::store::StoreError::Busy { .. }) => StatusCode::CONFLICT,
        AppError::Store(crate::store::StoreError::UnknownRun(_)) => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = match &self {
            // The diagnostics, as `conductor check` renders them, without colour.
            ApiError::App(AppError::Invalid { map, diags }) => {
                crate::diag::render(map, diags, false)
            }
            other => other.to_string(),
        };
        let body = serde_json::json!({ "error": message });
        (self.status(), axum::Json(body)).into_response()
    }
}
