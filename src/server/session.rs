//! Session tokens: how a person keeps their name across reconnects and tabs.
//!
//! Every welcome carries a token naming a person (a random id), the name they have and when the token
//! expires; the browser keeps it in the `chat_session` cookie and sends it with every later `/ws`
//! handshake, from every tab. A valid token reclaims the same name, and all connections with the same
//! person id count as one presence. Tokens are `hex(person id).hex(name).hex(expiry).hex(HMAC-SHA256)`,
//! signed with a key created on first start, so they cannot be forged and survive a restart. Where the key
//! lives is the store's call ([`Sessions::open`]): a store shared by several nodes (PostgreSQL) keeps it,
//! so every node signs and checks with the same key; with a node's own store (SQLite) it stays in
//! `<data-dir>/session.key`.
//!
//! **Who sets the cookie.** The server, never the page's script: the cookie is `HttpOnly` (no script,
//! injected or not, reads it from `document.cookie`), `SameSite=Lax`, `Path=/`, and `Secure` when the
//! page came over HTTPS (a TLS-terminating proxy says so with `X-Forwarded-Proto: https`). The page
//! hands the welcome's token to `POST /api/session` ([`crate::api::keep_session`]), which checks the
//! signature and answers with the `Set-Cookie`. Why not the WebSocket's `101`: the name (and so the
//! token) is settled by the manager only after the upgrade, on the connection's own task; a cookie
//! set by the `101` would have to be issued before it, naming no name. The welcome still carries the
//! token, for clients that are not browsers (they send it back as a `Cookie` header themselves).
//!
//! **Expiry and renewal.** A token is valid for `--session-days` (30) from when it was issued; an
//! expired one is ignored (a new person). Every welcome carries a freshly issued token, so a person
//! who keeps coming back keeps their identity: `/api/session` rewrites the cookie when the one the
//! browser holds is another person's, or past half its life ([`Session::needs_renewal`]).
//!
//! **Rotation.** `groupchat --rotate-session-key` replaces the key at start: every token signed with
//! the old one is refused from then on, so every person gets a new identity (and a fresh name). Nodes
//! sharing a store read the key when they start: the others keep signing with the old one until they
//! restart too.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::store::{PersonId, Store};

/// The cookie the browser keeps its token in.
pub const COOKIE: &str = "chat_session";

/// How long a token lives unless configured otherwise.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(30 * 86_400);

/// Who a valid token says the holder is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub person: PersonId,
    pub name: String,
    /// When the token stops being valid, in seconds since the Unix epoch.
    pub expires: u64,
}

impl Session {
    /// The token has less than half of `lifetime` left at `now` (seconds since the epoch): time to
    /// give the browser a fresh one.
    pub fn needs_renewal(&self, lifetime: Duration, now: u64) -> bool {
        self.expires.saturating_sub(now) < lifetime.as_secs() / 2
    }
}

/// Signs and checks tokens.
#[derive(Clone)]
pub struct Sessions {
    key: [u8; 32],
    lifetime: Duration,
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Sessions {
    /// The sessions of a server on `store`: signed with the key the store keeps when it is shared by
    /// several nodes (see [`Store::shared_session_key`]), else with the one in `dir/session.key`;
    /// `rotate` replaces the key first. Tokens it issues live for `lifetime`.
    pub async fn open(
        store: &Store,
        dir: &Path,
        lifetime: Duration,
        rotate: bool,
    ) -> anyhow::Result<Sessions> {
        if let Some(key) = store.shared_session_key(random_key()?, rotate).await? {
            return Ok(Sessions { key, lifetime });
        }
        if rotate {
            Sessions::rotate(dir, lifetime)
        } else {
            Sessions::load_or_create(dir, lifetime)
        }
    }

    /// Reads the signing key from `dir/session.key`, creating it (readable by the owner only) if absent.
    /// Tokens it issues live for `lifetime`.
    pub fn load_or_create(dir: &Path, lifetime: Duration) -> anyhow::Result<Sessions> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("session.key");
        if let Ok(bytes) = std::fs::read(&path) {
            if let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice()) {
                return Ok(Sessions { key, lifetime });
            }
            anyhow::bail!("{} is not a 32-byte key", path.display());
        }
        let key = random_key()?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(&path)?.write_all(&key)?;
        Ok(Sessions { key, lifetime })
    }

    /// Replaces the key in `dir/session.key` with a new random one: every token issued so far is
    /// refused from now on. Written beside it and renamed over it, so a crash leaves one key or the
    /// other, never half of one.
    pub fn rotate(dir: &Path, lifetime: Duration) -> anyhow::Result<Sessions> {
        std::fs::create_dir_all(dir)?;
        let key = random_key()?;
        let fresh = dir.join("session.key.new");
        let _ = std::fs::remove_file(&fresh);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&fresh)?;
        file.write_all(&key)?;
        file.sync_all()?;
        std::fs::rename(&fresh, dir.join("session.key"))?;
        Ok(Sessions { key, lifetime })
    }

    /// A key for tests: tokens it signs are valid only for it.
    #[cfg(test)]
    pub fn ephemeral() -> Sessions {
        Sessions {
            key: random_key().expect("randomness"),
            lifetime: DEFAULT_LIFETIME,
        }
    }

    /// How long the tokens it issues live.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A fresh, random person id.
    #[allow(
        clippy::expect_used,
        reason = "the OS random source fails only when unusable, and then no identity is safe to issue"
    )]
    pub fn new_person() -> PersonId {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).expect("randomness");
        // Kept below 2^63: ids are stored as signed 64-bit integers (SQLite's INTEGER, PostgreSQL's BIGINT).
        // Never 0: that is the operator's (`store::OPERATOR`).
        (u64::from_le_bytes(bytes) >> 1).max(1)
    }

    /// The token for `person` under `name`, valid for the configured lifetime from now.
    pub fn issue(&self, person: PersonId, name: &str) -> String {
        self.issue_at(person, name, now_secs())
    }

    /// The token for `person` under `name` as if issued at `now` (seconds since the epoch).
    pub fn issue_at(&self, person: PersonId, name: &str, now: u64) -> String {
        let expires = now.saturating_add(self.lifetime.as_secs());
        let body = format!("{person:016x}.{}.{expires:x}", hex(name.as_bytes()));
        let signature = hex(&self.sign(&body));
        format!("{body}.{signature}")
    }

    /// The session a token names, if this server signed it (with its current key) and it has not
    /// expired.
    pub fn verify(&self, token: &str) -> Option<Session> {
        self.verify_at(token, now_secs())
    }

    /// [`Sessions::verify`] at `now` (seconds since the epoch).
    pub fn verify_at(&self, token: &str, now: u64) -> Option<Session> {
        let (body, signature) = token.rsplit_once('.')?;
        let signature = unhex(signature)?;
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        // Constant-time comparison: no timing hints for forging a signature byte by byte.
        mac.verify_slice(&signature).ok()?;
        let mut fields = body.split('.');
        let (person, name, expires) = (fields.next()?, fields.next()?, fields.next()?);
        if fields.next().is_some() {
            return None;
        }
        let session = Session {
            person: u64::from_str_radix(person, 16).ok()?,
            name: String::from_utf8(unhex(name)?).ok()?,
            expires: u64::from_str_radix(expires, 16).ok()?,
        };
        (session.expires > now).then_some(session)
    }

    /// The token in a `Cookie` header, if any.
    pub fn from_cookie_header(header: &str) -> Option<&str> {
        header
            .split(';')
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == COOKIE)
            .map(|(_, value)| value)
    }

    /// The `Set-Cookie` value that keeps `token` (valid until `expires`) in the browser: readable by no
    /// script, sent on same-site requests and top-level navigations, over HTTPS only when `secure`.
    pub fn cookie(token: &str, expires: u64, now: u64, secure: bool) -> String {
        let max_age = expires.saturating_sub(now);
        let secure = if secure { "; Secure" } else { "" };
        format!("{COOKIE}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}")
    }

    fn sign(&self, body: &str) -> Vec<u8> {
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    #[allow(clippy::expect_used, reason = "HMAC accepts a key of any length")]
    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length")
    }
}

