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

use crate::test_support::mock_api::{ApiServer, client, status};

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    version: u64,
    fail_next_write: Vec<String>,
    events: Vec<Value>,
    requests: Vec<String>,
    /// Every change, for watches: (resourceVersion, object path, watch event type, object).
    changes: Vec<(u64, String, &'static str, Value)>,
    /// ServiceAccount tokens TokenReview accepts: token to (namespace, name).
    tokens: BTreeMap<String, (String, String)>,
    /// What SubjectAccessReview allows: (namespace, service account, verb, name or "*").
    grants: Vec<(String, String, String, String)>,
}

impl State {
    fn put(&mut self, path: String, object: Value) {
        let kind = if self.objects.contains_key(&path) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.changes
            .push((self.version, path.clone(), kind, object.clone()));
        self.objects.insert(path, object);
    }

    fn drop_object(&mut self, path: &str) {
        if let Some(mut object) = self.objects.remove(path) {
            self.version += 1;
            object["metadata"]["resourceVersion"] = json!(self.version.to_string());
            self.changes
                .push((self.version, path.to_owned(), "DELETED", object));
        }
    }
}

/// Whether the object at `path` belongs to `collection`, a namespaced one
/// (`/api/v1/namespaces/NS/secrets`) or one across namespaces (`/api/v1/secrets`).
fn in_collection(path: &str, collection: &str) -> bool {
    let Some((parent, _)) = path.rsplit_once('/') else {
        return false;
    };
    if parent == collection {
        return true;
    }
    let Some((prefix, resource)) = collection.rsplit_once('/') else {
        return false;
    };
    parent
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix("/namespaces/"))
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(namespace, kind)| !namespace.contains('/') && kind == resource)
}

