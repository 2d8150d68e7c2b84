//! The composer: a text area that sends on Enter (Shift+Enter starts a new line) or on the button; it
//! also answers a message (a reply) or changes one of yours (an edit), as the message list asks, and
//! completes `@` mentions from the people in the room.
//!
//! A message is kept (shown as "sending…") until the server acknowledges it, and sent again after a
//! reconnect, so none is lost. While the text changes, the room hears that you are typing.

use leptos::prelude::*;

use super::link::{new_client_id, Sender};
use crate::chat_state::{lowercase, ChatState, LinkStatus, Outgoing, Pending};
#[cfg(feature = "hydrate")]
use crate::protocol::ClientFrame;
use crate::protocol::{validate_text, Quote};

/// Most names the `@` completion offers at once.
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))] // used by the browser only
const MAX_SUGGESTIONS: usize = 6;

/// What the composer is writing, shared with the message list (whose buttons start a reply or an
/// edit): one per room page.
#[derive(Clone, Copy)]
pub struct Compose {
    pub draft: RwSignal<String>,
    /// Answering this message.
    pub reply_to: RwSignal<Option<Quote>>,
    /// Changing this message of yours (its `seq`).
    pub editing: RwSignal<Option<u64>>,
    /// The text area, to give it the focus.
    pub input: NodeRef<leptos::html::Textarea>,
}

impl Default for Compose {
    fn default() -> Self {
        Self::new()
    }
}

impl Compose {
    pub fn new() -> Compose {
        Compose {
            draft: RwSignal::new(String::new()),
            reply_to: RwSignal::new(None),
            editing: RwSignal::new(None),
            input: NodeRef::new(),
        }
    }

    #[cfg_attr(not(feature = "hydrate"), allow(dead_code))] // used by the browser only
    /// Starts a reply to `quote` (dropping an edit in progress).
    pub fn reply(&self, quote: Quote) {
        if self.editing.get_untracked().is_some() {
            self.editing.set(None);
            self.draft.set(String::new());
        }
        self.reply_to.set(Some(quote));
        self.focus();
    }

    #[cfg_attr(not(feature = "hydrate"), allow(dead_code))] // used by the browser only
    /// Starts changing your message `seq`, whose text is `text`.
    pub fn edit(&self, seq: u64, text: String) {
        self.reply_to.set(None);
        self.editing.set(Some(seq));
        self.draft.set(text);
        self.focus();
    }

    /// Drops a reply or an edit in progress (an edit's text with it).
    pub fn cancel(&self) {
        if self.editing.get_untracked().is_some() {
            self.draft.set(String::new());
        }
        self.editing.set(None);
        self.reply_to.set(None);
    }

    #[cfg_attr(not(feature = "hydrate"), allow(dead_code))] // used by the browser only
    fn focus(&self) {
        if let Some(input) = self.input.get_untracked() {
            let _ = input.focus();
        }
    }
}

