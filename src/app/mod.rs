//! The page: rendered on the server, then hydrated in the browser, where it opens the chat socket.
//!
//! `/` is the `general` room and `/r/{room}` any room: the server renders the room's recent history
//! into the page (so it reads, and can be shared as a link, before any script runs), and the browser
//! then follows the room live over one socket for all rooms. Every piece of user text (names, messages)
//! is rendered as a text node, which Leptos escapes: a message that looks like HTML shows as the
//! characters typed and runs nothing. Names are shown inside `<bdi>` (or between Unicode isolates in
//! plain text): a right-to-left name cannot reorder the words around it.

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, Link, MetaTags, Stylesheet, Title};
use leptos_router::{
    components::{Route, Router, Routes, A},
    hooks::{use_navigate, use_params_map, use_query_map},
    path, SsrMode,
};

use crate::api::{list_rooms, room_history, DEFAULT_PAGE};
use crate::chat_state::{ChatState, Line, LineKind, LinkStatus, Pending, RoomView};
use crate::protocol::{
    validate_name, validate_room, validate_text, ClientFrame, DEFAULT_ROOM, MAX_ROOM_CHARS,
};

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
            <ChatApp/>
        </Router>
    }
}

/// The page's link to the server (see `socket.rs`), once it is opened (in the browser only).
#[derive(Clone, Copy)]
struct Sender(StoredValue<Option<SocketLink>, LinkStorage>);

/// In the browser the link holds a WebSocket, which stays on the page's one thread. The server's
/// render may finish (and clean up) on another thread than it started on, so there the (empty) value
/// must be thread-safe: a thread-bound value would panic when dropped elsewhere.
#[cfg(feature = "hydrate")]
type LinkStorage = LocalStorage;
#[cfg(not(feature = "hydrate"))]
type LinkStorage = SyncStorage;

/// The link, as the server renders the page: there is none.
#[cfg(not(feature = "hydrate"))]
struct SocketLink;

#[cfg(not(feature = "hydrate"))]
impl SocketLink {
    #[allow(dead_code)] // the server never sends: it renders
    fn send(&self, _: ClientFrame) -> bool {
        false
    }
    fn messages_waiting(&self) {}
}

#[cfg(feature = "hydrate")]
use crate::socket::Link as SocketLink;

impl Sender {
    /// Sends one frame on the socket; false if there is no open link.
    #[cfg_attr(not(feature = "hydrate"), allow(dead_code))] // used by browser-only effects
    fn send(&self, frame: ClientFrame) -> bool {
        self.0
            .with_value(|link| link.as_ref().is_some_and(|link| link.send(frame)))
    }

    /// Tells the link a new message waits in the chat state's pending ones.
    fn messages_waiting(&self) {
        self.0.with_value(|link| {
            if let Some(link) = link {
                link.messages_waiting();
            }
        });
    }
}

/// Everything around the room on screen: who you are, the link, the room list; one socket for all of it.
#[component]
fn ChatApp() -> impl IntoView {
    let chat = ChatState::new(DEFAULT_ROOM.to_owned());
    provide_context(chat);
    // `?name=alice` picks a name; otherwise the session cookie's, or one the server assigns. Changing it
    // reconnects.
    let wanted_name = RwSignal::new(use_query_map().read_untracked().get("name"));
    let sender = Sender(StoredValue::new_with_storage(None));
    provide_context(sender);

    // Effects run only in the browser, after hydration: the socket is opened there and nowhere else.
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        let name = wanted_name.get();
        // Drop (and so close) the previous link before opening the next.
        sender.0.set_value(None);
        sender
            .0
            .set_value(Some(crate::socket::open(name.as_deref(), chat)));
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
    // Closing the socket when the page goes: dropping the outbox ends the link task, which closes it.
    on_cleanup(move || {
        sender.0.try_set_value(None);
    });

    view! {
        <div class="chat">
            <header class="topbar">
                <h1>"Group chat"</h1>
                <Identity chat wanted_name/>
                <span class="status" data-state=move || chat.link.with(|l| l.as_str())>
                    {move || chat.link.with(LinkStatus::label)}
                </span>
            </header>
            <div class="layout">
                <RoomList chat/>
                <Routes fallback=|| view! { <p class="not-found">"Page not found."</p> }>
                    <Route path=path!("/") view=RoomPage ssr=SsrMode::Async/>
                    <Route path=path!("/r/:room") view=RoomPage ssr=SsrMode::Async/>
                </Routes>
            </div>
        </div>
    }
}

