//! The room's messages and notices, oldest first: grouped by sender, under day headings, with times in
//! the reader's zone; then your messages on their way. Kept scrolled to the newest; older ones page in
//! at the top.
//!
//! Where each line sits among its neighbours (does it start a group? a day?) is worked out here, by
//! [`rows`], each time the lines change, and is part of each row's key: a line whose place changes
//! (older messages paged in above it, the zone switched to the reader's) is drawn again, and the others
//! are left alone. One keyed list holds it all: every list of another item type would compile its own
//! copy of the keyed diffing into the WASM.

use leptos::either::{EitherOf3, EitherOf4};
use leptos::prelude::*;

use super::avatar::avatar;
use super::composer::Compose;
use super::link::Sender;
use super::time::{iso, ShownZone, Zone};
#[cfg(feature = "hydrate")]
use crate::api::MAX_PAGE;
use crate::api::{room_history, DEFAULT_PAGE};
use crate::chat_state::{mentions, ChatState, Line, LineKind, Outgoing, Pending};
#[cfg(feature = "hydrate")]
use crate::protocol::ClientFrame;
use crate::protocol::{validate_reaction, Quote, Reaction, MAX_REACTION_BYTES};

/// Messages from one sender less than this apart (on one day, with no notice between) share one name.
pub const GROUP_GAP_MS: u64 = 5 * 60_000;

/// One item of the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Row {
    /// The heading of a day (its number, see [`Zone::day`]), above its first message (sent at `ts`).
    Day { day: i64, ts: u64 },
    /// "New messages": above the first message of others past where the reader had read to.
    Unread,
    /// A line of the room, and where it sits (for a message).
    Line { line: Line, place: Place },
    /// One of your messages on its way (`from`: your name); `head` as for a line.
    Pending {
        pending: Pending,
        from: String,
        head: bool,
    },
}

/// Where a message sits among its neighbours and how it reads to you: with the line's own key, what
/// identifies its row (any change draws it again).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Place {
    /// It starts a group: shown with its avatar and name.
    pub head: bool,
    /// Under your name.
    pub mine: bool,
    /// It mentions you.
    pub to_me: bool,
    /// Which of its reactions are yours (bit `i` for reaction `i`; a message has at most 20 kinds).
    pub reacted: u32,
}

/// What identifies a row's DOM: a row whose key changes is drawn again.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RowKey {
    Day(i64),
    Unread,
    Line { key: u64, place: Place },
    Pending { client_id: String, head: bool },
}

impl Row {
    pub fn key(&self) -> RowKey {
        match self {
            Row::Day { day, .. } => RowKey::Day(*day),
            Row::Unread => RowKey::Unread,
            Row::Line { line, place } => RowKey::Line {
                key: line.key,
                place: *place,
            },
            Row::Pending { pending, head, .. } => RowKey::Pending {
                client_id: pending.client_id.clone(),
                head: *head,
            },
        }
    }
}

/// Places the lines and your pending messages. A message starts a group unless the line before it is a
/// message from the same sender, less than [`GROUP_GAP_MS`] earlier and on the same day (by
/// `day_of`); notices and errors end a group; a message on another day than the message before it
/// gets the day's heading. The first message of others past `read_to` (where the reader had read to)
/// gets the "new messages" divider above it. Your pending messages follow, the first in a group of
/// its own unless the last line is your message.
///
/// `lines` may be a window onto the room's lines: `before` is then the line just above it, which
/// decides whether the first one starts a group or a day (and the divider is left out if the first
/// unread message is above the window).
pub fn rows(
    lines: &[Line],
    before: Option<&Line>,
    pending: &[&Pending],
    me: Option<&str>,
    read_to: Option<u64>,
    day_of: impl Fn(u64) -> i64,
) -> Vec<Row> {
    let mut rows = Vec::with_capacity(lines.len() + pending.len() + 3);
    // The line before, if it is a message: its sender and time.
    let mut previous: Option<(&str, u64)> = None;
    let mut last_day = None;
    let mut divider = read_to;
    if let Some(LineKind::Message { from, ts, seq, .. }) = before.map(|line| &line.kind) {
        previous = Some((from, *ts));
        last_day = Some(day_of(*ts));
        if divider.is_some_and(|read| *seq > read) {
            divider = None;
        }
    }
    for line in lines {
        let place = match &line.kind {
            LineKind::Message {
                from,
                ts,
                seq,
                text,
                deleted,
                reactions,
                ..
            } => {
                let mine = me == Some(from.as_str());
                if divider.is_some_and(|read| *seq > read) && !mine {
                    divider = None;
                    rows.push(Row::Unread);
                }
                let day = day_of(*ts);
                let new_day = last_day != Some(day);
                if new_day {
                    last_day = Some(day);
                    rows.push(Row::Day { day, ts: *ts });
                }
                // Times out of order (two nodes' clocks) count as no gap.
                let follows = previous
                    .is_some_and(|(who, at)| who == from && ts.saturating_sub(at) < GROUP_GAP_MS);
                previous = Some((from, *ts));
                let to_me = !mine && !deleted && me.is_some_and(|me| mentions(text, me));
                let reacted = reactions
                    .iter()
                    .take(32)
                    .enumerate()
                    .filter(|(_, r)| me.is_some_and(|me| r.names.iter().any(|n| n == me)))
                    .fold(0, |bits, (i, _)| bits | 1 << i);
                Place {
                    head: new_day || !follows,
                    mine,
                    to_me,
                    reacted,
                }
            }
            _ => {
                previous = None;
                Place::default()
            }
        };
        rows.push(Row::Line {
            line: line.clone(),
            place,
        });
    }
    let mine_last = previous.is_some_and(|(who, _)| Some(who) == me);
    rows.extend(
        pending
            .iter()
            .filter(|p| p.is_message())
            .enumerate()
            .map(|(i, &pending)| Row::Pending {
                pending: pending.clone(),
                from: me.unwrap_or_default().to_owned(),
                head: i == 0 && !mine_last,
            }),
    );
    rows
}