#[component]
pub fn Composer(chat: ChatState, room: String, compose: Compose) -> impl IntoView {
    let sender = expect_context::<Sender>();
    let Compose {
        draft,
        reply_to,
        editing,
        input,
    } = compose;
    let closed = move || chat.link.with(|l| matches!(l, LinkStatus::Closed { .. }));
    // When this page last said it was typing (ms): at most every 3 s while the text changes (the server
    // forgets it after a few seconds without one). Sending a message ends it (on the server too).
    let last_typing = StoredValue::new(0.0f64);
    // The `@` completion: the names offered, the one chosen, and where the `@` being completed is.
    let suggestions = RwSignal::new(Vec::<String>::new());
    let chosen = RwSignal::new(0usize);
    let mention_at = StoredValue::new(0usize);
    let send = {
        let room = room.clone();
        move || {
            let text = draft.get_untracked();
            if text.trim().is_empty() {
                return;
            }
            let what = match (editing.get_untracked(), reply_to.get_untracked()) {
                (Some(seq), _) => Outgoing::Edit(seq),
                (None, Some(quote)) => Outgoing::Reply(quote.seq),
                (None, None) => Outgoing::Message,
            };
            let pending = Pending::new(new_client_id(), room.clone(), text.clone(), what);
            // Refused here rather than by the server, which would close the socket (1009): the
            // message would wait in `pending` and be sent again after every reconnect. Measured as the
            // whole frame the socket will send, against the limit the server's welcome gave.
            let max = chat.limits.with_untracked(|l| l.max_message_bytes);
            let size =
                serde_json::to_string(&pending.frame()).map_or(usize::MAX, |json| json.len());
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
            // The socket sends pending messages and changes one at a time, in order, once their
            // room is joined: this tells it there is a new one.
            chat.add_pending(pending);
            sender.messages_waiting();
            draft.set(String::new());
            editing.set(None);
            reply_to.set(None);
            suggestions.set(Vec::new());
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
    // Puts the chosen name in place of the `@` being typed.
    let complete = move |name: String| {
        let text = draft.get_untracked();
        let at = mention_at.get_value().min(text.len());
        let caret = input
            .get_untracked()
            .and_then(|i| i.selection_start().ok().flatten())
            .map_or(text.len(), |c| utf16_to_byte(&text, c as usize))
            .max(at);
        let inserted = format!("@{name} ");
        let completed = format!("{}{inserted}{}", &text[..at], &text[caret..]);
        let caret = (text[..at].encode_utf16().count() + inserted.encode_utf16().count()) as u32;
        draft.set(completed);
        suggestions.set(Vec::new());
        if let Some(input) = input.get_untracked() {
            // The value is set by the binding: the caret moves after it.
            request_animation_frame(move || {
                let _ = input.set_selection_range(caret, caret);
            });
        }
    };
    // Enter sends; Shift+Enter is a new line, and so is an Enter that ends an input method's
    // composition (Japanese, Chinese…): that one confirms the text being composed. While names are
    // offered, the arrows choose one and Enter or Tab takes it. Escape drops the offer, or else a
    // reply or an edit.
    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
        let offered = suggestions.with_untracked(Vec::len);
        let key = ev.key();
        if offered > 0 && !ev.is_composing() {
            match key.as_str() {
                "ArrowDown" | "ArrowUp" => {
                    ev.prevent_default();
                    let step = if key == "ArrowDown" { 1 } else { offered - 1 };
                    chosen.update(|c| *c = (*c + step) % offered);
                    return;
                }
                "Enter" | "Tab" => {
                    ev.prevent_default();
                    let name = suggestions.with_untracked(|s| s[chosen.get_untracked()].clone());
                    complete(name);
                    return;
                }
                "Escape" => {
                    ev.prevent_default();
                    suggestions.set(Vec::new());
                    return;
                }
                _ => {}
            }
        }
        match key.as_str() {
            "Enter" if !ev.shift_key() && !ev.is_composing() => {
                ev.prevent_default();
                send();
            }
            "Escape"
                if reply_to.with_untracked(Option::is_some)
                    || editing.with_untracked(Option::is_some) =>
            {
                ev.prevent_default();
                compose.cancel();
            }
            _ => {}
        }
    };
    let on_input = {
        let room = room.clone();
        move |ev: leptos::ev::Event| {
            #[cfg(feature = "hydrate")]
            {
                let value = event_target_value(&ev);
                let now = js_sys::Date::now();
                if now - last_typing.get_value() >= 3_000.0
                    && !value.trim().is_empty()
                    && chat.is_joined(&room)
                {
                    last_typing.set_value(now);
                    sender.send(ClientFrame::Typing { room: room.clone() });
                }
                let caret = input
                    .get_untracked()
                    .and_then(|i| i.selection_start().ok().flatten())
                    .map_or(value.len(), |c| utf16_to_byte(&value, c as usize));
                let offer = match mention_prefix(&value[..caret]) {
                    Some((at, prefix)) => {
                        mention_at.set_value(at);
                        let me = chat.me.get_untracked();
                        chat.rooms.with_untracked(|rooms| {
                            rooms.get(&room).map_or_else(Vec::new, |view| {
                                complete_name(&view.online, prefix, me.as_deref())
                            })
                        })
                    }
                    None => Vec::new(),
                };
                if offer != suggestions.get_untracked() {
                    chosen.set(0);
                    suggestions.set(offer);
                }
            }
            #[cfg(not(feature = "hydrate"))]
            let _ = (last_typing, &room, ev, mention_at, chat);
        }
    };
    // "Replying to ann: …", or "Editing your message" (the name isolated, as `<bdi>` would).
    let composing = move || match (editing.get(), reply_to.get()) {
        (Some(_), _) => "Editing your message".to_owned(),
        (None, Some(quote)) => {
            format!("Replying to \u{2068}{}\u{2069}: {}", quote.from, quote.text)
        }
        (None, None) => String::new(),
    };
    // A name offered, clicked: taken on the press, before the text area loses the focus.
    let take_offered = move |ev: leptos::ev::MouseEvent| {
        ev.prevent_default();
        #[cfg(feature = "hydrate")]
        {
            use wasm_bindgen::JsCast;
            let name = ev
                .target()
                .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
                .and_then(|t| t.closest("[data-name]").ok().flatten())
                .and_then(|option| option.get_attribute("data-name"));
            if let Some(name) = name {
                complete(name);
            }
        }
    };
    let listbox_id = format!("mentions-{room}");
    let controls = listbox_id.clone();
    let active_id = move || {
        suggestions
            .with(|s| !s.is_empty())
            .then(|| format!("mention-option-{}", chosen.get()))
    };
    view! {
        <form class="composer" on:submit=submit>
            // Both always in the page, hidden when idle: cheaper in the WASM than views that come and go.
            <div class="composing" hidden=move || { reply_to.with(Option::is_none) && editing.with(Option::is_none) }>
                <span class="composing-what">{composing}</span>
                <button type="button" class="icon-button cancel" aria-label="Cancel" title="Cancel (Escape)" on:click=move |_| compose.cancel()>"×"</button>
            </div>
            <ul class="mentions-offer" id=listbox_id role="listbox" aria-label="People to mention" hidden=move || suggestions.with(Vec::is_empty) on:mousedown=take_offered>
                {move || {
                    let chosen = chosen.get();
                    suggestions.get().into_iter().enumerate().map(|(i, name)| {
                        let shown = name.clone();
                        view! {
                            <li role="option" id=format!("mention-option-{i}") data-name=name aria-selected=if i == chosen { "true" } else { "false" }>
                                <bdi>{shown}</bdi>
                            </li>
                        }
                    }).collect_view()
                }}
            </ul>
            <textarea
                name="message"
                rows="1"
                placeholder="Write a message…"
                autocomplete="off"
                enterkeyhint="send"
                aria-label="Message"
                aria-describedby="composer-hint"
                aria-autocomplete="list"
                aria-controls=controls
                aria-activedescendant=active_id
                node_ref=input
                bind:value=draft
                on:input=on_input
                on:keydown=on_keydown
            ></textarea>
            <button type="submit" class="send" disabled=closed>
                <svg viewBox="0 0 24 24" width="18" height="18" aria-hidden="true">
                    <path d="M3 20.5 21 12 3 3.5l2.5 8.5zm2.5-8.5H13" fill="none" stroke="currentColor" stroke-width="2" stroke-linejoin="round"/>
                </svg>
                <span>{move || if editing.with(Option::is_some) { "Save" } else { "Send" }}</span>
            </button>
            <p id="composer-hint" class="hint">"Enter sends, Shift+Enter starts a new line, @ mentions."</p>
        </form>
    }
}

/// The `@` being typed at the end of `before` (the text before the caret): its byte offset and what
/// follows it, if it starts a word and no space follows it yet.
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))] // used by the browser only
fn mention_prefix(before: &str) -> Option<(usize, &str)> {
    let at = before.rfind('@')?;
    let prefix = &before[at + 1..];
    let starts_word = before[..at]
        .chars()
        .next_back()
        .is_none_or(char::is_whitespace);
    (starts_word && !prefix.contains(char::is_whitespace)).then_some((at, prefix))
}

