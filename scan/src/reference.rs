//! Image references: `registry/repository[:tag][@digest]`, with Docker Hub's defaults for
//! short names. Parsing only; the registry client is in the `bulkhead` crate.

/// A string that is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not an image reference (registry/repository[:tag][@digest])")]
pub struct BadReference(pub String);

/// `registry/repository[:tag][@digest]`; Docker Hub names get their defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    /// Tag or digest to fetch.
    pub reference: String,
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<ImageRef, BadReference> {
        let bad = || BadReference(s.to_owned());
        if s.is_empty() || s.contains(char::is_whitespace) {
            return Err(bad());
        }
        let (name, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (s, None),
        };
        let (first, rest) = name.split_once('/').unwrap_or(("", name));
        let (registry, path) =
            if !first.is_empty() && (first.contains(['.', ':']) || first == "localhost") {
                (first.to_owned(), rest.to_owned())
            } else {
                let path = if name.contains('/') {
                    name.to_owned()
                } else {
                    format!("library/{name}")
                };
                ("registry-1.docker.io".to_owned(), path)
            };
        // A tag follows the last ':' of the last path component.
        let (repository, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r.to_owned(), Some(t.to_owned())),
            _ => (path, None),
        };
        if repository.is_empty() {
            return Err(bad());
        }
        let reference = match (digest, tag) {
            (Some(d), _) => d.to_owned(),
            (None, Some(t)) => t,
            (None, None) => "latest".to_owned(),
        };
        Ok(ImageRef {
            registry,
            repository,
            reference,
        })
    }

    /// Whether the registry is on this machine (spoken to in plain HTTP).
    pub fn loopback(&self) -> bool {
        let host = self
            .registry
            .rsplit_once(':')
            .map_or(&*self.registry, |(h, _)| h);
        matches!(host, "localhost" | "127.0.0.1" | "[::1]")
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sep = if self.reference.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        write!(
            f,
            "{}/{}{sep}{}",
            self.registry, self.repository, self.reference
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = ImageRef::parse("127.0.0.1:5000/bulkhead/debian:1").unwrap();
        assert_eq!(
            (
                r.registry.as_str(),
                r.repository.as_str(),
                r.reference.as_str()
            ),
            ("127.0.0.1:5000", "bulkhead/debian", "1")
        );
        assert!(r.loopback());
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(
            (
                r.registry.as_str(),
                r.repository.as_str(),
                r.reference.as_str()
            ),
            ("registry-1.docker.io", "library/busybox", "latest")
        );
        let r = ImageRef::parse("ghcr.io/org/app@sha256:abc").unwrap();
        assert_eq!(r.reference, "sha256:abc");
        assert_eq!(r.to_string(), "ghcr.io/org/app@sha256:abc");
        let r = ImageRef::parse("localhost:5000/app").unwrap();
        assert_eq!(
            (r.repository.as_str(), r.reference.as_str()),
            ("app", "latest")
        );
        assert!(ImageRef::parse("").is_err());
        assert!(ImageRef::parse("a b").is_err());
    }
}
