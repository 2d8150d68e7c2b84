//! Which host names this server answers to, and which page origins may open its chat socket: the
//! defence against DNS rebinding and cross-site WebSocket hijacking.
//!
//! **DNS rebinding.** A page on `http://evil.example:3000` can make its own name resolve to 127.0.0.1 a
//! moment later; the browser then sends that page's requests (and its WebSocket, with
//! `Origin: http://evil.example:3000`) to this server, with `Host: evil.example:3000`. Comparing Origin
//! with the request's own Host, as a same-site check would, lets that through. So every HTTP request's
//! `Host` must be one of this server's own names ([`HostPolicy::allows_host`], answered `421` if not),
//! and a browser's `Origin` must be one of those names too, or listed in `--allowed-origins` — never
//! whatever Host was sent.
//!
//! **Which names.** Those in `--allowed-hosts` (`CHAT_ALLOWED_HOSTS`: `chat.example.com` for any port,
//! `chat.example.com:8080` for that port only), plus what the server is bound to:
//! - bound to one address: that address, with the port it listens on; if it is a loopback address,
//!   also `localhost` and `*.localhost` with that port (those names never leave the machine);
//! - bound to every address (`0.0.0.0`, `::`): any IP literal and `localhost` with the port it listens
//!   on. An IP literal cannot be rebound (rebinding needs a name the attacker's DNS answers for), but
//!   the server cannot know which *names* point at it: behind a name (or a reverse proxy), list it in
//!   `--allowed-hosts`, or every request by that name gets `421`.
//!
//! A port mapped on the way in (a container's `-p 8080:3000`, a proxy keeping the client's `Host`) is a
//! different port: list the name without a port to allow any.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::HOST;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::counter;

use super::config::Config;
use super::error::ChatError;
use super::metrics as m;

/// A name (or IP literal) and, if given, the one port it is allowed with.
#[derive(Clone, Debug, PartialEq, Eq)]
struct HostPattern {
    /// Lowercase, without brackets around IPv6 and without a trailing dot. `*.localhost` matches every
    /// subdomain of `localhost`.
    host: String,
    port: Option<u16>,
}

/// The host names and origins this server accepts; built once, when `run` knows what it is bound to.
#[derive(Clone, Debug)]
pub struct HostPolicy {
    allowed: Vec<HostPattern>,
    /// Bound to every address: any IP literal, with this port.
    any_ip_on: Option<u16>,
    /// `--allowed-origins`, without trailing slashes, lowercase.
    origins: Vec<String>,
}

impl HostPolicy {
    /// The names allowed for a server listening on `bound` with `config`'s `--allowed-hosts` and
    /// `--allowed-origins`.
    pub fn new(bound: SocketAddr, config: &Config) -> HostPolicy {
        let port = bound.port();
        let mut allowed = Vec::new();
        let mut any_ip_on = None;
        let ip = bound.ip();
        if ip.is_unspecified() {
            any_ip_on = Some(port);
        } else {
            allowed.push(HostPattern {
                host: ip.to_string(),
                port: Some(port),
            });
        }
        if ip.is_loopback() || ip.is_unspecified() {
            for host in ["localhost", "*.localhost"] {
                allowed.push(HostPattern {
                    host: host.into(),
                    port: Some(port),
                });
            }
        }
        allowed.extend(config.allowed_hosts.iter().filter_map(|h| parse_host(h)));
        if ip.is_unspecified() && config.allowed_hosts.is_empty() {
            tracing::info!(
                "bound to every address: answering to IP addresses and localhost only; \
                 list this server's names in --allowed-hosts"
            );
        }
        HostPolicy {
            allowed,
            any_ip_on,
            origins: config
                .allowed_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether a `Host` header (`name`, `name:port`, `[v6]:port`) names this server.
    pub fn allows_host(&self, host: &str) -> bool {
        let Some(HostPattern { host, port }) = parse_host(host) else {
            return false;
        };
        if let (Some(on), Ok(_)) = (self.any_ip_on, host.parse::<IpAddr>()) {
            if port == Some(on) {
                return true;
            }
        }
        self.allowed.iter().any(|pattern| {
            let name_matches = match pattern.host.strip_prefix("*.") {
                Some(parent) => host
                    .strip_suffix(parent)
                    .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
                None => pattern.host == host,
            };
            name_matches && (pattern.port.is_none() || pattern.port == port)
        })
    }

    /// Whether a browser page of `origin` (`scheme://host[:port]`) may use the chat socket: its host is
    /// one of this server's names, or it is listed in `--allowed-origins`.
    pub fn allows_origin(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        if self.origins.contains(&origin) {
            return true;
        }
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        authority.is_some_and(|a| !a.contains('/') && self.allows_host(a))
    }
}

/// Splits `host[:port]` (or `[v6][:port]`); lowercases the name and drops a trailing dot.
fn parse_host(text: &str) -> Option<HostPattern> {
    let text = text.trim();
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?.parse().ok()?),
        };
        (host, port)
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port.parse().ok()?)),
            None => (text, None),
        }
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() || host.contains(['/', '@', ' ', '[', ']']) {
        return None;
    }
    Some(HostPattern { host, port })
}

