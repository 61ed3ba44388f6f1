//! Reports (docs/reports.md).

use std::sync::Arc;

use crate::app::App;
use crate::error::ApiResult;

/// Generates the reports the schedule says are due at `now`.
pub async fn scheduled(_app: &Arc<App>, _now: i64) -> ApiResult<()> {
    Ok(())
}
