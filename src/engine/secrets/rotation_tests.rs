//! Rotation on the embedded store with a clock the tests move: the four steps, failures and
//! backoff, resuming after a crash, the cap on rotations under way, and the schedule.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;

use super::rotation_rules::RotationRules;
use super::*;
use crate::crypto::RootKeyring;
use crate::engine::rotation::{
    RotationStrategy, Step, StepError, StepOutcome, StepRequest, StrategyRegistry,
};
use crate::store::EmbeddedStore;
use crate::test_support::engine::{ManualClock, NameAuthority, caller};

/// A strategy whose steps answer from a script (then succeed), may be held at a gate, and
/// keep what they were asked.
#[derive(Default)]
struct Scripted {
    failures: Mutex<BTreeMap<Step, VecDeque<bool>>>,
    seen: Mutex<Vec<(String, Step, String)>>,
    gate: Option<Arc<tokio::sync::Semaphore>>,
    /// `step` waits (as on a Job) until the flag is set.
    held: Option<(Step, Arc<std::sync::atomic::AtomicBool>)>,
}

impl Scripted {
    /// `step` fails `times` times first (retryable or not).
    fn failing(step: Step, times: usize, retryable: bool) -> Self {
        let scripted = Self::default();
        scripted
            .failures
            .lock()
            .unwrap()
            .insert(step, std::iter::repeat_n(retryable, times).collect());
        scripted
    }

    fn gated(gate: Arc<tokio::sync::Semaphore>) -> Self {
        Self {
            gate: Some(gate),
            ..Self::default()
        }
    }

    fn steps_of(&self, name: &str) -> Vec<Step> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(secret, _, _)| secret == name)
            .map(|(_, step, _)| *step)
            .collect()
    }
}

#[async_trait]
impl RotationStrategy for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }

    async fn run(&self, request: StepRequest<'_>) -> Result<StepOutcome, StepError> {
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        self.seen.lock().unwrap().push((
            request.name.to_owned(),
            request.step,
            request.token.to_owned(),
        ));
        let fail = self
            .failures
            .lock()
            .unwrap()
            .get_mut(&request.step)
            .and_then(VecDeque::pop_front);
        if let Some((step, released)) = &self.held
            && *step == request.step
            && !released.load(std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(StepOutcome::Waiting(std::time::Duration::from_secs(30)));
        }
        if let Some(retryable) = fail {
            return Err(StepError {
                step: request.step,
                reason: "the database said no".into(),
                retryable,
            });
        }
        Ok(match request.step {
            Step::CreateSecret => {
                let current = request.current.map(|value| value.expose().to_vec());
                let mut next = current.unwrap_or_default();
                next.extend_from_slice(b"+");
                StepOutcome::Pending(SecretBytes::new(next))
            }
            _ => StepOutcome::Done,
        })
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    kms: Arc<Kms>,
    clock: Arc<ManualClock>,
    strategy: Arc<Scripted>,
    secrets: Arc<Secrets>,
}

const START: i64 = 1_800_000_000;

fn engine(
    store: &Arc<dyn Store>,
    kms: &Arc<Kms>,
    clock: &Arc<ManualClock>,
    strategy: &Arc<Scripted>,
    cap: usize,
) -> Arc<Secrets> {
    let registry = StrategyRegistry::new()
        .with(Arc::new(crate::rotation::generate::GenerateStrategy))
        .with(Arc::clone(strategy) as Arc<dyn RotationStrategy>);
    Arc::new(
        Secrets::new(
            Arc::clone(store),
            Arc::clone(kms),
            Arc::new(NameAuthority),
            clock.clone(),
        )
        .with_rotation(registry, cap, std::time::Duration::ZERO),
    )
}

fn fixture_with(strategy: Scripted, cap: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("db")).unwrap());
    let clock = Arc::new(ManualClock::at(START));
    let kms = Arc::new(Kms::new(
        store.clone(),
        Arc::new(RootKeyring::generate()),
        Arc::new(NameAuthority),
        clock.clone(),
        "us-east-1",
    ));
    let strategy = Arc::new(strategy);
    let secrets = engine(&store, &kms, &clock, &strategy, cap);
    Fixture {
        _dir: dir,
        store,
        kms,
        clock,
        strategy,
        secrets,
    }
}

fn fixture(strategy: Scripted) -> Fixture {
    fixture_with(strategy, 8)
}

