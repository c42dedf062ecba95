//! Test support: an in-memory Kubernetes API server behind a tower-test mocked connection.
//!
//! It keeps objects by path and answers create, get, replace, merge/JSON/apply patches (status
//! included) and delete the way the API server does where Coffer relies on it: resourceVersion
//! preconditions (409 Conflict), AlreadyExists, finalizers holding a deleted object, and
//! `metadata.generation` moving only on spec changes. Tests can make the next write of a path
//! fail with a conflict, and read what was written or published.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

use crate::mock_api::{ApiServer, client, status};

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    version: u64,
    fail_next_write: Vec<String>,
    events: Vec<Value>,
    requests: Vec<String>,
}

/// A running fake API server.
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

impl FakeApi {
    /// A client wired to a fresh fake server, which serves until the client is dropped.
    pub fn start() -> (kube::Client, FakeApi) {
        let (client, server) = client();
        let fake = FakeApi::default();
        tokio::spawn(fake.clone().serve(server));
        (client, fake)
    }

    /// The object at `path` (collection path + `/` + name).
    pub fn object(&self, path: &str) -> Option<Value> {
        self.state.lock().unwrap().objects.get(path).cloned()
    }

    /// Every object under a collection path.
    pub fn objects_under(&self, prefix: &str) -> Vec<Value> {
        let state = self.state.lock().unwrap();
        state
            .objects
            .iter()
            .filter(|(path, _)| path.starts_with(prefix))
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// Puts an object as a user would (`kubectl apply`), assigning uid and versions.
    pub fn insert(&self, collection: &str, mut object: Value) -> Value {
        let mut state = self.state.lock().unwrap();
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        state.version += 1;
        let version = state.version;
        let meta = &mut object["metadata"];
        meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
        meta["resourceVersion"] = json!(version.to_string());
        meta["generation"] = json!(1);
        meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        state
            .objects
            .insert(format!("{collection}/{name}"), object.clone());
        object
    }

    /// Replaces the object at `path` as is, with a new resourceVersion.
    pub fn insert_raw(&self, path: &str, mut object: Value) {
        let mut state = self.state.lock().unwrap();
        state.version += 1;
        object["metadata"]["resourceVersion"] = json!(state.version.to_string());
        state.objects.insert(path.to_owned(), object);
    }

    /// Makes the next write (PUT or PATCH) of `path` fail with 409 Conflict.
    pub fn conflict_next_write(&self, path: &str) {
        self.state
            .lock()
            .unwrap()
            .fail_next_write
            .push(path.to_owned());
    }

    /// Reasons of the Events published so far, in order.
    pub fn event_reasons(&self) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state
            .events
            .iter()
            .filter_map(|event| event["reason"].as_str().map(str::to_owned))
            .collect()
    }

    /// The Events published so far.
    pub fn events(&self) -> Vec<Value> {
        self.state.lock().unwrap().events.clone()
    }

