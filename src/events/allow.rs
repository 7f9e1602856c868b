//! Where webhooks may go: the allow-list checked at registration and again at every
//! delivery (the resolver below checks every address a name resolves to when the request
//! is made, so a name that later resolves to an internal address is refused: DNS
//! rebinding).
//!
//! Refused unless `webhooks.allow_private` is on or the address is inside one of
//! `webhooks.allowed_cidrs`: loopback, unspecified, private (10/8, 172.16/12,
//! 192.168/16), shared address space (100.64/10), link-local (169.254/16, fe80::/10,
//! which holds the cloud metadata address 169.254.169.254), unique-local (fc00::/7),
//! multicast, broadcast, `0.0.0.0/8`, the IPv6 forms of any of these (IPv4-mapped and
//! NAT64 `64:ff9b::/96`), and other reserved ranges. `http://` needs `webhooks.allow_http`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// How long a registration waits for the target's name to resolve.
const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A network in CIDR form (`10.1.0.0/16`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `addr/prefix` (or a bare address, a network of one).
    pub fn parse(text: &str) -> Option<Cidr> {
        let (a, p) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse::<u8>().ok().filter(|&p| p <= max)?,
            None => max,
        };
        Some(Cidr { addr, prefix })
    }

    /// Whether `ip` is inside the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// An IPv6 address that carries an IPv4 one (mapped, or NAT64) as that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                let [.., a, b, c, d] = v6.octets();
                return IpAddr::V4(Ipv4Addr::new(a, b, c, d));
            }
            ip
        }
        v4 => v4,
    }
}

/// Whether `ip` is anything but a public unicast address (see the module comment).
pub fn is_internal(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0
                || first == 0x2001 && v6.segments()[1] == 0x0db8
                || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
        }
    }
}

/// The allow-list of delivery targets, from `[webhooks]`.
#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    /// Internal addresses are allowed too.
    pub allow_private: bool,
    /// `http://` targets are allowed.
    pub allow_http: bool,
    /// Networks allowed even when internal.
    pub allowed: Vec<Cidr>,
}

impl TargetPolicy {
    /// Whether a delivery may connect to `ip`.
    pub fn ip_allowed(&self, ip: IpAddr) -> bool {
        self.allow_private || !is_internal(ip) || self.allowed.iter().any(|c| c.contains(ip))
    }

    /// Checks a URL's form: http(s) as configured, a host, no credentials. Returns the
    /// parsed URL.
    pub fn check_url(&self, url: &str) -> Result<reqwest::Url, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid url: {e}"))?;
        match parsed.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => {
                return Err(
                    "the url must use https (webhooks.allow_http permits http://)".to_owned(),
                );
            }
            other => return Err(format!("unsupported url scheme '{other}'")),
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err("the url must not contain credentials".to_owned());
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err("the url has no host".to_owned());
        }
        Ok(parsed)
    }

    /// Checks a URL fully: its form, and every address its host resolves to now.
    pub async fn check_target(&self, url: &str) -> Result<reqwest::Url, String> {
        let parsed = self.check_url(url)?;
        let host = parsed
            .host_str()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = parsed.port_or_known_default().unwrap_or(443);
        let lookup = tokio::net::lookup_host((host.as_str(), port));
        let addrs: Vec<SocketAddr> = tokio::time::timeout(RESOLVE_TIMEOUT, lookup)
            .await
            .map_err(|_| format!("resolving '{host}' timed out"))?
            .map_err(|e| format!("cannot resolve '{host}': {e}"))?
            .collect();
        if addrs.is_empty() {
            return Err(format!("'{host}' resolves to no address"));
        }
        self.check_addrs(&host, &addrs)?;
        Ok(parsed)
    }

    fn check_addrs(&self, host: &str, addrs: &[SocketAddr]) -> Result<(), String> {
        match addrs.iter().find(|a| !self.ip_allowed(a.ip())) {
            Some(bad) => Err(format!(
                "'{host}' resolves to {}, an internal address that webhooks may not reach \
                 (see webhooks.allow_private and webhooks.allowed_cidrs)",
                bad.ip()
            )),
            None => Ok(()),
        }
    }
}

/// The resolver of the delivery client: resolves with the system resolver, then refuses
/// the name if any address is not allowed.
#[derive(Debug, Clone)]
pub struct CheckedResolver(pub Arc<TargetPolicy>);

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = Arc::clone(&self.0);
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            policy.check_addrs(&host, &addrs).map_err(|m| {
                Box::new(std::io::Error::new(std::io::ErrorKind::PermissionDenied, m))
                    as Box<dyn std::error::Error + Send + Sync>
            })?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_ranges_are_refused_and_public_ones_allowed() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "fd00:ec2::254",
        ] {
            assert!(is_internal(ip(bad)), "{bad} must count as internal");
        }
        for good in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "172.32.0.1"] {
            assert!(!is_internal(ip(good)), "{good} is public");
        }
    }

    #[test]
    fn cidrs_allow_what_they_contain() {
        let p = TargetPolicy {
            allowed: vec![Cidr::parse("10.1.0.0/16").unwrap()],
            ..TargetPolicy::default()
        };
        assert!(p.ip_allowed(ip("10.1.200.3")));
        assert!(!p.ip_allowed(ip("10.2.0.1")));
        assert!(!p.ip_allowed(ip("127.0.0.1")));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("::1").unwrap().contains(ip("::1")));
    }

    #[test]
    fn urls_need_https_and_no_credentials() {
        let p = TargetPolicy::default();
        assert!(p.check_url("http://example.com/h").is_err());
        assert!(p.check_url("https://u:p@example.com/h").is_err());
        assert!(p.check_url("ftp://example.com/").is_err());
        assert!(p.check_url("https://example.com/h").is_ok());
    }
}
