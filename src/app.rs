//! The page: rendered on the server, then hydrated in the browser, where it opens the chat socket.
//!
//! Every piece of user text (names, messages) is rendered as a text node, which Leptos escapes: a message
//! that looks like HTML shows as the characters typed and runs nothing.

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, Link, MetaTags, Stylesheet, Title};
use leptos_router::{
    components::{Route, Router, Routes},
    hooks::use_query_map,
    StaticSegment,
};

use crate::chat_state::{ChatState, Line, LineKind, LinkStatus};
use crate::protocol::{validate_name, ClientFrame, MAX_NAME_CHARS};

/// The HTML document around the app.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <AutoReload options=options.clone()/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Stylesheet id="leptos" href="/pkg/groupchat.css"/>
        <Title text="Group chat"/>
        <Link rel="icon" type_="image/svg+xml" href="/favicon.svg"/>
        <Router>
            <Routes fallback=|| view! { <p class="not-found">"Page not found."</p> }>
                <Route path=StaticSegment("") view=ChatPage/>
            </Routes>
        </Router>
    }
}

/// The frames the page sends; the browser's socket task holds the other end (see `socket.rs`).
type Outbox = futures::channel::mpsc::UnboundedSender<ClientFrame>;

/// The chat: who you are, the link state, the message list, who is online, and the input.
#[component]
fn ChatPage() -> impl IntoView {
    let chat = ChatState::new();
    // `/?name=alice` picks a name; otherwise the server assigns one. Changing it reconnects.
    let wanted_name = RwSignal::new(use_query_map().read_untracked().get("name"));
    let outbox: StoredValue<Option<Outbox>> = StoredValue::new(None);

    // Effects run only in the browser, after hydration: the socket is opened there and nowhere else.
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        let name = wanted_name.get();
        // Drop (and so close) the previous link before opening the next.
        outbox.set_value(None);
        outbox.set_value(Some(crate::socket::open(name.as_deref(), chat)));
    });
    #[cfg(not(feature = "hydrate"))]
    let _ = wanted_name;
    // Closing the socket when the page goes: dropping the outbox ends the link task, which closes it.
    on_cleanup(move || {
        outbox.try_set_value(None);
    });

    let send = move |frame: ClientFrame| -> bool {
        outbox.with_value(|outbox| {
            outbox
                .as_ref()
                .is_some_and(|tx| tx.unbounded_send(frame).is_ok())
        })
    };

    view! {
        <div class="chat">
            <header class="topbar">
                <h1>"Group chat"</h1>
                <Identity chat wanted_name/>
                <span class="status" data-state=move || chat.link.with(|l| l.as_str())>
                    {move || chat.link.with(LinkStatus::label)}
                </span>
            </header>
            <main class="room">
                <MessageList chat/>
                <OnlineList chat/>
            </main>
            <Composer chat send/>
        </div>
    }
}

/// Your name, and a form to change it.
#[component]
fn Identity(chat: ChatState, wanted_name: RwSignal<Option<String>>) -> impl IntoView {
    let draft = RwSignal::new(String::new());
    let rename = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        match validate_name(&draft.get_untracked(), MAX_NAME_CHARS) {
            Err(why) => chat.local_error(format!("That name won't do: {why}.")),
            Ok(name) => {
                let same = chat.me.with_untracked(|me| {
                    me.as_ref()
                        .is_some_and(|me| me.to_lowercase() == name.to_lowercase())
                });
                if !same {
                    wanted_name.set(Some(name));
                }
                draft.set(String::new());
            }
        }
    };
    view! {
        <div class="identity">
            <span class="me">
                "You are " <strong data-testid="my-name">{move || chat.me.get().unwrap_or_else(|| "…".into())}</strong>
            </span>
            <form class="rename" on:submit=rename>
                <input
                    type="text"
                    name="name"
                    placeholder="Choose a name"
                    maxlength="32"
                    aria-label="New name"
                    bind:value=draft
                />
                <button type="submit">"Change name"</button>
            </form>
        </div>
    }
}

/// The messages and notices, oldest first, kept scrolled to the newest.
#[component]
fn MessageList(chat: ChatState) -> impl IntoView {
    let list = NodeRef::<leptos::html::Ol>::new();
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        chat.lines.track();
        if let Some(list) = list.get() {
            list.set_scroll_top(list.scroll_height());
        }
    });
    view! {
        <ol class="messages" node_ref=list aria-live="polite">
            <For each=move || chat.lines.get() key=|line| line.key let:line>
                <LineView line/>
            </For>
        </ol>
    }
}

#[component]
fn LineView(line: Line) -> impl IntoView {
    match line.kind {
        LineKind::Message {
            from,
            text,
            ts,
            mine,
        } => view! {
            <li class="line message" class:mine=mine>
                <strong class="from">{from}</strong>
                <span class="text">{text}</span>
                <time class="ts">{clock(ts)}</time>
            </li>
        }
        .into_any(),
        LineKind::Joined { name } => view! {
            <li class="line notice join">
                <strong>{name}</strong>
                " joined the chat"
            </li>
        }
        .into_any(),
        LineKind::Left { name } => view! {
            <li class="line notice leave">
                <strong>{name}</strong>
                " left the chat"
            </li>
        }
        .into_any(),
        LineKind::Error { text } => view! { <li class="line error">{text}</li> }.into_any(),
    }
}

/// Who is online now.
#[component]
fn OnlineList(chat: ChatState) -> impl IntoView {
    view! {
        <aside class="online">
            <h2>"Online " <span class="count">{move || chat.online_count.get()}</span></h2>
            <ul>
                <For each=move || chat.online.get() key=|name| name.clone() let:name>
                    <li>{name}</li>
                </For>
            </ul>
        </aside>
    }
}

/// The input: sends on Enter or on the button, then clears. Disabled until the server has welcomed us.
#[component]
fn Composer(
    chat: ChatState,
    send: impl Fn(ClientFrame) -> bool + Send + Sync + 'static,
) -> impl IntoView {
    let draft = RwSignal::new(String::new());
    let closed = move || chat.link.with(|l| *l != LinkStatus::Open);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let text = draft.get_untracked();
        if text.trim().is_empty() {
            return;
        }
        if send(ClientFrame::Message { text }) {
            draft.set(String::new());
        }
    };
    view! {
        <form class="composer" on:submit=submit>
            <input
                type="text"
                name="message"
                placeholder="Write a message…"
                autocomplete="off"
                aria-label="Message"
                bind:value=draft
            />
            <button type="submit" disabled=closed>"Send"</button>
        </form>
    }
}

/// `HH:MM` of a server timestamp, in the reader's time zone (UTC where there is no browser).
fn clock(ts_ms: u64) -> String {
    #[cfg(feature = "hydrate")]
    {
        let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ts_ms as f64));
        format!("{:02}:{:02}", date.get_hours(), date.get_minutes())
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let minutes = ts_ms / 60_000;
        format!("{:02}:{:02}", (minutes / 60) % 24, minutes % 60)
    }
}
