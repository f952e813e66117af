//! The rules of a job's lease, the same on every backend: who may write to
//! a running job (its agent, with its lease), and which reports change it.
//! Each backend reads the job's row its own way and asks these.

use deploybot_wire::JobStatus;

use crate::{StatusReport, StoreError};

/// What a write names about its author, checked against the running job.
pub(crate) struct Holder<'a> {
    pub(crate) agent_id: Option<&'a str>,
    pub(crate) lease: Option<i64>,
}

impl<'a> Holder<'a> {
    /// Anyone: the write names no agent and no lease (a cancel).
    pub(crate) const ANYONE: Holder<'static> = Holder {
        agent_id: None,
        lease: None,
    };

    /// The author of `report`.
    pub(crate) fn of(report: &'a StatusReport) -> Self {
        Holder {
            agent_id: report.agent_id.as_deref(),
            lease: report.lease,
        }
    }
}

/// The columns of a job's row that decide who may write to it.
pub(crate) struct LeaseRow {
    pub(crate) status: String,
    pub(crate) assigned_agent: Option<String>,
    pub(crate) lease: Option<i64>,
    pub(crate) host: String,
    pub(crate) app: String,
}

/// The job a holder may write to.
pub(crate) struct Held {
    pub(crate) status: JobStatus,
    pub(crate) host: String,
    pub(crate) app: String,
}

/// The job `row` (`None`: no such job), unless `holder` may not write to it:
/// another agent's ([`StoreError::NotYours`]) or a stale lease
/// ([`StoreError::Conflict`]).
pub(crate) fn check_holder(
    job_id: &str,
    holder: &Holder,
    row: Option<LeaseRow>,
) -> Result<Held, StoreError> {
    let Some(row) = row else {
        return Err(StoreError::NotFound(format!("job {job_id}")));
    };
    if let Some(writer) = holder.agent_id
        && row.assigned_agent.as_deref() != Some(writer)
    {
        return Err(StoreError::NotYours(match &row.assigned_agent {
            Some(assigned) => {
                format!("job {job_id} is assigned to agent {assigned}, not {writer}")
            }
            None => format!("job {job_id} is not assigned to any agent"),
        }));
    }
    if let Some(given) = holder.lease
        && row.lease != Some(given)
    {
        return Err(StoreError::Conflict(format!(
            "stale lease {given} for job {job_id}: the job is no longer yours"
        )));
    }
    let status = row
        .status
        .parse()
        .map_err(|err| StoreError::Database(format!("job {job_id}: {err}")))?;
    Ok(Held {
        status,
        host: row.host,
        app: row.app,
    })
}

/// Whether a report of `report.status` changes a job that is `current`:
/// `Ok(false)` for a repeat of its status, `Ok(true)` for a running job's
/// end, a conflict for anything else.
pub(crate) fn report_changes(
    job_id: &str,
    current: JobStatus,
    report: &StatusReport,
) -> Result<bool, StoreError> {
    if current == report.status {
        return Ok(false);
    }
    if current != JobStatus::Running {
        return Err(StoreError::Conflict(format!(
            "job {job_id} is {current}; it cannot become {}",
            report.status
        )));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: &str, agent: Option<&str>, lease: Option<i64>) -> Option<LeaseRow> {
        Some(LeaseRow {
            status: status.to_owned(),
            assigned_agent: agent.map(str::to_owned),
            lease,
            host: "h1".to_owned(),
            app: "web".to_owned(),
        })
    }

    #[test]
    fn only_the_agent_holding_the_current_lease_may_write() {
        let mine = Holder {
            agent_id: Some("a1"),
            lease: Some(7),
        };
        assert!(check_holder("j", &mine, row("running", Some("a1"), Some(7))).is_ok());
        assert!(matches!(
            check_holder("j", &mine, row("running", Some("a2"), Some(7))),
            Err(StoreError::NotYours(_))
        ));
        assert!(matches!(
            check_holder("j", &mine, row("running", Some("a1"), Some(8))),
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            check_holder("j", &mine, None),
            Err(StoreError::NotFound(_))
        ));
        assert!(check_holder("j", &Holder::ANYONE, row("pending", None, None)).is_ok());
    }

    #[test]
    fn a_report_ends_a_running_job_or_repeats_its_status() {
        let report = |status| StatusReport {
            status,
            error: None,
            exit_code: Some(0),
            agent_id: None,
            lease: None,
        };
        use JobStatus::*;
        assert!(report_changes("j", Running, &report(Success)).unwrap());
        assert!(!report_changes("j", Success, &report(Success)).unwrap());
        assert!(report_changes("j", Lost, &report(Success)).is_err());
        assert!(report_changes("j", Pending, &report(Failed)).is_err());
    }
}
