//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Every replica serves the API; only the one holding the Lease reconciles. The
//! protocol is client-go's `leaderelection` with a Lease lock: read the Lease,
//! and write it back (with its `resourceVersion` as precondition) when it is
//! absent, expired (`renewTime + leaseDurationSeconds` in the past), free
//! (no `holderIdentity`) or already ours. A 409 on the write means another
//! replica wrote first; that round is lost, which is not an error.
//!
//! Expiry is judged against the writer's `renewTime`, so replicas' clocks must
//! roughly agree (skew well under the lease duration).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::{Mutex, watch};

/// The default time a lease stays valid without renewal.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// The default interval between rounds.
pub const DEFAULT_RENEW_INTERVAL: Duration = Duration::from_secs(5);

/// A failed leader-election round.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The API server refused or could not be reached (other than a lost race).
    #[error("lease {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Lease-based leader election for one replica.
///
/// Cloning shares the "released" state: once [`LeaderElection::release`] has run
/// on any clone, no clone acquires or renews the lease again.
#[derive(Clone)]
pub struct LeaderElection {
    api: Api<Lease>,
    namespace: String,
    lease_name: String,
    identity: String,
    lease_duration: Duration,
    renew_interval: Duration,
    /// `true` after `release`; rounds take this lock so a release cannot be
    /// undone by a round that was already under way.
    released: Arc<Mutex<bool>>,
}

impl std::fmt::Debug for LeaderElection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElection")
            .field("namespace", &self.namespace)
            .field("lease_name", &self.lease_name)
            .field("identity", &self.identity)
            .field("lease_duration", &self.lease_duration)
            .field("renew_interval", &self.renew_interval)
            .finish_non_exhaustive()
    }
}

impl LeaderElection {
    /// An election on Lease `namespace/lease_name`, held as `identity` (the pod
    /// name); 15 s leases renewed every 5 s.
    pub fn new(
        client: kube::Client,
        namespace: impl Into<String>,
        lease_name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        let namespace = namespace.into();
        Self {
            api: Api::namespaced(client, &namespace),
            namespace,
            lease_name: lease_name.into(),
            identity: identity.into(),
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_interval: DEFAULT_RENEW_INTERVAL,
            released: Arc::new(Mutex::new(false)),
        }
    }

    /// Overrides the lease duration (whole seconds, at least 1) and the renewal
    /// interval, which should be well below the duration.
    pub fn with_timings(mut self, lease_duration: Duration, renew_interval: Duration) -> Self {
        self.lease_duration = lease_duration;
        self.renew_interval = renew_interval;
        self
    }

    /// One round: try to acquire or renew; `Ok(true)` when this replica holds
    /// the lease afterwards.
    pub async fn try_acquire_or_renew(&self, now: Timestamp) -> Result<bool, LeaderError> {
        let released = self.released.lock().await;
        if *released {
            return Ok(false);
        }
        let Some(mut lease) = self
            .api
            .get_opt(&self.lease_name)
            .await
            .map_err(|e| self.error(e))?
        else {
            return self.create(now).await;
        };
        let mut spec = lease.spec.take().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
        if holder == Some(self.identity.as_str()) {
            spec.renew_time = Some(MicroTime(now));
            spec.lease_duration_seconds = Some(self.lease_seconds());
        } else {
            if holder.is_some() && !expired(&spec, now, self.lease_seconds()) {
                return Ok(false);
            }
            spec = LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_duration_seconds: Some(self.lease_seconds()),
                lease_transitions: Some(spec.lease_transitions.unwrap_or(0).saturating_add(1)),
                ..LeaseSpec::default()
            };
        }
        lease.spec = Some(spec);
        // `lease.metadata.resourceVersion` is the one read: the write is conditional on it.
        match self
            .api
            .replace(&self.lease_name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.is_conflict() => {
                tracing::debug!(lease = %self.lease_name, "lost a lease update race");
                Ok(false)
            }
            Err(e) => Err(self.error(e)),
        }
    }

    /// Runs rounds every `renew_interval`, publishing leadership on a watch
    /// channel (`false` on any error, lost lease or a round taking longer than
    /// `renew_interval`). Stops once every receiver is dropped or the lease has
    /// been released. Keep `renew_interval` at most a third of the lease
    /// duration so a failing leader steps down before its lease runs out.
    pub fn spawn(self) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(self.renew_interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if tx.is_closed() || *self.released.lock().await {
                    tx.send_replace(false);
                    break;
                }
                // A round that hangs must not keep a stale `true` published past
                // the lease's expiry, so each round gets one renew interval.
                let round = self.try_acquire_or_renew(Timestamp::now());
                let leading = match tokio::time::timeout(self.renew_interval, round).await {
                    Ok(Ok(leading)) => leading,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "leader election round failed");
                        false
                    }
                    Err(_) => {
                        tracing::warn!(lease = %self.lease_name, "leader election round timed out");
                        false
                    }
                };
                let was = tx.send_replace(leading);
                if was != leading {
                    tracing::info!(identity = %self.identity, leading, "leadership changed");
                }
            }
        });
        rx
    }

    /// Gives the lease up (clears `holderIdentity`) so another replica takes
    /// over at once; call on shutdown after reconciling has stopped. Afterwards
    /// this election (and its clones) never acquire the lease again.
    pub async fn release(&self) -> Result<(), LeaderError> {
        let mut released = self.released.lock().await;
        *released = true;
        let Some(mut lease) = self
            .api
            .get_opt(&self.lease_name)
            .await
            .map_err(|e| self.error(e))?
        else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        match self
            .api
            .replace(&self.lease_name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            // Changed since the read: someone else took it over.
            Err(kube::Error::Api(status)) if status.is_conflict() => Ok(()),
            Err(e) => Err(self.error(e)),
        }
    }

    async fn create(&self, now: Timestamp) -> Result<bool, LeaderError> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.lease_name.clone()),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_duration_seconds: Some(self.lease_seconds()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.is_already_exists() || status.is_conflict() => {
                tracing::debug!(lease = %self.lease_name, "lost the lease creation race");
                Ok(false)
            }
            Err(e) => Err(self.error(e)),
        }
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    fn error(&self, source: kube::Error) -> LeaderError {
        LeaderError::Api {
            namespace: self.namespace.clone(),
            name: self.lease_name.clone(),
            source,
        }
    }
}

