//! Who you are on the page: your name, and a form to change it.

use leptos::prelude::*;

use crate::chat_state::{lowercase, ChatState};
use crate::protocol::validate_name;

/// Your name, and a form to change it. Changing it reconnects under the new name (`wanted_name`).
#[component]
pub fn Identity(chat: ChatState, wanted_name: RwSignal<Option<String>>) -> impl IntoView {
    let draft = RwSignal::new(String::new());
    let rename = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        match validate_name(
            &draft.get_untracked(),
            chat.limits.with_untracked(|l| l.max_name_chars),
        ) {
            Err(why) => chat.local_error(format!("That name won't do: {why}.")),
            Ok(name) => {
                let same = chat
                    .me
                    .with_untracked(|me| me.as_deref().is_some_and(|me| same_name(me, &name)));
                if !same {
                    wanted_name.set(Some(name));
                }
                draft.set(String::new());
            }
        }
    };
    view! {
        <section class="identity" aria-label="You">
            <p class="me">
                "You are " <strong data-testid="my-name"><bdi>{move || chat.me.get().unwrap_or_else(|| "…".into())}</bdi></strong>
            </p>
            <form class="rename inline-form" on:submit=rename>
                <input
                    type="text"
                    name="name"
                    placeholder="New name"
                    maxlength=move || chat.limits.with(|l| l.max_name_chars)
                    aria-label="New name"
                    autocomplete="nickname"
                    bind:value=draft
                />
                <button type="submit" class="secondary">"Change name"</button>
            </form>
        </section>
    }
}

/// Whether two names differ in case only (or not at all): asking for your own name again changes nothing.
fn same_name(a: &str, b: &str) -> bool {
    lowercase(a) == lowercase(b)
}
