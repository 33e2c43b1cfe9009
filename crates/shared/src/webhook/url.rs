//! Callback URLs, checked before anything is stored.
//!
//! The check accepts a strict subset of URLs: printable ASCII only, `scheme://host[:port]`
//! followed by an optional path and query, no fragment. Within that subset the host this
//! module sees is the host a WHATWG URL parser (the one `fetch` uses) sees, so that no
//! spelling can smuggle a refused host past it (the native tests check this against the
//! `url` crate). Refused:
//!
//! - any scheme but `https`; plain `http` only to `localhost` or `127.0.0.1`, and only when
//!   insecure callbacks are allowed (local runs);
//! - more than [`MAX_LEN`] characters;
//! - credentials (`user:pass@`, even an empty `@`);
//! - IP-literal hosts in every spelling a URL parser reads as an address: dotted, decimal,
//!   octal and hex IPv4 (`2130706433`, `0177.1`, `0x7f.0.0.1`), with a trailing dot, and
//!   bracketed IPv6;
//! - names that are not public: `localhost` and every name under `.localhost`, single-label
//!   hosts (`intranet`), and the special-use suffixes `.local`, `.internal`, `.home.arpa` and
//!   `.test` (the plain-http exception for local runs aside);
//! - https ports other than 443, unless `WEBHOOK_ALLOWED_HOSTS` names the host with that port
//!   (`hooks.example.com:8443`);
//! - with an allow-list configured, every host not on it.
//!
//! What a name resolves to is not known here: a public name whose DNS answer is a private
//! address is stopped only by Cloudflare's egress (Workers cannot reach private networks) or
//! by an allow-list. The tagger checks the stored URL again before each delivery, against
//! the policy of that moment ([`CallbackUrl::parse`] with the same vars).
//!
//! Hosts must be DNS names: letters, digits and hyphens in dot-separated labels
//! (internationalised names in their `xn--` form). Whether an `xn--` label is valid
//! Punycode is not checked here; the upload worker also parses every accepted URL with the
//! runtime's URL parser, which refuses those.

/// Longest accepted callback URL, in characters.
pub const MAX_LEN: usize = 2048;

/// Why a callback URL is refused; the text is safe to show the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlError {
    /// Longer than [`MAX_LEN`].
    TooLong,
    /// Not a URL of the accepted form.
    Malformed(&'static str),
    /// A scheme other than `https` (or `http` where allowed).
    Scheme,
    /// `http` where it is not allowed.
    Insecure,
    /// User name or password in the URL.
    Credentials,
    /// An IP address instead of a host name.
    IpLiteral,
    /// A host that `WEBHOOK_ALLOWED_HOSTS` does not list.
    HostNotAllowed,
    /// `localhost`, a single-label host, or a special-use domain: not a public name.
    NotPublic,
    /// An https port other than 443 that `WEBHOOK_ALLOWED_HOSTS` does not name.
    Port,
}

impl std::fmt::Display for UrlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLong => write!(f, "the callback URL is longer than {MAX_LEN} characters"),
            Self::Malformed(why) => write!(f, "the callback URL is malformed: {why}"),
            Self::Scheme => write!(f, "the callback URL must use https"),
            Self::Insecure => write!(
                f,
                "the callback URL must use https (plain http is only allowed to localhost in local runs)"
            ),
            Self::Credentials => write!(f, "the callback URL must not contain credentials"),
            Self::IpLiteral => write!(f, "the callback URL must name a host, not an IP address"),
            Self::HostNotAllowed => write!(f, "the callback URL's host is not on the allow-list"),
            Self::NotPublic => write!(
                f,
                "the callback URL must name a public host (not localhost, a single-label name, \
                 or a .local, .internal, .home.arpa, .test or .localhost name)"
            ),
            Self::Port => write!(
                f,
                "the callback URL must use port 443 (another port only when WEBHOOK_ALLOWED_HOSTS \
                 lists the host with it)"
            ),
        }
    }
}

