//! `coffer controller`: Kubernetes mode. Every replica serves the AWS API and the
//! container-credentials endpoint; the one holding the Lease also reconciles KmsKeys and runs the
//! key scheduler (rotation, end of deletion windows).
//!
//! Start-up: connect with the current kubeconfig (or the in-cluster account), refuse to go on
//! when the CRDs are missing, load the root key, start the store's watches, bind, and report ready
//! once the caches hold a full list.

mod conditions;
pub mod kmskey;
pub mod parameter;
#[cfg(test)]
mod parameter_tests;
pub mod restart;
pub mod secret;
#[cfg(test)]
mod secret_tests;
mod sources;
pub mod sync;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::ListParams;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument as _;

use crate::aws::audit::AuditSink;
use crate::aws::credentials_endpoint::{
    self, CredentialsEndpoint, TemporaryCredentialAuthenticator, TemporaryCredentials,
};
use crate::aws::guard::{FrontDoor, RequestGuard};
use crate::aws::kube_identity::{KubernetesAuthority, ServiceAccountUids, TokenReviewer};
use crate::aws::throttle::Throttle;
use crate::aws::{self, AwsApi};
use crate::crypto::{
    CryptoError, FileRootKeyProvider, KubernetesRootKeyProvider, RootKeyProvider as _,
};
use crate::engine::SystemClock;
use crate::engine::kms::{KeyDirectory, Kms};
use crate::engine::parameters::Parameters;
use crate::engine::secrets::Secrets;
use crate::leader::LeaderElection;
use crate::metrics::Metrics;
use crate::resources::kmskey::KmsKey;
use crate::resources::secret::resource_name_for;
use crate::serve::{self, ServeError, TlsFiles};
use crate::store::kubernetes::versioned::RecordChanged;
use crate::store::kubernetes::{KmsKeys, KubernetesStore, StoreChange};
use kmskey::Context;

/// Reconciles running at once; the API server, not the controller, is what limits the pace.
const RECONCILE_CONCURRENCY: u16 = 32;

/// Where the root key comes from.
#[derive(Clone, Debug)]
pub enum RootKeySource {
    /// A core Secret in the controller's namespace, created on first start.
    Kubernetes { secret: String },
    /// A mounted file.
    File { path: PathBuf },
}

/// What `coffer controller` needs to start.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    pub listen: SocketAddr,
    pub probe_listen: SocketAddr,
    /// `None` serves plain HTTP (development only).
    pub tls: Option<TlsFiles>,
    pub namespace: String,
    pub root_key: RootKeySource,
    pub region: String,
    pub lease_name: String,
    pub identity: String,
    pub audience: String,
    pub credentials_lifetime: Duration,
    pub throttle_per_second: u32,
    pub throttle_burst: u32,
    pub audit_log: String,
    /// Where parameter policy notifications are POSTed, besides Events and the audit log.
    pub parameter_webhook: Option<String>,
    /// The secret that signs them; required with `parameter_webhook`.
    pub parameter_webhook_secret_file: Option<PathBuf>,
    /// Timeouts and limits of the listeners and the API.
    pub front_door: FrontDoor,
    /// How secret rotations run.
    pub rotation: crate::rotation::RotationSettings,
    /// How long changes gather before a workload annotated `coffer.dev/restart-on-change`
    /// rolls; `None` turns restarts off.
    pub restart_debounce: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("cannot reach Kubernetes (kubeconfig or in-cluster account)")]
    Connect(#[source] crate::fault::BoxError),
    #[error(
        "the Coffer CRDs are not installed (kmskeys.coffer.dev not found): run `coffer crd | kubectl apply --server-side -f -` or install the Helm chart"
    )]
    CrdsMissing,
    #[error("cannot check for the Coffer CRDs")]
    CrdCheck(#[source] kube::Error),
    #[error("root key: {0}")]
    RootKey(#[from] CryptoError),
    #[error("credentials endpoint: {0}")]
    Credentials(String),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(ServeError),
    #[error("cannot open the audit log {path}: {source}")]
    AuditLog {
        path: String,
        source: std::io::Error,
    },
    #[error("serving failed: {0}")]
    Serve(ServeError),
    #[error("parameter webhook: {0}")]
    Webhook(#[from] crate::server::webhook::WebhookError),
}

/// Fails clearly when the CRDs are absent: listing KmsKeys answers 404 then.
async fn check_crds(client: &Client) -> Result<(), ControllerError> {
    match Api::<KmsKey>::all(client.clone())
        .list_metadata(&ListParams::default().limit(1))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Err(ControllerError::CrdsMissing),
        Err(other) => Err(ControllerError::CrdCheck(other)),
    }
}

async fn bind(address: SocketAddr) -> Result<(TcpListener, SocketAddr), ControllerError> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| ControllerError::Listen { address, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ControllerError::Listen { address, source })?;
    Ok((listener, bound))
}