fn query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
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
        state.put(format!("{collection}/{name}"), object.clone());
        object
    }

    /// Replaces the object at `path` as is, with a new resourceVersion.
    pub fn insert_raw(&self, path: &str, mut object: Value) {
        let mut state = self.state.lock().unwrap();
        state.version += 1;
        object["metadata"]["resourceVersion"] = json!(state.version.to_string());
        state.put(path.to_owned(), object);
    }

    /// Deletes the object at `path` as the API server does for an object without finalizers
    /// (`kubectl delete`, a namespace's deletion, garbage collection): gone at once, with a
    /// DELETED watch event.
    pub fn remove(&self, path: &str) {
        self.state.lock().unwrap().drop_object(path);
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
            // Each on its own, since a watch waits for changes.
            let fake = self.clone();
            tokio::spawn(async move {
                let response = fake.answer(request).await;
                send.send_response(response);
            });
        }
    }

    /// A watch as a long poll: the changes of the collection after `resourceVersion`, once there
    /// are some or a second has passed; the client watches again from where it got to.
    async fn watch(&self, collection: &str, query: &str) -> Vec<u8> {
        self.state
            .lock()
            .unwrap()
            .requests
            .push(format!("WATCH {collection}?{query}"));
        let since: u64 = query_value(query, "resourceVersion")
            .and_then(|version| version.parse().ok())
            .unwrap_or(0);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        loop {
            let lines: Vec<String> = {
                let state = self.state.lock().unwrap();
                state
                    .changes
                    .iter()
                    .filter(|(version, path, _, _)| {
                        *version > since && in_collection(path, collection)
                    })
                    .map(|(_, _, kind, object)| json!({"type": kind, "object": object}).to_string())
                    .collect()
            };
            if !lines.is_empty() || tokio::time::Instant::now() >= deadline {
                let mut body = lines.join("\n");
                body.push('\n');
                return body.into_bytes();
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Lets TokenReview accept `token` as ServiceAccount `namespace/name`, audience `coffer`.
    pub fn accept_token(&self, token: &str, namespace: &str, name: &str) {
        self.state
            .lock()
            .unwrap()
            .tokens
            .insert(token.to_owned(), (namespace.to_owned(), name.to_owned()));
    }

    /// Lets SubjectAccessReview allow `verb` on kmskeys `name` (`*`: any) to a ServiceAccount.
    pub fn grant(&self, namespace: &str, service_account: &str, verb: &str, name: &str) {
        self.state.lock().unwrap().grants.push((
            namespace.to_owned(),
            service_account.to_owned(),
            verb.to_owned(),
            name.to_owned(),
        ));
    }

    fn token_review(&self, body: &[u8]) -> Vec<u8> {
        let review: Value = serde_json::from_slice(body).unwrap();
        let token = review["spec"]["token"].as_str().unwrap_or_default();
        let state = self.state.lock().unwrap();
        let status = match state.tokens.get(token) {
            Some((namespace, name)) => json!({
                "authenticated": true,
                "audiences": review["spec"]["audiences"],
                "user": {"username": format!("system:serviceaccount:{namespace}:{name}"), "uid": "0b6f3c3e-0000-4000-8000-000000000001"},
            }),
            None => json!({"authenticated": false}),
        };
        serde_json::to_vec(&json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status})).unwrap()
    }

    fn access_review(&self, body: &[u8]) -> Vec<u8> {
        let review: Value = serde_json::from_slice(body).unwrap();
        let user = review["spec"]["user"].as_str().unwrap_or_default();
        let attributes = &review["spec"]["resourceAttributes"];
        let verb = attributes["verb"].as_str().unwrap_or_default();
        let name = attributes["name"].as_str().unwrap_or_default();
        let namespace = attributes["namespace"].as_str().unwrap_or_default();
        let state = self.state.lock().unwrap();
        let allowed = state
            .grants
            .iter()
            .any(|(ns, sa, granted_verb, granted_name)| {
                user == format!("system:serviceaccount:{ns}:{sa}")
                    && ns == namespace
                    && granted_verb == verb
                    && (granted_name == "*" || granted_name == name)
            });
        serde_json::to_vec(&json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "status": {"allowed": allowed}})).unwrap()
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
        let (code, answer) =
            if method == Method::GET && query_value(&query, "watch") == Some("true") {
                (200, self.watch(&path, &query).await)
            } else if path.ends_with("/tokenreviews") {
                (201, self.token_review(&body))
            } else if path.ends_with("/subjectaccessreviews") {
                (201, self.access_review(&body))
            } else {
                self.handle(&method, &path, &query, &content_type, &body)
            };
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
                            .filter(|(p, _)| in_collection(p, &object_path))
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
                state.put(key, object.clone());
                (201, serde_json::to_vec(&object).unwrap())
            }
            Method::PUT | Method::PATCH => {
                let Some(current) = state.objects.get(&object_path).cloned() else {
                    // Server-side apply makes what is not there.
                    if *method == Method::PATCH && content_type.contains("apply-patch") {
                        let mut object: Value = serde_yaml::from_slice(body).unwrap();
                        state.version += 1;
                        let meta = &mut object["metadata"];
                        meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
                        meta["resourceVersion"] = json!(state.version.to_string());
                        meta["generation"] = json!(1);
                        meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
                        state.put(object_path.clone(), object.clone());
                        return (201, serde_json::to_vec(&object).unwrap());
                    }
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
                    // One field manager applies the whole status: what it leaves out goes, as
                    // server-side apply removes the fields a manager stops applying.
                    if subresource && content_type.contains("apply-patch") {
                        next["status"] = patch["status"].clone();
                    }
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
                    state.drop_object(&object_path);
                } else {
                    state.put(object_path.clone(), next.clone());
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
                    state.put(object_path, next.clone());
                    (200, serde_json::to_vec(&next).unwrap())
                } else {
                    state.drop_object(&object_path);
                    (200, serde_json::to_vec(&current).unwrap())
                }
            }
            _ => (405, status(405, "MethodNotAllowed", path)),
        }
    }
}
