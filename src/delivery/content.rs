//! [`ApiContent`]: a volume's files read through Coffer's API with the pod's token.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use async_trait::async_trait;
use futures::{StreamExt as _, TryStreamExt as _};

use super::api::{ApiClient, ApiError};
use super::attributes::{self, AttributeError};
use super::volume::{Assembled, Fetched, Source, Volume, VolumeError};
use super::{ContentError, ContentSource, PodInfo, PodToken, VolumeFile, Watched};

/// API calls one volume makes at once.
pub const CONCURRENT_CALLS: usize = 8;

impl From<AttributeError> for ContentError {
    fn from(err: AttributeError) -> Self {
        ContentError::InvalidArgument(err.to_string())
    }
}

impl From<VolumeError> for ContentError {
    fn from(err: VolumeError) -> Self {
        match err {
            VolumeError::NotFetched(_) => ContentError::Unavailable(err.to_string()),
            _ => ContentError::InvalidArgument(err.to_string()),
        }
    }
}

/// Volume contents from a Coffer API endpoint.
#[derive(Clone)]
pub struct ApiContent {
    client: ApiClient,
}

impl ApiContent {
    /// Reads from `endpoint` (`https://HOST[:PORT]`), trusting the CAs in `ca_file` or else the
    /// system's.
    pub fn new(endpoint: &str, ca_file: Option<&Path>) -> Result<Self, ApiError> {
        Ok(Self {
            client: ApiClient::new(endpoint, ca_file)?,
        })
    }

    /// Every file of `volume`, with the versions they hold, read as the holder of `token`; all
    /// or nothing.
    pub async fn assemble(
        &self,
        volume: &Volume,
        token: &PodToken,
    ) -> Result<Vec<Assembled>, ContentError> {
        let sources: BTreeSet<Source> = volume.sources();
        let fetched: BTreeMap<Source, Fetched> = futures::stream::iter(sources)
            .map(|source| async move {
                let fetched = self.client.fetch(&source, token).await?;
                Ok::<_, ContentError>((source, fetched))
            })
            .buffer_unordered(CONCURRENT_CALLS)
            .try_collect()
            .await?;
        Ok(volume.assemble(&fetched)?)
    }
}

#[async_trait]
impl ContentSource for ApiContent {
    fn watches(
        &self,
        attributes: &BTreeMap<String, String>,
        pod: &PodInfo,
    ) -> Result<Vec<Watched>, ContentError> {
        Ok(attributes::parse(attributes)?.watches(&pod.namespace))
    }

