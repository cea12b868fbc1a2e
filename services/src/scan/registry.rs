//! An OCI distribution client: resolves an image reference to its platform manifest,
//! reads the config's `rootfs.diff_ids`, and opens layer blobs as byte streams. Speaks
//! plain HTTP to loopback registries, HTTPS elsewhere; answers Basic and Bearer challenges.
//! Bounded: where it may connect is the [`Egress`]'s to say, every request has timeouts,
//! every document a byte cap, and no error quotes what a server answered.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use reqwest::header::{ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};
use sha2::{Digest, Sha256};

pub use bulkhead_scan::manifest::Layer;
use bulkhead_scan::manifest::{Manifest, ManifestError};
pub use bulkhead_scan::reference::{BadReference, ImageRef};

use super::egress::{Egress, Refused};

/// Largest manifest or index read (Docker Hub's limit is 4 MiB).
pub const MAX_MANIFEST: u64 = 4 * 1024 * 1024;
/// Largest image config read.
pub const MAX_CONFIG: u64 = 8 * 1024 * 1024;
/// Largest token service answer read.
pub const MAX_TOKEN: u64 = 64 * 1024;
/// Connecting, a stall while reading, and a whole small document (manifest, config, token).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(30);
const DOCUMENT_TIMEOUT: Duration = Duration::from_secs(60);

const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    BadReference(#[from] BadReference),
    #[error("{url}: {reason}")]
    Http { url: String, reason: String },
    #[error("{url}: {refused}")]
    Refused { url: String, refused: Refused },
    #[error("{what} is larger than {limit} bytes")]
    TooLarge { what: String, limit: u64 },
    #[error("{what}: {reason}")]
    Format { what: String, reason: String },
    #[error("{image}: {source}")]
    Manifest {
        image: String,
        source: ManifestError,
    },
}

/// An image resolved to one platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedImage {
    pub image: ImageRef,
    /// Digest of the platform manifest.
    pub digest: String,
    pub layers: Vec<Layer>,
}

/// The digest of `body`: `sha256:<hex>`.
fn digest_of(body: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(body)))
}

/// Content that is not what its digest names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("unsupported digest {0} (sha256 only)")]
    Unsupported(String),
    #[error("content does not match its digest: asked for {want}, got {got}")]
    Mismatch { want: String, got: String },
}

/// Whether content whose digest is `got` (from [`digest_of`]) is what `want` names.
fn check_digest(want: &str, got: &str) -> Result<(), DigestError> {
    if !want.starts_with("sha256:") {
        return Err(DigestError::Unsupported(want.to_owned()));
    }
    if got.eq_ignore_ascii_case(want) {
        Ok(())
    } else {
        Err(DigestError::Mismatch {
            want: want.to_owned(),
            got: got.to_owned(),
        })
    }
}

/// Why a registry's challenge could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the registry asks for a user and password (set {AUTH_VAR}={0}=user:password)")]
    NeedsCredentials(String),
    #[error("bearer challenge without a realm")]
    NoRealm,
    #[error("token realm {realm}: {reason}")]
    BadRealm { realm: String, reason: String },
    #[error("token service {realm}: {reason}")]
    Unreachable { realm: String, reason: String },
    #[error("token service answer: {0}")]
    Answer(String),
    #[error("token service {realm}: {status}{hint}")]
    Refused {
        realm: String,
        status: StatusCode,
        hint: String,
    },
    #[error("token service replied without a token")]
    NoToken,
    #[error("unsupported auth challenge {0:?}")]
    Unsupported(String),
}

/// `BULKHEAD_REGISTRY_AUTH` holds an entry that is not `HOST=user:password`.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{AUTH_VAR}: an entry is not HOST=user:password (name the registry the credentials are \
     for, e.g. registry.example:5000=ci:secret; they are sent to that registry only)"
)]
pub struct BadCredentials;

/// Credentials for registries that ask, each for one registry (`host[:port]`): a
/// registry is never sent another's password, however an image reference names it.
#[derive(Clone, Default)]
pub struct Credentials {
    by_registry: HashMap<String, (String, String)>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hosts: Vec<&String> = self.by_registry.keys().collect();
        f.debug_struct("Credentials").field("for", &hosts).finish()
    }
}

/// The variable holding credentials: `HOST=user:password`, entries separated by commas.
pub const AUTH_VAR: &str = "BULKHEAD_REGISTRY_AUTH";