fn text(value: &str) -> SecretValue {
    SecretValue {
        bytes: SecretBytes::from_slice(value.as_bytes()),
        binary: false,
    }
}

async fn create(f: &Fixture, name: &str, value: &str) {
    f.secrets
        .create_secret(
            &caller("admin"),
            NewSecret {
                name: name.into(),
                value: Some(text(value)),
                ..NewSecret::default()
            },
        )
        .await
        .unwrap();
}

async fn value_at(f: &Fixture, name: &str, stage: &str) -> Option<String> {
    f.secrets
        .get_secret_value(&caller("admin"), name, None, Some(stage))
        .await
        .ok()
        .map(|value| String::from_utf8(value.value.bytes.expose().to_vec()).unwrap())
}

fn scripted_rotation() -> RotateRequest {
    RotateRequest::default()
}

/// Sets `name` to rotate with the scripted strategy (through the record: the API offers only
/// built-in functions).
async fn use_scripted(f: &Fixture, name: &str, rules: Option<RotationRules>) {
    use_strategy(&f.store, name, "scripted", rules).await;
}

/// Sets `name` to rotate with `strategy`, written straight into its record.
async fn use_strategy(
    store: &Arc<dyn Store>,
    name: &str,
    strategy: &str,
    rules: Option<RotationRules>,
) {
    let key = typed::key::<SecretRecord>("default", name);
    typed::modify::<SecretRecord, _, _, SecretsError>(store.as_ref(), &key, |current| {
        let current = current.unwrap();
        let mut meta = current.meta.clone();
        meta.rotation = Some(model::RotationRecord {
            enabled: true,
            declared: false,
            rules: rules.clone(),
            strategy: strategy.into(),
            settings: serde_json::Value::Null,
            function_arn: None,
            last_rotated: None,
            next_rotation: None,
            in_progress: None,
            last_error: None,
        });
        Ok(typed::TypedChange::Put {
            meta,
            sealed: current.sealed.clone(),
        })
    })
    .await
    .unwrap();
}

/// Runs what is due, then waits for the rotations it started to stop.
async fn run_due(secrets: &Arc<Secrets>) -> Option<i64> {
    let next = secrets.rotate_due().await.unwrap();
    settle(secrets).await;
    next
}