impl std::error::Error for UrlError {}

/// A host pattern of `WEBHOOK_ALLOWED_HOSTS`: a host, or `*.` and a domain for its
/// subdomains (not the domain itself).
#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    SubdomainsOf(String),
}

impl HostPattern {
    fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(h) => h == host,
            Self::SubdomainsOf(domain) => host
                .strip_suffix(domain.as_str())
                .is_some_and(|sub| !sub.is_empty()),
        }
    }
}

/// What the deployment allows: the `ALLOW_INSECURE_CALLBACKS` and `WEBHOOK_ALLOWED_HOSTS`
/// vars.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallbackPolicy {
    /// Accept `http://localhost` and `http://127.0.0.1` (local runs only).
    pub allow_insecure: bool,
    /// Empty: any host (that passes the other checks). Each with the port it allows: `None`
    /// for the scheme's default only.
    allowed_hosts: Vec<(HostPattern, Option<u16>)>,
}

impl CallbackPolicy {
    /// The policy from the vars: `allowed_hosts` is a comma- or space-separated list of
    /// hosts and `*.domain` patterns, each optionally with `:port` (the only way to allow an
    /// https port other than 443); empty allows every host, on port 443.
    pub fn new(allow_insecure: bool, allowed_hosts: &str) -> Self {
        let allowed_hosts = allowed_hosts
            .split(|c: char| c == ',' || c.is_ascii_whitespace())
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .map(|h| match h.rsplit_once(':') {
                Some((host, port)) => (host.to_string(), parse_port(port).ok()),
                None => (h, None),
            })
            .map(|(h, port)| (h.strip_suffix('.').map(str::to_string).unwrap_or(h), port))
            .map(|(h, port)| match h.strip_prefix("*.") {
                Some(domain) => (HostPattern::SubdomainsOf(format!(".{domain}")), port),
                None => (HostPattern::Exact(h), port),
            })
            .collect();
        Self {
            allow_insecure,
            allowed_hosts,
        }
    }

    /// Whether an allow-list is configured.
    pub fn has_allow_list(&self) -> bool {
        !self.allowed_hosts.is_empty()
    }

    /// Whether `host` may be called on `port`: with no list, any host on the default port;
    /// with one, a listed host, on the default port or on a port one of its entries names. `any_port`
    /// (plain http to localhost in local runs) skips the port rule.
    fn allows(&self, host: &str, port: Option<u16>, any_port: bool) -> Result<(), UrlError> {
        let port_ok = |listed: Option<u16>| any_port || port.is_none() || listed == port;
        if self.allowed_hosts.is_empty() {
            return if port_ok(None) {
                Ok(())
            } else {
                Err(UrlError::Port)
            };
        }
        let mut entries = self.allowed_hosts.iter().filter(|(p, _)| p.matches(host));
        match entries.next() {
            None => Err(UrlError::HostNotAllowed),
            Some(first) => match std::iter::once(first)
                .chain(entries)
                .any(|&(_, listed)| port_ok(listed))
            {
                true => Ok(()),
                false => Err(UrlError::Port),
            },
        }
    }
}

/// A checked callback URL, in normal form: scheme and host in lower case, no trailing dot
/// on the host, no default port, and a path (at least `/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallbackUrl {
    url: String,
    host: String,
}

