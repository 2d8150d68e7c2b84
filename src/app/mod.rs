//! The page: rendered on the server, then hydrated in the browser, where it opens the chat socket.
//!
//! `/` is the `general` room and `/r/{room}` any room: the server renders the room's recent history
//! into the page (so it reads, and can be shared as a link, before any script runs), and the browser
//! then follows the room live over one socket for all rooms. Every piece of user text (names, messages)
//! is rendered as a text node, which Leptos escapes: a message that looks like HTML shows as the
//! characters typed and runs nothing. Names are shown inside `<bdi>` (or between Unicode isolates in
//! plain text): a right-to-left name cannot reorder the words around it.
//!
//! One module per part of the page, each private; this one is the document ([`shell`]) and the
//! frame around the room ([`App`]): the top bar and the sidebar, which is a drawer on phones.
//! - `theme`: light and dark, and the toggle; `identity`: your name; `rooms`: the room list;
//! - `room`: one room's page (`messages`: its list, `composer`: the input), over `avatar` and `time`;
//! - `link`: the page's handle on its socket, shared through the context; `attention`: the tab title's
//!   unread count and notifications of mentions; `search`: the search panel; `nav`: the page's path
//!   (which room, or none), in place of a router.

mod attention;
mod avatar;
mod composer;
mod identity;
mod link;
mod messages;
pub mod nav;
mod room;
mod rooms;
mod search;
mod theme;
mod time;

use leptos::either::Either;
use leptos::prelude::*;

use crate::chat_state::ChatState;
#[cfg(feature = "hydrate")]
use crate::chat_state::LinkStatus;
use crate::protocol::DEFAULT_ROOM;
#[cfg(feature = "hydrate")]
use crate::protocol::{validate_room, ClientFrame};
use attention::NotifyToggle;
use identity::Identity;
use link::Sender;
use nav::{room_of, Nav};
use room::RoomPage;
use rooms::RoomList;
use search::Search;
use theme::{ThemeToggle, THEME_SCRIPT};
use time::{ShownZone, Zone};

/// The HTML document around the app.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                // resizes-content: on a phone the on-screen keyboard shrinks the page, so the composer
                // stays above it.
                <meta name="viewport" content="width=device-width, initial-scale=1, interactive-widget=resizes-content"/>
                <meta name="color-scheme" content="light dark"/>
                // Before anything paints: the theme the reader picked (a constant script, not user text).
                <script inner_html=THEME_SCRIPT></script>
                // Static, so written here rather than by leptos_meta's components, whose code the WASM
                // would carry (3.7 KB of it, compressed). `id="leptos"`: `cargo leptos watch` reloads
                // the stylesheet it finds under that id.
                <title>{attention::TITLE}</title>
                <link rel="stylesheet" id="leptos" href="/pkg/groupchat.css"/>
                <link rel="icon" type="image/svg+xml" href="/favicon.svg"/>
                <AutoReload options=options.clone()/>
                <HydrationScripts options/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// Everything around the room on screen: who you are, the link, the room list; one socket for all of it.
