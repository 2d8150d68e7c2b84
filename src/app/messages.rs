//! The room's messages and notices, oldest first: grouped by sender, with day headings and times in
//! the reader's zone; kept scrolled to the newest; older ones page in at the top.
//!
//! Where a line sits among its neighbours (does it start a group, a day?) is worked out here, by
//! [`rows`], each time the lines change, and is part of each row's key: a line whose place changes
//! (older messages paged in above it, the zone switched to the reader's) is drawn again, and the others
//! are left alone.

use leptos::prelude::*;

use super::avatar::Avatar;
use super::time::{iso, Zone};
use crate::api::{room_history, DEFAULT_PAGE};
use crate::chat_state::{ChatState, Line, LineKind, Pending, RoomView};

/// Messages from one sender less than this apart (on one day, with no notice between) share one name.
pub const GROUP_GAP_MS: u64 = 5 * 60_000;

/// A line as the list shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub line: Line,
    /// Starts a group of messages: shows the avatar and the name.
    pub head: bool,
    /// Starts a day (a message on another day than the message before it): the day's number (see
    /// [`Zone::day`]), whose heading goes above it.
    pub day: Option<i64>,
}

/// Places each line: a message starts a group unless the line before it is a message from the same
/// sender, less than [`GROUP_GAP_MS`] earlier and on the same day (by `day_of`); notices and errors
/// end a group.
pub fn rows(lines: &[Line], day_of: impl Fn(u64) -> i64) -> Vec<Row> {
    let mut rows = Vec::with_capacity(lines.len());
    // The line before, if it is a message: its sender and time.
    let mut previous: Option<(&str, u64)> = None;
    let mut last_day = None;
    for line in lines {
        let (head, day) = match &line.kind {
            LineKind::Message { from, ts, .. } => {
                let day = day_of(*ts);
                let new_day = last_day != Some(day);
                last_day = Some(day);
                // Times out of order (two nodes' clocks) count as no gap.
                let follows = previous
                    .is_some_and(|(who, at)| who == from && ts.saturating_sub(at) < GROUP_GAP_MS);
                previous = Some((from, *ts));
                (new_day || !follows, new_day.then_some(day))
            }
            _ => {
                previous = None;
                (false, None)
            }
        };
        rows.push(Row {
            line: line.clone(),
            head,
            day,
        });
    }
    rows
}