impl CallbackUrl {
    /// Checks `raw` against the rules of this module and `policy`.
    pub fn parse(raw: &str, policy: &CallbackPolicy) -> Result<Self, UrlError> {
        if raw.len() > MAX_LEN {
            return Err(UrlError::TooLong);
        }
        if raw.is_empty() {
            return Err(UrlError::Malformed("it is empty"));
        }
        if let Some(bad) = raw.bytes().find(|&b| !allowed_byte(b)) {
            return Err(UrlError::Malformed(match bad {
                b'#' => "fragments are not allowed",
                b if b.is_ascii_whitespace() || b.is_ascii_control() => {
                    "it contains whitespace or control characters"
                }
                b if !b.is_ascii() => "it must be ASCII (use the xn-- form of international names)",
                _ => "it contains a character that must be percent-encoded",
            }));
        }
        let (scheme, rest) = raw
            .split_once(':')
            .ok_or(UrlError::Malformed("it has no scheme"))?;
        let secure = if scheme.eq_ignore_ascii_case("https") {
            true
        } else if scheme.eq_ignore_ascii_case("http") {
            false
        } else {
            return Err(UrlError::Scheme);
        };
        let rest = rest
            .strip_prefix("//")
            .ok_or(UrlError::Malformed("it must start with https://"))?;
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.contains('@') {
            return Err(UrlError::Credentials);
        }
        if authority.starts_with('[') {
            return Err(UrlError::IpLiteral);
        }
        if authority.contains(['[', ']']) {
            return Err(UrlError::Malformed(
                "brackets are only allowed around IPv6 addresses",
            ));
        }
        let (host_raw, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(parse_port(port)?)),
            None => (authority, None),
        };
        let host_lower = host_raw.to_ascii_lowercase();
        if !secure {
            let local = host_lower == "localhost" || host_lower == "127.0.0.1";
            if !(policy.allow_insecure && local) {
                return Err(UrlError::Insecure);
            }
        }
        let host = host_lower
            .strip_suffix('.')
            .unwrap_or(&host_lower)
            .to_string();
        let local_ip = !secure && host_lower == "127.0.0.1";
        if !local_ip {
            check_host(&host)?;
        }
        // Past the scheme check, plain http is the local-run exception (localhost, 127.0.0.1).
        if secure {
            check_public(&host)?;
        }
        let default_port = if secure { 443 } else { 80 };
        let port = port.filter(|&p| p != default_port);
        policy.allows(&host, port, !secure)?;
        check_path(tail)?;
        let scheme = if secure { "https" } else { "http" };
        let port = match port {
            Some(p) => format!(":{p}"),
            None => String::new(),
        };
        let path = if tail.starts_with('/') { "" } else { "/" };
        let url = format!("{scheme}://{host}{port}{path}{tail}");
        Ok(Self { url, host })
    }

    /// A URL read back from storage, where it was stored after [`CallbackUrl::parse`].
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// The host, lower case, without a trailing dot.
    pub fn host(&self) -> &str {
        &self.host
    }
}

impl std::fmt::Display for CallbackUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

/// Bytes a URL of the accepted form may contain (RFC 3986 unreserved, sub-delims, `:@/?%`,
/// and brackets so that IPv6 literals are reported as such).
fn allowed_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%[]".contains(&b)
}

fn parse_port(port: &str) -> Result<u16, UrlError> {
    let bad = UrlError::Malformed("the port must be a number from 1 to 65535");
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad);
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(bad),
    }
}