#[component]
pub fn App() -> impl IntoView {
    let chat = ChatState::new(DEFAULT_ROOM.to_owned());
    provide_context(chat);
    let nav = Nav::provide();
    // `?name=alice` picks a name; otherwise the session cookie's, or one the server assigns. Changing it
    // reconnects. Read in the browser only, where the socket is opened.
    #[cfg(feature = "hydrate")]
    let wanted_name = RwSignal::new(
        window()
            .location()
            .search()
            .ok()
            .and_then(|query| web_sys::UrlSearchParams::new_with_str(&query).ok())
            .and_then(|query| query.get("name")),
    );
    #[cfg(not(feature = "hydrate"))]
    let wanted_name = RwSignal::new(None);
    let sender = Sender::empty();
    provide_context(sender);
    provide_context(ShownZone(RwSignal::new(Zone::Utc)));

    // Effects run only in the browser, after hydration: the socket is opened there and nowhere else.
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        let name = wanted_name.get();
        sender.set(None);
        sender.set(Some(crate::socket::open(name.as_deref(), chat)));
    });
    // The room on screen is followed as soon as the link is up (the socket also rejoins every
    // followed room after each reconnect).
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        let room = chat.current.get();
        if chat.link.with(|l| *l == LinkStatus::Open) && validate_room(&room).is_ok() {
            chat.follow(&room);
            for (room, after) in chat.take_joins() {
                sender.send(ClientFrame::Join { room, after });
            }
        }
    });
    attention::watch(chat);
    // The page's clock, to the second, for the reconnect countdown (0 on the server, which never
    // shows one).
    let now = RwSignal::new(0u64);
    #[cfg(feature = "hydrate")]
    {
        now.set(js_sys::Date::now() as u64);
        if let Ok(ticks) = set_interval_with_handle(
            move || now.set(js_sys::Date::now() as u64),
            std::time::Duration::from_secs(1),
        ) {
            on_cleanup(move || ticks.clear());
        }
    }
    // Closing the socket when the page goes: dropping the outbox ends the link task, which closes it.
    on_cleanup(move || sender.close());

    // The room in the URL, for the top bar (the room's own heading is hidden on phones): from the
    // path, which the server and the browser read alike.
    let top_room = move || nav.0.with(|path| room_of(path).unwrap_or_default());

    // The sidebar is a drawer on phones: opened by the button in the top bar, closed by choosing a
    // room, by Escape, or by a tap beside it.
    let drawer_open = RwSignal::new(false);
    let toggle_button = NodeRef::<leptos::html::Button>::new();
    let sidebar = NodeRef::<leptos::html::Div>::new();
    Effect::new(move |_| {
        chat.current.track();
        drawer_open.set(false);
    });
    let toggle_drawer = move |_| {
        let open = !drawer_open.get_untracked();
        drawer_open.set(open);
        if open {
            // Once it is shown: a hidden element takes no focus.
            request_animation_frame(move || {
                if let Some(sidebar) = sidebar.get_untracked() {
                    let _ = sidebar.focus();
                }
            });
        }
    };
    let close_drawer = move || {
        if drawer_open.get_untracked() {
            drawer_open.set(false);
            if let Some(button) = toggle_button.get_untracked() {
                let _ = button.focus();
            }
        }
    };
    let search_open = RwSignal::new(false);
    let on_sidebar_key = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Escape" {
            close_drawer();
        }
    };

    // `/` or `/r/{room}`, or a path the page does not have (the server answers it with a 404).
    let found = Memo::new(move |_| nav.0.with(|path| room_of(path).is_some()));

    view! {
        <div class="chat" class:drawer-open=move || drawer_open.get()>
            <header class="topbar">
                <button
                    type="button"
                    class="icon-button drawer-toggle"
                    node_ref=toggle_button
                    aria-label="Rooms"
                    title="Rooms"
                    aria-controls="sidebar"
                    aria-expanded=move || if drawer_open.get() { "true" } else { "false" }
                    on:click=toggle_drawer
                >
                    <svg viewBox="0 0 24 24" width="22" height="22" aria-hidden="true">
                        <path d="M4 6h16M4 12h16M4 18h16" stroke="currentColor" stroke-width="2" stroke-linecap="round"/>
                    </svg>
                </button>
                <h1 class="brand">
                    <img src="/favicon.svg" alt="" width="24" height="24"/>
                    <span>"Group chat"</span>
                </h1>
                <span class="top-room" aria-hidden="true">"#" {top_room}</span>
                <span class="status" data-state=move || chat.link.with(|l| l.as_str())>
                    {move || chat.link.with(|l| l.label(now.get()))}
                </span>
                <button
                    type="button"
                    class="icon-button search-toggle"
                    aria-label="Search"
                    title="Search"
                    aria-expanded=move || if search_open.get() { "true" } else { "false" }
                    on:click=move |_| search_open.update(|open| *open = !*open)
                >
                    <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true">
                        <path d="M10.5 4a6.5 6.5 0 1 1 0 13 6.5 6.5 0 0 1 0-13zM15.5 15.5 20 20" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round"/>
                    </svg>
                </button>
                <NotifyToggle chat/>
                <ThemeToggle/>
            </header>
            <Search chat open=search_open/>
            <div class="layout">
                <div id="sidebar" class="sidebar" node_ref=sidebar tabindex="-1" on:keydown=on_sidebar_key>
                    <Identity chat wanted_name/>
                    <RoomList chat/>
                </div>
                <div class="backdrop" on:click=move |_| close_drawer()></div>
                {move || if found.get() {
                    Either::Left(view! { <RoomPage/> })
                } else {
                    Either::Right(view! { <main class="not-found"><p>"Page not found."</p></main> })
                }}
            </div>
        </div>
    }
}
