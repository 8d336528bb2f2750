//! Resolving `archive.url` to an object store: a local folder (`file://` or a plain
//! path) or an S3 bucket (`s3://bucket/prefix`, AWS or an S3-compatible store configured
//! in `archive.s3`). Everything that reads or writes the archive (archivers, operator
//! checkpoints under `_state/`, the notify stage, queries, maintenance, admin commands,
//! routes backtest) goes through the [`ArchiveLocation`] opened here.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use mcpulse_processors::archive::ArchiveTarget;
use mcpulse_processors::archive::config::ArchiveConfig;
use mcpulse_processors::archive::s3::{AddressingStyle, S3Config};
use mcpulse_queries::ArchiveCatalog;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientConfigKey, CopyOptions, GetOptions, GetResult, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, RenameOptions, RetryConfig, UploadPart,
};
use url::Url;

use crate::Config;
use crate::config::ConfigError;

/// Where `archive.url` points, as parsed (nothing opened or created).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArchiveUrl {
    /// A local folder (`None`: the default `{data_dir}/archive`).
    Local(Option<PathBuf>),
    /// A bucket and the prefix of the archive inside it (empty: the bucket's root).
    S3 { bucket: String, prefix: Path },
}

impl ArchiveUrl {
    /// Parses `archive.url`; errors name the field and say what is expected.
    pub fn parse(url: Option<&str>) -> Result<Self, ConfigError> {
        let Some(text) = url else {
            return Ok(Self::Local(None));
        };
        let err = |why: String| ConfigError(format!("archive.url: {text:?} {why}"));
        if text.trim().is_empty() {
            return Err(err(
                "is empty; give a path, a file:// URL or s3://bucket/prefix".into(),
            ));
        }
        let Some((scheme, _)) = text.split_once("://") else {
            return Ok(Self::Local(Some(PathBuf::from(text))));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => Url::parse(text)
                .ok()
                .and_then(|u| u.to_file_path().ok())
                .map(|dir| Self::Local(Some(dir)))
                .ok_or_else(|| {
                    err("is not a valid file:// URL (e.g. file:///var/lib/mcpulse/archive)".into())
                }),
            "s3" => {
                let url = Url::parse(text).map_err(|e| err(format!("is not a valid URL: {e}")))?;
                if !url.username().is_empty() || url.password().is_some() {
                    return Err(ConfigError(
                        "archive.url: credentials in the URL are not accepted; use archive.s3.access_key_id and secret_access_key (or the AWS credential chain)".into(),
                    ));
                }
                let bucket = url.host_str().unwrap_or_default();
                if bucket.is_empty() {
                    return Err(err(
                        "names no bucket; expected s3://bucket or s3://bucket/prefix".into(),
                    ));
                }
                if url.port().is_some() {
                    return Err(err(
                        "has a port: put the store's address in archive.s3.endpoint and only the bucket in the URL".into(),
                    ));
                }
                if !valid_bucket(bucket) {
                    return Err(err(format!(
                        "names bucket {bucket:?}: a bucket name is 3-63 characters of lowercase letters, digits, '.' and '-'"
                    )));
                }
                if url.query().is_some() || url.fragment().is_some() {
                    return Err(err("must not have a query or a fragment".into()));
                }
                let prefix = Path::from_url_path(url.path())
                    .map_err(|e| err(format!("has an invalid prefix: {e}")))?;
                Ok(Self::S3 {
                    bucket: bucket.to_string(),
                    prefix,
                })
            }
            _ => Err(err(format!(
                "uses the unsupported scheme {scheme:?}; expected a path, file:// or s3://"
            ))),
        }
    }
}

