//! Telling the other instances sharing the database what changed:
//! `pg_notify` inside the writing transaction (PostgreSQL delivers it on
//! commit, and drops it on rollback), and one `LISTEN`ing connection per
//! store that turns notifications into [`StoreEvent`]s.
//!
//! Notifications are transient: one sent while the listening connection was
//! down is lost. So after every reconnection the listener sends
//! [`StoreEvent::Resync`], once it is listening again, and the receiver
//! rebuilds what it derives from events from the database.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgConnection;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::feed::Committed;
use crate::{StoreError, StoreEvent};

/// The one channel every instance listens on.
const CHANNEL: &str = "deploybot";
/// PostgreSQL refuses payloads of 8000 bytes or more; a larger event is sent
/// as a `Resync`, which says less but is never wrong.
const MAX_PAYLOAD: usize = 7900;
/// Events buffered for a slow receiver; one that lags resyncs.
const CAPACITY: usize = 4096;
/// Waits between attempts to listen again after losing the connection.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Longest a job change waits for the log lines committed before it to be
/// published (they normally are within a read).
const ORDER_WAIT: Duration = Duration::from_secs(2);
/// Claims waiting to be told to the other instances; beyond this they are
/// not told (see [`Events::claimed`]).
const CLAIMS_QUEUED: usize = 4096;

/// The sending side of a store's events, and the listener task behind it.
#[derive(Debug)]
pub(super) struct Events {
    /// Names this store in its notifications, so its listener skips its
    /// own writes (the instance already acted on them).
    origin: String,
    sender: broadcast::Sender<StoreEvent>,
    /// Payloads of claims, for the task that tells them (and ends when
    /// this is dropped).
    claims: mpsc::Sender<String>,
    /// Dropped with the store: the listener task then ends.
    _stop: oneshot::Sender<()>,
}

impl Events {
    /// Starts listening; returns once the `LISTEN` is in place, so that
    /// every change committed after this returns is heard.
    ///
    /// `logs_committed` gets the newest log line id other instances say
    /// they committed, and a resync count (see [`super::feed`]). Claims are
    /// told through connections of `writers`.
    pub(super) async fn start(
        options: PgConnectOptions,
        writers: PgPool,
        logs_committed: watch::Sender<Committed>,
        logs_published: watch::Receiver<i64>,
    ) -> Result<Events, StoreError> {
        // A pool of its own, holding the one long-lived connection, so the
        // listener never takes a connection requests need.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(super::ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        let listener = listen(&pool)
            .await
            .map_err(|err| StoreError::Setup(format!("cannot listen for notifications: {err}")))?;
        let origin = uuid::Uuid::now_v7().simple().to_string();
        let sender = broadcast::channel(CAPACITY).0;
        let (stop, stopped) = oneshot::channel();
        let (claims, claimed) = mpsc::channel(CLAIMS_QUEUED);
        tokio::spawn(tell_claims(writers, claimed));
        tokio::spawn(run(
            listener,
            pool,
            origin.clone(),
            sender.clone(),
            logs_committed,
            logs_published,
            stopped,
        ));
        Ok(Events {
            origin,
            sender,
            claims,
            _stop: stop,
        })
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.sender.subscribe()
    }

    /// Queues `event` for the other instances; it is delivered when the
    /// transaction `conn` is in commits.
    pub(super) async fn notify(
        &self,
        conn: &mut PgConnection,
        event: &StoreEvent,
    ) -> Result<(), StoreError> {
        self.send(conn, vec![self.payload(event)]).await
    }

    fn payload(&self, event: &StoreEvent) -> String {
        let payload = encode(&self.origin, event);
        if payload.len() > MAX_PAYLOAD {
            return encode(&self.origin, &StoreEvent::Resync);
        }
        payload
    }

    /// Queues `payloads`, in order, in one statement.
    async fn send(&self, conn: &mut PgConnection, payloads: Vec<String>) -> Result<(), StoreError> {
        if payloads.is_empty() {
            return Ok(());
        }
        Ok(send(conn, &payloads).await?)
    }