impl Credentials {
    /// Parses `HOST=user:password[,HOST2=user:password]` (a password holds no comma).
    pub fn parse(s: &str) -> Result<Credentials, BadCredentials> {
        let mut by_registry = HashMap::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let parsed = entry.split_once('=').and_then(|(host, cred)| {
                let (user, password) = cred.split_once(':')?;
                (!host.is_empty() && !host.contains('/') && !user.is_empty())
                    .then(|| (host.to_owned(), (user.to_owned(), password.to_owned())))
            });
            let Some((host, cred)) = parsed else {
                return Err(BadCredentials);
            };
            by_registry.insert(host, cred);
        }
        Ok(Credentials { by_registry })
    }

    /// The credentials in [`AUTH_VAR`], if it is set.
    pub fn from_env() -> Result<Credentials, BadCredentials> {
        match std::env::var(AUTH_VAR) {
            Ok(v) => Credentials::parse(&v),
            Err(_) => Ok(Credentials::default()),
        }
    }

    /// The user and password for `registry` (`host[:port]` as the image reference names it).
    pub fn for_registry(&self, registry: &str) -> Option<&(String, String)> {
        self.by_registry.get(registry)
    }
}

pub struct Registry {
    http: reqwest::Client,
    creds: Credentials,
    egress: Egress,
    /// Bearer tokens by (registry, scope).
    tokens: Mutex<HashMap<(String, String), String>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// A client that connects where `egress` allows, with timeouts on every request; no
    /// proxy from the environment (a proxy would resolve names past the address checks).
    pub fn new(creds: Credentials, egress: Egress) -> Result<Registry, RegistryError> {
        install_crypto();
        let http = reqwest::Client::builder()
            .user_agent(concat!("bulkhead/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(egress.resolver())
            .redirect(egress.redirect_policy())
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .no_proxy()
            .build()
            .map_err(|e| RegistryError::Http {
                url: String::new(),
                reason: e.to_string(),
            })?;
        Ok(Registry {
            http,
            creds,
            egress,
            tokens: Mutex::default(),
        })
    }

    fn base(image: &ImageRef) -> String {
        let scheme = if image.loopback() { "http" } else { "https" };
        format!("{scheme}://{}/v2/{}", image.registry, image.repository)
    }

    /// GET with the registry's auth dance: on 401, answer the challenge once and retry.
    /// `whole`: the response is a small document, read within [`DOCUMENT_TIMEOUT`].
    async fn get(
        &self,
        image: &ImageRef,
        url: &str,
        accept: &str,
        whole: bool,
    ) -> Result<Response, RegistryError> {
        let err = |e: &dyn std::fmt::Display| RegistryError::Http {
            url: url.to_owned(),
            reason: e.to_string(),
        };
        let refused = |refused| RegistryError::Refused {
            url: url.to_owned(),
            refused,
        };
        self.egress.registry(&image.registry).map_err(refused)?;
        let parsed = reqwest::Url::parse(url).map_err(|e| err(&e))?;
        self.egress.url(&parsed).map_err(refused)?;
        let scope = format!("repository:{}:pull", image.repository);
        let key = (image.registry.clone(), scope.clone());
        let token = self.tokens.lock().expect("lock").get(&key).cloned();
        let request = |auth: Option<String>| {
            let mut req = self.http.get(url).header(ACCEPT, accept);
            if let Some(a) = auth {
                req = req.header(AUTHORIZATION, a);
            }
            if whole {
                req = req.timeout(DOCUMENT_TIMEOUT);
            }
            req
        };
        let resp = request(token.map(|t| format!("Bearer {t}")))
            .send()
            .await
            .map_err(|e| err(&cause(&e)))?;
        let resp = if resp.status() == StatusCode::UNAUTHORIZED {
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let auth = self
                .answer(&image.registry, &challenge, &scope)
                .await
                .map_err(|e| err(&e))?;
            if let Some(t) = auth.strip_prefix("Bearer ") {
                self.tokens.lock().expect("lock").insert(key, t.to_owned());
            }
            request(Some(auth))
                .send()
                .await
                .map_err(|e| err(&cause(&e)))?
        } else {
            resp
        };
        if !resp.status().is_success() {
            // The body is the server's to fill: it is not read, and never quoted.
            return Err(err(&status_hint(resp.status())));
        }
        Ok(resp)
    }

    /// The `Authorization` value answering `registry`'s `WWW-Authenticate` challenge: the
    /// credentials configured for that registry go to it (Basic) or to the token service
    /// it names (Bearer), as docker and containerd do; no others go anywhere.
    async fn answer(
        &self,
        registry: &str,
        challenge: &str,
        scope: &str,
    ) -> Result<String, AuthError> {
        let (scheme, params) = parse_challenge(challenge);
        let creds = self.creds.for_registry(registry);
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => {
                let (u, p) = creds.ok_or_else(|| AuthError::NeedsCredentials(registry.into()))?;
                Ok(format!("Basic {}", base64(&format!("{u}:{p}"))))
            }
            "bearer" => {
                let realm = params.get("realm").ok_or(AuthError::NoRealm)?;
                let mut query = vec![("scope", scope)];
                if let Some(service) = params.get("service") {
                    query.push(("service", service.as_str()));
                }
                let url = reqwest::Url::parse_with_params(realm, &query).map_err(|e| {
                    AuthError::BadRealm {
                        realm: realm.clone(),
                        reason: e.to_string(),
                    }
                })?;
                self.egress.url(&url).map_err(|e| AuthError::BadRealm {
                    realm: realm.clone(),
                    reason: e.to_string(),
                })?;
                let mut req = self.http.get(url);
                if let Some((u, p)) = creds {
                    req = req.basic_auth(u, Some(p));
                }
                let resp = req.timeout(DOCUMENT_TIMEOUT).send().await.map_err(|e| {
                    AuthError::Unreachable {
                        realm: realm.clone(),
                        reason: cause(&e),
                    }
                })?;
                if !resp.status().is_success() {
                    let hint = match (resp.status().as_u16(), creds) {
                        (401 | 403, None) => format!(
                            " (it wants a user and password: set {AUTH_VAR}={registry}=user:password)"
                        ),
                        (401 | 403, Some(_)) => " (the credentials were refused)".into(),
                        _ => String::new(),
                    };
                    return Err(AuthError::Refused {
                        realm: realm.clone(),
                        status: resp.status(),
                        hint,
                    });
                }
                let body = read_capped(resp, MAX_TOKEN)
                    .await
                    .map_err(|e| AuthError::Answer(e.to_string()))?;
                let t: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|_| AuthError::Answer("not JSON".into()))?;
                let token = t
                    .get("token")
                    .or_else(|| t.get("access_token"))
                    .and_then(|v| v.as_str())
                    .ok_or(AuthError::NoToken)?;
                Ok(format!("Bearer {token}"))
            }
            _ => Err(AuthError::Unsupported(challenge.into())),
        }
    }

