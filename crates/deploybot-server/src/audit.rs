//! The audit log: who did what to what, from where.

use deploybot_store::NewAudit;

use crate::auth::Caller;
use crate::state::AppState;

/// Records a successful action. The action has happened by then, so a
/// failure to record it is logged, not turned into an error answer.
pub async fn audit(
    state: &AppState,
    caller: &Caller,
    action: &str,
    target: String,
    address: Option<String>,
) {
    let entry = NewAudit {
        actor: caller.actor(),
        action: action.to_owned(),
        target,
        address,
        result: "ok".to_owned(),
    };
    if let Err(err) = state.store.record_audit(entry.clone()).await {
        tracing::error!(error = %err, actor = %entry.actor, action, target = %entry.target, "cannot record an audit entry");
    }
}