    /// [`notify`](Self::notify) of `JobsPending` for `hosts`, in as many
    /// notifications as their payload limit needs (a batch of deliveries
    /// may name many hosts), in one statement.
    pub(super) async fn jobs_pending(
        &self,
        conn: &mut PgConnection,
        hosts: &[String],
    ) -> Result<(), StoreError> {
        self.send(conn, pending_payloads(&self.origin, hosts)).await
    }

    /// Tells the other instances that log lines up to `up_to` are
    /// committed, when the transaction `conn` is in commits.
    pub(super) async fn logs_committed(
        &self,
        conn: &mut PgConnection,
        up_to: i64,
    ) -> Result<(), StoreError> {
        let payload = json!({"o": self.origin, "e": "logs", "up_to": up_to}).to_string();
        self.send(conn, vec![payload]).await
    }

    /// [`notify`](Self::notify) of a `JobChanged` for each of `jobs`.
    pub(super) async fn jobs_changed(
        &self,
        conn: &mut PgConnection,
        jobs: &[deploybot_wire::Job],
    ) -> Result<(), StoreError> {
        self.send(conn, self.changed(jobs)).await
    }

    /// Tells the other instances, soon, that `job` was claimed: after the
    /// claim's commit and off the claiming request's path, since waiting
    /// for it (a round trip, and PostgreSQL's queue lock, which notifying
    /// transactions hold through their commit) made agents wait for their
    /// jobs about twice as long. Claims made meanwhile go in one statement.
    ///
    /// Best effort: the `running` event of other instances' SSE clients is
    /// all that depends on it, and those clients tolerate a missed status
    /// event; a later change of the job is told in its own transaction, and
    /// a receiver reads the job's current state either way.
    pub(super) fn claimed(&self, job: &deploybot_wire::Job) {
        let payload = self.payload(&StoreEvent::JobChanged {
            job_id: job.id.clone(),
        });
        if let Err(err) = self.claims.try_send(payload) {
            tracing::warn!(error = %err, job = %job.id, "cannot tell other instances of a claim");
        }
    }

    fn changed(&self, jobs: &[deploybot_wire::Job]) -> Vec<String> {
        jobs.iter()
            .map(|job| {
                self.payload(&StoreEvent::JobChanged {
                    job_id: job.id.clone(),
                })
            })
            .collect()
    }

    fn freed(&self, jobs: &[deploybot_wire::Job]) -> Vec<String> {
        let mut hosts: Vec<&str> = jobs.iter().map(|job| job.host.as_str()).collect();
        hosts.sort_unstable();
        hosts.dedup();
        hosts
            .into_iter()
            .map(|host| {
                self.payload(&StoreEvent::HostFreed {
                    host: host.to_owned(),
                })
            })
            .collect()
    }

    /// Jobs that just ended: [`notify`](Self::notify) of their changes, and
    /// of a `HostFreed` for each of their hosts, in one statement.
    pub(super) async fn jobs_ended(
        &self,
        conn: &mut PgConnection,
        jobs: &[deploybot_wire::Job],
    ) -> Result<(), StoreError> {
        let mut payloads = self.changed(jobs);
        payloads.extend(self.freed(jobs));
        self.send(conn, payloads).await
    }
}

/// Sends the payloads of claims as they come, together when several wait,
/// until the store is dropped.
async fn tell_claims(pool: PgPool, mut claimed: mpsc::Receiver<String>) {
    let mut payloads = Vec::new();
    while claimed.recv_many(&mut payloads, CLAIMS_QUEUED).await > 0 {
        let sent = async { send(&mut *pool.acquire().await?, &payloads).await };
        if let Err(err) = sent.await {
            tracing::warn!(error = %err, claims = payloads.len(), "cannot tell other instances of claims");
        }
        payloads.clear();
    }
}

/// Queues `payloads` on the channel, in order, in one statement.
async fn send(conn: &mut PgConnection, payloads: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT count(pg_notify($1, p)) FROM unnest($2::text[]) AS n(p)")
        .bind(CHANNEL)
        .bind(payloads)
        .execute(conn)
        .await?;
    Ok(())
}