    async fn manifest(
        &self,
        image: &ImageRef,
        reference: &str,
    ) -> Result<(Manifest, String), RegistryError> {
        let url = format!("{}/manifests/{reference}", Self::base(image));
        let resp = self.get(image, &url, MANIFEST_TYPES, true).await?;
        let body = read_capped(resp, MAX_MANIFEST)
            .await
            .map_err(|e| e.about(&format!("manifest {url}"), &url))?;
        let digest = digest_of(&body);
        if reference.starts_with("sha256:") {
            check_digest(reference, &digest).map_err(|e| RegistryError::Format {
                what: format!("manifest {url}"),
                reason: e.to_string(),
            })?;
        }
        let doc = Manifest::parse(&body).map_err(|e| RegistryError::Format {
            what: format!("manifest {url}"),
            reason: e.to_string(),
        })?;
        Ok((doc, digest))
    }

    /// Resolves an image to the manifest for `os`/`arch` and its layers with diffIDs.
    pub async fn resolve(
        &self,
        image: &ImageRef,
        os: &str,
        arch: &str,
    ) -> Result<ResolvedImage, RegistryError> {
        let (mut doc, mut digest) = self.manifest(image, &image.reference).await?;
        let bad = |source| RegistryError::Manifest {
            image: image.to_string(),
            source,
        };
        if doc.is_index() {
            let d = doc.platform(os, arch).map_err(bad)?.digest.clone();
            (doc, digest) = self.manifest(image, &d).await?;
        }
        let config = doc.config().map_err(bad)?;
        let url = format!("{}/blobs/{}", Self::base(image), config.digest);
        let resp = self.get(image, &url, "*/*", true).await?;
        let body = read_capped(resp, MAX_CONFIG)
            .await
            .map_err(|e| e.about(&format!("config {url}"), &url))?;
        // The diffIDs that check every layer come from here: the config must be the one
        // the manifest names.
        check_digest(&config.digest, &digest_of(&body)).map_err(|e| RegistryError::Format {
            what: format!("config of {image}"),
            reason: e.to_string(),
        })?;
        let layers = doc.layers(&body).map_err(bad)?;
        Ok(ResolvedImage {
            image: image.clone(),
            digest,
            layers,
        })
    }

    /// The layer blob, as a stream of bytes.
    pub async fn layer(
        &self,
        image: &ImageRef,
        layer: &Layer,
    ) -> Result<impl Stream<Item = reqwest::Result<Bytes>> + use<>, RegistryError> {
        let url = format!("{}/blobs/{}", Self::base(image), layer.digest);
        Ok(self.get(image, &url, "*/*", false).await?.bytes_stream())
    }
}

/// Why a capped read stopped.
#[derive(Debug)]
enum Capped {
    Over(u64),
    Read(String),
}

