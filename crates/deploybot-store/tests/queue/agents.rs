//! Agents, tokens and the audit log.

use deploybot_store::{HeldJobs, NewAudit, StoreError};
use deploybot_wire::{JobStatus, TokenRole};

use crate::support::{TestStore, token};
use crate::{claim, claimed_id, job, registration};

async fn agents_keep_their_id_across_registrations(t: TestStore) {
    let first = t
        .store
        .register_agent(registration("id-1", "h1", vec!["docker".into()]))
        .await
        .unwrap();
    let again = t
        .store
        .register_agent(registration("id-2", "h1", vec![]))
        .await
        .unwrap();
    assert_eq!(first.agent.id, "id-1");
    assert_eq!(again.agent.id, "id-1");
    assert_eq!(again.agent.capabilities, Default::default());
    assert_eq!(t.store.agents().await.unwrap().len(), 1);
}

async fn a_host_with_an_agent_is_taken_over_only_by_who_may_replace_it(t: TestStore) {
    let first = t
        .store
        .register_agent(registration("a", "h1", vec![]))
        .await
        .unwrap();
    assert!(!first.replaced);
    t.store
        .enqueue(job("j", "web", "h1", "aaaaaaa"))
        .await
        .unwrap();
    claimed_id(claim(&*t.store, "a", "h1").await);
    let intruder = deploybot_store::NewRegistration {
        may_replace: false,
        ..registration("b", "h1", vec![])
    };
    let refused = t.store.register_agent(intruder.clone()).await;
    assert!(
        matches!(&refused, Err(StoreError::HostTaken { hostname, agent_id }) if hostname == "h1" && agent_id == "a"),
        "{refused:?}"
    );
    // Nothing changed: the agent keeps its token and its job.
    assert!(
        t.store
            .agent_by_token("hash-of-a".into())
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        t.store.job("j".into()).await.unwrap().unwrap().status,
        JobStatus::Running
    );
    // A new host is free to anyone; so is a host whose agent was revoked.
    let other = deploybot_store::NewRegistration {
        hostname: "h2".into(),
        token_hash: "hash-of-h2".into(),
        ..intruder.clone()
    };
    assert!(!t.store.register_agent(other).await.unwrap().replaced);
    t.store.revoke_agent("a".into()).await.unwrap();
    let after_revoke = t.store.register_agent(intruder).await.unwrap();
    assert_eq!(after_revoke.agent.id, "a");
    assert!(!after_revoke.replaced);
    // Who may replace it takes it over, and the job it ran is lost.
    t.store
        .enqueue(job("j2", "web", "h1", "bbbbbbb"))
        .await
        .unwrap();
    claimed_id(claim(&*t.store, "a", "h1").await);
    let replacing = t
        .store
        .register_agent(registration("c", "h1", vec![]))
        .await
        .unwrap();
    assert!(replacing.replaced);
    assert_eq!(replacing.lost.len(), 1);
}

async fn registering_again_loses_the_previous_sessions_running_job(t: TestStore) {
    let first = t
        .store
        .register_agent(registration("a", "h1", vec![]))
        .await
        .unwrap();
    assert!(first.lost.is_empty());
    t.store
        .enqueue(job("j", "web", "h1", "aaaaaaa"))
        .await
        .unwrap();
    claimed_id(claim(&*t.store, "a", "h1").await);
    let again = t
        .store
        .register_agent(registration("b", "h1", vec![]))
        .await
        .unwrap();
    assert_eq!(again.lost.len(), 1);
    assert_eq!(again.lost[0].status, JobStatus::Lost);
}

async fn tokens_are_found_by_hash_until_revoked_in_place(t: TestStore) {
    let store = &t.store;
    assert!(!store.any_admin_token().await.unwrap());
    store
        .create_token(token("tok_a", TokenRole::Admin, false))
        .await
        .unwrap();
    assert!(store.any_admin_token().await.unwrap());

    let found = store
        .token_by_hash("hash-of-tok_a".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((found.id.as_str(), found.role), ("tok_a", TokenRole::Admin));
    assert!(
        store
            .token_by_hash("hash-of-nothing".into())
            .await
            .unwrap()
            .is_none()
    );

    let revoked = store.revoke_token("tok_a".into()).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    assert!(!store.any_admin_token().await.unwrap());
    let missing = store.revoke_token("tok_none".into()).await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))));
}

