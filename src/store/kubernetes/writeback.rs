//! Changes made through the API, written back into the spec of the resource that declares the
//! record, and marked as the store's own words.
//!
//! A reconciler applies each new generation of a spec. A generation the store wrote back is no
//! new declaration: by the time the reconciler sees it the record may have moved on again
//! (several quick API calls), and applying it would make a version out of a stale value. So the
//! write-back names the generation it makes in an annotation, and a reconciler treats that
//! generation as already applied. A user's later change makes another generation, which the
//! annotation does not name.

use kube::api::{Api, Patch};
use kube::{Resource, ResourceExt as _};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::fmt::Debug;

use super::{api_error, patch_params};
use crate::store::StoreError;

/// Annotation naming the generation whose spec the store wrote back from the API.
pub const WRITTEN_BACK_ANNOTATION: &str = "coffer.dev/written-back-generation";

/// Attempts at a write-back that loses the race with another writer (a status, a user).
const ATTEMPTS: usize = 5;

/// Whether the resource's current spec is one the store wrote back from the API.
pub fn spec_written_back<R: Resource>(resource: &R) -> bool {
    let meta = resource.meta();
    match (&meta.generation, &meta.annotations) {
        (Some(generation), Some(annotations)) => annotations
            .get(WRITTEN_BACK_ANNOTATION)
            .is_some_and(|marked| *marked == generation.to_string()),
        _ => false,
    }
}

/// Writes back into resource `name` the spec change `change` says a fresh copy of it needs
/// (none: nothing to write), marking the generation the change makes. Each attempt reads the
/// resource anew and writes only if it is unchanged since (its resourceVersion), so that the
/// mark always names the generation this write made. Returns the resource as written, if it was.
pub async fn write_back<R, F>(api: &Api<R>, name: &str, change: F) -> Result<Option<R>, StoreError>
where
    R: Resource + Clone + DeserializeOwned + Serialize + Debug,
    F: Fn(&R) -> Result<Option<Value>, StoreError>,
{
    for _ in 0..ATTEMPTS {
        let Some(current) = api
            .get_opt(name)
            .await
            .map_err(|err| api_error(err, name))?
        else {
            return Ok(None);
        };
        if current.meta().deletion_timestamp.is_some() {
            return Ok(None);
        }
        let Some(mut patch) = change(&current)? else {
            return Ok(None);
        };
        let generation = current.meta().generation.unwrap_or(0).saturating_add(1);
        let Some(fields) = patch.as_object_mut() else {
            return Err(StoreError::Corrupt(
                "a spec write-back that is no object".into(),
            ));
        };
        fields.insert(
            "metadata".to_owned(),
            json!({
                "resourceVersion": current.resource_version(),
                "annotations": { WRITTEN_BACK_ANNOTATION: generation.to_string() },
            }),
        );
        match api
            .patch(name, &patch_params(), &Patch::Merge(&patch))
            .await
        {
            Ok(written) if written.meta().generation == Some(generation) => {
                return Ok(Some(written));
            }
            // The spec came out the same (the API server normalized the change away): the mark
            // must not name a generation a user's next change will make.
            Ok(written) => {
                let previous = current.annotations().get(WRITTEN_BACK_ANNOTATION).cloned();
                let unmark =
                    json!({ "metadata": { "annotations": { WRITTEN_BACK_ANNOTATION: previous } } });
                let written = api
                    .patch(name, &patch_params(), &Patch::Merge(&unmark))
                    .await
                    .map_err(|err| api_error(err, name))
                    .unwrap_or(written);
                return Ok(Some(written));
            }
            Err(kube::Error::Api(status)) if status.is_conflict() => continue,
            Err(err) => return Err(api_error(err, name)),
        }
    }
    Err(StoreError::Conflict(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::parameter::Parameter;

    fn parameter(generation: Option<i64>, mark: Option<&str>) -> Parameter {
        let mut resource: Parameter = serde_json::from_value(json!({
            "apiVersion": "coffer.dev/v1alpha1",
            "kind": "Parameter",
            "metadata": { "name": "p", "namespace": "app" },
            "spec": { "name": "/p", "value": "v" },
        }))
        .expect("a parameter");
        resource.metadata.generation = generation;
        if let Some(mark) = mark {
            resource
                .annotations_mut()
                .insert(WRITTEN_BACK_ANNOTATION.to_owned(), mark.to_owned());
        }
        resource
    }

    #[test]
    fn only_the_marked_generation_is_written_back() {
        assert!(spec_written_back(&parameter(Some(7), Some("7"))));
        // A user's change since: a later generation.
        assert!(!spec_written_back(&parameter(Some(8), Some("7"))));
        assert!(!spec_written_back(&parameter(Some(7), None)));
        assert!(!spec_written_back(&parameter(None, Some("7"))));
        assert!(!spec_written_back(&parameter(Some(7), Some("07"))));
    }
}