/// Common reactions, offered first; any other emoji can be typed.
const QUICK_REACTIONS: [&str; 8] = ["👍", "❤️", "😂", "🎉", "😮", "😢", "🙏", "👀"];

/// How near the bottom (in px) the reader still counts as reading the newest messages.
const BOTTOM_SLACK: i32 = 48;

/// Most pages of older history loaded to bring one message into view, each of the most messages a page
/// may hold: 20,000 messages back (held in memory; the window draws 300 of them).
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))] // used by the browser only
const MAX_PAGES_BACK: usize = 100;

/// The list of one room's lines, then your messages still on their way; with the pill that says how
/// many came below while the reader is up in the history, and the reaction picker.
///
/// Messages are acted on through one listener on the list (reply, edit, delete, react, a quote's
/// original): the rows hold no handlers of their own, so a thousand rows cost no thousand closures.
#[component]
pub fn MessageList(chat: ChatState, room: String, compose: Compose) -> impl IntoView {
    let sender = expect_context::<Sender>();
    let list = NodeRef::<leptos::html::Div>::new();
    // UTC as the server rendered it, until this effect runs: in the browser, after the list is
    // hydrated, and before the next paint. The zone is part of every row's key, so each row is drawn
    // once more then, in local time; the rows themselves hold no reactive parts (your name, the zone:
    // all in the key). The zone is the page's (lists of rooms opened later start in local time): a
    // signal of this list's own would be gone when the room changes, while the old list may still
    // read it once.
    let zone = expect_context::<ShownZone>().0;
    Effect::new(move |_| zone.set(Zone::Local));
    // Where the reader had read to when the room came on screen (the divider's place): `None` until
    // the server has said; then fixed while the room stays on screen, so reading it does not move it
    // (kept in the chat state: the list may be drawn again meanwhile).
    {
        let room = room.clone();
        Effect::new(move |_| {
            let here = chat
                .came_to
                .with_untracked(|c| c.as_ref().is_some_and(|(r, _)| *r == room));
            if chat.read_known.get() && !here {
                let position = chat.read.with_untracked(|r| r.get(&room).map(|p| p.seq));
                chat.came_to.set(Some((room.clone(), position)));
            }
        });
    }
    // A closure, not a memo: a memo dies with this list's scope, while a frame already asked for may
    // still run.
    let read_to = {
        let room = room.clone();
        move || {
            chat.came_to.with(|c| match c {
                Some((r, position)) if *r == room => Some(*position),
                _ => None,
            })
        }
    };
    let rows = {
        let room = room.clone();
        let read_to = read_to.clone();
        move || {
            let zone = zone.get();
            let read_to = read_to().flatten();
            chat.me.with(|me| {
                chat.pending.with(|pending| {
                    let pending: Vec<&Pending> =
                        pending.iter().filter(|p| p.room == room).collect();
                    // Only the window's lines are drawn, and your pending messages only below the
                    // newest.
                    chat.read_room(&room, |view| {
                        let window = view.window();
                        let before = window.start.checked_sub(1).and_then(|i| view.lines.get(i));
                        let pending = if view.window_end.is_none() {
                            &pending[..]
                        } else {
                            &[]
                        };
                        let lines = view.lines.get(window).unwrap_or_default();
                        rows(lines, before, pending, me.as_deref(), read_to, |ts| {
                            zone.day(ts)
                        })
                    })
                    .into_iter()
                    .map(|row| (row, zone))
                    .collect::<Vec<_>>()
                })
            })
        }
    };
    let has_older = {
        let room = room.clone();
        Memo::new(move |_| {
            chat.read_room(&room, |view| view.has_older() || view.window().start > 0)
        })
    };
    // Whether the reader is at the newest messages (then new ones keep the view there), and how many
    // came below while they were not.
    let at_bottom = RwSignal::new(true);
    let new_below = RwSignal::new(0usize);
    // Deferred work (a frame later, after a fetch) may find the list gone with its room: `try_`.
    let scroll_down = move || {
        if let Some(list) = list.try_get_untracked().flatten() {
            list.set_scroll_top(list.scroll_height());
        }
    };
    // The newest messages, in the window and in view.
    let to_newest = {
        let room = room.clone();
        move || {
            chat.window_to_newest(&room);
            request_animation_frame(scroll_down);
        }
    };
    let loading = RwSignal::new(false);
    // Up in the history: the window moves up over the lines loaded, and when it is at the oldest of
    // them, a page of older ones is loaded first.
    let load_older = {
        let room = room.clone();
        move || {
            if loading.get_untracked() {
                return;
            }
            loading.set(true);
            let room = room.clone();
            leptos::task::spawn_local(async move {
                let anchor = Anchor::take(list);
                let mut changed = chat.move_window(&room, true);
                if !changed && load_older_page(chat, &room, DEFAULT_PAGE).await {
                    chat.move_window(&room, true);
                    changed = true;
                }
                if changed {
                    request_animation_frame(move || anchor.restore(list));
                }
                loading.try_set(false);
            });
        }
    };
    // Down toward the newest, when the window ends above them.
    let load_newer = {
        let room = room.clone();
        move || {
            let anchor = Anchor::take(list);
            if chat.move_window(&room, false) {
                request_animation_frame(move || anchor.restore(list));
            }
        }
    };
    #[cfg(feature = "hydrate")]
    {
        // As messages arrive: the view follows them if the reader is at the bottom (or has just sent
        // one); otherwise it stays put, and the pill counts them.
        let room = room.clone();
        let to_newest = to_newest.clone();
        let seen = StoredValue::new((0u64, 0usize));
        Effect::new(move |_| {
            let last = chat.read_room(&room, |view| view.last_seq);
            let sending = chat.pending.with(|p| {
                p.iter()
                    .filter(|p| p.room == room && p.is_message())
                    .count()
            });
            let (was_last, was_sending) = seen.get_value();
            if (last, sending) == (was_last, was_sending) {
                // Something else of the room changed (older messages paged in, a reaction…).
                return;
            }
            seen.set_value((last, sending));
            if at_bottom.get_untracked() || sending > was_sending {
                to_newest();
            } else if was_last > 0 && last > was_last {
                let me = chat.me.get_untracked();
                let came = chat.read_room(&room, |view| {
                    view.lines
                        .iter()
                        .filter(|l| {
                            matches!(&l.kind, LineKind::Message { seq, from, .. }
                            if *seq > was_last && me.as_ref() != Some(from))
                        })
                        .count()
                });
                new_below.update(|n| *n += came);
            }
        });
    }
    #[cfg(feature = "hydrate")]
    {
        // Once the divider's place is known: the first unread message comes into view (at the top),
        // if there is one.
        let read_to = read_to.clone();
        Effect::new(move |_| {
            if read_to().flatten().is_some() {
                request_animation_frame(move || {
                    let divider = list
                        .try_get_untracked()
                        .flatten()
                        .and_then(|l| l.query_selector(".unread-divider").ok().flatten());
                    if let Some(divider) = divider {
                        divider.scroll_into_view();
                    }
                });
            }
        });
    }
    #[cfg(feature = "hydrate")]
    {
        // The room is read when its newest messages are on screen: the page visible, the reader at the
        // bottom, the room joined (a read of a room not followed is refused), and the divider placed.
        let room = room.clone();
        let read_to = read_to.clone();
        Effect::new(move |_| {
            let placed = read_to().is_some();
            let joined = chat.read_room(&room, |view| view.joined && view.last_seq > 0);
            if placed && joined && at_bottom.get() && chat.visible.get() {
                if let Some(seq) = chat.mark_read(&room) {
                    sender.send(ClientFrame::Read {
                        room: room.clone(),
                        seq,
                    });
                }
            }
        });
    }
    #[cfg(feature = "hydrate")]
    {
        // A quote clicked or a search hit chosen: that message, older pages loaded until it is here.
        let room = room.clone();
        Effect::new(move |_| {
            let Some((wanted, seq)) = chat.jump.get() else {
                return;
            };
            if wanted != room {
                return;
            }
            chat.jump.set(None);
            leptos::task::spawn_local(reveal(chat, room.clone(), seq, list));
        });
    }
    // Older history loads when the reader scrolls to the top, not when the list lands there by itself
    // (its rows drawn again after hydration can leave it at the top for a moment); so do newer rows at
    // the bottom of a window up in the history.
    let reader_moved = StoredValue::new(false);
    let moved = move || reader_moved.set_value(true);
    // The list's scroll position at the last scroll event.
    let last_top = StoredValue::new(0);
    let on_scroll = {
        let load_older = load_older.clone();
        let room = room.clone();
        move |_| {
            let Some(l) = list.get_untracked() else {
                return;
            };
            let top = l.scroll_top();
            let went_up = top < last_top.get_value();
            last_top.set_value(top);
            let end = l.scroll_height() - top - l.client_height() <= BOTTOM_SLACK;
            let newest = chat.read_room(&room, |view| view.window_end.is_none());
            if end && !newest && reader_moved.get_value() {
                load_newer();
            }
            // Off the bottom only by going up: in a busy room, rows can arrive between the list's
            // own scroll down and the event it fires, which then finds the list short of the end.
            let bottom = if end && newest {
                true
            } else if went_up || !newest {
                false
            } else {
                at_bottom.get_untracked()
            };
            if bottom != at_bottom.get_untracked() {
                at_bottom.set(bottom);
            }
            if bottom && new_below.get_untracked() > 0 {
                new_below.set(0);
            }
            if l.scroll_top() == 0 && reader_moved.get_value() {
                load_older();
            }
        }
    };
    // The message whose reactions the picker is open for.
    let picking = RwSignal::new(None::<u64>);
    let on_click = {
        let room = room.clone();
        move |ev: leptos::ev::MouseEvent| act(ev, chat, &room, compose, sender, picking)
    };
    // A log: a polite live region whose additions are read out. Focusable, so that it can be scrolled
    // with the keyboard.
    view! {
        <div class="messages-pane">
            <div
                class="messages"
                node_ref=list
                role="log"
                aria-live="polite"
                aria-label=format!("Conversation in #{room}")
                tabindex="0"
                on:scroll=on_scroll
                on:wheel=move |_| moved()
                on:touchstart=move |_| moved()
                on:pointerdown=move |_| moved()
                on:keydown=move |_| moved()
            >
                <ol on:click=on_click>
                    // Not `Show`: its children are an `AnyView` (see `row_view`).
                    {move || has_older.get().then(|| view! {
                        <li class="older">
                            <button type="button" class="secondary" on:click={
                                let load_older = load_older.clone();
                                move |_| load_older()
                            }>"Load older messages"</button>
                        </li>
                    })}
                    <For each=rows key=|(row, zone)| (row.key(), *zone) let:((row, zone))>
                        {row_view(row, zone)}
                    </For>
                </ol>
            </div>
            <button type="button" class="pill" hidden=move || { new_below.get() == 0 } on:click=move |_| to_newest()>
                {move || match new_below.get() {
                    1 => "1 new message ↓".to_owned(),
                    n => format!("{n} new messages ↓"),
                }}
            </button>
            <ReactionPicker chat room sender picking/>
        </div>
    }
}

