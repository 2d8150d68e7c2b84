//! One room on screen: its history (rendered on the server), the live list, who is here and typing, and
//! the composer.

use leptos::either::Either;
use leptos::prelude::*;

use super::composer::{Compose, Composer};
use super::messages::MessageList;
use super::nav::{room_of, Nav};
use crate::api::{room_history, DEFAULT_PAGE};
use crate::chat_state::ChatState;
use crate::protocol::validate_room;

/// The page of one room: `/` (the default room) or `/r/{room}`.
#[component]
pub fn RoomPage() -> impl IntoView {
    let chat = expect_context::<ChatState>();
    let path = expect_context::<Nav>().0;
    // Kept as it was when the path is one without a room: this page is about to go.
    let room = Memo::new(move |before: Option<&String>| {
        path.with(|path| room_of(path))
            .or_else(|| before.cloned())
            .unwrap_or_default()
    });
    // The room on screen: set here, before anything rendered reads it (on the server too), and kept
    // up to date by an effect as the browser navigates between rooms. Not an isomorphic effect: on
    // the server its late write re-ran the room list's `Suspend` while it was being resolved (a
    // "disposed reactive value" panic that left the page unanswered).
    chat.current.set(room.get_untracked());
    Effect::new(move |_| chat.current.set(room.get()));
    let history = Resource::new(
        move || room.get(),
        |room| room_history(room, None, Some(DEFAULT_PAGE)),
    );
    view! {
        <Suspense fallback=|| view! { <main class="room"><p class="loading">"Loading…"</p></main> }>
            {move || Suspend::new(async move {
                let room = room.get();
                if let Err(why) = validate_room(&room) {
                    return Either::Left(view! {
                        <main class="room"><p class="error">"No such room: " {why}</p></main>
                    });
                }
                match history.await {
                    Ok(page) => chat.seed(&room, page.messages, page.oldest_seq),
                    Err(error) => chat.local_error(format!("History is unavailable: {error}")),
                }
                let compose = Compose::new();
                Either::Right(view! {
                    <main class="room" data-room=room.clone() aria-labelledby="room-name">
                        <header class="room-head">
                            <h2 id="room-name" class="room-name">"#" {room.clone()}</h2>
                            <OnlineCount chat room=room.clone()/>
                        </header>
                        <MessageList chat room=room.clone() compose/>
                        <TypingLine chat room=room.clone()/>
                        <Composer chat room=room.clone() compose/>
                    </main>
                    <OnlineList chat room/>
                })
            })}
        </Suspense>
    }
}

/// "3 online", beside the room's name.
#[component]
fn OnlineCount(chat: ChatState, room: String) -> impl IntoView {
    view! {
        <span class="online-count">
            {move || chat.read_room(&room, |view| view.online_count)} " online"
        </span>
    }
}

/// "ann is typing…", for everyone but you.
#[component]
fn TypingLine(chat: ChatState, room: String) -> impl IntoView {
    let text = move || {
        let me = chat.me.get();
        let names: Vec<String> = chat.read_room(&room, |view| {
            view.typing
                .iter()
                .filter(|n| Some(*n) != me.as_ref())
                .cloned()
                .collect()
        });
        // Each name isolated (FSI … PDI, what `<bdi>` does for an element): a right-to-left name must
        // not reorder the words around it.
        let names: Vec<String> = names
            .iter()
            .map(|n| format!("\u{2068}{n}\u{2069}"))
            .collect();
        match names.as_slice() {
            [] => String::new(),
            [one] => format!("{one} is typing…"),
            [one, two] => format!("{one} and {two} are typing…"),
            [one, two, rest @ ..] => format!("{one}, {two} and {} more are typing…", rest.len()),
        }
    };
    view! { <p class="typing" aria-live="polite">{text}</p> }
}

/// Who is in the room now. Focusable, so that a long list can be scrolled with the keyboard.
#[component]
fn OnlineList(chat: ChatState, room: String) -> impl IntoView {
    let count = {
        let room = room.clone();
        move || chat.read_room(&room, |view| view.online_count)
    };
    view! {
        <aside class="online" aria-labelledby="online-title" tabindex="0">
            <h2 id="online-title">"Online " <span class="count">{count}</span></h2>
            <ul>
                <For each=move || chat.read_room(&room, |view| view.online.clone()) key=|name| name.clone() let:name>
                    <li><bdi>{name}</bdi></li>
                </For>
            </ul>
        </aside>
    }
}
