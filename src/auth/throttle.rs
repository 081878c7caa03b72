//! Failed authentication is throttled per client address: past `auth.max_failures` failed keys
//! or dashboard logins in `auth.failure_window_secs`, further attempts from that address get
//! 429 before any database lookup. A key that verified recently is let through to its normal
//! check whatever its address did, so a client sharing an address with a guesser keeps working.

use crate::config::AuthSettings;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses (or IPv6 /64s) tracked at most; past it, new addresses' failures are not counted
/// until old windows expire, so the table cannot grow without bound.
const MAX_CLIENTS: usize = 65_536;
/// Recently verified keys remembered at most.
const MAX_GOOD_KEYS: usize = 65_536;
/// How long a verified key passes a throttled address.
const GOOD_KEY_FOR: Duration = Duration::from_secs(3600);

/// Failed attempts per client address in the current window, and keys known to be good.
pub struct FailureThrottle {
    max_failures: u32,
    window: Duration,
    clients: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    good: Mutex<HashMap<[u8; 32], Instant>>,
}

impl FailureThrottle {
    /// A throttle with the `[auth]` bounds (`max_failures = 0` turns it off).
    pub fn new(settings: &AuthSettings) -> Self {
        Self {
            max_failures: settings.max_failures,
            window: Duration::from_secs(settings.failure_window_secs.max(1)),
            clients: Mutex::new(HashMap::new()),
            good: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds until `client` may try again, if it is throttled and `key` is not known good.
    pub fn blocked(&self, client: Option<IpAddr>, key: &[u8; 32]) -> Option<u64> {
        let client = client.map(group)?;
        if self.max_failures == 0 || self.is_good(key) {
            return None;
        }
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let (since, failures) = clients.get(&client)?;
        let left = self.window.checked_sub(since.elapsed())?;
        (*failures >= self.max_failures).then(|| left.as_secs().max(1))
    }

    /// Counts a failed attempt from `client`.
    pub fn failed(&self, client: Option<IpAddr>) {
        let Some(client) = client.map(group) else { return };
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if clients.len() >= MAX_CLIENTS && !clients.contains_key(&client) {
            let window = self.window;
            clients.retain(|_, (since, _)| since.elapsed() < window);
            if clients.len() >= MAX_CLIENTS {
                return;
            }
        }
        let entry = clients.entry(client).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= self.window {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
        metrics::counter!("sluice_auth_failures_total").increment(1);
    }

    /// Remembers a key that verified.
    pub fn succeeded(&self, key: &[u8; 32]) {
        let mut good = self.good.lock().unwrap_or_else(|e| e.into_inner());
        if good.len() >= MAX_GOOD_KEYS && !good.contains_key(key) {
            good.retain(|_, at| at.elapsed() < GOOD_KEY_FOR);
            if good.len() >= MAX_GOOD_KEYS {
                good.clear();
            }
        }
        good.insert(*key, Instant::now());
    }

    fn is_good(&self, key: &[u8; 32]) -> bool {
        let good = self.good.lock().unwrap_or_else(|e| e.into_inner());
        good.get(key).is_some_and(|at| at.elapsed() < GOOD_KEY_FOR)
    }
}

/// An IPv6 client is counted by its /64 (one host commonly holds the whole prefix).
fn group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let mut seg = v6.segments();
            seg[4..].fill(0);
            IpAddr::V6(seg.into())
        }
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(max: u32) -> FailureThrottle {
        let s = AuthSettings {
            bootstrap_key: Default::default(),
            bootstrap_tenant: "t".into(),
            cache_ttl_secs: 1,
            max_failures: max,
            failure_window_secs: 60,
        };
        FailureThrottle::new(&s)
    }

    #[test]
    fn an_address_is_throttled_after_its_failures_but_a_known_good_key_is_not() {
        let t = throttle(3);
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let (bad, good) = ([1u8; 32], [2u8; 32]);
        t.succeeded(&good);
        for _ in 0..3 {
            assert_eq!(t.blocked(Some(ip), &bad), None);
            t.failed(Some(ip));
        }
        assert!(t.blocked(Some(ip), &bad).is_some_and(|s| (1..=60).contains(&s)));
        assert_eq!(t.blocked(Some(ip), &good), None, "a key that verified is let through");
        assert_eq!(t.blocked(Some("203.0.113.8".parse().unwrap()), &bad), None, "other addresses are not");
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64_prefix() {
        let t = throttle(1);
        t.failed(Some("2001:db8:1:2::1".parse().unwrap()));
        assert!(t.blocked(Some("2001:db8:1:2:ffff::9".parse().unwrap()), &[0; 32]).is_some());
        assert!(t.blocked(Some("2001:db8:1:3::1".parse().unwrap()), &[0; 32]).is_none());
    }
}