fn random_key() -> anyhow::Result<[u8; 32]> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(key)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_resist_tampering() {
        let sessions = Sessions::ephemeral();
        let token = sessions.issue_at(42, "Zoë 🦀", 1_000);
        assert_eq!(
            sessions.verify_at(&token, 1_000),
            Some(Session {
                person: 42,
                name: "Zoë 🦀".into(),
                expires: 1_000 + DEFAULT_LIFETIME.as_secs(),
            })
        );
        let forged = token.replacen("000000000000002a", "000000000000002b", 1);
        assert_eq!(sessions.verify_at(&forged, 1_000), None);
        assert_eq!(
            Sessions::ephemeral().verify_at(&token, 1_000),
            None,
            "another key"
        );
        assert_eq!(sessions.verify("garbage"), None);
        assert_eq!(sessions.verify("a.b.c"), None);
    }

    #[test]
    fn tokens_expire_and_ask_for_renewal_past_half_their_life() {
        let sessions = Sessions::ephemeral();
        let life = DEFAULT_LIFETIME.as_secs();
        let token = sessions.issue_at(1, "ann", 1_000);
        assert!(sessions.verify_at(&token, 1_000 + life - 1).is_some());
        assert_eq!(sessions.verify_at(&token, 1_000 + life), None);
        let session = sessions.verify_at(&token, 1_000).unwrap();
        assert!(!session.needs_renewal(DEFAULT_LIFETIME, 1_000 + life / 2 - 1));
        assert!(session.needs_renewal(DEFAULT_LIFETIME, 1_000 + life / 2 + 1));
        // The earlier format, without an expiry, is not accepted.
        let body = format!("{:016x}.{}", 1, hex(b"ann"));
        let old = format!("{body}.{}", hex(&sessions.sign(&body)));
        assert_eq!(sessions.verify(&old), None);
    }

    #[test]
    fn the_key_survives_a_restart_and_rotation_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let token = Sessions::load_or_create(dir.path(), DEFAULT_LIFETIME)
            .unwrap()
            .issue(1, "ann");
        let again = Sessions::load_or_create(dir.path(), DEFAULT_LIFETIME).unwrap();
        assert_eq!(again.verify(&token).map(|s| s.name), Some("ann".into()));
        let rotated = Sessions::rotate(dir.path(), DEFAULT_LIFETIME).unwrap();
        assert_eq!(rotated.verify(&token), None);
        let reloaded = Sessions::load_or_create(dir.path(), DEFAULT_LIFETIME).unwrap();
        assert_eq!(reloaded.verify(&token), None);
        assert!(reloaded.verify(&rotated.issue(2, "bob")).is_some());
    }

    #[test]
    fn cookie_header() {
        assert_eq!(
            Sessions::from_cookie_header("a=1; chat_session=abc.def; b=2"),
            Some("abc.def")
        );
        assert_eq!(Sessions::from_cookie_header("a=1"), None);
        assert_eq!(
            Sessions::cookie("t", 1_100, 1_000, false),
            "chat_session=t; Path=/; Max-Age=100; HttpOnly; SameSite=Lax"
        );
        assert!(Sessions::cookie("t", 1_100, 1_000, true).ends_with("; Secure"));
    }
}
