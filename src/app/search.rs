//! Search: a panel under the top bar that finds messages in the room on screen (or in every room)
//! through `/api/search`, shows each hit with its words marked, and takes the reader to a hit in its
//! room, older history loaded as needed (see `messages.rs`, `reveal`).

use leptos::prelude::*;

use super::nav::Nav;
use super::time::Zone;
use crate::api::{search, SearchHit};
use crate::chat_state::ChatState;
use crate::html::escape;

/// Hits asked for per page.
const PAGE: usize = 20;

/// The search button (for the top bar) and its panel, open while `open` is.
#[component]
pub fn Search(chat: ChatState, open: RwSignal<bool>) -> impl IntoView {
    let query = RwSignal::new(String::new());
    let everywhere = RwSignal::new(false);
    let hits = RwSignal::new(Vec::<SearchHit>::new());
    let next = RwSignal::new(None::<String>);
    // What the panel says besides its hits: "Searching…", "No messages match.", or why it failed.
    let said = RwSignal::new(String::new());
    let input = NodeRef::<leptos::html::Input>::new();
    let run = move |before: Option<String>| {
        let q = query.get_untracked();
        if q.trim().is_empty() {
            return;
        }
        let room = (!everywhere.get_untracked()).then(|| chat.current.get_untracked());
        said.set("Searching…".into());
        leptos::task::spawn_local(async move {
            let more = before.is_some();
            match search(q, room, before, Some(PAGE)).await {
                Ok(page) => {
                    let found = page.hits;
                    said.set(if found.is_empty() && !more {
                        "No messages match.".into()
                    } else {
                        String::new()
                    });
                    if more {
                        hits.update(|h| h.extend(found));
                    } else {
                        hits.set(found);
                    }
                    next.set(page.next);
                }
                Err(error) => said.set(format!("Search failed: {error}")),
            }
        });
    };
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        run(None);
    };
    let nav = expect_context::<Nav>();
    // A hit chosen: its room on screen, and the message brought into view there.
    let go = move |ev: leptos::ev::MouseEvent| {
        #[cfg(feature = "hydrate")]
        {
            use wasm_bindgen::JsCast;
            let hit = ev
                .target()
                .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
                .and_then(|t| t.closest("[data-seq]").ok().flatten());
            let Some(hit) = hit else {
                return;
            };
            let (Some(room), Some(seq)) = (
                hit.get_attribute("data-room"),
                hit.get_attribute("data-seq")
                    .and_then(|s| s.parse::<u64>().ok()),
            ) else {
                return;
            };
            chat.jump.set(Some((room.clone(), seq)));
            if chat.current.get_untracked() != room {
                nav.go(format!("/r/{room}"));
            }
            open.set(false);
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = (ev, nav);
    };
    // Opened: the focus goes to the query.
    Effect::new(move |_| {
        if open.get() {
            request_animation_frame(move || {
                if let Some(input) = input.get_untracked() {
                    let _ = input.focus();
                }
            });
        }
    });
    let on_key = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Escape" {
            open.set(false);
        }
    };
    view! {
        <section class="search-panel" aria-label="Search" hidden=move || !open.get() on:keydown=on_key>
            <form class="search-form" role="search" on:submit=submit>
                <input type="search" name="q" aria-label="Words to find" placeholder="Find words in the history" autocomplete="off" node_ref=input bind:value=query/>
                <label class="everywhere"><input type="checkbox" bind:checked=everywhere/>" All rooms"</label>
                <button type="submit">"Find"</button>
                <button type="button" class="icon-button" aria-label="Close search" on:click=move |_| open.set(false)>"×"</button>
            </form>
            <p class="search-said" role="status">{move || said.get()}</p>
            <ol class="hits" on:click=go>
                {move || hits.get().into_iter().map(|hit| {
                    let place = format!("#{} · {} · {} {}", hit.room, hit.from, Zone::Local.day_label(hit.ts), Zone::Local.clock(hit.ts));
                    let marked = marked_html(&hit.text, &hit.matches);
                    view! {
                        <li>
                            <button type="button" class="hit" data-room=hit.room data-seq=hit.seq>
                                <span class="hit-place">{place}</span>
                                <span class="hit-text" inner_html=marked></span>
                            </button>
                        </li>
                    }
                }).collect_view()}
            </ol>
            <button type="button" class="secondary more" hidden=move || next.with(Option::is_none) on:click=move |_| run(next.get_untracked())>"More results"</button>
        </section>
    }
}

/// `text` as HTML, escaped, with the byte ranges `matches` in `<mark>` (ranges out of order, out of
/// bounds or not on character boundaries are left unmarked).
fn marked_html(text: &str, matches: &[(usize, usize)]) -> String {
    let mut html = String::with_capacity(text.len() + matches.len() * 13);
    let mut at = 0;
    for &(start, end) in matches {
        if start < at || end <= start || text.get(start..end).is_none() {
            continue;
        }
        escape(&mut html, &text[at..start]);
        html.push_str("<mark>");
        escape(&mut html, &text[start..end]);
        html.push_str("</mark>");
        at = end;
    }
    escape(&mut html, &text[at..]);
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_are_marked_and_everything_else_escaped() {
        assert_eq!(
            marked_html("say <b>hi</b> & hi", &[(7, 9), (16, 18)]),
            "say &lt;b&gt;<mark>hi</mark>&lt;/b&gt; &amp; <mark>hi</mark>"
        );
        // Bad ranges are ignored, not trusted.
        assert_eq!(marked_html("héllo", &[(2, 3), (0, 99), (1, 0)]), "héllo");
        assert_eq!(marked_html("ab", &[]), "ab");
    }
}