/// Middleware on every request: refuses (`421 Misdirected Request`) one whose `Host` is not this
/// server's, and hands the policy on to the handlers (the socket's Origin check uses it).
pub async fn check_host(
    State(policy): State<Arc<HostPolicy>>,
    mut request: Request,
    next: Next,
) -> Response {
    // HTTP/1.1 requires `Host`; an absolute request target carries the authority instead.
    let host = request
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    match host {
        Some(host) if policy.allows_host(&host) => {
            request.extensions_mut().insert(policy);
            next.run(request).await
        }
        other => {
            let error = ChatError::ForbiddenHost(other.unwrap_or_default());
            counter!(m::REJECTED, "reason" => error.label()).increment(1);
            error.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(bound: &str, hosts: &[&str], origins: &[&str]) -> HostPolicy {
        let config = Config {
            allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            allowed_origins: origins.iter().map(|o| o.to_string()).collect(),
            ..Config::default()
        };
        HostPolicy::new(bound.parse().unwrap(), &config)
    }

    #[test]
    fn bound_to_loopback() {
        let p = policy("127.0.0.1:3000", &[], &[]);
        for ok in [
            "127.0.0.1:3000",
            "localhost:3000",
            "LocalHost.:3000",
            "app.localhost:3000",
        ] {
            assert!(p.allows_host(ok), "{ok}");
        }
        for refused in [
            "evil.example:3000",
            "evil.example",
            "127.0.0.1:3001",
            "localhost",
            "10.0.0.1:3000",
            "localhost.evil.example:3000",
            "evillocalhost:3000",
            "",
            "127.0.0.1:3000/x",
        ] {
            assert!(!p.allows_host(refused), "{refused}");
        }
    }

    #[test]
    fn bound_to_every_address() {
        let p = policy("0.0.0.0:3000", &["chat.example.com"], &[]);
        for ok in [
            "10.1.2.3:3000",
            "[::1]:3000",
            "localhost:3000",
            "chat.example.com",
            "chat.example.com:443",
        ] {
            assert!(p.allows_host(ok), "{ok}");
        }
        for refused in ["10.1.2.3:8080", "evil.example:3000", "sub.chat.example.com"] {
            assert!(!p.allows_host(refused), "{refused}");
        }
    }

    #[test]
    fn origins_are_checked_against_the_allowed_hosts_never_the_request() {
        let p = policy("127.0.0.1:3000", &[], &["https://chat.example.com/"]);
        assert!(p.allows_origin("http://127.0.0.1:3000"));
        assert!(p.allows_origin("http://localhost:3000"));
        assert!(p.allows_origin("https://Chat.Example.com"));
        assert!(!p.allows_origin("http://evil.example:3000"));
        assert!(!p.allows_origin("http://127.0.0.1:3001"));
        assert!(!p.allows_origin("http://localhost"));
        assert!(!p.allows_origin("null"));
        assert!(!p.allows_origin("file://"));
    }
}
