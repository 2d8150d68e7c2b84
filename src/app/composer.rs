//! The composer: a text area that sends on Enter (Shift+Enter starts a new line) or on the button.
//!
//! A message is kept (shown as "sending…") until the server acknowledges it, and sent again after a
//! reconnect, so none is lost. While the text changes, the room hears that you are typing.

use leptos::prelude::*;

use super::link::Sender;
use crate::chat_state::{ChatState, LinkStatus, Pending};
use crate::protocol::{validate_text, ClientFrame};

#[component]
pub fn Composer(chat: ChatState, room: String) -> impl IntoView {
    let sender = expect_context::<Sender>();
    let draft = RwSignal::new(String::new());
    let closed = move || chat.link.with(|l| matches!(l, LinkStatus::Closed { .. }));
    // When this page last said it was typing (ms): at most every 3 s while the text changes (the server
    // forgets it after a few seconds without one). Sending a message ends it (on the server too).
    let last_typing = StoredValue::new(0.0f64);
    let send = {
        let room = room.clone();
        move || {
            let text = draft.get_untracked();
            if text.trim().is_empty() {
                return;
            }
            let client_id = new_client_id();
            // Refused here rather than by the server, which would close the socket (1009): the
            // message would wait in `pending` and be sent again after every reconnect. Measured as the
            // whole frame the socket will send, against the limit the server's welcome gave.
            let max = chat.limits.with_untracked(|l| l.max_message_bytes);
            let frame = ClientFrame::Message {
                room: room.clone(),
                text: text.clone(),
                client_id: Some(client_id.clone()),
                reply_to: None,
            };
            let size = serde_json::to_string(&frame).map_or(usize::MAX, |json| json.len());
            if size > max {
                chat.local_error(format!(
                    "That message is too long: a message may take {max} bytes, this one takes {size}."
                ));
                return;
            }
            // Refused here too (the server would refuse it for good): control characters other than
            // line breaks and tabs.
            if let Err(why) = validate_text(&text) {
                chat.local_error(format!("That message can't be sent: {why}."));
                return;
            }
            chat.add_pending(Pending {
                client_id: client_id.clone(),
                room: room.clone(),
                text: text.clone(),
            });
            // The socket sends pending messages one at a time, in order, once their room is joined:
            // this tells it there is a new one.
            sender.messages_waiting();
            draft.set(String::new());
            // The message ended the typing notice (on the server too); typing on for more than a
            // moment announces it again.
            #[cfg(feature = "hydrate")]
            last_typing.set_value(js_sys::Date::now() - 1_500.0);
        }
    };
    let submit = {
        let send = send.clone();
        move |ev: leptos::ev::SubmitEvent| {
            ev.prevent_default();
            send();
        }
    };
    // Enter sends; Shift+Enter is a new line, and so is an Enter that ends an input method's
    // composition (Japanese, Chinese…): that one confirms the text being composed.
    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
            ev.prevent_default();
            send();
        }
    };
    let on_input = move |ev: leptos::ev::Event| {
        #[cfg(feature = "hydrate")]
        {
            let now = js_sys::Date::now();
            if now - last_typing.get_value() >= 3_000.0
                && !event_target_value(&ev).trim().is_empty()
                && chat.is_joined(&room)
            {
                last_typing.set_value(now);
                sender.send(ClientFrame::Typing { room: room.clone() });
            }
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = (last_typing, &room, ev);
    };
    view! {
        <form class="composer" on:submit=submit>
            <textarea
                name="message"
                rows="1"
                placeholder="Write a message…"
                autocomplete="off"
                enterkeyhint="send"
                aria-label="Message"
                aria-describedby="composer-hint"
                bind:value=draft
                on:input=on_input
                on:keydown=on_keydown
            ></textarea>
            <button type="submit" class="send" disabled=closed>
                <svg viewBox="0 0 24 24" width="18" height="18" aria-hidden="true">
                    <path d="M3 20.5 21 12 3 3.5l2.5 8.5zm2.5-8.5H13" fill="none" stroke="currentColor" stroke-width="2" stroke-linejoin="round"/>
                </svg>
                <span>"Send"</span>
            </button>
            <p id="composer-hint" class="hint">"Enter sends, Shift+Enter starts a new line."</p>
        </form>
    }
}

/// A fresh id for a message this page sends: random enough that one person's ids never collide.
fn new_client_id() -> String {
    #[cfg(feature = "hydrate")]
    {
        let part = || (js_sys::Math::random() * 4_294_967_296.0) as u64;
        format!("{:08x}{:08x}{:08x}", part(), part(), part())
    }
    #[cfg(not(feature = "hydrate"))]
    {
        String::new()
    }
}