/// S3 bucket names (legacy ones may have capitals and underscores, which some
/// S3-compatible stores still allow).
fn valid_bucket(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Checks `archive.url` and `archive.s3` together (no I/O).
pub fn validate(archive: &ArchiveConfig) -> Result<(), ConfigError> {
    let url = ArchiveUrl::parse(archive.url.as_deref())?;
    archive.s3.validate().map_err(ConfigError)?;
    if archive.s3.is_set() && !matches!(url, ArchiveUrl::S3 { .. }) {
        return Err(ConfigError(
            "archive.s3: only used with an s3:// archive.url (archive.url is a local path)".into(),
        ));
    }
    Ok(())
}

/// What `mcpulse config check` says about the archive: where it is and, for S3, the
/// endpoint, region, addressing and where credentials come from (never their values).
pub fn describe_config(config: &Config) -> String {
    match ArchiveUrl::parse(config.archive.url.as_deref()) {
        Ok(ArchiveUrl::Local(dir)) => {
            let dir = dir.unwrap_or_else(|| config.data_dir.join("archive"));
            format!("local folder {}", dir.display())
        }
        Ok(ArchiveUrl::S3 { bucket, prefix }) => {
            let s3 = &config.archive.s3;
            let credentials = if s3.has_credentials() {
                format!(
                    "access key {} from archive.s3{}",
                    s3.access_key_id.as_deref().unwrap_or_default(),
                    if s3.session_token.is_some() {
                        " with a session token"
                    } else {
                        ""
                    }
                )
            } else {
                "the AWS credential chain (AWS_* environment, web identity, container or instance credentials)".into()
            };
            format!(
                "s3://{bucket}/{prefix} at {}, region {}, {} addressing, credentials: {credentials}",
                s3.endpoint.as_deref().unwrap_or("AWS"),
                s3.region
                    .as_deref()
                    .unwrap_or("from AWS_REGION (default us-east-1)"),
                match s3.addressing_style {
                    Some(AddressingStyle::VirtualHosted) => "virtual-hosted",
                    _ => "path-style",
                }
            )
        }
        Err(e) => e.0,
    }
}

/// An opened archive location, for writing (processors) and reading (queries).
#[derive(Clone)]
pub struct ArchiveLocation {
    /// The archive's root URL (`file:///…/` or `s3://bucket/prefix/`): what queries
    /// register the store under.
    pub url: Url,
    pub target: ArchiveTarget,
    /// Endpoint of an S3-compatible store, for messages.
    endpoint: Option<String>,
}

impl fmt::Debug for ArchiveLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl ArchiveLocation {
    /// Opens the archive of `config`, creating a local folder if needed. Opening an S3
    /// archive does no request: [`ArchiveLocation::connect`] also checks it is reachable.
    pub fn open(config: &Config) -> Result<Self, ConfigError> {
        match ArchiveUrl::parse(config.archive.url.as_deref())? {
            ArchiveUrl::Local(dir) => {
                Self::open_local(dir.unwrap_or_else(|| config.data_dir.join("archive")))
            }
            ArchiveUrl::S3 { bucket, prefix } => Self::open_s3(&config.archive.s3, &bucket, prefix),
        }
    }

    /// [`ArchiveLocation::open`], then one listing of the archive's root so that a
    /// wrong credential, a missing bucket or an unreachable endpoint is reported at once,
    /// naming what to check, instead of by every write later.
    pub async fn connect(config: &Config) -> Result<Self, ConfigError> {
        let location = Self::open(config)?;
        location.verify().await?;
        Ok(location)
    }

    fn open_local(dir: PathBuf) -> Result<Self, ConfigError> {
        std::fs::create_dir_all(&dir).map_err(|e| {
            ConfigError(format!("archive.url: cannot create {}: {e}", dir.display()))
        })?;
        let dir = dir.canonicalize().map_err(|e| {
            ConfigError(format!(
                "archive.url: cannot resolve {}: {e}",
                dir.display()
            ))
        })?;
        let url = Url::from_directory_path(&dir).map_err(|_| {
            ConfigError(format!(
                "archive.url: {} is not an absolute path",
                dir.display()
            ))
        })?;
        let root = Path::from(dir.to_string_lossy().trim_start_matches('/'));
        let target = ArchiveTarget {
            store: Arc::new(LocalFileSystem::new()),
            root,
            local_root: Some(dir),
        };
        Ok(Self {
            url,
            target,
            endpoint: None,
        })
    }

    fn open_s3(s3: &S3Config, bucket: &str, prefix: Path) -> Result<Self, ConfigError> {
        // The standard chain first (AWS_* variables: credentials, region, endpoint, web
        // identity, container credentials; else instance metadata), then what the
        // configuration sets explicitly. Keys in the configuration replace the
        // environment's credentials as a whole (a session token there belongs to other
        // keys).
        let mut builder = AmazonS3Builder::new();
        for (name, value) in std::env::vars() {
            if !name.starts_with("AWS_") {
                continue;
            }
            let Ok(key) = name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() else {
                continue;
            };
            let credential = matches!(
                key,
                AmazonS3ConfigKey::AccessKeyId
                    | AmazonS3ConfigKey::SecretAccessKey
                    | AmazonS3ConfigKey::Token
            );
            if credential && s3.has_credentials() {
                continue;
            }
            builder = builder.with_config(key, value);
        }
        builder = builder.with_bucket_name(bucket);
        if let Some(region) = &s3.region {
            builder = builder.with_region(region);
        }
        let virtual_hosted = s3.addressing_style == Some(AddressingStyle::VirtualHosted);
        if s3.addressing_style.is_some() {
            builder = builder.with_virtual_hosted_style_request(virtual_hosted);
        }
        let mut endpoint = s3.endpoint.clone();
        if let Some(base) = &endpoint
            && virtual_hosted
        {
            // object_store expects the bucket in a virtual-hosted endpoint's host.
            let mut url = Url::parse(base).map_err(|e| {
                ConfigError(format!("archive.s3.endpoint: {base:?} is not a URL ({e})"))
            })?;
            let host = format!("{bucket}.{}", url.host_str().unwrap_or_default());
            url.set_host(Some(&host)).map_err(|e| {
                ConfigError(format!(
                    "archive.s3.endpoint: cannot address bucket {bucket:?} virtual-hosted at {base:?} ({e})"
                ))
            })?;
            endpoint = Some(url.as_str().trim_end_matches('/').to_string());
        }
        if let Some(endpoint) = &endpoint {
            builder = builder.with_endpoint(endpoint.trim_end_matches('/'));
        }
        if s3.allow_http {
            builder = builder.with_allow_http(true);
        }
        let mut secrets = Vec::new();
        if let (Some(id), Some(secret)) = (&s3.access_key_id, &s3.secret_access_key) {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret.expose());
            secrets.push(secret.expose().to_string());
            if let Some(token) = &s3.session_token {
                builder = builder.with_token(token.expose());
                secrets.push(token.expose().to_string());
            }
        } else {
            for var in ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
                if let Ok(value) = std::env::var(var) {
                    secrets.push(value);
                }
            }
        }
        builder = builder
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                humantime::format_duration(s3.request_timeout).to_string(),
            )
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                humantime::format_duration(s3.connect_timeout).to_string(),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: s3.max_retries,
                retry_timeout: s3.retry_timeout,
            });
        let store = builder.build().map_err(|e| {
            ConfigError(scrub(
                format!("archive.s3: cannot set up the S3 client for bucket {bucket:?}: {e}"),
                &secrets,
            ))
        })?;
        let mut url = Url::parse(&format!("s3://{bucket}/")).map_err(|e| {
            ConfigError(format!("archive.url: bucket {bucket:?} makes no URL: {e}"))
        })?;
        if !prefix.as_ref().is_empty() {
            url = url.join(&format!("{prefix}/")).map_err(|e| {
                ConfigError(format!("archive.url: prefix {prefix:?} makes no URL: {e}"))
            })?;
        }
        let target = ArchiveTarget {
            store: Arc::new(RedactingStore {
                inner: Arc::new(store),
                secrets: Arc::new(secrets.into_iter().filter(|s| !s.is_empty()).collect()),
            }),
            root: prefix,
            local_root: None,
        };
        Ok(Self {
            url,
            target,
            endpoint: s3.endpoint.clone(),
        })
    }

    pub fn catalog(&self) -> ArchiveCatalog {
        ArchiveCatalog::new(self.url.clone(), self.target.store.clone())
    }

    /// Whether the archive is a local folder.
    pub fn is_local(&self) -> bool {
        self.target.local_root.is_some()
    }

    /// The archive's URL, and the endpoint of an S3-compatible store (never a secret).
    pub fn describe(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => format!("{} at {endpoint}", self.url),
            None => self.url.to_string(),
        }
    }

    /// Lists the archive's root once: an error says whether access was denied, the
    /// bucket is missing or the store unreachable, and what to check.
    pub async fn verify(&self) -> Result<(), ConfigError> {
        if self.is_local() {
            return Ok(());
        }
        let root = &self.target.root;
        let prefix = (!root.as_ref().is_empty()).then_some(root);
        match self.target.store.list_with_delimiter(prefix).await {
            Ok(_) => Ok(()),
            Err(e) => Err(ConfigError(self.explain(&e))),
        }
    }

    /// A message for a failed request to the archive, saying what to check.
    pub fn explain(&self, error: &object_store::Error) -> String {
        let what = format!("archive {}", self.describe());
        // S3 refuses some credentials with 400 (a malformed or expired session token).
        let text = error.to_string();
        let refused_credentials = CREDENTIAL_ERRORS
            .iter()
            .any(|code| text.contains(&format!("<Code>{code}</Code>")));
        match error {
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => format!(
                "{what}: access denied: check the credentials (archive.s3.access_key_id and \
                 secret_access_key, or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / \
                 AWS_SESSION_TOKEN) and that they may list, read, write and delete in the \
                 bucket: {error}"
            ),
            _ if refused_credentials => format!(
                "{what}: access denied: the store refused the credentials; check \
                 archive.s3.access_key_id, secret_access_key and session_token (or \
                 AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN): {error}"
            ),
            object_store::Error::NotFound { .. } => format!(
                "{what}: the bucket does not exist (or is in another region than \
                 archive.s3.region): {error}"
            ),
            _ => format!(
                "{what}: cannot list the archive (check archive.s3.endpoint, region and the \
                 network): {error}"
            ),
        }
    }
}