/// Whether the holder's lease ran out: `renewTime + leaseDurationSeconds <= now`.
/// No renew time counts as expired; the lease's own duration wins over ours.
fn expired(spec: &LeaseSpec, now: Timestamp, default_seconds: i32) -> bool {
    let Some(MicroTime(renewed)) = spec.renew_time else {
        return true;
    };
    let seconds = spec.lease_duration_seconds.unwrap_or(default_seconds);
    match renewed.checked_add(SignedDuration::from_secs(i64::from(seconds))) {
        Ok(expiry) => expiry <= now,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    use crate::test_support::mock_api::{ApiServer, expect, respond};

    fn status(code: u16, reason: &str) -> Vec<u8> {
        crate::test_support::mock_api::status(code, reason, &format!("leases \"{NAME}\""))
    }

    const NS: &str = "coffer-system";
    const NAME: &str = "coffer-leader";
    const ME: &str = "coffer-0";
    const OTHER: &str = "coffer-1";
    const ITEM: &str = "/apis/coordination.k8s.io/v1/namespaces/coffer-system/leases/coffer-leader";
    const COLLECTION: &str = "/apis/coordination.k8s.io/v1/namespaces/coffer-system/leases";

    fn election() -> (LeaderElection, ApiServer) {
        let (client, handle) = crate::test_support::mock_api::client();
        (LeaderElection::new(client, NS, NAME, ME), handle)
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    const NOW: i64 = 1_700_000_000;

    fn stored(
        holder: Option<&str>,
        renewed: i64,
        transitions: i32,
        resource_version: &str,
    ) -> Vec<u8> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(NAME.into()),
                namespace: Some(NS.into()),
                resource_version: Some(resource_version.into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                acquire_time: Some(MicroTime(at(renewed - 100))),
                renew_time: Some(MicroTime(at(renewed))),
                lease_duration_seconds: Some(15),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
        };
        serde_json::to_vec(&lease).unwrap()
    }

    /// Echoes a written lease back as the API server would.
    fn echo(body: &[u8], resource_version: &str) -> Vec<u8> {
        let mut lease: Lease = serde_json::from_slice(body).unwrap();
        lease.metadata.resource_version = Some(resource_version.into());
        serde_json::to_vec(&lease).unwrap()
    }

    /// Runs `call` against a mock API server; returns its output, the bodies the
    /// server received and the server handle (to check nothing else was sent).
    async fn run<T>(
        call: impl Future<Output = T>,
        server: impl Future<Output = (Vec<Vec<u8>>, ApiServer)> + Send + 'static,
    ) -> (T, Vec<Vec<u8>>, ApiServer) {
        let server = tokio::spawn(server);
        let out = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("election call timed out");
        let (bodies, handle) = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("mock API server timed out")
            .expect("mock API server failed");
        (out, bodies, handle)
    }

    async fn assert_quiet(server: &mut ApiServer) {
        let next = tokio::time::timeout(Duration::from_millis(100), server.next_request()).await;
        assert!(next.is_err(), "unexpected extra request");
    }

    fn written(body: &[u8]) -> (ObjectMeta, LeaseSpec) {
        let lease: Lease = serde_json::from_slice(body).unwrap();
        (lease.metadata, lease.spec.unwrap())
    }

    #[tokio::test]
    async fn absent_lease_is_created_and_held() {
        let (election, mut server) = election();
        let (out, bodies, mut server) = run(election.try_acquire_or_renew(at(NOW)), async move {
            let (_, send) = expect(&mut server, Method::GET, ITEM).await;
            respond(send, 404, status(404, "NotFound"));
            let (body, send) = expect(&mut server, Method::POST, COLLECTION).await;
            respond(send, 201, echo(&body, "1"));
            (vec![body], server)
        })
        .await;
        assert!(out.unwrap());
        assert_quiet(&mut server).await;
        let (meta, spec) = written(&bodies[0]);
        assert_eq!(meta.name.as_deref(), Some(NAME));
        assert_eq!(meta.namespace.as_deref(), Some(NS));
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(spec.acquire_time, Some(MicroTime(at(NOW))));
        assert_eq!(spec.renew_time, Some(MicroTime(at(NOW))));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, Some(0));
    }

    #[tokio::test]
    async fn losing_the_create_race_is_not_leading() {
        let (election, mut server) = election();
        let (out, _, _) = run(election.try_acquire_or_renew(at(NOW)), async move {
            let (_, send) = expect(&mut server, Method::GET, ITEM).await;
            respond(send, 404, status(404, "NotFound"));
            let (_, send) = expect(&mut server, Method::POST, COLLECTION).await;
            respond(send, 409, status(409, "AlreadyExists"));
            (vec![], server)
        })
        .await;
        assert!(!out.unwrap());
    }

    #[tokio::test]
    async fn fresh_lease_of_another_is_left_alone() {
        let (election, mut server) = election();
        let lease = stored(Some(OTHER), NOW - 5, 3, "42");
        let (out, _, mut server) = run(election.try_acquire_or_renew(at(NOW)), async move {
            let (_, send) = expect(&mut server, Method::GET, ITEM).await;
            respond(send, 200, lease);
            (vec![], server)
        })
        .await;
        assert!(!out.unwrap());
        assert_quiet(&mut server).await;
    }

    #[tokio::test]
    async fn expired_lease_of_another_is_taken_over() {
        let (election, mut server) = election();
        // Renewed 15 s ago with a 15 s duration: expired right now.
        let lease = stored(Some(OTHER), NOW - 15, 3, "42");
        let (out, bodies, _) = run(election.try_acquire_or_renew(at(NOW)), async move {
            let (_, send) = expect(&mut server, Method::GET, ITEM).await;
            respond(send, 200, lease);
            let (body, send) = expect(&mut server, Method::PUT, ITEM).await;
            respond(send, 200, echo(&body, "43"));
            (vec![body], server)
        })
        .await;
        assert!(out.unwrap());
        let (meta, spec) = written(&bodies[0]);
        assert_eq!(meta.resource_version.as_deref(), Some("42"));
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(spec.acquire_time, Some(MicroTime(at(NOW))));
        assert_eq!(spec.renew_time, Some(MicroTime(at(NOW))));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, Some(4));
    }

    #[tokio::test]
    async fn released_lease_is_taken_at_once() {
        let (election, mut server) = election();
        let lease = stored(None, NOW - 1, 4, "50");
        let (out, bodies, _) = run(election.try_acquire_or_renew(at(NOW)), async move {
            let (_, send) = expect(&mut server, Method::GET, ITEM).await;
            respond(send, 200, lease);
            let (body, send) = expect(&mut server, Method::PUT, ITEM).await;
            respond(send, 200, echo(&body, "51"));
            (vec![body], server)
        })
        .await;
        assert!(out.unwrap());
        let (_, spec) = written(&bodies[0]);
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(spec.lease_transitions, Some(5));
    }

    #[tokio::test]
    async fn own_lease_is_renewed() {
        let (election, mut server) = election();
        let lease = stored(Some(ME), NOW - 5, 2, "7");
        let (out, bodies, _) = run(election.try_acquire_or_renew(at(NOW)), async move {
            let (_, send) = expect(&mut server, Method::GET, ITEM).await;
            respond(send, 200, lease);
            let (body, send) = expect(&mut server, Method::PUT, ITEM).await;
            respond(send, 200, echo(&body, "8"));
            (vec![body], server)
        })
        .await;
        assert!(out.unwrap());
        let (meta, spec) = written(&bodies[0]);
        assert_eq!(meta.resource_version.as_deref(), Some("7"));
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(spec.renew_time, Some(MicroTime(at(NOW))));
        // Renewal keeps the acquisition time and the transition count.
        assert_eq!(spec.acquire_time, Some(MicroTime(at(NOW - 105))));
        assert_eq!(spec.lease_transitions, Some(2));
    }

    #[tokio::test]
    async fn conflict_on_replace_loses_the_round_without_error() {
        let (election, mut server) = election();
        let lease = stored(Some(OTHER), NOW - 60, 3, "42");
        let (out, _, mut server) = run(election.try_acquire_or_renew(at(NOW)), async move {
            let (_, send) = expect(&mut server, Method::GET, ITEM).await;
            respond(send, 200, lease);
            let (_, send) = expect(&mut server, Method::PUT, ITEM).await;
            respond(send, 409, status(409, "Conflict"));
            (vec![], server)
        })
        .await;
        assert!(!out.unwrap());
        assert_quiet(&mut server).await;
    }

    #[tokio::test]
    async fn other_api_errors_are_reported() {
        let (election, mut server) = election();
        let (out, _, _) = run(election.try_acquire_or_renew(at(NOW)), async move {
            let (_, send) = expect(&mut server, Method::GET, ITEM).await;
            respond(send, 403, status(403, "Forbidden"));
            (vec![], server)
        })
        .await;
        assert!(matches!(out, Err(LeaderError::Api { .. })));
    }

    #[tokio::test]
    async fn release_clears_the_holder_and_stops_acquiring() {
        let (election, mut server) = election();
        let lease = stored(Some(ME), NOW - 5, 2, "7");
        let (out, bodies, mut server) = run(election.release(), async move {
            let (_, send) = expect(&mut server, Method::GET, ITEM).await;
            respond(send, 200, lease);
            let (body, send) = expect(&mut server, Method::PUT, ITEM).await;
            respond(send, 200, echo(&body, "8"));
            (vec![body], server)
        })
        .await;
        out.unwrap();
        let (meta, spec) = written(&bodies[0]);
        assert_eq!(meta.resource_version.as_deref(), Some("7"));
        assert_eq!(spec.holder_identity, None);
        assert_eq!(spec.lease_transitions, Some(2));

        // A released election never takes the lease back.
        assert!(
            !election
                .clone()
                .try_acquire_or_renew(at(NOW))
                .await
                .unwrap()
        );
        assert_quiet(&mut server).await;
    }

    #[tokio::test]
    async fn release_leaves_a_lease_of_another_alone() {
        let (election, mut server) = election();
        let lease = stored(Some(OTHER), NOW - 5, 2, "7");
        let (out, _, mut server) = run(election.release(), async move {
            let (_, send) = expect(&mut server, Method::GET, ITEM).await;
            respond(send, 200, lease);
            (vec![], server)
        })
        .await;
        out.unwrap();
        assert_quiet(&mut server).await;
    }

    #[tokio::test]
    async fn spawn_publishes_leadership() {
        let (election, mut server) = election();
        let mut leading = election
            .with_timings(Duration::from_secs(15), Duration::from_millis(10))
            .spawn();
        assert!(!*leading.borrow());
        let (_, send) = expect(&mut server, Method::GET, ITEM).await;
        respond(send, 404, status(404, "NotFound"));
        let (body, send) = expect(&mut server, Method::POST, COLLECTION).await;
        respond(send, 201, echo(&body, "1"));
        tokio::time::timeout(Duration::from_secs(10), leading.wait_for(|l| *l))
            .await
            .unwrap()
            .unwrap();
        // The next round fails: leadership is withdrawn.
        let (_, send) = expect(&mut server, Method::GET, ITEM).await;
        respond(send, 500, status(500, "InternalError"));
        tokio::time::timeout(Duration::from_secs(10), leading.wait_for(|l| !*l))
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_hung_round_withdraws_leadership() {
        let (election, mut server) = election();
        let mut leading = election
            .with_timings(Duration::from_secs(15), Duration::from_millis(50))
            .spawn();
        let (_, send) = expect(&mut server, Method::GET, ITEM).await;
        respond(send, 404, status(404, "NotFound"));
        let (body, send) = expect(&mut server, Method::POST, COLLECTION).await;
        respond(send, 201, echo(&body, "1"));
        tokio::time::timeout(Duration::from_secs(10), leading.wait_for(|l| *l))
            .await
            .unwrap()
            .unwrap();
        // The next round's read is never answered.
        let (_request, _send) = server.next_request().await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), leading.wait_for(|l| !*l))
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn expiry_uses_the_leases_own_duration() {
        let spec = LeaseSpec {
            renew_time: Some(MicroTime(at(NOW - 20))),
            lease_duration_seconds: Some(30),
            ..LeaseSpec::default()
        };
        assert!(!expired(&spec, at(NOW), 15));
        assert!(expired(&spec, at(NOW + 10), 15));
        assert!(expired(&LeaseSpec::default(), at(NOW), 15));
    }
}
