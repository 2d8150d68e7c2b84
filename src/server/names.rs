//! Names: which names the server accepts, how a connection gets one when it has none, and when two
//! names count as the same.
//!
//! Two names are the same when a reader could mistake one for the other: [`name_key`] is the one place
//! names are compared, and it folds width and compatibility forms (NFKC: `ＡＬＩＣＥ` → `ALICE`), case, and
//! look-alike letters from other scripts (Unicode TR39's confusable skeleton: Cyrillic `а` → `a`), and
//! drops invisible characters. [`validate`] adds to the page's cheap checks
//! ([`crate::protocol::validate_name`]) the one rule only the server can enforce: the `Client #` prefix
//! belongs to the `/ws/{client_id}` route.

use unicode_normalization::UnicodeNormalization;

use crate::protocol::{is_default_ignorable, validate_name};

/// What names given by the `/ws/{client_id}` route start with; no one may choose such a name.
pub const LEGACY_PREFIX: &str = "Client #";

/// The key under which a name is reserved. Names a reader could take for one another have the same key,
/// so `alice`, `Alice`, `ＡＬＩＣＥ` and `аlice` (Cyrillic `а`) may not be online at once.
///
/// NFKC first (compatibility and width forms become plain letters), then lowercase, then the TR39
/// skeleton (which decomposes, drops default-ignorables and maps each confusable to its prototype). The
/// key is for comparing only; it is never shown.
pub fn name_key(name: &str) -> String {
    let folded: String = name
        .nfkc()
        .filter(|&c| !is_default_ignorable(c))
        .flat_map(char::to_lowercase)
        .collect();
    unicode_security::skeleton(&folded).collect()
}

/// Checks a name someone asked for: the shared checks, and not the `/ws/{client_id}` route's prefix
/// (nor anything that looks like it) unless `legacy` (that route is the one asking).
pub fn validate(raw: &str, max_chars: usize, legacy: bool) -> Result<String, String> {
    let name = validate_name(raw, max_chars)?;
    if !legacy && name_key(&name).starts_with(&name_key(LEGACY_PREFIX)) {
        return Err(format!(
            "names starting with {LEGACY_PREFIX:?} are given by the /ws/{{client_id}} route only"
        ));
    }
    Ok(name)
}

const ADJECTIVES: &[&str] = &[
    "Amber", "Brave", "Calm", "Clever", "Cosy", "Curious", "Daring", "Eager", "Gentle", "Glad",
    "Golden", "Happy", "Jolly", "Keen", "Kind", "Lively", "Lucky", "Mellow", "Merry", "Nimble",
    "Noble", "Plucky", "Quick", "Quiet", "Rapid", "Silver", "Sunny", "Swift", "Tidy", "Witty",
    "Wise", "Zesty",
];

const ANIMALS: &[&str] = &[
    "Badger", "Beaver", "Bison", "Crane", "Dolphin", "Falcon", "Ferret", "Finch", "Fox", "Gecko",
    "Heron", "Ibex", "Koala", "Lemur", "Lynx", "Marten", "Moose", "Newt", "Otter", "Owl", "Panda",
    "Puffin", "Quokka", "Raven", "Robin", "Seal", "Stoat", "Swan", "Tapir", "Walrus", "Wombat",
    "Yak",
];

/// Picks a readable name like "Quiet Otter" for which `is_free` holds.
///
/// Random picks first, so names don't reveal join order; after a few clashes (a crowded server) it falls
/// back to numbering, "Quiet Otter 2", "Quiet Otter 3"…, which always terminates.
pub fn assign(mut is_free: impl FnMut(&str) -> bool) -> String {
    let pick = || {
        format!(
            "{} {}",
            fastrand::choice(ADJECTIVES).unwrap_or(&"Quiet"),
            fastrand::choice(ANIMALS).unwrap_or(&"Otter")
        )
    };
    for _ in 0..8 {
        let name = pick();
        if is_free(&name) {
            return name;
        }
    }
    let base = pick();
    let mut n = 2u64;
    loop {
        let name = format!("{base} {n}");
        if is_free(&name) {
            return name;
        }
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MAX_NAME_CHARS;
    use std::collections::HashSet;

    #[test]
    fn assigned_names_are_unique_even_when_crowded() {
        let mut taken = HashSet::new();
        for _ in 0..5_000 {
            let name = assign(|n| !taken.contains(&name_key(n)));
            assert!(name.chars().count() <= MAX_NAME_CHARS, "{name}");
            assert!(taken.insert(name_key(&name)), "{name} given twice");
        }
    }

    #[test]
    fn names_differing_in_case_clash() {
        assert_eq!(name_key("Alice"), name_key("aLiCe"));
    }

    #[test]
    fn look_alike_names_clash() {
        let alice = name_key("alice");
        for look_alike in [
            "alice\u{200B}",
            "\u{0430}lice",
            "\u{FF21}\u{FF2C}\u{FF29}\u{FF23}\u{FF25}",
            "ALICE",
            "al\u{AD}ice",
        ] {
            assert_eq!(name_key(look_alike), alice, "{look_alike:?}");
        }
        assert_ne!(name_key("alice"), name_key("alicia"));
        assert_ne!(
            name_key("Zoë"),
            name_key("Zoe"),
            "accents are not look-alikes"
        );
    }

    #[test]
    fn the_legacy_prefix_is_reserved() {
        assert!(validate("Client #5", MAX_NAME_CHARS, false).is_err());
        assert!(validate("client #5", MAX_NAME_CHARS, false).is_err());
        assert!(validate("\u{0421}lient #5", MAX_NAME_CHARS, false).is_err());
        assert_eq!(
            validate("Client #5", MAX_NAME_CHARS, true),
            Ok("Client #5".into())
        );
        assert!(validate("Clients", MAX_NAME_CHARS, false).is_ok());
    }
}
