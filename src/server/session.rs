//! Session tokens: how a person keeps their name across reconnects and tabs.
//!
//! Every welcome carries a token naming a person (a random id) and the name they have; the page keeps it
//! in the `chat_session` cookie, which the browser then sends with every later `/ws` handshake, from
//! every tab. A valid token reclaims the same name, and all connections with the same person id count as
//! one presence. Tokens are `hex(person id).hex(name).hex(HMAC-SHA256)`, signed with a key kept in
//! `<data-dir>/session.key` (created on first start), so they cannot be forged and survive a restart.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::store::PersonId;

/// The cookie the page keeps its token in.
pub const COOKIE: &str = "chat_session";

/// Who a valid token says the holder is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub person: PersonId,
    pub name: String,
}

/// Signs and checks tokens.
#[derive(Clone)]
pub struct Sessions {
    key: [u8; 32],
}

impl Sessions {
    /// Reads the signing key from `dir/session.key`, creating it (readable by the owner only) if absent.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Sessions> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("session.key");
        if let Ok(bytes) = std::fs::read(&path) {
            if let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice()) {
                return Ok(Sessions { key });
            }
            anyhow::bail!("{} is not a 32-byte key", path.display());
        }
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(&path)?.write_all(&key)?;
        Ok(Sessions { key })
    }

    /// A key for tests: tokens it signs are valid only for it.
    #[cfg(test)]
    pub fn ephemeral() -> Sessions {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("randomness");
        Sessions { key }
    }

    /// A fresh, random person id.
    pub fn new_person() -> PersonId {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).expect("randomness");
        // Kept below 2^63: ids are stored as SQLite's signed 64-bit integers.
        u64::from_le_bytes(bytes) >> 1
    }

    /// The token for `person` under `name`.
    pub fn issue(&self, person: PersonId, name: &str) -> String {
        let body = format!("{person:016x}.{}", hex(name.as_bytes()));
        let signature = hex(&self.sign(&body));
        format!("{body}.{signature}")
    }

    /// The session a token names, if this server signed it.
    pub fn verify(&self, token: &str) -> Option<Session> {
        let (body, signature) = token.rsplit_once('.')?;
        let signature = unhex(signature)?;
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        // Constant-time comparison: no timing hints for forging a signature byte by byte.
        mac.verify_slice(&signature).ok()?;
        let (person, name) = body.split_once('.')?;
        Some(Session {
            person: u64::from_str_radix(person, 16).ok()?,
            name: String::from_utf8(unhex(name)?).ok()?,
        })
    }

    /// The token in a `Cookie` header, if any.
    pub fn from_cookie_header(header: &str) -> Option<&str> {
        header
            .split(';')
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == COOKIE)
            .map(|(_, value)| value)
    }

    fn sign(&self, body: &str) -> Vec<u8> {
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length")
    }
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
        let token = sessions.issue(42, "Zoë 🦀");
        assert_eq!(
            sessions.verify(&token),
            Some(Session {
                person: 42,
                name: "Zoë 🦀".into()
            })
        );
        let forged = token.replacen("000000000000002a", "000000000000002b", 1);
        assert_eq!(sessions.verify(&forged), None);
        assert_eq!(Sessions::ephemeral().verify(&token), None, "another key");
        assert_eq!(sessions.verify("garbage"), None);
        assert_eq!(sessions.verify("a.b.c"), None);
    }

    #[test]
    fn the_key_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let token = Sessions::load_or_create(dir.path())
            .unwrap()
            .issue(1, "ann");
        let again = Sessions::load_or_create(dir.path()).unwrap();
        assert_eq!(again.verify(&token).map(|s| s.name), Some("ann".into()));
    }

    #[test]
    fn cookie_header() {
        assert_eq!(
            Sessions::from_cookie_header("a=1; chat_session=abc.def; b=2"),
            Some("abc.def")
        );
        assert_eq!(Sessions::from_cookie_header("a=1"), None);
    }
}