/// Runs the controller until `shutdown` completes.
pub async fn run(
    config: ControllerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ControllerError> {
    let metrics = Metrics::new();
    let kube_config = kube::Config::infer()
        .await
        .map_err(|err| ControllerError::Connect(err.into()))?;
    let counting = metrics.kubernetes().layer();
    let client = kube::client::ClientBuilder::try_from(kube_config)
        .map_err(|err| ControllerError::Connect(err.into()))?
        .with_layer(&counting)
        .build();
    run_with_client_and_metrics(config, client, metrics, shutdown).await
}

/// Runs the controller with `client` until `shutdown` completes.
pub async fn run_with_client(
    config: ControllerConfig,
    client: Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ControllerError> {
    run_with_client_and_metrics(config, client, Metrics::new(), shutdown).await
}

/// Runs the controller with `client` until `shutdown` completes, counting into `metrics`.
pub async fn run_with_client_and_metrics(
    config: ControllerConfig,
    client: Client,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ControllerError> {
    if let Some(files) = &config.tls {
        files.load_check().map_err(ControllerError::Tls)?;
    }
    check_crds(&client).await?;
    let parameter_webhook = match (
        &config.parameter_webhook,
        &config.parameter_webhook_secret_file,
    ) {
        (Some(url), Some(secret)) => Some(Arc::new(crate::server::webhook::ParameterWebhook::new(
            url,
            crate::server::webhook::read_secret(secret)?,
            &config.region,
        )?)),
        (Some(_), None) => return Err(crate::server::webhook::WebhookError::NoSecret.into()),
        (None, _) => None,
    };

    let keyring = Arc::new(match &config.root_key {
        RootKeySource::Kubernetes { secret } => {
            KubernetesRootKeyProvider::new(client.clone(), &config.namespace, secret)
                .load()
                .await?
        }
        RootKeySource::File { path } => FileRootKeyProvider::new(path).load().await?,
    });
    let store = Arc::new(KubernetesStore::new(client.clone(), &config.namespace));
    let feeding = tokio::spawn(Arc::clone(&store).run());
    let keys = Arc::clone(store.kms_keys());
    let authority = Arc::new(
        KubernetesAuthority::new(client.clone())
            .with_key_names(Arc::clone(&keys) as _)
            .with_parameter_names(Arc::clone(store.parameters()) as _),
    );
    let kms = Arc::new(
        Kms::new(
            store.clone(),
            Arc::clone(&keyring),
            authority.clone(),
            Arc::new(SystemClock),
            config.region.clone(),
        )
        .with_key_directory(Arc::clone(&keys) as _),
    );
    let secret_records = Arc::clone(store.secrets());
    let parameter_records = Arc::clone(store.parameters());
    let parameters = Arc::new(Parameters::new(
        store.clone(),
        Arc::clone(&kms),
        authority.clone(),
        Arc::new(SystemClock),
    ));
    let secrets = Arc::new(
        Secrets::new(
            store.clone(),
            Arc::clone(&kms),
            authority,
            Arc::new(SystemClock),
        )
        .with_directory(Arc::clone(&secret_records) as _)
        .with_rotation(
            crate::rotation::cluster_registry(&client, config.rotation.jobs),
            config.rotation.max_concurrent,
            config.rotation.step_pause,
        ),
    );

    let audit = AuditSink::from_setting(&config.audit_log, config.front_door.audit_rotation)
        .map_err(|source| ControllerError::AuditLog {
            path: config.audit_log.clone(),
            source,
        })?;
    let reviewer = Arc::new(TokenReviewer::with_audience(
        client.clone(),
        &config.audience,
    ));
    let temporary = Arc::new(
        TemporaryCredentials::new(Arc::clone(&keyring))
            .with_lifetime(config.credentials_lifetime)
            .map_err(|err| ControllerError::Credentials(err.to_string()))?,
    );
    let api = Arc::new(AwsApi {
        services: crate::aws::ops::Services::new()
            .with(Arc::clone(&kms))
            .with(Arc::clone(&secrets))
            .with(Arc::clone(&parameters)),
        region: config.region.clone(),
        guard: RequestGuard::new(config.front_door.requests),
        authenticator: Arc::new(TemporaryCredentialAuthenticator::new(
            Arc::clone(&temporary),
            Arc::new(ServiceAccountUids::new(client.clone())),
        )),
        bearer: Some(reviewer.clone()),
        throttle: Throttle::new(config.throttle_per_second, config.throttle_burst),
        audit: audit.clone(),
        metrics: metrics.api(),
    });
    let api_routes = aws::router(api)
        .merge(credentials_endpoint::router(Arc::new(
            CredentialsEndpoint::new(reviewer, temporary),
        )))
        .merge(crate::injection::router());
    let (ready_tx, ready_rx) = watch::channel(false);
    let probe_routes: Router =
        serve::health_router(ready_rx).merge(aws::metrics_router(metrics.api()));

    let (api_listener, api_address) = bind(config.listen).await?;
    let (probe_listener, probe_address) = bind(config.probe_listen).await?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(
        address = %format!("{scheme}://{api_address}"),
        probe_address = %format!("http://{probe_address}"),
        namespace = %config.namespace,
        identity = %config.identity,
        "coffer controller listening"
    );
    audit.spawn_flusher();
    // Every replica relays what its own policy scheduler (the leader's) notifies.
    let notifications = tokio::spawn(crate::server::webhook::relay(
        parameters.notifications(),
        audit.clone(),
        parameter_webhook,
    ));

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        stop_tx.send_replace(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        // A dropped sender also means stop.
        let _ = rx.wait_for(|stop| *stop).await;
    };

    {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store.synced().await;
            ready_tx.send_replace(true);
            tracing::info!("caches synced; ready");
        });
    }
    let forwarding = tokio::spawn(forward_changes(keys.changes(), Arc::clone(&kms)));

    let election = LeaderElection::new(
        client.clone(),
        &config.namespace,
        &config.lease_name,
        &config.identity,
    );
    let leading = election.clone().spawn();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "coffer".into(),
            instance: Some(config.identity.clone()),
        },
    );
    let work = LeaderWork {
        keys: Arc::new(Context {
            kms: Arc::clone(&kms),
            store: Arc::clone(&keys),
            client: client.clone(),
            recorder: recorder.clone(),
            clock: Arc::new(SystemClock),
            metrics: Some(metrics.reconcile()),
        }),
        secrets: Arc::new(secret::Context {
            secrets: Arc::clone(&secrets),
            kms: Arc::clone(&kms),
            store: secret_records,
            client: client.clone(),
            recorder: recorder.clone(),
            clock: Arc::new(SystemClock),
            metrics: Some(metrics.reconcile()),
        }),
        parameters: Arc::new(parameter::Context {
            parameters: Arc::clone(&parameters),
            kms: Arc::clone(&kms),
            store: parameter_records,
            client: client.clone(),
            recorder: recorder.clone(),
            clock: Arc::new(SystemClock),
            metrics: Some(metrics.reconcile()),
        }),
        restarts: config.restart_debounce.map(|debounce| {
            Arc::new(restart::Context {
                client: client.clone(),
                secrets: Arc::clone(&secrets),
                parameters: Arc::clone(&parameters),
                recorder: recorder.clone(),
                debounce,
            })
        }),
        recorder,
    };
    let leader_work = tokio::spawn(lead(leading, work, stopped(stop_rx.clone())));

    let api_server = serve::serve(
        api_listener,
        api_routes,
        config.tls.clone(),
        config.front_door.connections,
        stopped(stop_rx.clone()),
    );
    let probe_server = serve::serve(
        probe_listener,
        probe_routes,
        None,
        config.front_door.connections,
        stopped(stop_rx.clone()),
    );
    let (api_outcome, probe_outcome) = tokio::join!(api_server, probe_server);

    let _ = leader_work.await;
    if let Err(err) = election.release().await {
        tracing::warn!(error = %err, "could not release the lease");
    }
    forwarding.abort();
    notifications.abort();
    feeding.abort();
    audit.flush();
    api_outcome.map_err(ControllerError::Serve)?;
    probe_outcome.map_err(ControllerError::Serve)?;
    tracing::info!("coffer controller stopped");
    Ok(())
}