/// Your name, and a form to change it.
#[component]
fn Identity(chat: ChatState, wanted_name: RwSignal<Option<String>>) -> impl IntoView {
    let draft = RwSignal::new(String::new());
    let rename = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        match validate_name(
            &draft.get_untracked(),
            chat.limits.with_untracked(|l| l.max_name_chars),
        ) {
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
                "You are " <strong data-testid="my-name"><bdi>{move || chat.me.get().unwrap_or_else(|| "…".into())}</bdi></strong>
            </span>
            <form class="rename" on:submit=rename>
                <input
                    type="text"
                    name="name"
                    placeholder="Choose a name"
                    maxlength=move || chat.limits.with(|l| l.max_name_chars)
                    aria-label="New name"
                    bind:value=draft
                />
                <button type="submit">"Change name"</button>
            </form>
        </div>
    }
}

/// The rooms worth knowing about (with people or history), and a way to join or create one.
#[component]
fn RoomList(chat: ChatState) -> impl IntoView {
    let refresh = RwSignal::new(0u32);
    let rooms = Resource::new(move || refresh.get(), |_| list_rooms(None, None));
    // The list is refreshed every few seconds, and whenever a room is followed or a link opens.
    #[cfg(feature = "hydrate")]
    {
        let tick = move || refresh.update(|n| *n = n.wrapping_add(1));
        Effect::new(move |_| {
            chat.rooms.with(|r| r.len());
            chat.link.track();
            tick();
        });
        if let Ok(handle) = set_interval_with_handle(tick, std::time::Duration::from_secs(5)) {
            on_cleanup(move || handle.clear());
        }
    }
    let draft = RwSignal::new(String::new());
    let navigate = use_navigate();
    let open_room = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let room = draft.get_untracked().trim().to_lowercase();
        match validate_room(&room) {
            Err(why) => chat.local_error(format!("That room name won't do: {why}.")),
            Ok(()) => {
                draft.set(String::new());
                navigate(&format!("/r/{room}"), Default::default());
            }
        }
    };
    view! {
        <nav class="rooms" aria-label="Rooms">
            <h2>"Rooms"</h2>
            <Transition fallback=|| ()>
                <ul>
                    // Only the fetched list shapes these nodes (the room on screen only marks one): the
                    // browser must hydrate exactly what the server rendered.
                    {move || Suspend::new(async move {
                        rooms
                            .await
                            .unwrap_or_default()
                            .into_iter()
                            .map(|room| {
                                let name = room.name.clone();
                                let is_current = move || chat.current.get() == name;
                                let href = format!("/r/{}", room.name);
                                let label = room.name.clone();
                                view! {
                                    <li class:current=is_current data-room=room.name>
                                        <A href=href>"#" {label}</A>
                                        <span class="count" title="online">{room.online}</span>
                                    </li>
                                }
                            })
                            .collect_view()
                    })}
                </ul>
            </Transition>
            <form class="new-room" on:submit=open_room>
                <input
                    type="text"
                    name="room"
                    placeholder="room name"
                    maxlength=MAX_ROOM_CHARS
                    aria-label="Room name"
                    bind:value=draft
                />
                <button type="submit">"Go"</button>
            </form>
        </nav>
    }
}

/// One room: its history (rendered on the server), the live list, who is here and typing, the input.
#[component]
fn RoomPage() -> impl IntoView {
    let chat = expect_context::<ChatState>();
    let params = use_params_map();
    let room = Memo::new(move |_| {
        params
            .read()
            .get("room")
            .unwrap_or_else(|| DEFAULT_ROOM.to_owned())
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
                    return view! {
                        <main class="room"><p class="error">"No such room: " {why}</p></main>
                    }.into_any();
                }
                match history.await {
                    Ok(page) => chat.seed(&room, page.messages, page.oldest_seq),
                    Err(error) => chat.local_error(format!("History is unavailable: {error}")),
                }
                view! {
                    <main class="room" data-room=room.clone()>
                        <h2 class="room-name">"#" {room.clone()}</h2>
                        <MessageList chat room=room.clone()/>
                        <TypingLine chat room=room.clone()/>
                        <Composer chat room=room.clone()/>
                    </main>
                    <OnlineList chat room/>
                }.into_any()
            })}
        </Suspense>
    }
}