/// A message row and where it sat on screen: put back there after rows above or below it were added or
/// taken away (the window moved, older history came), so the reader's view does not move. (The list's
/// CSS turns the browser's own scroll anchoring off: it guesses wrong when rows go and come at once.)
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))] // read by the browser only
struct Anchor(Option<(String, f64)>);

impl Anchor {
    /// The first message row in view (the reader's place: a step of the window keeps it drawn).
    fn take(list: NodeRef<leptos::html::Div>) -> Anchor {
        #[cfg(feature = "hydrate")]
        {
            use wasm_bindgen::JsCast;
            let found = list.get_untracked().and_then(|l| {
                let view_top = l.get_bounding_client_rect().top();
                let rows = l.query_selector_all("li.message[id]").ok()?;
                (0..rows.length()).find_map(|i| {
                    let row = rows.item(i)?.dyn_into::<web_sys::Element>().ok()?;
                    let rect = row.get_bounding_client_rect();
                    (rect.bottom() > view_top).then(|| (row.id(), rect.top()))
                })
            });
            Anchor(found)
        }
        #[cfg(not(feature = "hydrate"))]
        {
            let _ = list;
            Anchor(None)
        }
    }

    /// Scrolls the list so that the row is where it was.
    fn restore(&self, list: NodeRef<leptos::html::Div>) {
        #[cfg(feature = "hydrate")]
        if let (Some(l), Some((id, top))) = (list.try_get_untracked().flatten(), &self.0) {
            if let Ok(Some(row)) = l.query_selector(&format!("#{id}")) {
                let moved = row.get_bounding_client_rect().top() - top;
                l.set_scroll_top(l.scroll_top() + moved.round() as i32);
            }
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = list;
    }
}

/// Loads a page of `room`'s history (up to `size` messages) before the oldest message shown; false if
/// there is none, or it could not be loaded (said in the room).
async fn load_older_page(chat: ChatState, room: &str, size: usize) -> bool {
    let Some(before) = chat
        .rooms
        .with_untracked(|r| r.get(room).filter(|v| v.has_older()).map(|v| v.first_seq))
    else {
        return false;
    };
    match room_history(room.to_owned(), Some(before), Some(size)).await {
        Ok(page) => {
            chat.prepend(room, page.messages, page.oldest_seq);
            true
        }
        Err(error) => {
            chat.local_error(format!("Could not load older messages: {error}"));
            false
        }
    }
}

/// Brings message `seq` of `room` into view, loading older pages until it is shown, and marks it for
/// a moment.
#[cfg(feature = "hydrate")]
async fn reveal(chat: ChatState, room: String, seq: u64, list: NodeRef<leptos::html::Div>) {
    for _ in 0..MAX_PAGES_BACK {
        if chat.window_to(&room, seq) {
            // Once the list has drawn it.
            request_animation_frame(move || {
                let found = list
                    .try_get_untracked()
                    .flatten()
                    .and_then(|l| l.query_selector(&format!("#m{seq}")).ok().flatten());
                if let Some(item) = found {
                    item.scroll_into_view();
                    let _ = item.class_list().add_1("flash");
                    set_timeout(
                        move || {
                            let _ = item.class_list().remove_1("flash");
                        },
                        std::time::Duration::from_millis(2_000),
                    );
                }
            });
            return;
        }
        let further = chat.read_room(&room, |view| view.has_older() && seq < view.first_seq);
        if !further || !load_older_page(chat, &room, MAX_PAGE).await {
            break;
        }
    }
    chat.local_error("That message is no longer in the history.");
}

/// A click in the list: on one of a message's buttons (or its quote), does what it says; elsewhere on
/// a message, shows or hides its buttons (phones have no hover).
fn act(
    ev: leptos::ev::MouseEvent,
    chat: ChatState,
    room: &str,
    compose: Compose,
    sender: Sender,
    picking: RwSignal<Option<u64>>,
) {
    #[cfg(feature = "hydrate")]
    {
        use wasm_bindgen::JsCast;
        let Some(target) = ev
            .target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
        else {
            return;
        };
        let number = |e: &web_sys::Element, name: &str| {
            e.get_attribute(name).and_then(|v| v.parse::<u64>().ok())
        };
        let Some(control) = target.closest("[data-action]").ok().flatten() else {
            if target.closest("a").ok().flatten().is_none() {
                if let Some(item) = target.closest("li.message[data-seq]").ok().flatten() {
                    let _ = item.class_list().toggle("open");
                }
            }
            return;
        };
        let Some(seq) = control
            .closest("[data-seq]")
            .ok()
            .flatten()
            .and_then(|item| number(&item, "data-seq"))
        else {
            return;
        };
        let line = || {
            chat.read_room(room, |view| {
                view.lines.iter().find_map(|l| match &l.kind {
                    LineKind::Message {
                        seq: s, from, text, ..
                    } if *s == seq => Some((from.clone(), text.clone())),
                    _ => None,
                })
            })
        };
        match control.get_attribute("data-action").as_deref() {
            Some("quote") => {
                ev.prevent_default();
                if let Some(original) = number(&control, "data-reply-to") {
                    chat.jump.set(Some((room.to_owned(), original)));
                }
            }
            Some("reply") => {
                if let Some((from, text)) = line() {
                    compose.reply(Quote::of(seq, from, &text));
                }
            }
            Some("edit") => {
                if let Some((_, text)) = line() {
                    compose.edit(seq, text);
                }
            }
            Some("delete") => {
                let sure = window()
                    .confirm_with_message("Delete this message for everyone?")
                    .unwrap_or(false);
                if sure {
                    sender.queue(chat, room, String::new(), Outgoing::Delete(seq));
                }
            }
            Some("react") => picking.set(Some(seq)),
            Some("toggle") => {
                if let Some(emoji) = control.get_attribute("data-emoji") {
                    sender.queue(chat, room, emoji, Outgoing::React(seq));
                }
            }
            _ => {}
        }
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = (ev, chat, room, compose, sender, picking);
}

/// The emoji to react with to the message `picking` names: common ones, or one typed. Always in the
/// page, hidden when closed (cheaper in the WASM than a view that comes and goes); its emoji buttons
/// share one listener.
#[component]
fn ReactionPicker(
    chat: ChatState,
    room: String,
    sender: Sender,
    picking: RwSignal<Option<u64>>,
) -> impl IntoView {
    let typed = RwSignal::new(String::new());
    let picker = NodeRef::<leptos::html::Div>::new();
    let react = move |emoji: String| {
        let Some(seq) = picking.get_untracked() else {
            return;
        };
        let emoji = emoji.trim().to_owned();
        if let Err(why) = validate_reaction(&emoji) {
            chat.local_error(format!("That reaction won't do: {why}."));
            return;
        }
        sender.queue(chat, &room, emoji, Outgoing::React(seq));
        typed.set(String::new());
        picking.set(None);
    };
    // Opened: the focus goes to the first emoji, so the keyboard can pick at once.
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        if picking.with(Option::is_some) {
            request_animation_frame(move || {
                let first = picker
                    .try_get_untracked()
                    .flatten()
                    .and_then(|p| p.query_selector(".pick").ok().flatten());
                if let Some(first) = first {
                    use wasm_bindgen::JsCast;
                    let _ = first.unchecked_into::<web_sys::HtmlElement>().focus();
                }
            });
        }
    });
    let on_key = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Escape" {
            picking.set(None);
        }
    };
    let on_pick = {
        let react = react.clone();
        move |ev: leptos::ev::MouseEvent| {
            #[cfg(feature = "hydrate")]
            {
                use wasm_bindgen::JsCast;
                let emoji = ev
                    .target()
                    .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
                    .and_then(|t| t.closest("[data-emoji]").ok().flatten())
                    .and_then(|pick| pick.get_attribute("data-emoji"));
                if let Some(emoji) = emoji {
                    react(emoji);
                }
            }
            #[cfg(not(feature = "hydrate"))]
            let _ = (ev, &react);
        }
    };
    let react_typed = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        react(typed.get_untracked());
    };
    view! {
        <div class="picker" role="dialog" aria-label="Add a reaction" node_ref=picker hidden=move || picking.with(Option::is_none) on:keydown=on_key>
            <div class="picks" on:click=on_pick>
                {QUICK_REACTIONS.map(|emoji| view! {
                    <button type="button" class="pick" data-emoji=emoji aria-label=format!("React with {emoji}")>{emoji}</button>
                })}
            </div>
            <form class="picker-other" on:submit=react_typed>
                <input type="text" aria-label="Another emoji" placeholder="or type one" maxlength=MAX_REACTION_BYTES bind:value=typed/>
                <button type="submit" class="secondary">"React"</button>
            </form>
            <button type="button" class="icon-button" aria-label="Close" on:click=move |_| picking.set(None)>"×"</button>
        </div>
    }
}