/// Drops the engine's cached copy of a key another replica changed.
async fn forward_changes(
    mut changes: tokio::sync::broadcast::Receiver<StoreChange>,
    kms: Arc<Kms>,
) {
    loop {
        match changes.recv().await {
            Ok(StoreChange::KeyChanged { namespace, key_id })
            | Ok(StoreChange::KeyDestroyed {
                namespace, key_id, ..
            }) => kms.forget(&namespace, &key_id),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                // Some changes went unseen: cached keys may be stale, so drop them all.
                tracing::warn!(missed, "missed key changes; dropping every cached key");
                kms.forget_all();
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Wakes `schedule` for changes of records: RotateSecret served by another replica, or a Job
/// that finished, may have moved a due time. Changes within [`WAKE_COALESCING`] make one wake,
/// so that a burst of writes is one pass over the records, not one per write.
async fn wake_on_changes<T: Clone>(
    mut changes: tokio::sync::broadcast::Receiver<T>,
    schedule: Arc<tokio::sync::Notify>,
) {
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    loop {
        match changes.recv().await {
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
        tokio::time::sleep(WAKE_COALESCING).await;
        loop {
            match changes.try_recv() {
                Ok(_) | Err(TryRecvError::Lagged(_)) => {}
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => return,
            }
        }
        // After the burst: a pass that starts now sees every change of it.
        schedule.notify_one();
    }
}

/// How long [`wake_on_changes`] gathers changes before one wake.
const WAKE_COALESCING: Duration = Duration::from_millis(250);

/// One piece of the leader's work. It runs until leadership ends, when it is dropped.
type LeaderTask = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What the leader works with.
struct LeaderWork {
    keys: Arc<Context>,
    secrets: Arc<secret::Context>,
    parameters: Arc<parameter::Context>,
    restarts: Option<Arc<restart::Context>>,
    recorder: Recorder,
}

/// The leader's work, made anew each time this replica takes the Lease. A new scheduled duty
/// (rotating secrets, expiring parameters) is one more entry here.
fn leader_tasks(work: &LeaderWork) -> Vec<(&'static str, LeaderTask)> {
    let keys = &work.keys;
    let secrets = &work.secrets;
    let parameters = &work.parameters;
    let mut tasks: Vec<(&'static str, LeaderTask)> = vec![
        (
            "KmsKey reconciler",
            Box::pin(run_reconciler(
                ("KmsKey", "kmskey"),
                keys.store.reconciler_input(),
                changed_resources(Arc::clone(&keys.store)),
                kmskey::reconcile,
                kmskey::error_policy,
                Arc::clone(keys),
                keys.metrics.clone(),
            )),
        ),
        (
            "key scheduler",
            Box::pin(Arc::clone(&keys.kms).run_scheduler()),
        ),
        (
            "deletion windows of deleted KmsKeys",
            Box::pin(kmskey::schedule_abandoned(Arc::clone(keys))),
        ),
        (
            "Events for destroyed keys",
            Box::pin(announce_destroyed(
                keys.store.changes(),
                work.recorder.clone(),
            )),
        ),
        (
            "Secret reconciler",
            Box::pin(run_reconciler(
                ("Secret", "secret"),
                secrets.store.reconciler_input(),
                changed_records(secrets.store.changes(), |changed| {
                    Some(resource_name_for(&changed.name))
                }),
                secret::reconcile,
                secret::error_policy,
                Arc::clone(secrets),
                secrets.metrics.clone(),
            )),
        ),
        (
            "secret purge",
            Box::pin(Arc::clone(&secrets.secrets).run_scheduler()),
        ),
        (
            "secret rotation",
            Box::pin(Arc::clone(&secrets.secrets).run_rotation_scheduler()),
        ),
        (
            "secret writes of other replicas waking the rotation schedule",
            Box::pin(wake_on_changes(
                secrets.store.changes(),
                secrets.secrets.rotation_changed(),
            )),
        ),
        (
            "recovery windows of deleted Secrets",
            Box::pin(secret::schedule_abandoned(Arc::clone(secrets))),
        ),
        (
            "Parameter reconciler",
            Box::pin(run_reconciler(
                ("Parameter", "parameter"),
                parameters.store.reconciler_input(),
                {
                    let store = Arc::clone(&parameters.store);
                    changed_records(parameters.store.changes(), move |changed| {
                        store.recorded_resource(&changed.namespace, &changed.name)
                    })
                },
                parameter::reconcile,
                parameter::error_policy,
                Arc::clone(parameters),
                parameters.metrics.clone(),
            )),
        ),
        (
            "parameter policies",
            Box::pin(Arc::clone(&parameters.parameters).run_scheduler()),
        ),
        (
            "deletion of parameters whose Parameter is gone",
            Box::pin(parameter::delete_abandoned(Arc::clone(parameters))),
        ),
        (
            "Events for parameter notifications",
            Box::pin(parameter::announce_notifications(Arc::clone(parameters))),
        ),
    ];
    if let Some(restarts) = &work.restarts {
        tasks.push((
            "workload restarts on change",
            Box::pin(restart::run(
                Arc::clone(restarts),
                secrets.store.changes(),
                parameters.store.changes(),
            )),
        ));
    }
    tasks
}

/// While this replica leads, runs the [`leader_tasks`]; stops them all when leadership is lost,
/// and returns on shutdown.
async fn lead(
    mut leading: watch::Receiver<bool>,
    work: LeaderWork,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            acquired = leading.wait_for(|leading| *leading) => {
                if acquired.is_err() { return; }
            }
        }
        tracing::info!("leading: reconciling KmsKeys and Secrets and running the schedulers");
        let tasks = leader_tasks(&work).into_iter().map(|(name, task)| {
            Box::pin(async move {
                task.await;
                name
            })
        });
        let any_ended = futures::future::select_all(tasks);
        tokio::select! {
            _ = &mut stop => return,
            _ = leading.wait_for(|leading| !*leading) => {
                tracing::warn!("lost leadership: reconciling stops");
            }
            (name, _, _) = any_ended => {
                tracing::warn!(task = name, "a leader task ended; starting the leader's work again");
            }
        }
    }
}

/// A failure of a reconcile, named for metrics.
trait ReconcileFailure: std::error::Error + Send + Sync + 'static {
    fn kind(&self) -> &'static str;
}

impl ReconcileFailure for kmskey::ReconcileError {
    fn kind(&self) -> &'static str {
        kmskey::ReconcileError::kind(self)
    }
}

