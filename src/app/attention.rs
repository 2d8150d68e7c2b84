//! What calls the reader back to the page: while its tab is hidden, the unread count in the tab's
//! title; and, if they asked for them, browser notifications of messages that mention them.

use leptos::prelude::*;

use crate::chat_state::ChatState;

/// The document's title without unread messages (as the shell renders it).
pub const TITLE: &str = "Group chat";

/// Where the reader's choice of notifications is kept.
#[cfg(feature = "hydrate")]
const NOTIFY_KEY: &str = "notify";

/// Follows whether the page is visible (into `chat.visible`), and keeps the title's unread count.
pub fn watch(chat: ChatState) {
    #[cfg(feature = "hydrate")]
    {
        let hidden = || document().hidden();
        chat.visible.set(!hidden());
        let handle = window_event_listener(leptos::ev::visibilitychange, move |_| {
            chat.visible.set(!hidden())
        });
        on_cleanup(move || handle.remove());
        // Counted in the rooms this page follows: a stored position's count of a room not followed
        // does not move, and would stay in the title for good.
        Effect::new(move |_| {
            let unread: u64 = if chat.visible.get() {
                0
            } else {
                chat.rooms.with(|rooms| {
                    chat.read.with(|read| {
                        rooms
                            .keys()
                            .filter_map(|room| read.get(room))
                            .map(|p| p.unread)
                            .sum()
                    })
                })
            };
            document().set_title(&title(unread));
        });
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = chat;
}

/// The title with `unread` messages: "(3) Group chat".
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))] // used by the browser only
pub fn title(unread: u64) -> String {
    match unread {
        0 => TITLE.to_owned(),
        n => format!("({n}) {TITLE}"),
    }
}

/// The bell: notifications of mentions while the page is hidden, on or off. The browser's permission
/// is asked on the click that turns them on (never before: browsers hold a prompt nobody asked for
/// against the site).
#[component]
pub fn NotifyToggle(chat: ChatState) -> impl IntoView {
    let on = RwSignal::new(false);
    #[cfg(feature = "hydrate")]
    {
        use web_sys::{Notification, NotificationOptions, NotificationPermission};
        let storage = || window().local_storage().ok().flatten();
        let granted = || Notification::permission() == NotificationPermission::Granted;
        let kept = storage().and_then(|s| s.get_item(NOTIFY_KEY).ok().flatten());
        on.set(kept.as_deref() == Some("on") && granted());
        Effect::new(move |_| {
            let Some(mention) = chat.last_mention.get() else {
                return;
            };
            if on.get_untracked() && !chat.visible.get_untracked() && granted() {
                let options = NotificationOptions::new();
                options.set_body(&mention.text);
                options.set_tag(&format!("mention-{}", mention.room));
                let _ = Notification::new_with_options(
                    &format!("{} mentioned you in #{}", mention.from, mention.room),
                    &options,
                );
            }
        });
        let toggle = move |_| {
            let turn_on = !on.get_untracked();
            if turn_on && Notification::permission() == NotificationPermission::Denied {
                chat.local_error(
                    "Notifications are blocked for this site: allow them in the browser's site settings.",
                );
                return;
            }
            if turn_on && !granted() {
                // Its answer is read when a mention comes (`granted`), so it need not be awaited.
                let _ = Notification::request_permission();
            }
            on.set(turn_on);
            if let Some(storage) = storage() {
                let _ = storage.set_item(NOTIFY_KEY, if turn_on { "on" } else { "off" });
            }
        };
        view! { <Bell on toggle/> }
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = chat;
        view! { <Bell on toggle=|_| {}/> }
    }
}

#[component]
fn Bell(on: RwSignal<bool>, toggle: impl FnMut(leptos::ev::MouseEvent) + 'static) -> impl IntoView {
    view! {
        <button
            type="button"
            class="icon-button notify-toggle"
            aria-label="Notify me of mentions"
            title="Notify me of mentions"
            aria-pressed=move || if on.get() { "true" } else { "false" }
            on:click=toggle
        >
            <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true">
                <path d="M6 16V11a6 6 0 0 1 12 0v5l2 2H4zM10 20a2 2 0 0 0 4 0" fill="none" stroke="currentColor" stroke-width="2" stroke-linejoin="round"/>
            </svg>
        </button>
    }
}