/// One row's view; each kind's its own type (no `AnyView`, whose every use also carries code for
/// a kind of hydration the page never does).
fn row_view(row: Row, zone: Zone) -> impl IntoView {
    match row {
        Row::Day { ts, .. } => EitherOf4::A(text_row("day", zone.day_label(ts))),
        Row::Unread => EitherOf4::B(view! {
            <li class="unread-divider" role="separator"><span>"New messages"</span></li>
        }),
        Row::Pending {
            pending,
            from,
            head,
        } => EitherOf4::C(message_view(Message {
            from,
            place: Place {
                head,
                mine: true,
                ..Place::default()
            },
            seq: None,
            time: "sending…".into(),
            datetime: None,
            title: None,
            text: pending.text,
            ..Message::default()
        })),
        Row::Line { line, place } => match line.kind {
            LineKind::Message {
                seq,
                from,
                text,
                ts,
                edited,
                deleted,
                reply_to,
                reactions,
                html,
            } => EitherOf4::C(message_view(Message {
                from,
                place,
                seq: Some(seq),
                time: zone.clock(ts),
                datetime: Some(iso(ts)),
                title: Some(zone.full(ts)),
                text,
                edited,
                deleted,
                reply_to,
                reactions,
                html,
            })),
            LineKind::Joined { name } => {
                EitherOf4::D(notice_view(name, "line notice join", " joined the room"))
            }
            LineKind::Left { name } => {
                EitherOf4::D(notice_view(name, "line notice leave", " left the room"))
            }
            LineKind::Error { text } => EitherOf4::A(text_row("line error", text)),
        },
    }
}