impl ReconcileFailure for parameter::ReconcileError {
    fn kind(&self) -> &'static str {
        parameter::ReconcileError::kind(self)
    }
}

impl ReconcileFailure for secret::ReconcileError {
    fn kind(&self) -> &'static str {
        secret::ReconcileError::kind(self)
    }
}

/// Runs a reconciler fed by its keeper's own watch, so that it sees what the store sees, and
/// woken as well by `wakes` (records written elsewhere: the API, the scheduler, another
/// replica). Thousands of resources applied at once queue up rather than all hold a request
/// open.
async fn run_reconciler<K, C, F, E>(
    (kind, metric_kind): (&'static str, &'static str),
    input: (
        impl futures::Stream<Item = Result<K, kube::runtime::watcher::Error>> + Send + 'static,
        kube::runtime::reflector::Store<K>,
    ),
    wakes: impl futures::Stream<Item = ObjectRef<K>> + Send + 'static,
    reconcile: fn(Arc<K>, Arc<C>) -> F,
    error_policy: fn(Arc<K>, &E, Arc<C>) -> kube::runtime::controller::Action,
    context: Arc<C>,
    metrics: Option<crate::metrics::ReconcileMetrics>,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    C: Send + Sync + 'static,
    F: Future<Output = Result<kube::runtime::controller::Action, E>> + Send + 'static,
    E: ReconcileFailure,
{
    let (resources, reader) = input;
    Controller::for_stream(resources, reader)
        .reconcile_on(wakes)
        .with_config(
            kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY),
        )
        .run(
            move |resource, ctx: Arc<C>| {
                // Every line logged while reconciling names the object.
                let span = tracing::info_span!(
                    "reconcile",
                    kind,
                    namespace = resource.meta().namespace.as_deref().unwrap_or_default(),
                    name = resource.meta().name.as_deref().unwrap_or_default(),
                );
                let metrics = metrics.clone();
                async move {
                    let started = Instant::now();
                    let outcome = reconcile(resource, ctx).await;
                    if let Some(metrics) = &metrics {
                        match &outcome {
                            Ok(_) => metrics.success(metric_kind, started.elapsed()),
                            Err(err) => metrics.error(metric_kind, err.kind(), started.elapsed()),
                        }
                    }
                    outcome
                }
                .instrument(span)
            },
            error_policy,
            context,
        )
        .for_each(|_| async {})
        .await;
}

