//! Light and dark: the page follows the system's `prefers-color-scheme` until the reader picks one
//! with the toggle; the pick is kept in `localStorage` and applied as `<html data-theme>` by a small
//! script in the document's `<head>` ([`THEME_SCRIPT`]), before the body is parsed, so a page in the
//! dark theme never paints light first. The colours themselves are CSS custom properties
//! (`style/main.css`): `data-theme` only chooses between the two sets.

use leptos::prelude::*;

/// Runs in `<head>` before anything paints: applies the remembered theme, if any. Kept to a few bytes,
/// and free of `<`, `>` and `&`; storage may be unavailable (privacy modes), which leaves the system's.
pub const THEME_SCRIPT: &str = r#"try{var t=localStorage.getItem("theme");if(t=="dark"||t=="light")document.documentElement.dataset.theme=t}catch(e){}"#;

/// The `localStorage` key, read by [`THEME_SCRIPT`] too.
#[cfg(feature = "hydrate")]
const STORAGE_KEY: &str = "theme";

/// A toggle button: pressed when the page is dark. Its state is known only in the browser, so the
/// server renders it unpressed and an effect sets it after hydration.
#[component]
pub fn ThemeToggle() -> impl IntoView {
    let dark = RwSignal::new(false);
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| dark.set(browser::is_dark()));
    let toggle = move |_| {
        #[cfg(feature = "hydrate")]
        {
            // What the reader sees now, not the signal: the system's scheme may have changed since.
            let next = !browser::is_dark();
            browser::remember(next);
            dark.set(next);
        }
    };
    view! {
        <button
            type="button"
            class="icon-button theme-toggle"
            aria-label="Dark theme"
            title="Dark theme"
            aria-pressed=move || if dark.get() { "true" } else { "false" }
            on:click=toggle
        >
            // A half-filled circle, the usual sign for a light/dark switch.
            <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true">
                <circle cx="12" cy="12" r="8.5" fill="none" stroke="currentColor" stroke-width="2"/>
                <path d="M12 3.5a8.5 8.5 0 0 1 0 17z" fill="currentColor"/>
            </svg>
        </button>
    }
}

#[cfg(feature = "hydrate")]
mod browser {
    use super::STORAGE_KEY;
    use leptos::prelude::{document, window};

    /// Whether the page is dark now: the reader's pick, or else the system's scheme.
    pub fn is_dark() -> bool {
        let picked = document()
            .document_element()
            .and_then(|html| html.get_attribute("data-theme"));
        match picked.as_deref() {
            Some("dark") => true,
            Some("light") => false,
            _ => window()
                .match_media("(prefers-color-scheme: dark)")
                .ok()
                .flatten()
                .is_some_and(|query| query.matches()),
        }
    }

    /// Applies the reader's pick and keeps it for the next visit (if storage is available).
    pub fn remember(dark: bool) {
        let theme = if dark { "dark" } else { "light" };
        if let Some(html) = document().document_element() {
            let _ = html.set_attribute("data-theme", theme);
        }
        if let Ok(Some(storage)) = window().local_storage() {
            let _ = storage.set_item(STORAGE_KEY, theme);
        }
    }
}
