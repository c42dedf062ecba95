//! Test support: a mocked Kubernetes API server, the kube-rs way (`tower-test`). A test drives
//! the server side: it takes each request the client sends, checks it, and answers it.

use http::{Method, Request, Response};
use kube::client::Body;
use tower_test::mock::{Handle, SendResponse};

/// The server side of a mocked API connection.
pub type ApiServer = Handle<Request<Body>, Response<Body>>;

/// A client wired to a fresh mocked API server.
pub fn client() -> (kube::Client, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), handle)
}

/// Takes the next request, checks its method and path, and returns its body and the responder.
pub async fn expect(
    server: &mut ApiServer,
    method: Method,
    path: &str,
) -> (Vec<u8>, SendResponse<Response<Body>>) {
    let (request, send) = server.next_request().await.expect("a request");
    assert_eq!(request.method(), method);
    assert_eq!(request.uri().path(), path);
    let body = request.into_body().collect_bytes().await.unwrap().to_vec();
    (body, send)
}

/// Answers with a JSON body.
pub fn respond(send: SendResponse<Response<Body>>, code: u16, body: Vec<u8>) {
    let response = Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    send.send_response(response);
}

/// A `Status` failure body as the API server sends it, about `object` (e.g. `secrets "name"`).
pub fn status(code: u16, reason: &str, object: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("{object}: {reason}"),
        "reason": reason,
        "code": code,
    }))
    .unwrap()
}