/// S3 error codes of refused credentials, whatever the HTTP status.
const CREDENTIAL_ERRORS: [&str; 7] = [
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "InvalidClientTokenId",
    "AccessDenied",
];

/// Replaces every secret in `message` with `***`.
fn scrub(message: String, secrets: &[String]) -> String {
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(message, |m, s| m.replace(s.as_str(), "***"))
}

/// The S3 store, with the configured secrets scrubbed from every error it returns (S3
/// echoes the signed request, session token included, when a signature does not match;
/// errors end up in logs and on the terminal).
#[derive(Debug)]
struct RedactingStore {
    inner: Arc<dyn ObjectStore>,
    secrets: Arc<Vec<String>>,
}

impl fmt::Display for RedactingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// An error message with the secrets removed.
#[derive(Debug)]
struct Redacted(String);

impl fmt::Display for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Redacted {}

/// `error`, unchanged unless its message holds a secret; then the same kind of error
/// with the message scrubbed.
fn redact(secrets: &[String], error: object_store::Error) -> object_store::Error {
    use object_store::Error as E;
    let text = error.to_string();
    if !secrets.iter().any(|s| text.contains(s.as_str())) {
        return error;
    }
    let source = |e: &dyn std::error::Error| -> Box<dyn std::error::Error + Send + Sync> {
        Box::new(Redacted(scrub(e.to_string(), secrets)))
    };
    match error {
        E::NotFound { path, source: s } => E::NotFound {
            path,
            source: source(s.as_ref()),
        },
        E::AlreadyExists { path, source: s } => E::AlreadyExists {
            path,
            source: source(s.as_ref()),
        },
        E::Precondition { path, source: s } => E::Precondition {
            path,
            source: source(s.as_ref()),
        },
        E::NotModified { path, source: s } => E::NotModified {
            path,
            source: source(s.as_ref()),
        },
        E::PermissionDenied { path, source: s } => E::PermissionDenied {
            path,
            source: source(s.as_ref()),
        },
        E::Unauthenticated { path, source: s } => E::Unauthenticated {
            path,
            source: source(s.as_ref()),
        },
        other => E::Generic {
            store: "S3",
            source: Box::new(Redacted(scrub(other.to_string(), secrets))),
        },
    }
}

