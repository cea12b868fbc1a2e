//! Where a scan worker may connect: registries on its allowlist (`--registries`, or any
//! registry when the list is empty), and never a private, loopback or link-local address
//! unless that registry is on the list. Checked on the reference, after DNS resolution
//! (the client's resolver drops forbidden addresses) and on every redirect. A scan
//! worker fetches what an image reference names on behalf of whoever submitted it: it
//! must not be a way into the cluster's own network.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The variable naming the registries scan workers may use (`host[:port]`, commas).
pub const REGISTRIES_VAR: &str = "BULKHEAD_SCAN_REGISTRIES";

/// Redirects followed at most, each checked as the first request was.
pub const MAX_REDIRECTS: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "registry {registry} is not on this scan worker's allowlist ({allowed}; set \
         --registries or {REGISTRIES_VAR})"
    )]
    NotListed { registry: String, allowed: String },
    #[error(
        "{host} is a private, loopback or link-local address ({addr}): refused unless its \
         registry is on the allowlist (--registries or {REGISTRIES_VAR})"
    )]
    Private { host: String, addr: IpAddr },
    #[error("{0}: only http and https")]
    Scheme(String),
    #[error("a redirect from https to http ({0})")]
    Downgrade(String),
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
}

/// The allowlist; empty: any registry at a public address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Egress {
    allow: Vec<String>,
    /// No address checks: a scan run by the user on their own machine (`bulkhead scan
    /// --db`), which fetches only what that user names.
    anywhere: bool,
}

impl Egress {
    /// From `host[:port]` entries (blank ones ignored).
    pub fn new<S: AsRef<str>>(registries: impl IntoIterator<Item = S>) -> Egress {
        Egress {
            allow: registries
                .into_iter()
                .map(|r| r.as_ref().trim().to_ascii_lowercase())
                .filter(|r| !r.is_empty())
                .collect(),
            anywhere: false,
        }
    }

    /// Any registry at any address (a local scan, for the user who runs it).
    pub fn anywhere() -> Egress {
        Egress {
            allow: Vec::new(),
            anywhere: true,
        }
    }

    /// Whether images of `registry` (`host[:port]`) may be fetched at all.
    pub fn registry(&self, registry: &str) -> Result<(), Refused> {
        if self.allow.is_empty() || self.listed(registry) {
            return Ok(());
        }
        Err(Refused::NotListed {
            registry: registry.to_owned(),
            allowed: self.allow.join(", "),
        })
    }

    fn listed(&self, registry: &str) -> bool {
        self.allow.iter().any(|a| a.eq_ignore_ascii_case(registry))
    }

    /// Whether `host` (no port) belongs to a listed registry: its private addresses may be
    /// reached.
    fn trusted_host(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.allow.iter().any(|a| {
            let h = match a.strip_prefix('[') {
                Some(v6) => v6.split(']').next().unwrap_or(v6),
                None => a.rsplit_once(':').map_or(a.as_str(), |(h, _)| h),
            };
            h.eq_ignore_ascii_case(host)
        })
    }

    /// A URL about to be requested (the first one, or a redirect's target): its scheme,
    /// and, when its host is an address, that address.
    pub fn url(&self, url: &Url) -> Result<(), Refused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused::Scheme(url.to_string()));
        }
        let host = url.host_str().unwrap_or_default();
        if self.anywhere || self.trusted_host(host) {
            return Ok(());
        }
        // A name: the resolver checks what it resolves to.
        let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        else {
            return Ok(());
        };
        if public(ip) {
            Ok(())
        } else {
            Err(Refused::Private {
                host: host.to_owned(),
                addr: ip,
            })
        }
    }

    /// A redirect: at most [`MAX_REDIRECTS`], no downgrade from https, its target checked.
    pub fn redirect(&self, to: &Url, previous: &[Url]) -> Result<(), Refused> {
        if previous.len() > MAX_REDIRECTS {
            return Err(Refused::TooManyRedirects);
        }
        if to.scheme() == "http"
            && !self.anywhere
            && previous.iter().any(|u| u.scheme() == "https")
            && !self.trusted_host(to.host_str().unwrap_or_default())
        {
            return Err(Refused::Downgrade(to.to_string()));
        }
        self.url(to)
    }

    /// The redirect policy of the client: every hop checked.
    pub fn redirect_policy(&self) -> reqwest::redirect::Policy {
        let me = self.clone();
        reqwest::redirect::Policy::custom(move |attempt| {
            match me.redirect(attempt.url(), attempt.previous()) {
                Ok(()) => attempt.follow(),
                Err(e) => attempt.error(e),
            }
        })
    }

    /// The client's resolver: the system's, with forbidden addresses dropped.
    pub fn resolver(&self) -> Arc<dyn Resolve> {
        Arc::new(Guarded(self.clone()))
    }

    /// What of `addrs` (resolved for `host`) may be connected to.
    pub fn filter(&self, host: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, Refused> {
        if self.anywhere || self.trusted_host(host) {
            return Ok(addrs);
        }
        let first = addrs.first().map(SocketAddr::ip);
        let ok: Vec<SocketAddr> = addrs.into_iter().filter(|a| public(a.ip())).collect();
        match (ok.is_empty(), first) {
            (true, Some(addr)) => Err(Refused::Private {
                host: host.to_owned(),
                addr,
            }),
            _ => Ok(ok),
        }
    }
}