/// The list of one room's lines, then your messages still on their way.
#[component]
pub fn MessageList(chat: ChatState, room: String) -> impl IntoView {
    let list = NodeRef::<leptos::html::Div>::new();
    // UTC as the server rendered it, until this effect runs: in the browser, after hydration (or, for
    // a room opened later, right after its first render), and before the next paint.
    let zone = RwSignal::new(Zone::Utc);
    Effect::new(move |_| zone.set(Zone::Local));
    let lines = {
        let room = room.clone();
        move || {
            let zone = zone.get();
            chat.read_room(&room, |view| rows(&view.lines, |ts| zone.day(ts)))
        }
    };
    // Your messages waiting for the server's acknowledgement; the first starts a group of its own
    // unless your message is the last line already.
    let pending = {
        let room = room.clone();
        move || {
            let mine_last = chat.me.with(|me| {
                chat.read_room(&room, |view| match view.lines.last() {
                    Some(Line {
                        kind: LineKind::Message { from, .. },
                        ..
                    }) => me.as_ref() == Some(from),
                    _ => false,
                })
            });
            chat.pending.with(|p| {
                p.iter()
                    .filter(|p| p.room == room)
                    .enumerate()
                    .map(|(i, p)| (p.clone(), i == 0 && !mine_last))
                    .collect::<Vec<_>>()
            })
        }
    };
    let empty = {
        let room = room.clone();
        move || {
            chat.read_room(&room, |view| view.lines.is_empty())
                && chat.pending.with(|p| !p.iter().any(|p| p.room == room))
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
    // A log: a polite live region whose additions are read out. Focusable, so that it can be scrolled
    // with the keyboard.
    view! {
        <div
            class="messages"
            node_ref=list
            role="log"
            aria-live="polite"
            aria-label=format!("Messages in #{room}")
            tabindex="0"
            on:scroll=on_scroll
        >
            <ol>
                <Show when=has_older>
                    <li class="older">
                        <button type="button" class="secondary" on:click={
                            let load_older = load_older.clone();
                            move |_| load_older()
                        }>"Load older messages"</button>
                    </li>
                </Show>
                <Show when=empty>
                    <li class="empty">"No messages yet. Say hello!"</li>
                </Show>
                <For each=lines key=|row| (row.line.key, row.head, row.day) let:row>
                    <RowView chat row zone/>
                </For>
                <For each=pending key=|(p, head)| (p.client_id.clone(), *head) let:pending>
                    <PendingView chat pending=pending.0 head=pending.1/>
                </For>
            </ol>
        </div>
    }
    // Type-erased: the room's view type would otherwise be too deep to compile for the browser.
    .into_any()
}

#[component]
fn RowView(chat: ChatState, row: Row, zone: RwSignal<Zone>) -> impl IntoView {
    match row.line.kind {
        LineKind::Message {
            seq,
            from,
            text,
            ts,
        } => {
            let mine = {
                let from = from.clone();
                move || chat.me.with(|me| me.as_deref() == Some(from.as_str()))
            };
            // A new day's heading is an item of its own, before the message's.
            let day = row.day.map(|_| {
                view! { <li class="day"><span>{move || zone.get().day_label(ts)}</span></li> }
            });
            let avatar = row.head.then(|| view! { <Avatar name=from.clone()/> });
            view! {
                {day}
                <li class="line message" class:head=row.head class:mine=mine data-seq=seq>
                    {avatar}
                    <div class="body">
                        // In a group only the first name shows; the others are there for screen
                        // readers, which read each message on its own.
                        <strong class="from" class:sr-only=!row.head><bdi>{from}</bdi></strong>
                        " "
                        <time class="ts" datetime=iso(ts) title=move || zone.get().full(ts)>
                            {move || zone.get().clock(ts)}
                        </time>
                        <div class="text">{text}</div>
                    </div>
                </li>
            }
            .into_any()
        }
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

/// One of your messages on its way, shown as "sending…" until the server has it.
#[component]
fn PendingView(chat: ChatState, pending: Pending, head: bool) -> impl IntoView {
    let me = move || chat.me.get().unwrap_or_default();
    view! {
        <li class="line message mine pending" class:head=head>
            {head.then(|| view! { <Avatar name=me()/> })}
            <div class="body">
                <strong class="from" class:sr-only=!head><bdi>{me}</bdi></strong>
                " "
                <span class="ts">"sending…"</span>
                <div class="text">{pending.text}</div>
            </div>
        </li>
    }
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
            },
        }
    }

    fn heads(rows: &[Row]) -> Vec<bool> {
        rows.iter().map(|r| r.head).collect()
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
        let rows = rows(&lines, |ts| Zone::Utc.day(ts));
        assert_eq!(heads(&rows), [true, false, false, true, true, true]);
        assert_eq!(
            rows.iter().map(|r| r.day).collect::<Vec<_>>(),
            [Some(1000), None, None, None, None, None]
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
        let utc = rows(&lines, |ts| Zone::Utc.day(ts));
        assert_eq!(heads(&utc), [true, false, true, true]);
        assert_eq!(
            utc.iter().map(|r| r.day).collect::<Vec<_>>(),
            [Some(1000), None, None, Some(1001)]
        );
        // Two hours ahead of UTC, all three messages fall on day 1001: one heading, and the last two
        // messages are one group.
        let ahead = rows(&lines, |ts| ((ts + 120 * MIN) / (24 * 60 * MIN)) as i64);
        assert_eq!(heads(&ahead), [true, false, true, false]);
        assert_eq!(
            ahead.iter().map(|r| r.day).collect::<Vec<_>>(),
            [Some(1001), None, None, None]
        );
    }
}