async fn settle(secrets: &Arc<Secrets>) {
    for _ in 0..500 {
        if secrets.rotations.running.lock().unwrap().is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("rotations did not stop");
}

async fn describe(f: &Fixture, name: &str) -> RotationView {
    f.secrets
        .describe_secret(&caller("admin"), name)
        .await
        .unwrap()
        .rotation
}

#[tokio::test]
async fn a_rotation_runs_the_four_steps_and_only_finish_moves_current() {
    let f = fixture(Scripted::default());
    create(&f, "db", "v1").await;
    use_scripted(&f, "db", None).await;
    let outcome = f
        .secrets
        .rotate_secret(&caller("admin"), "db", scripted_rotation())
        .await
        .unwrap();
    let token = outcome.version_id.unwrap();
    // Nothing ran yet: CURRENT is where it was, and the rotation is under way.
    assert_eq!(value_at(&f, "db", CURRENT).await.as_deref(), Some("v1"));
    assert_eq!(
        describe(&f, "db").await.in_progress,
        Some((Step::CreateSecret, token.clone()))
    );
    run_due(&f.secrets).await;
    assert_eq!(f.strategy.steps_of("db"), Step::ALL);
    assert!(
        f.strategy
            .seen
            .lock()
            .unwrap()
            .iter()
            .all(|(_, _, seen)| *seen == token),
        "every step runs under the rotation's token"
    );
    assert_eq!(value_at(&f, "db", CURRENT).await.as_deref(), Some("v1+"));
    assert_eq!(value_at(&f, "db", PREVIOUS).await.as_deref(), Some("v1"));
    assert_eq!(value_at(&f, "db", PENDING).await, None);
    let view = describe(&f, "db").await;
    assert!(view.enabled);
    assert_eq!(view.last_rotated, Some(START));
    assert_eq!(view.in_progress, None);
    let current = f
        .secrets
        .get_secret_value(&caller("admin"), "db", None, None)
        .await
        .unwrap();
    assert_eq!(current.version_id, token);
}

#[tokio::test]
async fn a_waiting_step_runs_again_when_its_strategy_wakes_the_engine_not_before() {
    let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = fixture(Scripted {
        held: Some((Step::SetSecret, Arc::clone(&released))),
        ..Scripted::default()
    });
    create(&f, "db", "v1").await;
    use_scripted(&f, "db", None).await;
    f.secrets
        .rotate_secret(&caller("admin"), "db", scripted_rotation())
        .await
        .unwrap();
    run_due(&f.secrets).await;
    assert_eq!(
        f.strategy.steps_of("db"),
        [Step::CreateSecret, Step::SetSecret]
    );

    // Done elsewhere but nobody said so: nothing runs before the delay, which is when the
    // schedule looks again.
    released.store(true, std::sync::atomic::Ordering::SeqCst);
    let next = run_due(&f.secrets).await;
    assert_eq!(next, Some(START + 30));
    assert_eq!(f.strategy.steps_of("db").len(), 2);
    // Record changes and ends of other rotations wake the schedule too, but are no step's
    // wake: still nothing.
    f.secrets.rotation_changed().notify_one();
    run_due(&f.secrets).await;
    assert_eq!(f.strategy.steps_of("db").len(), 2);

    // The strategy wakes the engine (a Job finished): the step runs at once, the clock unmoved.
    f.secrets.rotations.strategies.step_waker().wake();
    run_due(&f.secrets).await;
    assert_eq!(
        f.strategy.steps_of("db"),
        [
            Step::CreateSecret,
            Step::SetSecret,
            Step::SetSecret,
            Step::TestSecret,
            Step::FinishSecret
        ]
    );
    assert_eq!(value_at(&f, "db", CURRENT).await.as_deref(), Some("v1+"));
}

#[tokio::test]
async fn one_rotation_at_a_time() {
    let f = fixture(Scripted::default());
    create(&f, "db", "v1").await;
    use_scripted(&f, "db", None).await;
    f.secrets
        .rotate_secret(&caller("admin"), "db", scripted_rotation())
        .await
        .unwrap();
    let second = f
        .secrets
        .rotate_secret(&caller("admin"), "db", scripted_rotation())
        .await;
    assert!(
        matches!(second, Err(SecretsError::InvalidRequest(_))),
        "{second:?}"
    );
    run_due(&f.secrets).await;
    f.secrets
        .rotate_secret(&caller("admin"), "db", scripted_rotation())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_failed_step_leaves_current_records_why_and_is_retried_with_backoff() {
    let f = fixture(Scripted::failing(Step::TestSecret, 2, true));
    create(&f, "db", "v1").await;
    use_scripted(&f, "db", None).await;
    f.secrets
        .rotate_secret(&caller("admin"), "db", scripted_rotation())
        .await
        .unwrap();
    let next = run_due(&f.secrets).await;
    assert_eq!(next, None, "the failed step is not due before its backoff");
    let view = describe(&f, "db").await;
    assert_eq!(
        view.in_progress.as_ref().map(|(step, _)| *step),
        Some(Step::TestSecret)
    );
    assert_eq!(
        view.last_error.as_deref(),
        Some("testSecret failed: the database said no")
    );
    assert_eq!(value_at(&f, "db", CURRENT).await.as_deref(), Some("v1"));
    assert_eq!(value_at(&f, "db", PENDING).await.as_deref(), Some("v1+"));
    // Backoff: 30 s after the first failure, then 60 s.
    assert_eq!(run_due(&f.secrets).await, Some(START + 30));
    f.clock.advance(30);
    run_due(&f.secrets).await;
    assert_eq!(run_due(&f.secrets).await, Some(START + 30 + 60));
    assert_eq!(value_at(&f, "db", CURRENT).await.as_deref(), Some("v1"));
    f.clock.advance(60);
    run_due(&f.secrets).await;
    assert_eq!(value_at(&f, "db", CURRENT).await.as_deref(), Some("v1+"));
    let view = describe(&f, "db").await;
    assert_eq!(view.last_error, None);
    assert_eq!(view.in_progress, None);
    assert_eq!(
        f.strategy.steps_of("db"),
        [
            Step::CreateSecret,
            Step::SetSecret,
            Step::TestSecret,
            Step::TestSecret,
            Step::TestSecret,
            Step::FinishSecret
        ]
    );
}

#[tokio::test]
async fn a_permanent_failure_waits_longer() {
    let f = fixture(Scripted::failing(Step::SetSecret, 1, false));
    create(&f, "db", "v1").await;
    use_scripted(&f, "db", None).await;
    f.secrets
        .rotate_secret(&caller("admin"), "db", scripted_rotation())
        .await
        .unwrap();
    run_due(&f.secrets).await;
    assert_eq!(run_due(&f.secrets).await, Some(START + 300));
}

#[tokio::test]
async fn a_new_process_resumes_the_rotation_with_the_same_token_at_its_step() {
    let gate = Arc::new(tokio::sync::Semaphore::new(2));
    let f = fixture(Scripted::gated(Arc::clone(&gate)));
    create(&f, "db", "v1").await;
    use_scripted(&f, "db", None).await;
    let token = f
        .secrets
        .rotate_secret(&caller("admin"), "db", scripted_rotation())
        .await
        .unwrap()
        .version_id
        .unwrap();
    // createSecret and setSecret pass the gate; testSecret waits there, as a process that
    // dies inside a step.
    f.secrets.rotate_due().await.unwrap();
    for _ in 0..500 {
        if f.strategy.steps_of("db").len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(
        f.strategy.steps_of("db"),
        [Step::CreateSecret, Step::SetSecret]
    );
    assert_eq!(
        describe(&f, "db").await.in_progress,
        Some((Step::TestSecret, token.clone()))
    );
    // Another process on the same store: it runs testSecret again, then finishes.
    let restarted_strategy = Arc::new(Scripted::default());
    let restarted = engine(&f.store, &f.kms, &f.clock, &restarted_strategy, 8);
    run_due(&restarted).await;
    assert_eq!(
        restarted_strategy.steps_of("db"),
        [Step::TestSecret, Step::FinishSecret]
    );
    assert!(
        restarted_strategy
            .seen
            .lock()
            .unwrap()
            .iter()
            .all(|(_, _, seen)| *seen == token)
    );
    assert_eq!(value_at(&f, "db", CURRENT).await.as_deref(), Some("v1+"));
    // The first process's stuck step, let go, finds the rotation over and changes nothing.
    gate.add_permits(10);
    settle(&f.secrets).await;
    assert_eq!(value_at(&f, "db", CURRENT).await.as_deref(), Some("v1+"));
    assert_eq!(value_at(&f, "db", PREVIOUS).await.as_deref(), Some("v1"));
}

#[tokio::test]
async fn create_run_again_after_a_crash_keeps_the_pending_value_it_stored() {
    let f = fixture(Scripted::default());
    create(&f, "db", "v1").await;
    f.secrets
        .rotate_secret(&caller("admin"), "db", RotateRequest::default())
        .await
        .unwrap();
    // As if createSecret's value was stored and the process died before moving to setSecret.
    let stored = typed::get::<SecretRecord, _>(f.store.as_ref(), "default", "db")
        .await
        .unwrap()
        .unwrap();
    let progress = stored
        .meta
        .rotation
        .as_ref()
        .unwrap()
        .in_progress
        .clone()
        .unwrap();
    f.secrets
        .store_pending(
            "default",
            &stored,
            &progress,
            SecretBytes::from_slice(b"first"),
        )
        .await
        .unwrap();
    run_due(&f.secrets).await;
    assert_eq!(value_at(&f, "db", CURRENT).await.as_deref(), Some("first"));
}

#[tokio::test]
async fn the_cap_bounds_rotations_under_way_and_the_rest_follow() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let f = fixture_with(Scripted::gated(Arc::clone(&gate)), 2);
    for i in 0..5 {
        let name = format!("s{i}");
        create(&f, &name, "v1").await;
        use_scripted(&f, &name, None).await;
        f.secrets
            .rotate_secret(&caller("admin"), &name, scripted_rotation())
            .await
            .unwrap();
    }
    f.secrets.rotate_due().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(f.secrets.rotations.running.lock().unwrap().len(), 2);
    // Let every step through; as rotations end, the schedule (woken by each) starts the rest.
    gate.add_permits(1000);
    for _ in 0..10 {
        run_due(&f.secrets).await;
    }
    for i in 0..5 {
        assert_eq!(
            value_at(&f, &format!("s{i}"), CURRENT).await.as_deref(),
            Some("v1+")
        );
    }
}

#[tokio::test]
async fn scheduled_rotations_start_in_their_window_and_survive_a_restart() {
    let f = fixture(Scripted::default());
    create(&f, "db", "v1").await;
    let rules = RotationRules {
        automatically_after_days: None,
        schedule_expression: Some("rate(1 days)".into()),
        duration: Some("2h".into()),
    };
    f.secrets
        .rotate_secret(
            &caller("admin"),
            "db",
            RotateRequest {
                rules: Some(rules.clone()),
                rotate_immediately: Some(false),
                ..RotateRequest::default()
            },
        )
        .await
        .unwrap();
    let view = describe(&f, "db").await;
    let at = view.next_rotation.unwrap();
    let window = rotation_rules::Schedule::parse(&rules)
        .unwrap()
        .next_window(START, None)
        .unwrap();
    assert!(
        (window.start..window.end).contains(&at),
        "{at} in {window:?}"
    );
    assert!(window.end - window.start == 7200);
    // Nothing before the window; a restart (a new engine on the same store) keeps the date.
    assert_eq!(run_due(&f.secrets).await, Some(at));
    let restarted = engine(&f.store, &f.kms, &f.clock, &f.strategy, 8);
    assert_eq!(run_due(&restarted).await, Some(at));
    assert_eq!(value_at(&f, "db", CURRENT).await.as_deref(), Some("v1"));
    f.clock.set(at);
    run_due(&restarted).await;
    let next = run_due(&restarted).await.unwrap();
    assert_ne!(value_at(&f, "db", CURRENT).await.as_deref(), Some("v1"));
    assert_eq!(value_at(&f, "db", PREVIOUS).await.as_deref(), Some("v1"));
    assert!(next > at, "the next rotation is planned after this one");
    let view = describe(&f, "db").await;
    assert_eq!(view.last_rotated, Some(at));
    assert_eq!(view.next_rotation, Some(next));
}

#[tokio::test]
async fn cancel_stops_a_rotation_that_changed_nothing_outside() {
    let f = fixture(Scripted::failing(Step::SetSecret, 1, true));
    create(&f, "db", "v1").await;
    use_scripted(&f, "db", None).await;
    f.secrets
        .rotate_secret(&caller("admin"), "db", scripted_rotation())
        .await
        .unwrap();
    run_due(&f.secrets).await;
    // setSecret ran (and failed): the value in use may have changed, so the rotation goes on.
    let cancelled = f
        .secrets
        .cancel_rotate_secret(&caller("admin"), "db")
        .await
        .unwrap();
    assert!(cancelled.version_id.is_some());
    let view = describe(&f, "db").await;
    assert!(!view.enabled);
    assert!(view.in_progress.is_some());
    f.clock.advance(30);
    run_due(&f.secrets).await;
    assert_eq!(value_at(&f, "db", CURRENT).await.as_deref(), Some("v1+"));

    // A generate rotation not yet finished is dropped, with its pending label.
    create(&f, "plain", "p1").await;
    f.secrets
        .rotate_secret(&caller("admin"), "plain", RotateRequest::default())
        .await
        .unwrap();
    let cancelled = f
        .secrets
        .cancel_rotate_secret(&caller("admin"), "plain")
        .await
        .unwrap();
    assert_eq!(cancelled.version_id, None);
    run_due(&f.secrets).await;
    assert_eq!(value_at(&f, "plain", CURRENT).await.as_deref(), Some("p1"));
    assert!(describe(&f, "plain").await.in_progress.is_none());
}

#[tokio::test]
async fn rotate_secret_checks_what_it_is_given() {
    let f = fixture(Scripted::default());
    create(&f, "db", "v1").await;
    let rotate = |request: RotateRequest| {
        let secrets = Arc::clone(&f.secrets);
        async move { secrets.rotate_secret(&caller("admin"), "db", request).await }
    };
    let refused = rotate(RotateRequest {
        function_arn: Some("arn:aws:lambda:us-east-1:111122223333:function:my-own".into()),
        ..RotateRequest::default()
    })
    .await;
    assert!(
        matches!(refused, Err(SecretsError::InvalidParameter(_))),
        "{refused:?}"
    );
    let refused = rotate(RotateRequest {
        rules: Some(RotationRules {
            automatically_after_days: Some(0),
            schedule_expression: None,
            duration: None,
        }),
        ..RotateRequest::default()
    })
    .await;
    assert!(
        matches!(refused, Err(SecretsError::InvalidParameter(_))),
        "{refused:?}"
    );
    // postgres is not offered by this engine's registry.
    let refused = rotate(RotateRequest {
        function_arn: Some(
            "arn:aws:lambda:us-east-1:111122223333:function:coffer-postgres-single-user".into(),
        ),
        ..RotateRequest::default()
    })
    .await;
    assert!(
        matches!(refused, Err(SecretsError::InvalidParameter(_))),
        "{refused:?}"
    );
    let refused = f
        .secrets
        .rotate_secret(&caller("app"), "db", RotateRequest::default())
        .await;
    assert!(
        matches!(refused, Err(SecretsError::AccessDenied(_))),
        "{refused:?}"
    );
    let ok = rotate(RotateRequest {
        function_arn: Some("arn:aws:lambda:us-east-1:111122223333:function:coffer-generate".into()),
        ..RotateRequest::default()
    })
    .await
    .unwrap();
    assert!(ok.version_id.is_some());
    assert_eq!(
        describe(&f, "db").await.function_arn.as_deref(),
        Some("arn:aws:lambda:us-east-1:111122223333:function:coffer-generate")
    );
}

#[tokio::test]
async fn a_rotation_job_may_put_only_the_pending_version_of_the_rotation_under_way() {
    let f = fixture(Scripted::default());
    create(&f, "db", "v1").await;
    // An account that lets every principal do anything: what refuses below is the rule for
    // rotation Jobs alone.
    let open = Arc::new(
        Secrets::new(
            Arc::clone(&f.store),
            Arc::clone(&f.kms),
            Arc::new(crate::test_support::engine::AllowAll),
            f.clock.clone(),
        )
        .with_rotation(
            StrategyRegistry::new().with(Arc::new(crate::rotation::generate::GenerateStrategy)),
            8,
            std::time::Duration::ZERO,
        ),
    );
    let mut job = caller("ignored");
    job.principal.arn = format!(
        "arn:aws:iam::{}:role/serviceaccount/{}db",
        crate::engine::account::account_id("default"),
        crate::engine::rotation::JOB_SERVICE_ACCOUNT_PREFIX
    );
    let put = |token: &str, stage: &str| {
        let secrets = Arc::clone(&open);
        let job = job.clone();
        let (token, stage) = (token.to_owned(), stage.to_owned());
        async move {
            secrets
                .put_secret_value(&job, "db", Some(token), text("new"), vec![stage])
                .await
        }
    };
    let token = "11111111-1111-4111-8111-111111111111";
    let refused = put(token, PENDING).await;
    assert!(
        matches!(refused, Err(SecretsError::AccessDenied(_))),
        "no rotation: {refused:?}"
    );
    open.rotate_secret(
        &caller("admin"),
        "db",
        RotateRequest {
            client_request_token: Some(token.into()),
            ..RotateRequest::default()
        },
    )
    .await
    .unwrap();
    let refused = put("22222222-2222-4222-8222-222222222222", PENDING).await;
    assert!(
        matches!(refused, Err(SecretsError::AccessDenied(_))),
        "other token: {refused:?}"
    );
    let refused = put(token, CURRENT).await;
    assert!(
        matches!(refused, Err(SecretsError::AccessDenied(_))),
        "CURRENT: {refused:?}"
    );
    put(token, PENDING).await.unwrap();
    assert_eq!(value_at(&f, "db", PENDING).await.as_deref(), Some("new"));
    assert_eq!(value_at(&f, "db", CURRENT).await.as_deref(), Some("v1"));
    let refused = open.delete_secret(&job, "db", Some(7), false).await;
    assert!(
        matches!(&refused, Err(SecretsError::AccessDenied(message)) if message.contains("rotation Job")),
        "{refused:?}"
    );
    let refused = open
        .update_secret_version_stage(&job, "db", CURRENT, Some(token), None)
        .await;
    assert!(
        matches!(refused, Err(SecretsError::AccessDenied(_))),
        "{refused:?}"
    );
    // Any other role of the account is not held to the rule.
    let mut other = job.clone();
    other.principal.arn = other.principal.arn.replace("coffer-rotation-db", "app");
    open.delete_secret(&other, "db", Some(7), false)
        .await
        .unwrap();
}

/// Counts the steps in flight at once, and the most there ever were.
#[derive(Default)]
struct Counting {
    in_flight: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl RotationStrategy for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }

    async fn run(&self, request: StepRequest<'_>) -> Result<StepOutcome, StepError> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        self.in_flight.fetch_sub(1, SeqCst);
        Ok(match request.step {
            Step::CreateSecret => StepOutcome::Pending(SecretBytes::from_slice(b"rotated")),
            _ => StepOutcome::Done,
        })
    }
}

#[tokio::test]
async fn many_secrets_on_one_schedule_spread_over_the_window_and_never_exceed_the_cap() {
    const SECRETS: usize = 200;
    const CAP: usize = 4;
    let f = fixture_with(Scripted::default(), CAP);
    let counting = Arc::new(Counting::default());
    let secrets = Arc::new(
        Secrets::new(
            Arc::clone(&f.store),
            Arc::clone(&f.kms),
            Arc::new(NameAuthority),
            f.clock.clone(),
        )
        .with_rotation(
            StrategyRegistry::new().with(Arc::clone(&counting) as Arc<dyn RotationStrategy>),
            CAP,
            std::time::Duration::ZERO,
        ),
    );
    let rules = RotationRules {
        automatically_after_days: None,
        schedule_expression: Some("cron(0 2 * * ? *)".into()),
        duration: Some("4h".into()),
    };
    for i in 0..SECRETS {
        let name = format!("s{i:03}");
        create(&f, &name, "v1").await;
        use_strategy(&f.store, &name, "counting", Some(rules.clone())).await;
    }
    // The first pass plans each secret's next rotation: an instant in tomorrow's 02:00-06:00
    // window (or today's, if it is still ahead).
    secrets.rotate_due().await.unwrap();
    let window = rotation_rules::Schedule::parse(&rules)
        .unwrap()
        .next_window(START, None)
        .unwrap();
    let mut planned = Vec::new();
    for i in 0..SECRETS {
        let at = describe(&f, &format!("s{i:03}"))
            .await
            .next_rotation
            .unwrap();
        assert!(
            (window.start..window.end).contains(&at),
            "{at} outside {window:?}"
        );
        planned.push(at);
    }
    planned.sort_unstable();
    let quarter = (window.end - window.start) / 4;
    // Spread: every quarter of the window gets some of them.
    for q in 0..4 {
        let (from, to) = (window.start + q * quarter, window.start + (q + 1) * quarter);
        let count = planned.iter().filter(|at| (from..to).contains(*at)).count();
        assert!(
            count >= SECRETS / 10,
            "quarter {q} has {count} of {SECRETS}"
        );
    }
    // At the window's end all are due at once; the cap holds while they all rotate.
    f.clock.set(window.end);
    for _ in 0..(SECRETS * 2) {
        secrets.rotate_due().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let running = secrets.rotations.running.lock().unwrap().len();
        assert!(running <= CAP, "{running} rotations under way");
        let mut done = 0;
        for (_, stored) in typed::list::<SecretRecord, _>(f.store.as_ref(), None)
            .await
            .unwrap()
        {
            if stored
                .meta
                .rotation
                .as_ref()
                .is_some_and(|rotation| rotation.last_rotated.is_some())
            {
                done += 1;
            }
        }
        if done == SECRETS {
            break;
        }
    }
    settle(&secrets).await;
    let most = counting.most.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        (2..=CAP).contains(&most),
        "at most {most} steps ran at once"
    );
    for i in 0..SECRETS {
        assert_eq!(
            value_at(&f, &format!("s{i:03}"), CURRENT).await.as_deref(),
            Some("rotated")
        );
    }
}