/// What a message row shows.
#[derive(Default)]
struct Message {
    from: String,
    place: Place,
    /// None: still on its way.
    seq: Option<u64>,
    time: String,
    datetime: Option<String>,
    title: Option<String>,
    text: String,
    edited: bool,
    deleted: bool,
    reply_to: Option<Quote>,
    reactions: Vec<Reaction>,
    /// The text as HTML, when it has formatting: rendered and escaped by the server
    /// (`src/server/markdown.rs`), which only ever writes a few harmless tags.
    html: Option<String>,
}

/// A message: the avatar and the name if it starts a group, the time, the text, its reactions, and
/// (on hover, focus or a tap) its buttons.
fn message_view(m: Message) -> impl IntoView {
    // Reacting and answering need a stored message; changing it, one of yours.
    let stored = m.seq.is_some() && !m.deleted;
    let Place {
        head,
        mine,
        to_me,
        reacted,
    } = m.place;
    let yours = stored && mine;
    view! {
        <li class="line message" class:head=head class:mine=mine class:to-me=to_me class:pending=m.seq.is_none() class:deleted=m.deleted id=m.seq.map(|seq| format!("m{seq}")) data-seq=m.seq>
            {head.then(|| avatar(&m.from))}
            <div class="body">
                // In a group only the first name shows; the others are there for screen readers,
                // which read each message on its own.
                <strong class="from" class:sr-only=!head><bdi>{m.from}</bdi></strong>
                " "
                <time class="ts" datetime=m.datetime title=m.title>{m.time}</time>
                {m.edited.then(|| view! { <span class="edited">"(edited)"</span> })}
                {m.reply_to.map(|quote| view! {
                    <a class="quote" href=format!("#m{}", quote.seq) data-action="quote" data-reply-to=quote.seq>
                        <bdi class="quoted-from">{quote.from}</bdi>
                        {if quote.text.is_empty() { " message deleted".to_owned() } else { format!(" {}", quote.text) }}
                    </a>
                })}
                {match (m.deleted, m.html) {
                    (true, _) => EitherOf3::A(view! { <div class="text deleted">"message deleted"</div> }),
                    (false, Some(html)) => EitherOf3::B(view! { <div class="text formatted" inner_html=html></div> }),
                    (false, None) => EitherOf3::C(view! { <div class="text">{m.text}</div> }),
                }}
                {(!m.deleted && !m.reactions.is_empty()).then(|| view! {
                    <ul class="reactions">
                        {m.reactions.into_iter().enumerate().map(|(i, r)| {
                            let who = r.names.join(", ");
                            let label = format!("{} {}: {who}", r.emoji, r.count);
                            let yours = i < 32 && reacted & (1 << i) != 0;
                            let emoji = r.emoji.clone();
                            view! {
                                <li>
                                    <button type="button" class="reaction" class:yours=yours aria-pressed=if yours { "true" } else { "false" } data-action="toggle" data-emoji=emoji title=who aria-label=label>
                                        {r.emoji}" "{r.count}
                                    </button>
                                </li>
                            }
                        }).collect_view()}
                    </ul>
                })}
            </div>
            {stored.then(|| view! {
                <div class="actions" role="toolbar" aria-label="Actions">
                    <button type="button" data-action="react" aria-label="Add a reaction" title="React">"☺"</button>
                    <button type="button" data-action="reply" aria-label="Reply" title="Reply">"↩"</button>
                    {yours.then(|| view! {
                        <button type="button" data-action="edit" aria-label="Edit" title="Edit">"✎"</button>
                        <button type="button" data-action="delete" aria-label="Delete" title="Delete">"🗑"</button>
                    })}
                </div>
            })}
        </li>
    }
}

