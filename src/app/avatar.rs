//! A sender's avatar: their initials on a colour derived from their name, the same on every page.
//!
//! The hue comes from a hash of the name; the colour is `oklch(48% 0.12 <hue>)` (see `style/main.css`),
//! whose perceptual lightness is the same for every hue, so the white initials keep the same contrast
//! (about 6:1, above WCAG AA's 4.5:1) whatever the name.

use leptos::prelude::*;

/// The avatar beside the first message of a group. Decorative: the name is written next to it.
pub fn avatar(name: &str) -> impl IntoView {
    let style = format!("--hue:{}", hue(name));
    view! { <span class="avatar" aria-hidden="true" style=style>{initials(name)}</span> }
}

/// Up to two initials: the first character of the name's first two words (split at spaces, `-`, `_`
/// and `.`), skipping ASCII punctuation; the name's first character when no word has one. Upper-cased
/// by the stylesheet, not here: Unicode's case tables would add some 12 KB to the WASM.
pub fn initials(name: &str) -> String {
    let words = name
        .split(|c: char| c.is_whitespace() || matches!(c, '-' | '_' | '.'))
        .filter_map(|word| word.chars().find(|c| !c.is_ascii_punctuation()));
    let initials: String = words.take(2).collect();
    if initials.is_empty() {
        name.chars().next().map(String::from).unwrap_or_default()
    } else {
        initials
    }
}

/// A hue in degrees, 0 to 359: FNV-1a over the name's bytes (small, and stable across builds and
/// platforms, unlike std's hasher).
pub fn hue(name: &str) -> u32 {
    let hash = name.bytes().fold(0x811c_9dc5u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    hash % 360
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initials_of_common_names() {
        assert_eq!(initials("ann"), "a");
        assert_eq!(initials("Ann Lee"), "AL");
        assert_eq!(initials("ann-k3j2h1"), "ak");
        assert_eq!(initials("mary_jane.watson"), "mj");
        assert_eq!(initials("élodie"), "é");
        assert_eq!(initials("_x"), "x");
        assert_eq!(initials("(bob)"), "b");
        assert_eq!(initials("🙂"), "🙂");
        assert_eq!(initials("🙂 bob"), "🙂b");
        assert_eq!(initials("王小明"), "王");
        assert_eq!(initials("!!!"), "!");
        assert_eq!(initials(""), "");
    }

    #[test]
    fn a_name_always_gets_the_same_hue_and_names_spread_over_the_wheel() {
        assert_eq!(hue("ann"), hue("ann"));
        // FNV-1a 32 of "a" is 0xe40c292c.
        assert_eq!(hue("a"), 0xe40c_292c % 360);
        let hues: std::collections::BTreeSet<u32> =
            (0..200).map(|i| hue(&format!("user{i}")) / 30).collect();
        assert_eq!(hues.len(), 12, "200 names fill every 30° sector");
    }
}
