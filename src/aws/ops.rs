//! Services and their operations, as tables: each service lists its operations once, each with a
//! typed handler, and the front end dispatches, meters and audits from those tables alone. A new
//! service is a new table (and an `X-Amz-Target` prefix); nothing here changes.

use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;

use super::{AwsError, CallFacts};
use crate::engine::Caller;

/// A handler: the service, the caller, the raw request body and the audit facts in; the
/// response body out.
pub type Handler<S> = for<'a> fn(
    &'a S,
    &'a Caller,
    &'a [u8],
    &'a mut CallFacts,
) -> BoxFuture<'a, Result<Vec<u8>, AwsError>>;

/// One operation of a service.
pub struct Operation<S: 'static> {
    /// The full `X-Amz-Target`, such as `TrentService.Encrypt`.
    pub target: &'static str,
    pub handler: Handler<S>,
}

/// A service of the AWS JSON 1.1 protocol.
pub trait JsonService: Send + Sync + Sized + 'static {
    /// The `X-Amz-Target` prefix, such as `TrentService`.
    const TARGET_PREFIX: &'static str;
    /// The SigV4 signing name, such as `kms`.
    const SIGNING_NAME: &'static str;

    /// Every operation, sorted by target.
    fn operations() -> &'static [Operation<Self>];
}

/// An operation whose handler is an `async fn(&Service, &Caller, Input, &mut CallFacts) ->
/// Result<Output, AwsError>`: the input is decoded from the body and the output encoded.
#[macro_export]
macro_rules! aws_operation {
    ($target:literal, $handler:path) => {
        $crate::aws::ops::Operation {
            target: $target,
            handler: |service, caller, body, facts| {
                Box::pin(async move {
                    let input = $crate::aws::wire::decode(body)?;
                    let output = $handler(service, caller, input, facts).await?;
                    $crate::aws::wire::WireOutput::to_body(&output)
                })
            },
        }
    };
}

/// A service as the front end sees it, whatever its type.
#[async_trait]
pub trait Served: Send + Sync {
    fn target_prefix(&self) -> &'static str;
    fn signing_name(&self) -> &'static str;
    /// The operation's full target as a static name, when the service has it.
    fn operation(&self, target: &str) -> Option<&'static str>;
    /// Every operation's full target.
    fn targets(&self) -> Vec<&'static str>;
    /// Runs the operation named by `target`.
    async fn call(
        &self,
        target: &str,
        caller: &Caller,
        body: &[u8],
        facts: &mut CallFacts,
    ) -> Result<Vec<u8>, AwsError>;
}

fn find<S: JsonService>(target: &str) -> Option<&'static Operation<S>> {
    let operations = S::operations();
    operations
        .binary_search_by(|operation| operation.target.cmp(target))
        .ok()
        .and_then(|index| operations.get(index))
}

#[async_trait]
impl<S: JsonService> Served for Arc<S> {
    fn target_prefix(&self) -> &'static str {
        S::TARGET_PREFIX
    }

    fn signing_name(&self) -> &'static str {
        S::SIGNING_NAME
    }

    fn operation(&self, target: &str) -> Option<&'static str> {
        find::<S>(target).map(|operation| operation.target)
    }

    fn targets(&self) -> Vec<&'static str> {
        S::operations()
            .iter()
            .map(|operation| operation.target)
            .collect()
    }

    async fn call(
        &self,
        target: &str,
        caller: &Caller,
        body: &[u8],
        facts: &mut CallFacts,
    ) -> Result<Vec<u8>, AwsError> {
        let operation = find::<S>(target).ok_or_else(|| unknown_operation(target))?;
        (operation.handler)(self.as_ref(), caller, body, facts).await
    }
}

/// The services one front end serves.
#[derive(Clone, Default)]
pub struct Services {
    services: Vec<Arc<dyn Served>>,
}

impl Services {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a service.
    pub fn with<S: JsonService>(mut self, service: Arc<S>) -> Self {
        self.services.push(Arc::new(service));
        self
    }

    /// The service an `X-Amz-Target` names by its prefix.
    pub fn for_target(&self, target: &str) -> Option<&dyn Served> {
        let (prefix, operation) = target.split_once('.')?;
        if operation.is_empty() {
            return None;
        }
        self.services
            .iter()
            .find(|service| service.target_prefix() == prefix)
            .map(AsRef::as_ref)
    }

    /// The operation's static name, for metrics labels; `None` for anything unknown.
    pub fn known_operation(&self, target: &str) -> Option<&'static str> {
        self.for_target(target)?.operation(target)
    }
}

/// The error for a target no service serves.
pub fn unknown_operation(target: &str) -> AwsError {
    AwsError::client(
        "UnknownOperationException",
        format!(
            "{} is not a known operation.",
            crate::engine::text::truncate(target)
        ),
    )
}
