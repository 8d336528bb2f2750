//! `archive.s3:` — how to reach an archive at `archive.url: s3://bucket/prefix` (AWS S3
//! or an S3-compatible store). Only settings live here; the store itself is opened by
//! the `mcpulse` binary.
//!
//! Credentials are optional: without them the standard AWS chain applies (the
//! `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN` environment, web
//! identity (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`), ECS container credentials,
//! then the EC2 instance metadata service). Secrets are kept in [`Secret`], whose `Debug`
//! prints `***`, so a logged configuration never shows them.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// Settings of an `s3://` archive.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// Region of the bucket (default: `AWS_REGION` / `AWS_DEFAULT_REGION`, else
    /// `us-east-1`). S3-compatible stores usually accept any region.
    pub region: Option<String>,
    /// Endpoint of an S3-compatible store (MinIO, Ceph RGW, Cloudflare R2, moto…), e.g.
    /// `https://minio.internal:9000` (default: `AWS_ENDPOINT_URL`, else AWS itself).
    pub endpoint: Option<String>,
    /// Accept an `http://` endpoint. Requests, credentials' signatures and data then
    /// travel unencrypted: only for a store on loopback or a trusted network.
    pub allow_http: bool,
    /// How objects are addressed: `path` (`{endpoint}/{bucket}/{key}`, the default) or
    /// `virtual_hosted` (`{bucket}.{endpoint host}/{key}`).
    pub addressing_style: Option<AddressingStyle>,
    /// Access key id. Set it together with `secret_access_key`; leave both out to use
    /// the AWS credential chain.
    pub access_key_id: Option<String>,
    /// Secret access key: write it as a `${ENV}` reference, never inline.
    pub secret_access_key: Option<Secret>,
    /// Session token of temporary credentials (with `access_key_id` and
    /// `secret_access_key`).
    pub session_token: Option<Secret>,
    /// Longest one request may take (default 30s).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Longest connecting to the endpoint may take (default 5s).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Retries of a request failing with a server error, a timeout or a broken
    /// connection (default 10). Access errors (403) are never retried.
    pub max_retries: usize,
    /// Longest a request is retried before its error is returned (default 3m).
    #[serde(with = "humantime_serde")]
    pub retry_timeout: Duration,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            region: None,
            endpoint: None,
            allow_http: false,
            addressing_style: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            max_retries: 10,
            retry_timeout: Duration::from_secs(180),
        }
    }
}

/// `archive.s3.addressing_style`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AddressingStyle {
    /// `{endpoint}/{bucket}/{key}`.
    Path,
    /// `{bucket}.{endpoint host}/{key}`.
    VirtualHosted,
}

impl S3Config {
    /// Whether any field differs from its default (the block is only meaningful with an
    /// `s3://` URL).
    pub fn is_set(&self) -> bool {
        *self != Self::default()
    }

    /// Whether credentials are configured here (else the AWS chain supplies them).
    pub fn has_credentials(&self) -> bool {
        self.access_key_id.is_some() || self.secret_access_key.is_some()
    }