/// A DNS name that no URL parser reads as an IP address. `host` is lower case, without a
/// trailing dot.
fn check_host(host: &str) -> Result<(), UrlError> {
    if host.is_empty() {
        return Err(UrlError::Malformed("it has no host"));
    }
    if host.len() > 253 {
        return Err(UrlError::Malformed("the host name is too long"));
    }
    let labels: Vec<&str> = host.split('.').collect();
    for label in &labels {
        let ldh = label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if label.is_empty() || label.len() > 63 || !ldh {
            return Err(UrlError::Malformed(
                "the host must be a DNS name (letters, digits, hyphens and dots)",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(UrlError::Malformed(
                "a host name label must not start or end with a hyphen",
            ));
        }
    }
    // WHATWG URL: a host whose last label is a number (decimal, or 0x hex, which covers
    // octal's leading zero too) is parsed as IPv4, in any of its spellings.
    let last = labels.last().copied().unwrap_or_default();
    let numeric = !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit());
    let hex = last
        .strip_prefix("0x")
        .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    if numeric || hex {
        return Err(UrlError::IpLiteral);
    }
    Ok(())
}

/// Special-use domain suffixes (RFC 6761, RFC 6762, RFC 8375, ICANN's `.internal`) that never
/// name a public receiver.
const SPECIAL_USE: [&str; 5] = ["localhost", "local", "internal", "home.arpa", "test"];

/// A name that could be public: not `localhost` or under a special-use domain, and with at
/// least two labels. `host` is lower case, without a trailing dot, and passed [`check_host`].
fn check_public(host: &str) -> Result<(), UrlError> {
    let special = SPECIAL_USE.iter().any(|suffix| {
        host == *suffix
            || host
                .strip_suffix(suffix)
                .is_some_and(|rest| rest.ends_with('.'))
    });
    if special || !host.contains('.') {
        return Err(UrlError::NotPublic);
    }
    Ok(())
}

/// Path and query: percent signs must start an escape.
fn check_path(tail: &str) -> Result<(), UrlError> {
    let b = tail.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'%' {
            let ok = b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                return Err(UrlError::Malformed("a % must start a %XX escape"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn open() -> CallbackPolicy {
        CallbackPolicy::default()
    }

    fn local() -> CallbackPolicy {
        CallbackPolicy::new(true, "")
    }

    fn check(raw: &str) -> Result<String, UrlError> {
        CallbackUrl::parse(raw, &open()).map(|u| u.as_str().to_string())
    }

    #[test]
    fn https_urls_are_accepted_in_normal_form() {
        assert_eq!(
            check("https://hooks.example.com/in?x=1").as_deref(),
            Ok("https://hooks.example.com/in?x=1")
        );
        assert_eq!(
            check("HTTPS://Hooks.Example.COM.").as_deref(),
            Ok("https://hooks.example.com/")
        );
        assert_eq!(
            check("https://example.com:443?a").as_deref(),
            Ok("https://example.com/?a")
        );
        assert_eq!(
            check("https://example.com/p%20q").as_deref(),
            Ok("https://example.com/p%20q")
        );
        assert_eq!(
            check("https://xn--bcher-kva.example/").as_deref(),
            Ok("https://xn--bcher-kva.example/")
        );
        let url = CallbackUrl::parse("https://a.example/", &open()).unwrap();
        assert_eq!(url.host(), "a.example");
    }

    #[test]
    fn only_https() {
        for raw in [
            "http://hooks.example.com/",
            "ftp://hooks.example.com/",
            "ftp:hooks.example.com",
            "javascript:alert(1)",
            "file:///etc/passwd",
            "data:text/plain,x",
            "wss://hooks.example.com/",
        ] {
            let err = check(raw).unwrap_err();
            assert!(
                matches!(err, UrlError::Scheme | UrlError::Insecure),
                "{raw}: {err:?}"
            );
        }
        assert_eq!(
            check("https:hooks.example.com"),
            Err(UrlError::Malformed("it must start with https://"))
        );
        assert_eq!(
            check("hooks.example.com"),
            Err(UrlError::Malformed("it has no scheme"))
        );
    }

    #[test]
    fn plain_http_only_to_localhost_and_only_when_allowed() {
        assert_eq!(check("http://localhost:9000/"), Err(UrlError::Insecure));
        assert_eq!(
            CallbackUrl::parse("http://localhost:9000/hook", &local())
                .unwrap()
                .as_str(),
            "http://localhost:9000/hook"
        );
        assert_eq!(
            CallbackUrl::parse("http://127.0.0.1:9000", &local())
                .unwrap()
                .as_str(),
            "http://127.0.0.1:9000/"
        );
        for raw in [
            "http://example.com/",
            "http://localhost./",
            "http://127.0.0.1./",
            "http://2130706433/",
            "http://127.1/",
            "http://0x7f.0.0.1/",
            "http://localhost.example.com/",
            "http://127.0.0.2/",
        ] {
            assert_eq!(
                CallbackUrl::parse(raw, &local()),
                Err(UrlError::Insecure),
                "{raw}"
            );
        }
        assert_eq!(
            CallbackUrl::parse("http://[::1]/", &local()),
            Err(UrlError::IpLiteral)
        );
        // https to an IP literal stays refused, even in local runs.
        assert_eq!(
            CallbackUrl::parse("https://127.0.0.1/", &local()),
            Err(UrlError::IpLiteral)
        );
    }

    #[test]
    fn credentials_are_refused() {
        for raw in [
            "https://user:pass@example.com/",
            "https://user@example.com/",
            "https://@example.com/",
            "https://:@example.com/",
            "https://example.com@evil.example/",
            "https://a%40b@example.com/",
        ] {
            assert_eq!(check(raw), Err(UrlError::Credentials), "{raw}");
        }
        // An @ in the path or query is not a credential.
        assert!(check("https://example.com/a@b?c=d@e").is_ok());
    }

    #[test]
    fn ip_literals_are_refused_in_every_spelling() {
        for raw in [
            "https://127.0.0.1/",
            "https://8.8.8.8:443/",
            "https://1.2.3.4./",
            "https://2130706433/",
            "https://0x7f000001/",
            "https://0X7F000001/",
            "https://0177.0.0.1/",
            "https://0177.1/",
            "https://0x7f.1/",
            "https://127.1/",
            "https://127.0.1/",
            "https://1.2.3/",
            "https://0/",
            "https://0x/",
            "https://00000000000000000000000177.0.0.1/",
            "https://example.com.127.0.0.1/",
            "https://foo.0x10/",
            "https://[::1]/",
            "https://[::ffff:127.0.0.1]:8443/",
            "https://[fe80::1%25eth0]/",
            "https://[0:0:0:0:0:0:0:1]/",
        ] {
            assert_eq!(check(raw), Err(UrlError::IpLiteral), "{raw}");
        }
        // Numbers elsewhere in a name are fine.
        assert!(check("https://1.example.com/").is_ok());
        assert!(check("https://0x10.example.com/").is_ok());
        assert!(check("https://123abc.example/").is_ok());
    }

    #[test]
    fn malformed_urls_are_refused() {
        for raw in [
            "",
            "https://",
            "https:///path",
            "https://exa mple.com/",
            " https://example.com/",
            "https://example.com/\n",
            "https://example.com/#frag",
            "https://example.com\\@evil.example/",
            "https://exa_mple.com/",
            "https://-example.com/",
            "https://example-.com/",
            "https://a..b/",
            "https://.example.com/",
            "https://example.com../",
            "https://example.com:0/",
            "https://example.com:65536/",
            "https://example.com:/",
            "https://example.com:8a/",
            "https://exämple.com/",
            "https://%65xample.com/",
            "https://example.com/%zz",
            "https://example.com/%2",
            "https://example.com/<script>",
            "https://ex[ample.com/",
            "https://example.com:1:2/",
        ] {
            assert!(
                matches!(check(raw), Err(UrlError::Malformed(_))),
                "{raw:?}: {:?}",
                check(raw)
            );
        }
        let long_label = format!("https://{}.example/", "a".repeat(64));
        assert!(matches!(check(&long_label), Err(UrlError::Malformed(_))));
    }

    #[test]
    fn length_limit() {
        let base = "https://example.com/";
        let ok = format!("{base}{}", "a".repeat(MAX_LEN - base.len()));
        assert_eq!(ok.len(), MAX_LEN);
        assert!(check(&ok).is_ok());
        assert_eq!(check(&format!("{ok}a")), Err(UrlError::TooLong));
    }

    #[test]
    fn the_allow_list_refuses_other_hosts() {
        let policy = CallbackPolicy::new(true, " hooks.example.com, *.partner.example ,localhost");
        assert!(policy.has_allow_list());
        let check = |raw: &str| CallbackUrl::parse(raw, &policy).map(|_| ());
        assert_eq!(check("https://hooks.example.com/x"), Ok(()));
        assert_eq!(check("https://HOOKS.example.com./x"), Ok(()));
        assert_eq!(check("https://a.partner.example/"), Ok(()));
        assert_eq!(check("https://a.b.partner.example/"), Ok(()));
        assert_eq!(check("http://localhost:8080/"), Ok(()));
        for raw in [
            "https://partner.example/",
            "https://evilpartner.example/",
            "https://other.example.com/",
            "https://hooks.example.com.evil.example/",
            "http://127.0.0.1:8080/",
        ] {
            assert_eq!(check(raw), Err(UrlError::HostNotAllowed), "{raw}");
        }
        assert!(!CallbackPolicy::new(false, " , ").has_allow_list());
    }

    #[test]
    fn local_and_special_use_names_are_refused() {
        for raw in [
            "https://localhost/",
            "https://LOCALHOST/",
            "https://LocalHost./",
            "https://localhost:6379/",
            "https://localhost:443/",
            "https://a.localhost/",
            "https://redis.LOCALHOST./",
            "https://intranet/",
            "https://intranet./",
            "https://printer.local/",
            "https://db.internal/",
            "https://nas.home.arpa/",
            "https://home.arpa/",
            "https://hooks.test/",
            "https://x.y.TEST./",
        ] {
            assert_eq!(check(raw), Err(UrlError::NotPublic), "{raw}");
            // An allow-list does not make them public either.
            let host = raw[8..].trim_end_matches('/').to_ascii_lowercase();
            let listed = CallbackPolicy::new(false, &host);
            assert_eq!(
                CallbackUrl::parse(raw, &listed),
                Err(UrlError::NotPublic),
                "{raw}"
            );
        }
        // Look-alikes that are ordinary public names.
        for raw in [
            "https://localhost.example.com/",
            "https://mylocalhost.com/",
            "https://local.example/",
            "https://internal.example.com/",
            "https://test.example.com/",
            "https://notatest.com/",
            "https://home.arpa.example/",
        ] {
            assert!(check(raw).is_ok(), "{raw}");
        }
        // Local runs keep plain http to localhost (and only that).
        assert!(CallbackUrl::parse("http://localhost:9000/", &local()).is_ok());
        assert_eq!(
            CallbackUrl::parse("https://localhost:9000/", &local()),
            Err(UrlError::NotPublic)
        );
    }

    #[test]
    fn ports_other_than_443_need_the_allow_list() {
        for raw in [
            "https://example.com:8443/",
            "https://example.com:80/",
            "https://example.com:6379/",
            "https://example.com:1/",
        ] {
            assert_eq!(check(raw), Err(UrlError::Port), "{raw}");
        }
        assert!(check("https://example.com:443/").is_ok());
        let policy = CallbackPolicy::new(false, "hooks.example.com:8443, *.partner.example:9443");
        let check = |raw: &str| CallbackUrl::parse(raw, &policy).map(|u| u.as_str().to_string());
        assert_eq!(
            check("https://hooks.example.com:8443/x").as_deref(),
            Ok("https://hooks.example.com:8443/x")
        );
        assert_eq!(
            check("https://a.partner.example:9443/").as_deref(),
            Ok("https://a.partner.example:9443/")
        );
        assert_eq!(
            check("https://hooks.example.com:8444/"),
            Err(UrlError::Port)
        );
        // Port 443 is always fine for a listed host.
        assert!(check("https://hooks.example.com/").is_ok());
        assert_eq!(
            check("https://a.partner.example:8443/"),
            Err(UrlError::Port)
        );
        assert_eq!(
            check("https://other.example:8443/"),
            Err(UrlError::HostNotAllowed)
        );
        // A host listed both ways takes 443 and the named port.
        let both = CallbackPolicy::new(false, "hooks.example.com hooks.example.com:8443");
        assert!(CallbackUrl::parse("https://hooks.example.com/", &both).is_ok());
        assert!(CallbackUrl::parse("https://hooks.example.com:8443/", &both).is_ok());
        assert_eq!(
            CallbackUrl::parse("https://hooks.example.com:9/", &both),
            Err(UrlError::Port)
        );
    }

    fn label() -> impl Strategy<Value = String> {
        "[a-z]([a-z0-9-]{0,10}[a-z0-9])?"
    }

    fn host() -> impl Strategy<Value = String> {
        proptest::collection::vec(label(), 2..4)
            .prop_map(|labels| labels.join("."))
            .prop_filter("not numeric", |h| check_host(h).is_ok())
            .prop_filter("public", |h| check_public(h).is_ok())
    }

    /// An IPv4 address spelled in one of the ways URL parsers accept.
    fn ipv4_spelling() -> impl Strategy<Value = String> {
        let part = |max: u64| {
            (0..=max, 0u8..3).prop_map(|(n, style)| match style {
                0 => n.to_string(),
                1 => format!("0{n:o}"),
                _ => format!("0x{n:x}"),
            })
        };
        prop_oneof![
            (part(255), part(255), part(255), part(255))
                .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
            (part(255), part(0xff_ffff)).prop_map(|(a, b)| format!("{a}.{b}")),
            (part(255), part(255), part(0xffff)).prop_map(|(a, b, c)| format!("{a}.{b}.{c}")),
            part(0xffff_ffff),
        ]
        .prop_flat_map(|ip| prop_oneof![Just(ip.clone()), Just(format!("{ip}."))])
    }

    /// Hosts built from pieces that URL parsers may read as numbers.
    fn tricky_host() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("0"),
            Just("00"),
            Just("08"),
            Just("0x"),
            Just("0X7f"),
            Just("0x7g"),
            Just("127"),
            Just("255"),
            Just("256"),
            Just("4294967295"),
            Just("4294967296"),
            Just("1e3"),
            Just("a"),
            Just("xn--a"),
            Just("localhost"),
            Just("com"),
            Just("0a"),
        ];
        (proptest::collection::vec(piece, 1..5), any::<bool>())
            .prop_map(|(pieces, dot)| format!("{}{}", pieces.join("."), if dot { "." } else { "" }))
    }

    proptest! {
        /// Whatever host a WHATWG parser reads as an IP address is refused here.
        #[test]
        fn whatwg_addresses_are_never_accepted(host in tricky_host(), https in any::<bool>()) {
            let raw = format!("{}://{host}/", if https { "https" } else { "http" });
            let whatwg = ::url::Url::parse(&raw).ok().and_then(|u| u.host().map(|h| h.to_owned()));
            let ours = CallbackUrl::parse(&raw, &local());
            match whatwg {
                Some(::url::Host::Domain(d)) => {
                    if let Ok(url) = &ours {
                        prop_assert_eq!(d.trim_end_matches('.'), url.host());
                    }
                }
                Some(::url::Host::Ipv4(ip)) => prop_assert!(
                    ours.is_err() || (!https && ip.to_string() == "127.0.0.1" && host == "127.0.0.1"),
                    "{} was accepted as {:?}", raw, ours
                ),
                // Punycode (`xn--`) labels are only checked for shape here; the upload worker
                // also parses every accepted URL with the runtime's own URL parser.
                _ => prop_assert!(ours.is_err() || host.contains("xn--"), "{} was accepted", raw),
            }
        }

        #[test]
        fn never_panics(raw in "\\PC{0,80}") {
            let _ = check(&raw);
            let _ = CallbackUrl::parse(&raw, &local());
        }

        #[test]
        fn dns_names_are_accepted_and_normal_form_is_stable(
            host in host(), port in proptest::option::of(1u16..), path in "(/[a-zA-Z0-9._~%-]{0,12}){0,3}(\\?[a-z0-9=&]{0,10})?"
        ) {
            let path = path.replace('%', "%25");
            let raw = match port {
                Some(p) => format!("https://{host}:{p}{path}"),
                None => format!("https://{host}{path}"),
            };
            let policy = match port {
                Some(p) if p != 443 => CallbackPolicy::new(false, &format!("{host}:{p}")),
                _ => open(),
            };
            let url = CallbackUrl::parse(&raw, &policy).unwrap();
            prop_assert_eq!(url.host(), host.as_str());
            let again = CallbackUrl::parse(url.as_str(), &policy).unwrap();
            prop_assert_eq!(again.as_str(), url.as_str());
        }

        #[test]
        fn ipv4_addresses_are_refused_in_any_spelling(ip in ipv4_spelling(), upper in any::<bool>()) {
            let ip = if upper { ip.to_ascii_uppercase() } else { ip };
            prop_assert_eq!(check(&format!("https://{ip}/")), Err(UrlError::IpLiteral));
            prop_assert_eq!(check(&format!("https://{ip}:8443/x")), Err(UrlError::IpLiteral));
        }

        #[test]
        fn credentials_are_refused_whatever_they_are(user in "[a-z0-9%:;=!$&'()*+,.~-]{0,10}", host in host()) {
            prop_assert_eq!(check(&format!("https://{user}@{host}/")), Err(UrlError::Credentials));
        }

        #[test]
        fn other_schemes_are_refused(scheme in "[a-z][a-z0-9+.-]{0,8}", host in host()) {
            prop_assume!(scheme != "https" && scheme != "http");
            prop_assert_eq!(check(&format!("{scheme}://{host}/")), Err(UrlError::Scheme));
        }

        #[test]
        fn too_long_is_refused(extra in 1usize..300) {
            let raw = format!("https://example.com/{}", "a".repeat(MAX_LEN - 20 + extra));
            prop_assert_eq!(check(&raw), Err(UrlError::TooLong));
        }

        #[test]
        fn allow_list_is_exact(listed in proptest::collection::vec(host(), 1..4), candidate in host()) {
            let policy = CallbackPolicy::new(false, &listed.join(","));
            let result = CallbackUrl::parse(&format!("https://{candidate}/"), &policy);
            if listed.contains(&candidate) {
                prop_assert!(result.is_ok());
            } else {
                prop_assert_eq!(result, Err(UrlError::HostNotAllowed));
            }
        }

        /// The differential check: whatever this module accepts, a WHATWG URL parser reads
        /// with the same host (never an address), the same port, and no credentials.
        #[test]
        fn a_whatwg_parser_sees_the_same_host(raw in "(https?|HTTPS)://[a-zA-Z0-9.:@%\\[\\]-]{0,24}[/?]?[a-zA-Z0-9/?%.@:=&-]{0,12}") {
            for policy in [open(), local()] {
                if let Ok(url) = CallbackUrl::parse(&raw, &policy) {
                    if url.host().contains("xn--") {
                        continue;
                    }
                    let parsed = ::url::Url::parse(&raw).unwrap();
                    let normal = ::url::Url::parse(url.as_str()).unwrap();
                    for p in [&parsed, &normal] {
                        prop_assert_eq!(p.username(), "");
                        prop_assert_eq!(p.password(), None);
                        prop_assert_eq!(p.port(), normal.port());
                        match p.host() {
                            Some(::url::Host::Domain(d)) => {
                                prop_assert_eq!(d.trim_end_matches('.'), url.host())
                            }
                            Some(::url::Host::Ipv4(ip)) => {
                                prop_assert!(policy.allow_insecure && p.scheme() == "http");
                                prop_assert_eq!(ip.to_string(), "127.0.0.1");
                            }
                            other => prop_assert!(false, "{raw}: host {other:?}"),
                        }
                    }
                }
            }
        }
    }
}