struct Guarded(Egress);

impl Resolve for Guarded {
    fn resolve(&self, name: Name) -> Resolving {
        let egress = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let ok = egress.filter(&host, found)?;
            Ok(Box::new(ok.into_iter()) as Addrs)
        })
    }
}

/// Whether `ip` is an address on the public internet: not loopback, private, link-local,
/// shared (CGNAT), unspecified, broadcast, multicast, documentation or reserved; an IPv6
/// address that embeds an IPv4 one is judged by it.
pub fn public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => public_v4(a),
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return public_v4(v4);
            }
            let s = a.segments();
            let nat64 = s[0] == 0x64 && s[1] == 0xff9b;
            if nat64 || a.to_ipv4().is_some() && s[..6] == [0; 6] {
                // NAT64 and the old IPv4-compatible form carry an IPv4 address.
                let o = a.octets();
                return public_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
        }
    }
}

fn public_v4(a: Ipv4Addr) -> bool {
    let o = a.octets();
    !(a.is_loopback()
        || a.is_private()
        || a.is_link_local()
        || a.is_unspecified()
        || a.is_broadcast()
        || a.is_multicast()
        || a.is_documentation()
        || o[0] == 0 // "this network"
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared address space (CGNAT)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking
        || o[0] >= 240) // reserved
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn addresses_that_are_not_public() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
        ] {
            assert!(!public(a.parse().unwrap()), "{a}");
        }
        for a in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(public(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn the_allowlist_names_registries_and_lets_their_private_addresses_through() {
        let open = Egress::default();
        assert_eq!(open.registry("registry.example"), Ok(()));
        assert!(matches!(
            open.url(&url("http://127.0.0.1:5000/v2/")),
            Err(Refused::Private { .. })
        ));
        assert!(matches!(
            open.url(&url("http://[::1]:5000/v2/")),
            Err(Refused::Private { .. })
        ));
        assert!(matches!(
            open.url(&url("http://169.254.169.254/latest/meta-data")),
            Err(Refused::Private { .. })
        ));
        assert_eq!(open.url(&url("https://registry.example/v2/")), Ok(()));
        assert!(matches!(
            open.url(&url("file:///etc/passwd")),
            Err(Refused::Scheme(_))
        ));

        let listed = Egress::new(["127.0.0.1:5000", " Registry.Example "]);
        assert_eq!(listed.registry("127.0.0.1:5000"), Ok(()));
        assert_eq!(listed.registry("registry.example"), Ok(()));
        let e = listed.registry("127.0.0.1:5001").unwrap_err().to_string();
        assert!(e.contains("not on this scan worker's allowlist"), "{e}");
        assert_eq!(listed.url(&url("http://127.0.0.1:5000/v2/")), Ok(()));
        assert!(
            listed.url(&url("http://10.0.0.1/v2/")).is_err(),
            "another private host"
        );
    }

    #[test]
    fn redirects_are_checked_hop_by_hop() {
        let e = Egress::default();
        let from = [url("https://registry.example/v2/a/blobs/sha256:1")];
        assert_eq!(e.redirect(&url("https://cdn.example/x"), &from), Ok(()));
        assert!(matches!(
            e.redirect(&url("http://cdn.example/x"), &from),
            Err(Refused::Downgrade(_))
        ));
        assert!(matches!(
            e.redirect(&url("https://127.0.0.1/x"), &from),
            Err(Refused::Private { .. })
        ));
        let many = vec![url("https://a.example/"); MAX_REDIRECTS + 1];
        assert_eq!(
            e.redirect(&url("https://b.example/"), &many),
            Err(Refused::TooManyRedirects)
        );
    }

    #[test]
    fn resolved_addresses_are_filtered_unless_the_host_is_listed() {
        let e = Egress::default();
        let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let public: SocketAddr = "93.184.216.34:0".parse().unwrap();
        assert!(matches!(
            e.filter("evil.example", vec![local]),
            Err(Refused::Private { .. })
        ));
        assert_eq!(
            e.filter("mixed.example", vec![local, public]),
            Ok(vec![public])
        );
        let listed = Egress::new(["localhost:5000"]);
        assert_eq!(listed.filter("localhost", vec![local]), Ok(vec![local]));
    }
}