/// `JobsPending` payloads for `hosts`, each within PostgreSQL's limit.
fn pending_payloads(origin: &str, hosts: &[String]) -> Vec<String> {
    let encoded = |hosts: Vec<String>| encode(origin, &StoreEvent::JobsPending { hosts });
    let empty = encoded(Vec::new()).len();
    let mut payloads = Vec::new();
    let mut chunk: Vec<String> = Vec::new();
    let mut size = empty;
    for host in hosts {
        // A host adds its JSON string and a comma; names need no escaping.
        let more = host.len() + 3;
        if !chunk.is_empty() && size + more > MAX_PAYLOAD {
            payloads.push(encoded(std::mem::take(&mut chunk)));
            size = empty;
        }
        chunk.push(host.clone());
        size += more;
    }
    if !chunk.is_empty() {
        payloads.push(encoded(chunk));
    }
    // Never too long, whatever the names: a Resync then says it all.
    for payload in &mut payloads {
        if payload.len() > MAX_PAYLOAD {
            *payload = encode(origin, &StoreEvent::Resync);
        }
    }
    payloads
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Re-broadcasts other instances' notifications until the store is dropped.
async fn run(
    mut listener: PgListener,
    pool: PgPool,
    origin: String,
    sender: broadcast::Sender<StoreEvent>,
    logs_committed: watch::Sender<Committed>,
    mut logs_published: watch::Receiver<i64>,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        let next = tokio::select! {
            next = listener.try_recv() => next,
            _ = &mut stopped => return,
        };
        match next {
            Ok(Some(notification)) => match decode(notification.payload(), &origin) {
                Some(Heard::Event(event)) => {
                    if matches!(event, StoreEvent::JobChanged { .. }) {
                        // A job's lines are committed before its report, so
                        // they are published first: an SSE stream shows a
                        // job's last lines before its end.
                        let newest = logs_committed.borrow().newest;
                        let published = logs_published.wait_for(|id| *id >= newest);
                        let _ = tokio::time::timeout(ORDER_WAIT, published).await;
                    }
                    // No receiver is fine: nobody is waiting.
                    let _ = sender.send(event);
                }
                Some(Heard::LogsCommitted(id)) => {
                    logs_committed.send_if_modified(|committed| {
                        let newer = id > committed.newest;
                        committed.newest = committed.newest.max(id);
                        newer
                    });
                }
                None => {}
            },
            // Lost, and already listening again on a new connection.
            Ok(None) => {
                tracing::warn!("lost the notification connection; reconnected, resyncing");
                resync(&sender, &logs_committed);
            }
            Err(err) => {
                tracing::warn!(error = %err, "notification connection failed; reconnecting");
                drop(listener);
                let mut wait = RETRY_FIRST;
                listener = loop {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = &mut stopped => return,
                    }
                    match listen(&pool).await {
                        Ok(listener) => break listener,
                        Err(err) => {
                            tracing::debug!(error = %err, "cannot listen yet; retrying");
                            wait = (wait * 2).min(RETRY_MAX);
                        }
                    }
                };
                tracing::info!("listening for notifications again; resyncing");
                resync(&sender, &logs_committed);
            }
        }
    }
}

/// After notifications may have been lost: receivers rebuild, and the log
/// feed reads whatever lines it has not published yet.
fn resync(sender: &broadcast::Sender<StoreEvent>, logs_committed: &watch::Sender<Committed>) {
    let _ = sender.send(StoreEvent::Resync);
    logs_committed.send_modify(|committed| committed.resyncs += 1);
}

/// What a notification says.
#[derive(Debug, PartialEq, Eq)]
enum Heard {
    Event(StoreEvent),
    /// Log lines up to this id are committed.
    LogsCommitted(i64),
}