async fn a_single_use_enrollment_token_registers_once_and_the_newest_agent_token_wins(
    t: TestStore,
) {
    let store = &t.store;
    store
        .create_token(token("tok_e", TokenRole::Enroll, true))
        .await
        .unwrap();
    let mut first = registration("id-1", "h1", vec![]);
    first.use_enrollment_token = Some("tok_e".into());
    store.register_agent(first.clone()).await.unwrap();

    let mut second = registration("id-2", "h2", vec![]);
    second.use_enrollment_token = Some("tok_e".into());
    let refused = store.register_agent(second).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    assert!(
        store
            .agent_by_token("hash-of-id-2".into())
            .await
            .unwrap()
            .is_none()
    );

    // h1 registers again with a new token: the old one no longer matches.
    let mut again = registration("id-x", "h1", vec![]);
    again.token_hash = "hash-new".into();
    store.register_agent(again).await.unwrap();
    assert!(
        store
            .agent_by_token("hash-of-id-1".into())
            .await
            .unwrap()
            .is_none()
    );
    let agent = store
        .agent_by_token("hash-new".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (agent.agent_id.as_str(), agent.hostname.as_str()),
        ("id-1", "h1")
    );

    store.revoke_agent("id-1".into()).await.unwrap();
    assert!(
        store
            .agent_by_token("hash-new".into())
            .await
            .unwrap()
            .is_none()
    );
}

async fn the_audit_log_pages_newest_first(t: TestStore) {
    let store = &t.store;
    for n in 0..5 {
        store
            .record_audit(NewAudit {
                actor: "token:tok_a".into(),
                action: "cancel".into(),
                target: format!("job {n}"),
                address: Some("10.0.0.1".into()),
                result: "ok".into(),
            })
            .await
            .unwrap();
    }
    let page = store.audit(2, None).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(),
        ["job 4", "job 3"]
    );
    let next = store.audit(10, Some(page[1].id)).await.unwrap();
    assert_eq!(
        next.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(),
        ["job 2", "job 1", "job 0"]
    );
}

async fn saved_heartbeats_never_move_last_seen_back(t: TestStore) {
    use deploybot_wire::AgentStatus::{Busy, Offline, Online};
    let agent = t
        .store
        .register_agent(registration("a", "h1", vec![]))
        .await
        .unwrap()
        .agent;
    let later = agent.registered_at + time::Duration::seconds(10);
    let seconds = time::Duration::seconds;
    let beat = |at, status| deploybot_store::Beat {
        agent_id: agent.id.clone(),
        status,
        at,
    };
    let saved = || async {
        let agents = t.store.agents().await.unwrap();
        (agents[0].last_heartbeat, agents[0].status)
    };
    // Of one batch, the newest beat counts, whatever the order.
    t.store
        .save_heartbeats(vec![beat(later, Online), beat(later - seconds(5), Busy)])
        .await
        .unwrap();
    assert_eq!(saved().await, (Some(later), Online));
    // An older beat (another instance saw it) changes neither time nor status.
    t.store
        .save_heartbeats(vec![beat(later - seconds(1), Busy)])
        .await
        .unwrap();
    assert_eq!(saved().await, (Some(later), Online));
    t.store
        .save_heartbeats(vec![beat(later + seconds(1), Busy)])
        .await
        .unwrap();
    assert_eq!(saved().await, (Some(later + seconds(1)), Busy));
    // A revoked agent stays as the revocation left it.
    t.store.revoke_agent(agent.id.clone()).await.unwrap();
    t.store
        .save_heartbeats(vec![beat(later + seconds(2), Online)])
        .await
        .unwrap();
    assert_eq!(saved().await, (Some(later + seconds(1)), Offline));
}

async fn an_agent_is_found_by_id_while_it_is_registered_and_not_revoked(t: TestStore) {
    let agent = t
        .store
        .register_agent(registration("a", "h1", vec![]))
        .await
        .unwrap()
        .agent;
    let found = t.store.agent(agent.id.clone()).await.unwrap();
    assert_eq!(found, Some(agent.clone()));
    assert_eq!(t.store.agent("nobody".into()).await.unwrap(), None);
    t.store.revoke_agent(agent.id.clone()).await.unwrap();
    assert_eq!(t.store.agent(agent.id.clone()).await.unwrap(), None);
    // Enrolling again makes it known again, under the same id.
    t.store
        .register_agent(registration("b", "h1", vec![]))
        .await
        .unwrap();
    let again = t.store.agent(agent.id.clone()).await.unwrap();
    assert_eq!(again.map(|a| a.hostname), Some("h1".to_owned()));
}