/// The names among `online` that start with `prefix` (in any case), you left out: at most
/// [`MAX_SUGGESTIONS`], in the room's order.
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))] // used by the browser only
fn complete_name(online: &[String], prefix: &str, me: Option<&str>) -> Vec<String> {
    let prefix = lowercase(prefix);
    online
        .iter()
        .filter(|name| Some(name.as_str()) != me && lowercase(name).starts_with(&prefix))
        .take(MAX_SUGGESTIONS)
        .cloned()
        .collect()
}

/// The byte offset in `text` of the UTF-16 offset `units` (what the DOM's selection gives).
fn utf16_to_byte(text: &str, units: usize) -> usize {
    let mut seen = 0;
    for (byte, c) in text.char_indices() {
        if seen >= units {
            return byte;
        }
        seen += c.len_utf16();
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_at_that_starts_a_word_offers_the_names_that_start_with_what_follows() {
        assert_eq!(mention_prefix("hi @an"), Some((3, "an")));
        assert_eq!(mention_prefix("@"), Some((0, "")));
        assert_eq!(mention_prefix("mail ann@ex"), None);
        assert_eq!(mention_prefix("@ann and"), None);
        let online = ["Ann".to_string(), "anna".into(), "bob".into(), "me".into()];
        assert_eq!(complete_name(&online, "an", Some("me")), ["Ann", "anna"]);
        assert_eq!(
            complete_name(&online, "", Some("me")),
            ["Ann", "anna", "bob"]
        );
        assert!(complete_name(&online, "z", None).is_empty());
    }

    #[test]
    fn utf16_offsets_map_to_byte_offsets() {
        assert_eq!(utf16_to_byte("a😀b", 0), 0);
        assert_eq!(utf16_to_byte("a😀b", 3), 5);
        assert_eq!(utf16_to_byte("a😀b", 9), 6);
    }
}