    /// "METHOD path" of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    async fn serve(self, mut server: ApiServer) {
        while let Some((request, send)) = server.next_request().await {
            let response = self.answer(request).await;
            send.send_response(response);
        }
    }

    async fn answer(&self, request: Request<Body>) -> Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        let content_type = request
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = request.into_body().collect_bytes().await.unwrap().to_vec();
        let (code, answer) = self.handle(&method, &path, &query, &content_type, &body);
        Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Body::from(answer))
            .unwrap()
    }

    fn handle(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        content_type: &str,
        body: &[u8],
    ) -> (u16, Vec<u8>) {
        let mut state = self.state.lock().unwrap();
        state.requests.push(format!("{method} {path}"));
        if path.ends_with("/events") && *method == Method::POST {
            let event: Value = serde_json::from_slice(body).unwrap();
            state.events.push(event.clone());
            return (201, serde_json::to_vec(&event).unwrap());
        }
        let (object_path, subresource) = match path.strip_suffix("/status") {
            Some(object) => (object.to_owned(), true),
            None => (path.to_owned(), false),
        };
        let writes = matches!(*method, Method::PUT | Method::PATCH | Method::DELETE);
        if writes && let Some(index) = state.fail_next_write.iter().position(|p| *p == object_path)
        {
            state.fail_next_write.remove(index);
            return (409, status(409, "Conflict", &object_path));
        }
        let not_found = || (404, status(404, "NotFound", path));
        match *method {
            Method::GET => {
                if query.contains("watch=true") {
                    return not_found();
                }
                match state.objects.get(&object_path) {
                    Some(object) => (200, serde_json::to_vec(object).unwrap()),
                    None => {
                        let items: Vec<Value> = state
                            .objects
                            .iter()
                            .filter(|(p, _)| {
                                p.rsplit_once('/')
                                    .is_some_and(|(dir, _)| dir == object_path)
                            })
                            .map(|(_, o)| o.clone())
                            .collect();
                        if items.is_empty() && !query.contains("limit") {
                            return not_found();
                        }
                        let list = json!({"metadata": {"resourceVersion": state.version.to_string()}, "items": items});
                        (200, serde_json::to_vec(&list).unwrap())
                    }
                }
            }
            Method::POST => {
                let mut object: Value = serde_json::from_slice(body).unwrap();
                let name = object["metadata"]["name"].as_str().unwrap().to_owned();
                let key = format!("{path}/{name}");
                if state.objects.contains_key(&key) {
                    return (409, status(409, "AlreadyExists", &key));
                }
                state.version += 1;
                let meta = &mut object["metadata"];
                meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
                meta["resourceVersion"] = json!(state.version.to_string());
                meta["generation"] = json!(1);
                meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
                state.objects.insert(key, object.clone());
                (201, serde_json::to_vec(&object).unwrap())
            }
            Method::PUT | Method::PATCH => {
                let Some(current) = state.objects.get(&object_path).cloned() else {
                    return not_found();
                };
                let mut next = current.clone();
                if *method == Method::PUT {
                    next = serde_json::from_slice(body).unwrap();
                    let expected = next["metadata"]["resourceVersion"].clone();
                    if expected != current["metadata"]["resourceVersion"] {
                        return (409, status(409, "Conflict", &object_path));
                    }
                    // What the API server keeps whatever a replace says.
                    for field in [
                        "uid",
                        "creationTimestamp",
                        "generation",
                        "deletionTimestamp",
                        "finalizers",
                    ] {
                        if let Some(value) = current["metadata"].get(field) {
                            next["metadata"][field] = value.clone();
                        }
                    }
                } else if content_type.contains("json-patch") {
                    // As the API server does, a test for null passes on a missing path.
                    let mut operations: Vec<Value> = serde_json::from_slice(body).unwrap();
                    operations.retain(|op| {
                        !(op["op"] == "test"
                            && op["value"].is_null()
                            && op["path"]
                                .as_str()
                                .is_some_and(|p| next.pointer(p).is_none()))
                    });
                    let patch: json_patch::Patch =
                        serde_json::from_value(Value::Array(operations)).unwrap();
                    if json_patch::patch(&mut next, &patch).is_err() {
                        return (422, status(422, "Invalid", &object_path));
                    }
                } else {
                    let patch: Value = if content_type.contains("apply-patch") {
                        serde_yaml::from_slice(body).unwrap()
                    } else {
                        serde_json::from_slice(body).unwrap()
                    };
                    if let Some(expected) = patch["metadata"].get("resourceVersion")
                        && !expected.is_null()
                        && *expected != current["metadata"]["resourceVersion"]
                    {
                        return (409, status(409, "Conflict", &object_path));
                    }
                    json_patch::merge(&mut next, &patch);
                }
                if subresource {
                    let status_only = next["status"].clone();
                    next = current.clone();
                    next["status"] = status_only;
                } else if current.get("status").is_some() {
                    next["status"] = current["status"].clone();
                }
                if next.get("spec") != current.get("spec") {
                    let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
                    next["metadata"]["generation"] = json!(generation + 1);
                }
                state.version += 1;
                next["metadata"]["resourceVersion"] = json!(state.version.to_string());
                let finalizers_gone = next["metadata"]["finalizers"]
                    .as_array()
                    .is_none_or(|list| list.is_empty());
                if next["metadata"].get("deletionTimestamp").is_some() && finalizers_gone {
                    state.objects.remove(&object_path);
                } else {
                    state.objects.insert(object_path.clone(), next.clone());
                }
                (200, serde_json::to_vec(&next).unwrap())
            }
            Method::DELETE => {
                let Some(current) = state.objects.get(&object_path).cloned() else {
                    return not_found();
                };
                let options: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                if let Some(expected) = options["preconditions"].get("resourceVersion")
                    && *expected != current["metadata"]["resourceVersion"]
                {
                    return (409, status(409, "Conflict", &object_path));
                }
                let held = current["metadata"]["finalizers"]
                    .as_array()
                    .is_some_and(|list| !list.is_empty());
                if held {
                    let mut next = current;
                    state.version += 1;
                    next["metadata"]["deletionTimestamp"] = json!("2026-01-02T00:00:00Z");
                    next["metadata"]["resourceVersion"] = json!(state.version.to_string());
                    state.objects.insert(object_path, next.clone());
                    (200, serde_json::to_vec(&next).unwrap())
                } else {
                    state.objects.remove(&object_path);
                    (200, serde_json::to_vec(&current).unwrap())
                }
            }
            _ => (405, status(405, "MethodNotAllowed", path)),
        }
    }
}