fn encode(origin: &str, event: &StoreEvent) -> String {
    let value = match event {
        StoreEvent::JobsPending { hosts } => json!({"o": origin, "e": "pending", "hosts": hosts}),
        StoreEvent::CancelRequested { host } => json!({"o": origin, "e": "cancel", "host": host}),
        StoreEvent::HostFreed { host } => json!({"o": origin, "e": "freed", "host": host}),
        StoreEvent::JobChanged { job_id } => json!({"o": origin, "e": "job", "job": job_id}),
        StoreEvent::AgentRegistered { agent_id, hostname } => {
            json!({"o": origin, "e": "registered", "agent": agent_id, "host": hostname})
        }
        StoreEvent::AgentRevoked { agent_id } => {
            json!({"o": origin, "e": "agent_revoked", "agent": agent_id})
        }
        StoreEvent::TokenRevoked { token_id } => {
            json!({"o": origin, "e": "token_revoked", "token": token_id})
        }
        StoreEvent::Resync => json!({"o": origin, "e": "resync"}),
    };
    value.to_string()
}

/// What `payload` says, unless this store sent it. A payload this version
/// does not understand (a newer instance's) is a `Resync`: safe, if slower.
fn decode(payload: &str, own_origin: &str) -> Option<Heard> {
    let value: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
    if value["o"].as_str() == Some(own_origin) {
        return None;
    }
    let text = |key: &str| value[key].as_str().map(str::to_owned);
    let event = match value["e"].as_str() {
        Some("pending") => value["hosts"].as_array().and_then(|hosts| {
            hosts
                .iter()
                .map(|h| h.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .map(|hosts| StoreEvent::JobsPending { hosts })
        }),
        Some("cancel") => text("host").map(|host| StoreEvent::CancelRequested { host }),
        Some("freed") => text("host").map(|host| StoreEvent::HostFreed { host }),
        Some("job") => text("job").map(|job_id| StoreEvent::JobChanged { job_id }),
        Some("registered") => text("agent")
            .zip(text("host"))
            .map(|(agent_id, hostname)| StoreEvent::AgentRegistered { agent_id, hostname }),
        Some("agent_revoked") => {
            text("agent").map(|agent_id| StoreEvent::AgentRevoked { agent_id })
        }
        Some("token_revoked") => {
            text("token").map(|token_id| StoreEvent::TokenRevoked { token_id })
        }
        Some("logs") => match value["up_to"].as_i64() {
            Some(id) => return Some(Heard::LogsCommitted(id)),
            None => None,
        },
        _ => None,
    };
    Some(Heard::Event(event.unwrap_or(StoreEvent::Resync)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_own_ones_are_skipped() {
        for event in [
            StoreEvent::JobsPending {
                hosts: vec!["web-01".into(), "web-02".into()],
            },
            StoreEvent::CancelRequested {
                host: "web-01".into(),
            },
            StoreEvent::HostFreed {
                host: "api-01".into(),
            },
            StoreEvent::JobChanged {
                job_id: "j1".into(),
            },
            StoreEvent::AgentRegistered {
                agent_id: "a1".into(),
                hostname: "web-01".into(),
            },
            StoreEvent::AgentRevoked {
                agent_id: "a1".into(),
            },
            StoreEvent::TokenRevoked {
                token_id: "tok_1".into(),
            },
            StoreEvent::Resync,
        ] {
            let payload = encode("a", &event);
            assert_eq!(decode(&payload, "b"), Some(Heard::Event(event)));
            assert_eq!(decode(&payload, "a"), None);
        }
        assert_eq!(
            decode("not json", "a"),
            Some(Heard::Event(StoreEvent::Resync))
        );
        assert_eq!(
            decode(r#"{"o":"x","e":"something new"}"#, "a"),
            Some(Heard::Event(StoreEvent::Resync))
        );
        assert_eq!(
            decode(r#"{"o":"x","e":"logs","up_to":42}"#, "a"),
            Some(Heard::LogsCommitted(42))
        );
    }

    #[test]
    fn many_pending_hosts_are_split_within_the_payload_limit() {
        let hosts: Vec<String> = (0..2000).map(|i| format!("host-{i:05}")).collect();
        let payloads = pending_payloads("a", &hosts);
        assert!(payloads.len() > 1);
        let mut heard = Vec::new();
        for payload in &payloads {
            assert!(payload.len() <= MAX_PAYLOAD, "{}", payload.len());
            match decode(payload, "b") {
                Some(Heard::Event(StoreEvent::JobsPending { hosts })) => heard.extend(hosts),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(heard, hosts);
        assert!(pending_payloads("a", &[]).is_empty());
    }
}