impl std::fmt::Display for Capped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Capped::Over(limit) => write!(f, "larger than {limit} bytes"),
            Capped::Read(e) => f.write_str(e),
        }
    }
}

impl Capped {
    fn about(self, what: &str, url: &str) -> RegistryError {
        match self {
            Capped::Over(limit) => RegistryError::TooLarge {
                what: what.to_owned(),
                limit,
            },
            Capped::Read(reason) => RegistryError::Http {
                url: url.to_owned(),
                reason,
            },
        }
    }
}

/// The whole body of `resp` if it is at most `limit` bytes: a declared length over it is
/// refused before reading, and reading stops as soon as the body passes it.
async fn read_capped(resp: Response, limit: u64) -> Result<Vec<u8>, Capped> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(Capped::Over(limit));
    }
    let mut body = Vec::new();
    let mut stream = std::pin::pin!(resp.bytes_stream());
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        let chunk = chunk.map_err(|e| Capped::Read(cause(&e)))?;
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(Capped::Over(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// What a request error comes down to, each cause once, without the URL (the caller
/// names it): "client error (Connect): tcp connect error: Connection refused (os error 111)".
pub fn cause(e: &reqwest::Error) -> String {
    let mut out = if e.is_timeout() {
        "timed out".to_owned()
    } else {
        String::new()
    };
    let mut next: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = next {
        let s = c.to_string();
        if !out.contains(&s) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&s);
        }
        next = c.source();
    }
    if out.is_empty() {
        // No cause beneath: its own words, without the URL.
        out = e.to_string();
        if let Some(u) = e.url() {
            out = out.replace(&format!(" ({u})"), "");
        }
    }
    out
}

/// A registry's refusal, by status only, with what it usually means.
fn status_hint(status: StatusCode) -> String {
    let hint = match status.as_u16() {
        401 | 403 => {
            " (not allowed: does the registry need credentials? set BULKHEAD_REGISTRY_AUTH)"
        }
        404 => " (no such image, tag or blob in that registry)",
        429 => " (rate limited by the registry)",
        500..=599 => " (the registry failed)",
        _ => "",
    };
    format!("{status}{hint}")
}

/// HTTPS clients need a process-wide crypto provider (ring); installing it twice is harmless.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `Bearer realm="…",service="…",scope="…"` → ("Bearer", {realm: …, …}).
fn parse_challenge(h: &str) -> (String, HashMap<String, String>) {
    let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while let Some((k, after)) = rest.split_once('=') {
        let k = k.trim().trim_start_matches(',').trim().to_owned();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (q[..end].to_owned(), q.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        params.insert(k, v);
        rest = next.trim_start_matches(',').trim();
    }
    (scheme.to_owned(), params)
}

fn base64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        );
        assert_eq!(s, "Bearer");
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
        assert_eq!(p["scope"], "repository:a/b:pull");
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(
            (s.as_str(), p["realm"].as_str()),
            ("Basic", "Registry Realm")
        );
    }

    #[test]
    fn credentials_are_scoped_to_the_registry_they_name() {
        let c = Credentials::parse("127.0.0.1:5000=ci:s3:cr=t, reg.example=bob:pw").unwrap();
        assert_eq!(
            c.for_registry("127.0.0.1:5000"),
            Some(&("ci".to_owned(), "s3:cr=t".to_owned()))
        );
        assert_eq!(
            c.for_registry("reg.example").map(|c| c.0.as_str()),
            Some("bob")
        );
        assert_eq!(c.for_registry("127.0.0.1:5001"), None);
        assert_eq!(c.for_registry("evil.example"), None);
        assert!(!format!("{c:?}").contains("pw"), "Debug shows no password");
        assert!(Credentials::parse("").unwrap().for_registry("x").is_none());
        for bad in [
            "user:password",
            "=u:p",
            "host=nocolon",
            "host=:p",
            "a/b=u:p",
        ] {
            let e = Credentials::parse(bad).unwrap_err().to_string();
            assert!(e.contains("HOST=user:password"), "{bad}: {e}");
        }
    }

    #[test]
    fn content_must_match_its_digest() {
        let body = br#"{"schemaVersion":2}"#;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(body)));
        assert_eq!(digest_of(body), digest);
        assert_eq!(check_digest(&digest, &digest_of(body)), Ok(()));
        let e = check_digest(&digest, &digest_of(br#"{"schemaVersion":3}"#))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not match") && e.contains(&digest), "{e}");
        assert!(
            check_digest("md5:00", &digest_of(body))
                .unwrap_err()
                .to_string()
                .contains("sha256 only")
        );
    }

    #[test]
    fn base64_encodes_credentials() {
        assert_eq!(base64("user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64("a"), "YQ==");
        assert_eq!(base64("ab"), "YWI=");
    }
}