impl RedactingStore {
    fn redact(&self, error: object_store::Error) -> object_store::Error {
        redact(&self.secrets, error)
    }
}

#[async_trait]
impl ObjectStore for RedactingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner
            .put_opts(location, payload, opts)
            .await
            .map_err(|e| self.redact(e))
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let upload = self
            .inner
            .put_multipart_opts(location, opts)
            .await
            .map_err(|e| self.redact(e))?;
        Ok(Box::new(RedactingUpload {
            inner: upload,
            secrets: self.secrets.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner
            .get_opts(location, options)
            .await
            .map_err(|e| self.redact(e))
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner
            .get_ranges(location, ranges)
            .await
            .map_err(|e| self.redact(e))
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let secrets = self.secrets.clone();
        self.inner
            .delete_stream(locations)
            .map(move |r| r.map_err(|e| redact(&secrets, e)))
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let secrets = self.secrets.clone();
        self.inner
            .list(prefix)
            .map(move |r| r.map_err(|e| redact(&secrets, e)))
            .boxed()
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let secrets = self.secrets.clone();
        self.inner
            .list_with_offset(prefix, offset)
            .map(move |r| r.map_err(|e| redact(&secrets, e)))
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner
            .list_with_delimiter(prefix)
            .await
            .map_err(|e| self.redact(e))
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner
            .copy_opts(from, to, options)
            .await
            .map_err(|e| self.redact(e))
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner
            .rename_opts(from, to, options)
            .await
            .map_err(|e| self.redact(e))
    }
}

/// A multipart upload of [`RedactingStore`].
#[derive(Debug)]
struct RedactingUpload {
    inner: Box<dyn MultipartUpload>,
    secrets: Arc<Vec<String>>,
}

#[async_trait]
impl MultipartUpload for RedactingUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let secrets = self.secrets.clone();
        let part = self.inner.put_part(data);
        Box::pin(async move { part.await.map_err(|e| redact(&secrets, e)) })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let secrets = self.secrets.clone();
        self.inner.complete().await.map_err(|e| redact(&secrets, e))
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        let secrets = self.secrets.clone();
        self.inner.abort().await.map_err(|e| redact(&secrets, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_archive_urls() {
        assert_eq!(ArchiveUrl::parse(None).unwrap(), ArchiveUrl::Local(None));
        assert_eq!(
            ArchiveUrl::parse(Some("/var/lib/a")).unwrap(),
            ArchiveUrl::Local(Some("/var/lib/a".into()))
        );
        assert_eq!(
            ArchiveUrl::parse(Some("file:///var/lib/a")).unwrap(),
            ArchiveUrl::Local(Some("/var/lib/a".into()))
        );
        assert_eq!(
            ArchiveUrl::parse(Some("s3://my-bucket")).unwrap(),
            ArchiveUrl::S3 {
                bucket: "my-bucket".into(),
                prefix: Path::default()
            }
        );
        assert_eq!(
            ArchiveUrl::parse(Some("s3://my-bucket/mcpulse/prod/")).unwrap(),
            ArchiveUrl::S3 {
                bucket: "my-bucket".into(),
                prefix: Path::from("mcpulse/prod")
            }
        );
        let err = |url: &str| ArchiveUrl::parse(Some(url)).unwrap_err().0;
        for (url, says) in [
            ("s3://", "names no bucket"),
            ("s3:///prefix", "names no bucket"),
            ("s3://b/x", "bucket"),
            ("s3://bucket:9000/x", "archive.s3.endpoint"),
            ("s3://key:secret@bucket/x", "credentials in the URL"),
            ("gs://bucket/x", "unsupported scheme \"gs\""),
            ("http://host/x", "unsupported scheme"),
            ("s3://bucket/a//b", "invalid prefix"),
            ("s3://bucket/x?y=1", "query"),
            ("file://host/x", "file://"),
            ("", "is empty"),
        ] {
            let e = err(url);
            assert!(e.starts_with("archive.url"), "{url}: {e}");
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("secret@"), "{url}: {e}");
        }
    }

    #[test]
    fn s3_block_needs_an_s3_url() {
        let mut archive = ArchiveConfig::default();
        archive.s3.region = Some("eu-west-1".into());
        let e = validate(&archive).unwrap_err().0;
        assert!(e.starts_with("archive.s3"), "{e}");
        archive.url = Some("s3://bucket/p".into());
        validate(&archive).unwrap();
    }

    #[test]
    fn opens_an_s3_location_without_a_request() {
        let mut s3 = S3Config {
            endpoint: Some("http://127.0.0.1:9".into()),
            allow_http: true,
            access_key_id: Some("AKIAEXAMPLE".into()),
            secret_access_key: Some(mcpulse_processors::archive::s3::Secret::new(
                "super-secret-value",
            )),
            ..S3Config::default()
        };
        let location = ArchiveLocation::open_s3(&s3, "bucket", Path::from("a/b")).unwrap();
        assert_eq!(location.url.as_str(), "s3://bucket/a/b/");
        assert_eq!(location.target.root, Path::from("a/b"));
        assert!(!location.is_local());
        assert_eq!(
            location.describe(),
            "s3://bucket/a/b/ at http://127.0.0.1:9"
        );
        let location = ArchiveLocation::open_s3(&s3, "bucket", Path::default()).unwrap();
        assert_eq!(location.url.as_str(), "s3://bucket/");
        s3.addressing_style = Some(AddressingStyle::VirtualHosted);
        s3.endpoint = Some("https://minio.internal:9000".into());
        let location = ArchiveLocation::open_s3(&s3, "bucket", Path::default()).unwrap();
        assert_eq!(location.url.as_str(), "s3://bucket/");
    }

    #[test]
    fn redacts_secrets_in_errors_keeping_their_kind() {
        let secrets = vec!["tok-SECRET".to_string()];
        let e = redact(
            &secrets,
            object_store::Error::PermissionDenied {
                path: "p".into(),
                source: "<CanonicalRequest>x-amz-security-token:tok-SECRET</CanonicalRequest>"
                    .into(),
            },
        );
        assert!(matches!(e, object_store::Error::PermissionDenied { .. }));
        assert!(!e.to_string().contains("tok-SECRET"), "{e}");
        assert!(e.to_string().contains("x-amz-security-token:***"), "{e}");
        let e = redact(
            &secrets,
            object_store::Error::AlreadyExists {
                path: "p".into(),
                source: "exists".into(),
            },
        );
        assert!(matches!(e, object_store::Error::AlreadyExists { .. }));
    }
}