/// "ann joined the room" (`class` "line notice join"), "ann left the room".
fn notice_view(name: String, class: &'static str, says: &'static str) -> impl IntoView {
    view! {
        <li class=class>
            <strong><bdi>{name}</bdi></strong>
            {says}
        </li>
    }
}

/// A day's heading, or an error.
fn text_row(class: &'static str, text: String) -> impl IntoView {
    view! { <li class=class><span>{text}</span></li> }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn message(key: u64, from: &str, ts: u64) -> Line {
        Line {
            key,
            kind: LineKind::Message {
                seq: key,
                from: from.into(),
                text: format!("m{key}"),
                ts,
                edited: false,
                deleted: false,
                reply_to: None,
                reactions: Vec::new(),
                html: None,
            },
        }
    }

    /// Each row in short: `D1000` a day, `*m1` a message that starts a group, `m2` one that does not,
    /// `+bob` a notice, `*p:a` a pending message.
    fn show(rows: &[Row]) -> Vec<String> {
        rows.iter()
            .map(|row| match row {
                Row::Day { day, .. } => format!("D{day}"),
                Row::Unread => "NEW".into(),
                Row::Line {
                    line,
                    place:
                        Place {
                            head,
                            mine,
                            to_me,
                            reacted,
                        },
                } => {
                    let star = if *head { "*" } else { "" };
                    let you = if *mine { "(you)" } else { "" };
                    let at = if *to_me { "(@)" } else { "" };
                    let you = format!(
                        "{you}{at}{}",
                        if *reacted > 0 {
                            format!("r{reacted}")
                        } else {
                            String::new()
                        }
                    );
                    match &line.kind {
                        LineKind::Message { text, .. } => format!("{star}{text}{you}"),
                        LineKind::Joined { name } => format!("+{name}"),
                        other => format!("{other:?}"),
                    }
                }
                Row::Pending { pending, head, .. } => {
                    format!("{}p:{}", if *head { "*" } else { "" }, pending.client_id)
                }
            })
            .collect()
    }

    fn pending(id: &str) -> Pending {
        Pending::new(id.into(), "general".into(), id.into(), Outgoing::Message)
    }

    #[test]
    fn one_senders_messages_a_few_minutes_apart_share_a_name() {
        let t = 1_000 * 24 * 60 * MIN + 9 * 60 * MIN; // 09:00 UTC on day 1000
        let lines = [
            message(1, "ann", t),
            message(2, "ann", t + MIN),
            message(3, "ann", t + 5 * MIN + MIN - 1), // 4:59.999 after the one before
            message(4, "ann", t + 11 * MIN),          // 5:00.001 after: a new group
            message(5, "bob", t + 11 * MIN),
            message(6, "ann", t + 11 * MIN),
        ];
        let rows = rows(&lines, None, &[], None, None, |ts| Zone::Utc.day(ts));
        assert_eq!(
            show(&rows),
            ["D1000", "*m1", "m2", "m3", "*m4", "*m5", "*m6"]
        );
        assert_eq!(
            rows[1].key(),
            RowKey::Line {
                key: 1,
                place: Place {
                    head: true,
                    ..Place::default()
                }
            }
        );
    }

    #[test]
    fn notices_and_days_end_a_group() {
        let t = 1_000 * 24 * 60 * MIN + 23 * 60 * MIN + 58 * MIN; // 23:58 UTC
        let lines = [
            message(1, "ann", t),
            Line {
                key: 2,
                kind: LineKind::Joined { name: "bob".into() },
            },
            message(3, "ann", t + MIN),
            message(4, "ann", t + 3 * MIN), // 00:01 the next day
        ];
        let utc = rows(&lines, None, &[], None, None, |ts| Zone::Utc.day(ts));
        assert_eq!(show(&utc), ["D1000", "*m1", "+bob", "*m3", "D1001", "*m4"]);
        // Two hours ahead of UTC, all three messages fall on day 1001: one heading, and the last two
        // messages are one group.
        let ahead = rows(&lines, None, &[], None, None, |ts| {
            ((ts + 120 * MIN) / (24 * 60 * MIN)) as i64
        });
        assert_eq!(show(&ahead), ["D1001", "*m1", "+bob", "*m3", "m4"]);
    }

    #[test]
    fn a_window_continues_the_group_and_the_day_of_the_line_above_it() {
        let t = 1_000 * 24 * 60 * MIN;
        let lines = [
            message(1, "ann", t),
            message(2, "ann", t + MIN),
            message(3, "bob", t + 2 * MIN),
        ];
        let day = |ts| Zone::Utc.day(ts);
        assert_eq!(
            show(&rows(&lines[1..], Some(&lines[0]), &[], None, None, day)),
            ["m2", "*m3"]
        );
        // The first unread message is above the window: no divider inside it.
        let last_as_cy = |read_to| {
            show(&rows(
                &lines[2..],
                Some(&lines[1]),
                &[],
                Some("cy"),
                read_to,
                day,
            ))
        };
        assert_eq!(last_as_cy(Some(1)), ["*m3"]);
        assert_eq!(last_as_cy(Some(2)), ["NEW", "*m3"]);
    }

    #[test]
    fn your_pending_messages_join_your_last_group() {
        let t = 1_000 * 24 * 60 * MIN;
        let (a, b) = (pending("a"), pending("b"));
        let lines = [message(1, "bob", t), message(2, "ann", t + MIN)];
        let rows_as = |me| rows(&lines, None, &[&a, &b], me, None, |ts| Zone::Utc.day(ts));
        assert_eq!(
            show(&rows_as(Some("ann"))),
            ["D1000", "*m1", "*m2(you)", "p:a", "p:b"]
        );
        assert_eq!(
            show(&rows_as(Some("bob"))),
            ["D1000", "*m1(you)", "*m2", "*p:a", "p:b"]
        );
        assert_eq!(
            show(&rows(&[], None, &[&a], None, None, |ts| Zone::Utc.day(ts))),
            ["*p:a"]
        );
    }

    #[test]
    fn the_divider_goes_above_the_first_unread_message_of_others() {
        let t = 1_000 * 24 * 60 * MIN;
        let mut lines = vec![
            message(1, "ann", t),
            message(2, "bob", t + MIN),
            message(3, "ann", t + 2 * MIN),
        ];
        if let LineKind::Message {
            text, reactions, ..
        } = &mut lines[2].kind
        {
            *text = "hi @Bob".into();
            reactions.push(Reaction {
                emoji: "👍".into(),
                count: 1,
                names: vec!["ann".into()],
            });
            reactions.push(Reaction {
                emoji: "🎉".into(),
                count: 2,
                names: vec!["ann".into(), "bob".into()],
            });
        }
        let day = |ts| Zone::Utc.day(ts);
        // Read to 1: bob's own message 2 is not news to him, ann's 3 is (and mentions him).
        assert_eq!(
            show(&rows(&lines, None, &[], Some("bob"), Some(1), day)),
            ["D1000", "*m1", "*m2(you)", "NEW", "*hi @Bob(@)r2"]
        );
        // Read to the end, or nothing known: no divider.
        assert_eq!(
            show(&rows(&lines, None, &[], Some("bob"), Some(3), day)),
            ["D1000", "*m1", "*m2(you)", "*hi @Bob(@)r2"]
        );
        assert_eq!(
            show(&rows(&lines, None, &[], Some("cy"), None, day)),
            ["D1000", "*m1", "*m2", "*hi @Bob"]
        );
        // A pending change is not a pending message.
        let delete = Pending::new(
            "d".into(),
            "general".into(),
            String::new(),
            Outgoing::Delete(1),
        );
        assert_eq!(
            show(&rows(&lines[..1], None, &[&delete], Some("ann"), None, day)),
            ["D1000", "*m1(you)"]
        );
    }
}
