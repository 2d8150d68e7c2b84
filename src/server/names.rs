//! Names: how a connection gets one when it has none, and when two names count as the same.

/// The key under which a name is reserved: names differing only in case are the same person to a reader,
/// so "Alice" and "alice" may not be online at once.
pub fn name_key(name: &str) -> String {
    name.to_lowercase()
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
            ADJECTIVES[fastrand::usize(..ADJECTIVES.len())],
            ANIMALS[fastrand::usize(..ANIMALS.len())]
        )
    };
    for _ in 0..8 {
        let name = pick();
        if is_free(&name) {
            return name;
        }
    }
    let base = pick();
    (2u64..)
        .map(|n| format!("{base} {n}"))
        .find(|name| is_free(name))
        .expect("an unbounded sequence of distinct names always has a free one")
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
}
