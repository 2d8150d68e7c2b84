//! The room list: the rooms worth knowing about, and a form to join or create one.

use leptos::prelude::*;

use super::nav::Nav;
use crate::api::list_rooms;
use crate::chat_state::ChatState;
use crate::protocol::{validate_room, MAX_ROOM_CHARS};

/// The rooms worth knowing about (with people or history), and a way to join or create one.
#[component]
pub fn RoomList(chat: ChatState) -> impl IntoView {
    let refresh = RwSignal::new(0u32);
    let rooms = Resource::new(move || refresh.get(), |_| list_rooms(None, None));
    // The counts come over the socket (`online_counts`), so the list itself is read again only when
    // people are in a room it does not show yet: one just created, by this page (following it puts
    // this person in it) or by anyone else. Not when a message comes: with many people in a room,
    // every message would make every page read the list.
    #[cfg(feature = "hydrate")]
    {
        let tick = move || refresh.update(|n| *n = n.wrapping_add(1));
        // Tracks the counts only. Each room is asked about once: one the list cannot show (past its
        // first page) must not make it read itself again at every count.
        let asked = StoredValue::new(Vec::<String>::new());
        Effect::new(move |_| {
            let counted: Vec<String> = chat.online_counts.with(|c| c.keys().cloned().collect());
            let Some(Ok(list)) = rooms.get_untracked() else {
                return;
            };
            let unlisted: Vec<String> = counted
                .into_iter()
                .filter(|room| !list.iter().any(|listed| listed.name == *room))
                .filter(|room| !asked.with_value(|asked| asked.contains(room)))
                .collect();
            if !unlisted.is_empty() {
                asked.update_value(|asked| asked.extend(unlisted));
                tick();
            }
        });
    }
    let draft = RwSignal::new(String::new());
    let nav = expect_context::<Nav>();
    let open_room = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        // ASCII lowercasing is enough: a valid room name is ASCII (`validate_room`), and
        // `str::to_lowercase` would put Unicode's case tables into the WASM.
        let room = draft.get_untracked().trim().to_ascii_lowercase();
        match validate_room(&room) {
            Err(why) => chat.local_error(format!("That room name won't do: {why}.")),
            Ok(()) => {
                draft.set(String::new());
                nav.go(format!("/r/{room}"));
            }
        }
    };
    view! {
        <nav class="rooms" aria-label="Rooms">
            <h2>"Rooms"</h2>
            <Transition fallback=|| ()>
                // A click on a room's link: that room, without reloading the page.
                <ul on:click=move |ev| nav.follow_link(ev)>
                    // Only the fetched list shapes these nodes (the room on screen only marks one): the
                    // browser must hydrate exactly what the server rendered.
                    {move || Suspend::new(async move {
                        rooms
                            .await
                            .unwrap_or_default()
                            .into_iter()
                            .map(|room| {
                                let name = room.name.clone();
                                // The room on screen: highlighted, and `aria-current` for screen readers.
                                let is_current = move || chat.current.with(|c| *c == name);
                                let current_page = {
                                    let is_current = is_current.clone();
                                    move || is_current().then_some("page")
                                };
                                let href = format!("/r/{}", room.name);
                                let label = room.name.clone();
                                // As listed until the server pushes a count; then as pushed (none: 0).
                                let counted = room.name.clone();
                                let listed = room.online;
                                let online = move || {
                                    chat.online_counts.with(|counts| {
                                        if counts.is_empty() {
                                            listed
                                        } else {
                                            counts.get(&counted).copied().unwrap_or(0)
                                        }
                                    })
                                };
                                // Unread messages and mentions of you, for the rooms not on screen
                                // (none on the server: the counts come over the socket).
                                // Plain closures over the chat's signals, not memos: the list keeps
                                // showing these nodes while it is read again (a `Transition`), after
                                // this scope, and anything it owned, is gone.
                                let unread = {
                                    let name = room.name.clone();
                                    move || {
                                        if chat.current.with(|c| *c == name) {
                                            return (0, 0);
                                        }
                                        let unread = chat.read.with(|r| r.get(&name).map_or(0, |p| p.unread));
                                        let mentioned = chat.mentions.with(|m| m.get(&name).copied().unwrap_or(0));
                                        (unread, mentioned)
                                    }
                                };
                                let badge = {
                                    let unread = unread.clone();
                                    move || match unread() {
                                        (0, 0) => String::new(),
                                        (n, 0) => n.to_string(),
                                        (n, _) => format!("@ {}", n.max(1)),
                                    }
                                };
                                let said = {
                                    let unread = unread.clone();
                                    move || match unread() {
                                        (0, 0) => "",
                                        (_, 0) => " unread",
                                        _ => " unread, mentioning you",
                                    }
                                };
                                let mentioned = move || unread().1 > 0;
                                view! {
                                    <li class:current=is_current data-room=room.name>
                                        <a href=href aria-current=current_page>
                                            <span class="hash" aria-hidden="true">"#"</span>
                                            <span class="room-label">{label}</span>
                                            <span class="unread" class:mentioned=mentioned>{badge}</span>
                                            <span class="sr-only">{said}</span>
                                            <span class="count">{online}</span>
                                            <span class="sr-only">" online"</span>
                                        </a>
                                    </li>
                                }
                            })
                            .collect_view()
                    })}
                </ul>
            </Transition>
            <form class="new-room inline-form" on:submit=open_room>
                <input
                    type="text"
                    name="room"
                    placeholder="Join or create a room"
                    maxlength=MAX_ROOM_CHARS
                    aria-label="Room name"
                    autocomplete="off"
                    bind:value=draft
                />
                <button type="submit" class="secondary">"Go"</button>
            </form>
        </nav>
    }
}
