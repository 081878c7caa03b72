//! Where sluice may send a callback a submitter chose: an http(s) URL on an allowed port whose
//! host resolves to public addresses only, reached at exactly the addresses checked, never
//! through a proxy from the environment (which would connect to whatever the name resolves to
//! later) and never following a redirect.

use crate::config::BatchSettings;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Why a callback URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the callback URL is not an http(s) URL with a host")]
    BadUrl,
    #[error("the callback URL's port {0} is not one of batches.callback_ports")]
    Port(u16),
    #[error("the callback URL's host does not resolve")]
    Unresolved,
    #[error("the callback URL must resolve to public addresses only (see batches.allow_private_callbacks)")]
    NotPublic,
}

/// A checked destination: the host and, unless private addresses are allowed, the addresses to
/// connect to.
#[derive(Debug)]
pub struct Target {
    host: String,
    pinned: Option<Vec<SocketAddr>>,
}

/// Checks `url` against `settings` (scheme, port, and the addresses its host resolves to now).
pub async fn check(url: &str, settings: &BatchSettings) -> Result<Target, Refusal> {
    let parsed = reqwest::Url::parse(url).map_err(|_| Refusal::BadUrl)?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Refusal::BadUrl);
    }
    let host = parsed.host_str().ok_or(Refusal::BadUrl)?.to_owned();
    let port = parsed.port_or_known_default().ok_or(Refusal::BadUrl)?;
    if !settings.callback_ports.is_empty() && !settings.callback_ports.contains(&port) {
        return Err(Refusal::Port(port));
    }
    if settings.allow_private_callbacks {
        return Ok(Target { host, pinned: None });
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let lookup = tokio::time::timeout(Duration::from_secs(5), tokio::net::lookup_host((bare, port)));
    let addrs: Vec<SocketAddr> = lookup.await.ok().and_then(Result::ok).map(Iterator::collect).unwrap_or_default();
    if addrs.is_empty() {
        return Err(Refusal::Unresolved);
    }
    if !addrs.iter().all(|a| is_public(a.ip())) {
        return Err(Refusal::NotPublic);
    }
    Ok(Target { host, pinned: Some(addrs) })
}

/// An HTTP client for `target`: pinned to its checked addresses, with no proxy and no redirects.
pub fn client(target: &Target, timeout: Duration) -> reqwest::Result<reqwest::Client> {
    let mut builder =
        reqwest::Client::builder().timeout(timeout).redirect(reqwest::redirect::Policy::none()).no_proxy();
    if let Some(addrs) = &target.pinned {
        builder = builder.resolve_to_addrs(&target.host, addrs);
    }
    builder.build()
}

/// Whether `ip` is a public unicast address: not loopback, private, link-local, shared,
/// documentation, benchmarking, reserved, multicast, or a transition prefix that reaches one.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0 // 0.0.0.0/8
                || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
                || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
                || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            // IPv4-mapped, IPv4-compatible (::/96) and well-known NAT64 (64:ff9b::/96)
            // addresses reach IPv4 hosts: judge the IPv4 address.
            // (`Ipv6Addr::to_ipv4` knows only the first two, so the last 32 bits are read here.)
            let last32 = std::net::Ipv4Addr::from(u32::from(s[6]) << 16 | u32::from(s[7]));
            let embedded = v6
                .to_ipv4_mapped()
                .or_else(|| (s[..6] == [0; 6] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]).then_some(last32));
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated, still routed inside sites)
                || s[0] == 0x2002 // 6to4
                || (s[0] == 0x2001 && s[1] == 0) // Teredo
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64 (64:ff9b:1::/48)
                || embedded.is_some_and(|v4| !is_public(IpAddr::V4(v4))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_ranges_are_not_public_and_ordinary_addresses_are() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "192.0.0.8",
            "192.88.99.1",
            "198.18.0.1",
            "203.0.113.5",
            "240.0.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "fec0::1",
            "2002:a00:1::",
            "2001:0:4136:e378::1",
            "2001:db8::1",
            "64:ff9b:1::a00:1",
            "64:ff9b::7f00:1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "ff02::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} is not public");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::6810:85e5", "64:ff9b::5db8:d822", "::ffff:8.8.8.8"] {
            assert!(is_public(ip.parse().unwrap()), "{ip} is public");
        }
    }

    fn settings(ports: &[u16], allow_private: bool) -> BatchSettings {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut s = crate::config::Settings::load_from("none", &dir, false).expect("defaults").batches;
        s.callback_ports = ports.to_vec();
        s.allow_private_callbacks = allow_private;
        s
    }

    #[tokio::test]
    async fn a_callback_on_a_port_not_allowed_is_refused_before_any_lookup() {
        let s = settings(&[80, 443], true);
        assert_eq!(check("http://example.invalid:6379/x", &s).await.err(), Some(Refusal::Port(6379)));
        assert!(check("https://example.invalid/x", &s).await.is_ok(), "443 is allowed");
        assert_eq!(check("ftp://example.invalid/", &s).await.err(), Some(Refusal::BadUrl));
    }

    #[tokio::test]
    async fn loopback_is_refused_unless_private_callbacks_are_allowed() {
        let url = "http://127.0.0.1:80/cb";
        assert_eq!(check(url, &settings(&[80], false)).await.err(), Some(Refusal::NotPublic));
        assert!(check(url, &settings(&[80], true)).await.is_ok());
    }
}