/// The room's messages and notices, oldest first, kept scrolled to the newest; older ones page in at the
/// top.
#[component]
fn MessageList(chat: ChatState, room: String) -> impl IntoView {
    let list = NodeRef::<leptos::html::Ol>::new();
    let lines = {
        let room = room.clone();
        move || chat.read_room(&room, |view| view.lines.clone())
    };
    let pending = {
        let room = room.clone();
        move || {
            chat.pending.with(|p| {
                p.iter()
                    .filter(|p| p.room == room)
                    .cloned()
                    .collect::<Vec<_>>()
            })
        }
    };
    let has_older = {
        let room = room.clone();
        move || chat.read_room(&room, RoomView::has_older)
    };
    let loading = RwSignal::new(false);
    let load_older = {
        let room = room.clone();
        move || {
            if loading.get_untracked() {
                return;
            }
            let Some(before) = chat
                .rooms
                .with_untracked(|r| r.get(&room).filter(|v| v.has_older()).map(|v| v.first_seq))
            else {
                return;
            };
            loading.set(true);
            let room = room.clone();
            leptos::task::spawn_local(async move {
                match room_history(room.clone(), Some(before), Some(DEFAULT_PAGE)).await {
                    Ok(page) => chat.prepend(&room, page.messages, page.oldest_seq),
                    Err(error) => {
                        chat.local_error(format!("Could not load older messages: {error}"))
                    }
                }
                loading.set(false);
            });
        }
    };
    // Keep the newest in view as messages arrive (not when older ones are paged in above).
    #[cfg(feature = "hydrate")]
    {
        let room = room.clone();
        Effect::new(move |_| {
            chat.read_room(&room, |view| (view.last_seq, view.lines.len()));
            chat.pending.track();
            if let Some(list) = list.get() {
                list.set_scroll_top(list.scroll_height());
            }
        });
    }
    let on_scroll = {
        let load_older = load_older.clone();
        move |_| {
            if list.get_untracked().is_some_and(|l| l.scroll_top() == 0) {
                load_older();
            }
        }
    };
    view! {
        <ol class="messages" node_ref=list aria-live="polite" on:scroll=on_scroll>
            <Show when=has_older>
                <li class="older">
                    <button type="button" on:click={
                        let load_older = load_older.clone();
                        move |_| load_older()
                    }>"Load older messages"</button>
                </li>
            </Show>
            <For each=lines key=|line| line.key let:line>
                <LineView line/>
            </For>
            <For each=pending key=|p| p.client_id.clone() let:pending>
                <li class="line message mine pending">
                    <strong class="from"><bdi>{move || chat.me.get().unwrap_or_default()}</bdi></strong>
                    <span class="text">{pending.text}</span>
                    <span class="ts">"sending…"</span>
                </li>
            </For>
        </ol>
    }
}

#[component]
fn LineView(line: Line) -> impl IntoView {
    match line.kind {
        LineKind::Message {
            seq,
            from,
            text,
            ts,
            mine,
        } => view! {
            <li class="line message" class:mine=mine data-seq=seq>
                <strong class="from"><bdi>{from}</bdi></strong>
                <span class="text">{text}</span>
                <time class="ts">{clock(ts)}</time>
            </li>
        }
        .into_any(),
        LineKind::Joined { name } => view! {
            <li class="line notice join">
                <strong><bdi>{name}</bdi></strong>
                " joined the room"
            </li>
        }
        .into_any(),
        LineKind::Left { name } => view! {
            <li class="line notice leave">
                <strong><bdi>{name}</bdi></strong>
                " left the room"
            </li>
        }
        .into_any(),
        LineKind::Error { text } => view! { <li class="line error">{text}</li> }.into_any(),
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

/// Who is in the room now.
#[component]
fn OnlineList(chat: ChatState, room: String) -> impl IntoView {
    let count = {
        let room = room.clone();
        move || chat.read_room(&room, |view| view.online_count)
    };
    view! {
        <aside class="online">
            <h2>"Online " <span class="count">{count}</span></h2>
            <ul>
                <For each=move || chat.read_room(&room, |view| view.online.clone()) key=|name| name.clone() let:name>
                    <li><bdi>{name}</bdi></li>
                </For>
            </ul>
        </aside>
    }
}

/// The input: sends on Enter or on the button, then clears. A message is kept (shown as "sending…")
/// until the server acknowledges it, and sent again after a reconnect, so none is lost.
#[component]
fn Composer(chat: ChatState, room: String) -> impl IntoView {
    let sender = expect_context::<Sender>();
    let draft = RwSignal::new(String::new());
    let closed = move || chat.link.with(|l| matches!(l, LinkStatus::Closed { .. }));
    // When this page last said it was typing (ms): at most every 3 s while the text changes (the server
    // forgets it after a few seconds without one). Sending a message ends it (on the server too).
    let last_typing = StoredValue::new(0.0f64);
    let submit = {
        let room = room.clone();
        move |ev: leptos::ev::SubmitEvent| {
            ev.prevent_default();
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
            <input
                type="text"
                name="message"
                placeholder="Write a message…"
                autocomplete="off"
                aria-label="Message"
                bind:value=draft
                on:input=on_input
            />
            <button type="submit" disabled=closed>"Send"</button>
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
