//! Where the page is: its path, in one signal, and the two pages there are, `/` (the default room)
//! and `/r/{room}`. In place of leptos_router, whose route matching, links and history handling were
//! 36 KB of the WASM (brotli) for these two routes.
//!
//! On the server the path is the request's; in the browser the address bar's, changed by [`Nav::go`]
//! (the room list's links, the room form, a search hit) and by the history's back and forward. The
//! server's routes are the same two paths (`server/mod.rs`); any other path is the fallback's, a
//! 404 with this page's "not found".

use leptos::prelude::*;

use crate::protocol::DEFAULT_ROOM;

/// The page's path, as in the address bar (not decoded).
#[derive(Clone, Copy)]
pub struct Nav(pub RwSignal<String>);

impl Nav {
    /// The path being rendered (the request's on the server, the address bar's in the browser), in
    /// the context for the page's parts.
    pub fn provide() -> Self {
        #[cfg(feature = "ssr")]
        let path = use_context::<axum::http::request::Parts>()
            .map(|request| request.uri.path().to_owned())
            .unwrap_or_default();
        #[cfg(all(feature = "hydrate", not(feature = "ssr")))]
        let path = window().location().pathname().unwrap_or_default();
        #[cfg(not(any(feature = "ssr", feature = "hydrate")))]
        let path = String::new();
        let nav = Nav(RwSignal::new(path));
        // Back and forward: the page follows the address bar.
        #[cfg(feature = "hydrate")]
        {
            let handle = window_event_listener(leptos::ev::popstate, move |_| {
                nav.0
                    .set(window().location().pathname().unwrap_or_default());
            });
            on_cleanup(move || handle.remove());
        }
        provide_context(nav);
        nav
    }

    /// To `path` (one of the page's, e.g. `/r/dev`): a new entry in the history, the page at the top.
    pub fn go(self, path: String) {
        #[cfg(feature = "hydrate")]
        {
            let location = window().location();
            let here =
                location.pathname().unwrap_or_default() + &location.search().unwrap_or_default();
            if here != path {
                if let Ok(history) = window().history() {
                    let _ =
                        history.push_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&path));
                }
            }
            window().scroll_to_with_x_and_y(0.0, 0.0);
            if self.0.with_untracked(|p| *p != path) {
                self.0.set(path);
            }
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = (self, path);
    }

    /// A click on one of the page's own links (an `<a href="/r/…">` inside the element listening),
    /// followed without reloading the page: what an ordinary click on it would do, as the browser
    /// would do it but for the reload. A click with a modifier, another button, or on a link to
    /// anywhere else is the browser's.
    pub fn follow_link(self, ev: leptos::ev::MouseEvent) {
        #[cfg(feature = "hydrate")]
        {
            use wasm_bindgen::JsCast;
            if ev.default_prevented()
                || ev.button() != 0
                || ev.meta_key()
                || ev.alt_key()
                || ev.ctrl_key()
                || ev.shift_key()
            {
                return;
            }
            let Some(link) = ev
                .target()
                .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
                .and_then(|t| t.closest("a[href]").ok().flatten())
            else {
                return;
            };
            let Some(path) = link.get_attribute("href") else {
                return;
            };
            if link.has_attribute("target") || room_of(&path).is_none() {
                return;
            }
            ev.prevent_default();
            self.go(path);
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = (self, ev);
    }
}

/// The room a page's path shows: `/` the default room, `/r/{room}` (or `/r/{room}/`) that room,
/// percent-decoded; any other path none (not found).
pub fn room_of(path: &str) -> Option<String> {
    if path == "/" {
        return Some(DEFAULT_ROOM.to_owned());
    }
    let room = path.strip_prefix("/r/")?;
    let room = room.strip_suffix('/').unwrap_or(room);
    (!room.is_empty() && !room.contains('/')).then(|| percent_decode(room))
}

/// `%XX` escapes decoded, anything else (a `%` not before two hex digits too) as it is; bytes that
/// are not UTF-8 become U+FFFD.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_pages_and_nothing_else() {
        assert_eq!(room_of("/").as_deref(), Some(DEFAULT_ROOM));
        assert_eq!(room_of("/r/dev").as_deref(), Some("dev"));
        assert_eq!(room_of("/r/dev/").as_deref(), Some("dev"));
        assert_eq!(room_of("/r/%61b").as_deref(), Some("ab"));
        // Decoded, then left to `validate_room` to refuse.
        assert_eq!(room_of("/r/a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(room_of("/r/caf%C3%A9").as_deref(), Some("café"));
        assert_eq!(room_of("/r/100%").as_deref(), Some("100%"));
        assert_eq!(room_of("/r/%zz%4").as_deref(), Some("%zz%4"));
        assert_eq!(room_of("/r/%FF").as_deref(), Some("\u{fffd}"));
        for missing in [
            "",
            "/x",
            "/r",
            "/r/",
            "/r//",
            "/r/a/b",
            "//r/a",
            "/index.html",
            "/R/a",
        ] {
            assert_eq!(room_of(missing), None, "{missing}");
        }
    }
}