    /// Checks what serde cannot; the error names the field. Never includes a secret.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(region) = &self.region
            && (region.is_empty()
                || !region
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-'))
        {
            return Err(format!(
                "archive.s3.region: {region:?} is not a region name (e.g. eu-west-1)"
            ));
        }
        if let Some(endpoint) = &self.endpoint {
            let url = url::Url::parse(endpoint).map_err(|e| {
                format!("archive.s3.endpoint: {endpoint:?} is not a URL ({e}); e.g. https://minio.internal:9000")
            })?;
            match url.scheme() {
                "https" => {}
                "http" if self.allow_http => {}
                "http" => {
                    return Err(format!(
                        "archive.s3.endpoint: {endpoint:?} is plain http: set archive.s3.allow_http: true to accept it (only for a store on loopback or a trusted network)"
                    ));
                }
                other => {
                    return Err(format!(
                        "archive.s3.endpoint: {endpoint:?} has scheme {other:?}; expected https:// (or http:// with allow_http)"
                    ));
                }
            }
            if url.host_str().is_none_or(str::is_empty) {
                return Err(format!("archive.s3.endpoint: {endpoint:?} names no host"));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(
                    "archive.s3.endpoint: credentials in the endpoint URL are not accepted; use archive.s3.access_key_id and secret_access_key"
                        .into(),
                );
            }
            if url.path() != "/" && !url.path().is_empty() {
                return Err(format!(
                    "archive.s3.endpoint: {endpoint:?} has a path; give the store's base URL and put the bucket and prefix in archive.url"
                ));
            }
            if self.addressing_style == Some(AddressingStyle::VirtualHosted)
                && !matches!(url.host(), Some(url::Host::Domain(_)))
            {
                return Err(format!(
                    "archive.s3.addressing_style: virtual_hosted needs an endpoint with a host name ({endpoint:?} is an IP address): buckets are addressed as {{bucket}}.{{host}}"
                ));
            }
            if url.query().is_some() || url.fragment().is_some() {
                return Err(format!(
                    "archive.s3.endpoint: {endpoint:?} must not have a query or fragment"
                ));
            }
        }
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(id), Some(_)) if id.trim().is_empty() => {
                return Err("archive.s3.access_key_id: is empty".into());
            }
            (Some(_), Some(secret)) if secret.expose().is_empty() => {
                return Err("archive.s3.secret_access_key: is empty".into());
            }
            (Some(_), None) => {
                return Err(
                    "archive.s3.secret_access_key: missing (access_key_id is set; give both, or neither to use the AWS credential chain)"
                        .into(),
                );
            }
            (None, Some(_)) => {
                return Err(
                    "archive.s3.access_key_id: missing (secret_access_key is set; give both, or neither to use the AWS credential chain)"
                        .into(),
                );
            }
            _ => {}
        }
        if self.session_token.is_some() && self.access_key_id.is_none() {
            return Err(
                "archive.s3.session_token: only with access_key_id and secret_access_key".into(),
            );
        }
        if self.request_timeout.is_zero() {
            return Err("archive.s3.request_timeout: must be positive".into());
        }
        if self.connect_timeout.is_zero() {
            return Err("archive.s3.connect_timeout: must be positive".into());
        }
        Ok(())
    }
}

/// A secret from the configuration: deserialized from a string, printed as `***`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<S3Config, String> {
        let config: S3Config = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn defaults_and_fields() {
        let c = parse("{}").unwrap();
        assert!(!c.is_set());
        assert!(!c.has_credentials());
        let c = parse(
            "region: eu-west-1\nendpoint: http://minio.internal:9000\nallow_http: true\naddressing_style: virtual_hosted\naccess_key_id: AKIAEXAMPLE\nsecret_access_key: sekr1t-value\nsession_token: t0ken-value\nrequest_timeout: 10s\nconnect_timeout: 1s\nmax_retries: 2\nretry_timeout: 20s\n",
        )
        .unwrap();
        assert!(c.is_set() && c.has_credentials());
        assert_eq!(c.addressing_style, Some(AddressingStyle::VirtualHosted));
        assert_eq!(
            c.secret_access_key.as_ref().unwrap().expose(),
            "sekr1t-value"
        );
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("sekr1t-value") && !debug.contains("t0ken-value"),
            "{debug}"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let err = |yaml: &str| parse(yaml).unwrap_err();
        assert!(err("endpoint: http://127.0.0.1:9000\n").starts_with("archive.s3.endpoint"));
        assert!(err("endpoint: \"not a url\"\n").starts_with("archive.s3.endpoint"));
        assert!(err("endpoint: ftp://x\n").starts_with("archive.s3.endpoint"));
        assert!(err("endpoint: https://k:s@x\n").starts_with("archive.s3.endpoint"));
        assert!(err("endpoint: https://x/bucket\n").starts_with("archive.s3.endpoint"));
        assert!(err("access_key_id: AKIA\n").starts_with("archive.s3.secret_access_key"));
        assert!(err("secret_access_key: x\n").starts_with("archive.s3.access_key_id"));
        assert!(err("session_token: x\n").starts_with("archive.s3.session_token"));
        assert!(err("region: \"eu west\"\n").starts_with("archive.s3.region"));
        assert!(err("addressing_style: sideways\n").contains("sideways"));
        assert!(err("bucket: x\n").contains("unknown field `bucket`"));
        assert!(err("request_timeout: 0s\n").starts_with("archive.s3.request_timeout"));
        assert!(
            err("endpoint: https://10.0.0.1:9000\naddressing_style: virtual_hosted\n")
                .starts_with("archive.s3.addressing_style")
        );
        // A secret in an error never shows.
        let e = err("access_key_id: \"\"\nsecret_access_key: hidden-secret\n");
        assert!(!e.contains("hidden-secret"), "{e}");
    }
}