/// The resources whose records changed, from a keeper's change feed; `resource_name` names
/// the resource of a record (`None` when it has none).
fn changed_records<K, F>(
    changes: tokio::sync::broadcast::Receiver<RecordChanged>,
    resource_name: F,
) -> impl futures::Stream<Item = ObjectRef<K>> + Send + 'static
where
    K: kube::Resource<DynamicType = ()> + 'static,
    F: Fn(&RecordChanged) -> Option<String> + Send + Sync + 'static,
{
    let resource_name = Arc::new(resource_name);
    futures::stream::unfold(changes, move |mut changes| {
        let resource_name = Arc::clone(&resource_name);
        async move {
            loop {
                match changes.recv().await {
                    Ok(changed) => {
                        if let Some(name) = resource_name(&changed) {
                            let reference = ObjectRef::new(&name).within(&changed.namespace);
                            return Some((reference, changes));
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    })
}

/// The KmsKeys whose keys changed, from the store's change feed.
fn changed_resources(
    store: Arc<KmsKeys>,
) -> impl futures::Stream<Item = ObjectRef<KmsKey>> + Send + 'static {
    let changes = store.changes();
    futures::stream::unfold(changes, move |mut changes| {
        let store = Arc::clone(&store);
        async move {
            loop {
                match changes.recv().await {
                    Ok(StoreChange::KeyChanged { namespace, key_id }) => {
                        if let Some(name) = store.recorded_resource(&namespace, &key_id) {
                            return Some((ObjectRef::new(&name).within(&namespace), changes));
                        }
                    }
                    Ok(StoreChange::KeyDestroyed { .. })
                    | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    })
}

/// Publishes a `Deleted` Event for each key whose material was destroyed.
async fn announce_destroyed(
    mut changes: tokio::sync::broadcast::Receiver<StoreChange>,
    recorder: Recorder,
) {
    loop {
        let change = match changes.recv().await {
            Ok(change) => change,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        if let StoreChange::KeyDestroyed {
            namespace,
            key_id,
            resource_name,
        } = change
        {
            let reference = ObjectReference {
                api_version: Some("coffer.dev/v1alpha1".into()),
                kind: Some("KmsKey".into()),
                namespace: Some(namespace),
                name: Some(resource_name.unwrap_or_else(|| key_id.clone())),
                ..ObjectReference::default()
            };
            let event = Event {
                type_: EventType::Normal,
                reason: "Deleted".into(),
                note: Some(format!(
                    "The deletion window of key {key_id} ended; its material is destroyed."
                )),
                action: "Deleted".into(),
                secondary: None,
            };
            if let Err(err) = recorder.publish(&event, &reference).await {
                tracing::warn!(error = %err, "could not publish an Event");
            }
        }
    }
}

impl KeyDirectory for KmsKeys {
    /// Keys are also known by their KmsKey resource's name, in `kmsKeyRef` and the API alike.
    fn key_id_named(&self, namespace: &str, name: &str) -> Option<String> {
        self.resource(namespace, name)
            .filter(|resource| self.owns_its_key(resource))
            .and_then(|resource| crate::store::kubernetes::key_id_of(&resource).map(str::to_owned))
    }
}

impl crate::aws::kube_identity::ParameterNames
    for crate::store::kubernetes::parameters::ParameterRecords
{
    /// The Parameter that declares the parameter; a one-level name arrives without its slash
    /// (ARNs cannot tell `/plain` from `plain`), so `/plain` is looked for too, as the engine
    /// does. Without a resource, the name the store would give one.
    fn rbac_name(&self, namespace: &str, parameter_name: &str) -> String {
        let slashed = format!("/{parameter_name}");
        self.resource_for(namespace, parameter_name)
            .or_else(|| {
                (!parameter_name.starts_with('/'))
                    .then(|| self.resource_for(namespace, &slashed))
                    .flatten()
            })
            .map(|resource| kube::ResourceExt::name_any(resource.as_ref()))
            .unwrap_or_else(|| crate::resources::parameter::parameter_resource_name(parameter_name))
    }
}

impl crate::aws::kube_identity::KeyNames for KmsKeys {
    fn rbac_name(&self, namespace: &str, key_id: &str) -> String {
        KmsKeys::rbac_name(self, namespace, key_id)
    }
}