    async fn files(
        &self,
        attributes: &BTreeMap<String, String>,
        _pod: &PodInfo,
        token: &PodToken,
    ) -> Result<Vec<VolumeFile>, ContentError> {
        let volume = attributes::parse(attributes)?;
        let assembled = self.assemble(&volume, token).await?;
        Ok(assembled.into_iter().map(|a| a.file).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::test_api::{self, TOKEN};

    fn pod() -> PodInfo {
        PodInfo {
            namespace: "team".into(),
            name: "web-0".into(),
            uid: "uid".into(),
            service_account: "web".into(),
        }
    }

    fn attributes(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    async fn content() -> (ApiContent, std::sync::Arc<std::sync::Mutex<test_api::Api>>) {
        let api = test_api::sample();
        let endpoint = test_api::serve(api.clone()).await;
        (ApiContent::new(&endpoint, None).unwrap(), api)
    }

    fn token() -> PodToken {
        PodToken::new(TOKEN.into(), None)
    }

    #[tokio::test]
    async fn reads_every_kind_of_object_as_the_pod() {
        let (content, api) = content().await;
        let objects = r#"
- {kind: secret, name: app/db, file: db/password, property: password, mode: "0400"}
- {kind: secret, name: app/db, stage: AWSPREVIOUS, file: db/previous, property: password}
- {kind: secret, name: app/db, version: v2, file: db/port, property: port}
- {kind: secret, name: app/cert, file: cert.bin}
- {kind: parameter, name: /app/url, file: url}
- {kind: parameter, name: /app/url, version: 2, file: url-2}
- {kind: parameter, name: /app/url, label: prod, file: url-prod}
- {kind: parametersByPath, path: /app/conf, file: conf}
- {kind: parametersByPath, path: /app/conf, recursive: false, file: top}
"#;
        let templates = "- {file: app.env, template: \"USER={{resolve:secretsmanager:app/db:SecretString:username}}\\nURL={{resolve:ssm:/app/url:2}}\\n\"}";
        let attributes = attributes(&[("objects", objects), ("templates", templates)]);
        let files = content.files(&attributes, &pod(), &token()).await.unwrap();
        let summary: Vec<(&str, u32, Vec<u8>)> = files
            .iter()
            .map(|f| (f.path.as_str(), f.mode, f.contents.expose().to_vec()))
            .collect();
        let expected: Vec<(&str, u32, Vec<u8>)> = vec![
            ("db/password", 0o400, b"pw-1".to_vec()),
            ("db/previous", 0o644, b"pw-0".to_vec()),
            ("db/port", 0o644, b"5432".to_vec()),
            ("cert.bin", 0o644, vec![0, 1, 2, 255]),
            ("url", 0o644, b"https://db.local".to_vec()),
            ("url-2", 0o644, b"https://old.local".to_vec()),
            ("url-prod", 0o644, b"https://prod.local".to_vec()),
            ("conf/a", 0o644, b"1".to_vec()),
            ("conf/b/c", 0o644, b"2".to_vec()),
            ("conf/d", 0o644, b"3".to_vec()),
            ("top/a", 0o644, b"1".to_vec()),
            ("top/d", 0o644, b"3".to_vec()),
            (
                "app.env",
                0o644,
                b"USER=admin\nURL=https://old.local\n".to_vec(),
            ),
        ];
        assert_eq!(summary, expected);
        // Each object read once: app/db (current) serves two files and a template.
        let calls = api.lock().unwrap().calls.clone();
        let secret_calls = calls
            .iter()
            .filter(|c| *c == "secretsmanager.GetSecretValue")
            .count();
        assert_eq!(secret_calls, 4);
        // Pages of one parameter: three pages recursive, two not.
        let path_calls = calls
            .iter()
            .filter(|c| *c == "AmazonSSM.GetParametersByPath")
            .count();
        assert_eq!(path_calls, 5);

        let watched = content.watches(&attributes, &pod()).unwrap();
        assert_eq!(watched.len(), 5, "{watched:?}");
        assert!(watched.contains(&Watched::ParametersUnder {
            namespace: "team".into(),
            path: "/app/conf".into(),
            recursive: false
        }));
    }

    #[tokio::test]
    async fn api_errors_name_the_object_and_map_to_content_errors() {
        let (content, _) = content().await;
        let read = |object: &'static str| {
            let content = content.clone();
            async move {
                let attributes = attributes(&[("objects", object)]);
                content
                    .files(&attributes, &pod(), &token())
                    .await
                    .unwrap_err()
            }
        };
        let err = read("- {kind: secret, name: denied, file: x}").await;
        assert!(
            matches!(&err, ContentError::PermissionDenied(m) if m == "secret denied: access denied"),
            "{err:?}"
        );
        let err = read("- {kind: secret, name: nothing, file: x}").await;
        assert!(
            matches!(&err, ContentError::NotFound(m) if m == "secret nothing: not found"),
            "{err:?}"
        );
        let err = read("- {kind: parameter, name: /nothing, file: x}").await;
        assert!(matches!(err, ContentError::NotFound(_)), "{err:?}");
        let err = read("- {kind: parameter, name: /app/url, version: 9, file: x}").await;
        assert!(
            matches!(&err, ContentError::NotFound(m) if m.contains("parameter /app/url (version 9)")),
            "{err:?}"
        );
        let err = read("- {kind: secret, name: busy, file: x}").await;
        assert!(matches!(err, ContentError::Unavailable(_)), "{err:?}");
        let err = read("- {kind: secret, name: broken, file: x}").await;
        assert!(matches!(err, ContentError::Unavailable(_)), "{err:?}");
        let err = read("- {kind: secret, name: odd, file: x}").await;
        assert!(
            matches!(&err, ContentError::InvalidArgument(m) if m.starts_with("secret odd: InvalidRequestException")),
            "{err:?}"
        );
        // All or nothing: one bad object fails the volume.
        let err = read(
            "- {kind: secret, name: app/db, file: a}\n- {kind: secret, name: denied, file: b}",
        )
        .await;
        assert!(matches!(err, ContentError::PermissionDenied(_)));
        // A property missing from the value: the message names the key, not the value.
        let err = read("- {kind: secret, name: app/db, file: a, property: token}").await;
        assert!(
            matches!(&err, ContentError::InvalidArgument(m) if !m.contains("pw-1") && m.contains("token")),
            "{err:?}"
        );

        // A token the API does not accept denies, as RBAC's refusal does.
        let attributes = attributes(&[("objects", "- {kind: secret, name: app/db, file: a}")]);
        let err = content
            .files(&attributes, &pod(), &PodToken::new("a.b.c".into(), None))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ContentError::PermissionDenied(m) if m.contains("app/db") && !m.contains("a.b.c")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn calls_run_concurrently_but_bounded() {
        let (content, api) = content().await;
        {
            let mut api = api.lock().unwrap();
            for i in 0..20 {
                let name = format!("/many/p{i}");
                api.parameters
                    .insert(name.clone(), (name, i.to_string(), 1));
            }
        }
        let objects: String = (0..20)
            .map(|i| format!("- {{kind: parameter, name: /many/p{i}, file: p{i}}}\n"))
            .collect();
        let files = content
            .files(&attributes(&[("objects", &objects)]), &pod(), &token())
            .await
            .unwrap();
        assert_eq!(files.len(), 20);
        assert_eq!(files[7].contents.expose(), b"7");
        let most = api.lock().unwrap().most_in_flight;
        assert!(
            (2..=CONCURRENT_CALLS).contains(&most),
            "{most} calls at once"
        );
    }

    #[tokio::test]
    async fn an_answer_too_large_is_refused() {
        let (content, _) = content().await;
        let attributes = attributes(&[("objects", "- {kind: secret, name: huge, file: x}")]);
        let err = content
            .files(&attributes, &pod(), &token())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ContentError::Unavailable(m) if m.contains("too large")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn an_api_that_cannot_be_reached_is_unavailable() {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let content = ApiContent::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
        let attributes = attributes(&[("objects", "- {kind: secret, name: app/db, file: a}")]);
        let err = content
            .files(&attributes, &pod(), &token())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ContentError::Unavailable(m) if m == "secret app/db: the API could not be reached"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn reads_over_tls_checked_against_the_ca_file() {
        let dir = tempfile::tempdir().unwrap();
        let app = test_api::router(test_api::sample());
        let server = crate::test_support::https::serve_https(dir.path(), &["localhost"], app).await;
        let cert = server.cert.clone();
        let endpoint = format!("https://localhost:{}", server.port);
        let attributes =
            attributes(&[("objects", "- {kind: parameter, name: /app/url, file: url}")]);
        let content = ApiContent::new(&endpoint, Some(&cert)).unwrap();
        let files = content.files(&attributes, &pod(), &token()).await.unwrap();
        assert_eq!(files[0].contents.expose(), b"https://db.local");
        // Another CA: the server is not trusted, and nothing is sent.
        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let other_ca = dir.path().join("other.crt");
        std::fs::write(&other_ca, other.cert.pem()).unwrap();
        let content = ApiContent::new(&endpoint, Some(&other_ca)).unwrap();
        let err = content
            .files(&attributes, &pod(), &token())
            .await
            .unwrap_err();
        assert!(matches!(err, ContentError::Unavailable(_)));
        // The CA file rotates (renamed into place, as kubelet does): the same client trusts
        // the new CA without a restart.
        let temporary = dir.path().join("other.crt.tmp");
        std::fs::write(&temporary, &server.cert_pem).unwrap();
        std::fs::rename(&temporary, &other_ca).unwrap();
        let files = content.files(&attributes, &pod(), &token()).await.unwrap();
        assert_eq!(files[0].contents.expose(), b"https://db.local");
    }

    #[test]
    fn refuses_endpoints_that_would_send_tokens_in_the_clear() {
        for bad in [
            "http://coffer.coffer-system.svc:8443",
            "ftp://x",
            "https://x/path",
            "nonsense",
        ] {
            assert!(
                matches!(ApiContent::new(bad, None), Err(ApiError::Endpoint(_))),
                "{bad}"
            );
        }
        for good in [
            "http://127.0.0.1:8443",
            "http://[::1]:1",
            "http://localhost:2",
        ] {
            assert!(ApiContent::new(good, None).is_ok(), "{good}");
        }
    }
}