#[tokio::test]
async fn a_schedule_that_stops_stops_its_rotations_and_the_record_keeps_their_place() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let f = fixture(Scripted::gated(Arc::clone(&gate)));
    create(&f, "db", "v1").await;
    use_scripted(&f, "db", None).await;
    let token = f
        .secrets
        .rotate_secret(&caller("admin"), "db", scripted_rotation())
        .await
        .unwrap()
        .version_id
        .unwrap();
    // Leadership: the schedule runs, a step waits at the gate, then leadership is lost.
    let schedule = tokio::spawn(Arc::clone(&f.secrets).run_rotation_scheduler());
    for _ in 0..500 {
        if !f.secrets.rotations.running.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(!f.secrets.rotations.running.lock().unwrap().is_empty());
    schedule.abort();
    let _ = schedule.await;
    assert!(f.secrets.rotations.running.lock().unwrap().is_empty());
    gate.add_permits(100);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(
        f.strategy.steps_of("db").is_empty(),
        "a step ran after the schedule stopped"
    );
    assert_eq!(
        describe(&f, "db").await.in_progress,
        Some((Step::CreateSecret, token))
    );
    // The next leader resumes it.
    run_due(&f.secrets).await;
    assert_eq!(value_at(&f, "db", CURRENT).await.as_deref(), Some("v1+"));
}
