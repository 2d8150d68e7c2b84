//! Light and dark: the page follows the system's `prefers-color-scheme` until the reader picks one
//! with the toggle; the pick is kept in `localStorage` and applied as `<html data-theme>`.
//!
//! All of it is a small script in the document's `<head>` ([`THEME_SCRIPT`]), not WASM: it must apply
//! the remembered theme before the body is parsed (so a page in the dark theme never paints light
//! first), and it lets the toggle work before the WASM has loaded, at no cost to the WASM's weight.
//! The colours themselves are CSS custom properties (`style/main.css`); `data-theme` only chooses
//! between their light and dark values.

use leptos::prelude::*;

/// Runs in `<head>`, before anything paints: applies the remembered theme, then listens for clicks on
/// the toggle (`.theme-toggle`, which it keeps `aria-pressed` while the page is dark). Storage may be
/// unavailable (privacy modes): the pick then lasts as long as the page.
pub const THEME_SCRIPT: &str = r#"(function(){var d=document.documentElement,k="theme";try{var t=localStorage.getItem(k);if(t=="dark"||t=="light")d.dataset.theme=t}catch(e){}
function dark(){var t=d.dataset.theme;return t?t=="dark":matchMedia("(prefers-color-scheme: dark)").matches}
function show(){var b=document.querySelector(".theme-toggle");if(b)b.setAttribute("aria-pressed",dark())}
document.addEventListener("click",function(e){if(!e.target.closest||!e.target.closest(".theme-toggle"))return;var t=dark()?"light":"dark";d.dataset.theme=t;try{localStorage.setItem(k,t)}catch(e){}show()});
document.addEventListener("DOMContentLoaded",show);matchMedia("(prefers-color-scheme: dark)").addEventListener("change",show)})()"#;

/// The toggle: a button, pressed while the page is dark (the script above sets it, and does the rest).
#[component]
pub fn ThemeToggle() -> impl IntoView {
    view! {
        <button type="button" class="icon-button theme-toggle" aria-label="Dark theme" title="Dark theme" aria-pressed="false">
            // A half-filled circle, the usual sign for a light/dark switch.
            <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true">
                <circle cx="12" cy="12" r="8.5" fill="none" stroke="currentColor" stroke-width="2"/>
                <path d="M12 3.5a8.5 8.5 0 0 1 0 17z" fill="currentColor"/>
            </svg>
        </button>
    }
}