async fn revoking_an_agent_loses_its_running_job(t: TestStore) {
    let agent = t
        .store
        .register_agent(registration("a", "h1", vec![]))
        .await
        .unwrap()
        .agent;
    t.store
        .enqueue(job("j", "web", "h1", "aaaaaaa"))
        .await
        .unwrap();
    claimed_id(claim(&*t.store, &agent.id, "h1").await);
    let lost = t.store.revoke_agent(agent.id.clone()).await.unwrap();
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].status, JobStatus::Lost);
    assert!(
        t.store
            .agent_by_token("hash-of-a".into())
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        t.store.revoke_agent("nobody".into()).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn a_forgotten_agent_is_gone_but_not_while_it_runs_a_job(t: TestStore) {
    let agent = t
        .store
        .register_agent(registration("a", "h1", vec![]))
        .await
        .unwrap()
        .agent;
    t.store
        .enqueue(job("j", "web", "h1", "aaaaaaa"))
        .await
        .unwrap();
    claimed_id(claim(&*t.store, &agent.id, "h1").await);
    assert!(matches!(
        t.store.forget_agent(agent.id.clone()).await,
        Err(StoreError::Conflict(_))
    ));
    t.store.revoke_agent(agent.id.clone()).await.unwrap();

    t.store.forget_agent(agent.id.clone()).await.unwrap();

    assert_eq!(t.store.agent(agent.id.clone()).await.unwrap(), None);
    assert!(t.store.agents().await.unwrap().is_empty());
    assert!(matches!(
        t.store.forget_agent(agent.id.clone()).await,
        Err(StoreError::NotFound(_))
    ));
}

fn held(agent: &str, running: &[&str], claimed_before: time::OffsetDateTime) -> HeldJobs {
    HeldJobs {
        agent_id: agent.into(),
        host: "h1".into(),
        running: running.iter().map(|id| (*id).to_owned()).collect(),
        claimed_before,
        reason: "not held".into(),
    }
}

async fn a_running_job_its_agent_does_not_list_is_lost(t: TestStore) {
    t.store
        .register_agent(registration("a", "h1", vec![]))
        .await
        .unwrap();
    t.store
        .enqueue(job("j", "web", "h1", "aaaaaaa"))
        .await
        .unwrap();
    let before_claim = time::OffsetDateTime::now_utc() - time::Duration::seconds(1);
    claimed_id(claim(&*t.store, "a", "h1").await);
    let later = time::OffsetDateTime::now_utc() + time::Duration::seconds(1);

    // Listed, claimed after the heartbeat, or another agent's: kept.
    for keep in [
        held("a", &["j"], later),
        held("a", &[], before_claim),
        held("b", &[], later),
    ] {
        assert!(t.store.lose_unheld_jobs(keep).await.unwrap().is_empty());
    }
    assert_eq!(
        t.store.job("j".into()).await.unwrap().unwrap().status,
        JobStatus::Running
    );

    let lost = t
        .store
        .lose_unheld_jobs(held("a", &["other"], later))
        .await
        .unwrap();
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].id, "j");
    assert_eq!(lost[0].status, JobStatus::Lost);
    assert_eq!(lost[0].error.as_deref(), Some("not held"));
    // Once lost, a second check finds nothing.
    assert!(
        t.store
            .lose_unheld_jobs(held("a", &[], later))
            .await
            .unwrap()
            .is_empty()
    );
}

conformance!(
    a_host_with_an_agent_is_taken_over_only_by_who_may_replace_it,
    a_running_job_its_agent_does_not_list_is_lost,
    agents_keep_their_id_across_registrations,
    registering_again_loses_the_previous_sessions_running_job,
    tokens_are_found_by_hash_until_revoked_in_place,
    a_single_use_enrollment_token_registers_once_and_the_newest_agent_token_wins,
    the_audit_log_pages_newest_first,
    saved_heartbeats_never_move_last_seen_back,
    an_agent_is_found_by_id_while_it_is_registered_and_not_revoked,
    revoking_an_agent_loses_its_running_job,
    a_forgotten_agent_is_gone_but_not_while_it_runs_a_job,
);
