//! The room's messages and notices, oldest first: grouped by sender, under day headings, with times in
//! the reader's zone; then your messages on their way. Kept scrolled to the newest; older ones page in
//! at the top.
//!
//! Where each line sits among its neighbours (does it start a group? a day?) is worked out here, by
//! [`rows`], each time the lines change, and is part of each row's key: a line whose place changes
//! (older messages paged in above it, the zone switched to the reader's) is drawn again, and the others
//! are left alone. One keyed list holds it all: every list of another item type would compile its own
//! copy of the keyed diffing into the WASM.

use leptos::prelude::*;

use super::avatar::avatar;
use super::time::{iso, ShownZone, Zone};
use crate::api::{room_history, DEFAULT_PAGE};
use crate::chat_state::{ChatState, Line, LineKind, Pending, RoomView};
use crate::protocol::{Quote, Reaction};

/// Messages from one sender less than this apart (on one day, with no notice between) share one name.
pub const GROUP_GAP_MS: u64 = 5 * 60_000;

/// One item of the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Row {
    /// The heading of a day (its number, see [`Zone::day`]), above its first message (sent at `ts`).
    Day { day: i64, ts: u64 },
    /// A line of the room. `head`: a message that starts a group, shown with its avatar and name;
    /// `mine`: a message under your name.
    Line { line: Line, head: bool, mine: bool },
    /// One of your messages on its way (`from`: your name); `head` as for a line.
    Pending {
        pending: Pending,
        from: String,
        head: bool,
    },
}

/// What identifies a row's DOM: a row whose key changes is drawn again.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RowKey {
    Day(i64),
    Line { key: u64, head: bool, mine: bool },
    Pending { client_id: String, head: bool },
}

impl Row {
    pub fn key(&self) -> RowKey {
        match self {
            Row::Day { day, .. } => RowKey::Day(*day),
            Row::Line { line, head, mine } => RowKey::Line {
                key: line.key,
                head: *head,
                mine: *mine,
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
/// gets the day's heading. Your pending messages follow, the first in a group of its own unless the
/// last line is your message.
pub fn rows(
    lines: &[Line],
    pending: &[&Pending],
    me: Option<&str>,
    day_of: impl Fn(u64) -> i64,
) -> Vec<Row> {
    let mut rows = Vec::with_capacity(lines.len() + pending.len() + 2);
    // The line before, if it is a message: its sender and time.
    let mut previous: Option<(&str, u64)> = None;
    let mut last_day = None;
    for line in lines {
        let (head, mine) = match &line.kind {
            LineKind::Message { from, ts, .. } => {
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
                (new_day || !follows, me == Some(from.as_str()))
            }
            _ => {
                previous = None;
                (false, false)
            }
        };
        rows.push(Row::Line {
            line: line.clone(),
            head,
            mine,
        });
    }
    let mine_last = previous.is_some_and(|(who, _)| Some(who) == me);
    rows.extend(
        pending
            .iter()
            .enumerate()
            .map(|(i, &pending)| Row::Pending {
                pending: pending.clone(),
                from: me.unwrap_or_default().to_owned(),
                head: i == 0 && !mine_last,
            }),
    );
    rows
}

/// The list of one room's lines, then your messages still on their way.
#[component]
pub fn MessageList(chat: ChatState, room: String) -> impl IntoView {
    let list = NodeRef::<leptos::html::Div>::new();
    // UTC as the server rendered it, until this effect runs: in the browser, after the list is
    // hydrated, and before the next paint. The zone is part of every row's key, so each row is drawn
    // once more then, in local time; the rows themselves hold no reactive parts (your name, the zone:
    // all in the key). The zone is the page's (lists of rooms opened later start in local time): a
    // signal of this list's own would be gone when the room changes, while the old list may still
    // read it once.
    let zone = expect_context::<ShownZone>().0;
    Effect::new(move |_| zone.set(Zone::Local));
    let rows = {
        let room = room.clone();
        move || {
            let zone = zone.get();
            chat.me.with(|me| {
                chat.pending.with(|pending| {
                    let pending: Vec<&Pending> =
                        pending.iter().filter(|p| p.room == room).collect();
                    chat.read_room(&room, |view| {
                        rows(&view.lines, &pending, me.as_deref(), |ts| zone.day(ts))
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
            aria-label=format!("Conversation in #{room}")
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
                <For each=rows key=|(row, zone)| (row.key(), *zone) let:((row, zone))>
                    {row_view(row, zone)}
                </For>
            </ol>
        </div>
    }
}

fn row_view(row: Row, zone: Zone) -> AnyView {
    match row {
        Row::Day { ts, .. } => text_row("day", zone.day_label(ts)),
        Row::Pending {
            pending,
            from,
            head,
        } => message_view(Message {
            from,
            head,
            mine: true,
            seq: None,
            time: "sending…".into(),
            datetime: None,
            title: None,
            text: pending.text,
            ..Message::default()
        }),
        Row::Line { line, head, mine } => match line.kind {
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
            } => message_view(Message {
                from,
                head,
                mine,
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
            }),
            LineKind::Joined { name } => notice_view(name, "line notice join", " joined the room"),
            LineKind::Left { name } => notice_view(name, "line notice leave", " left the room"),
            LineKind::Error { text } => text_row("line error", text),
        },
    }
}

/// What a message row shows.
#[derive(Default)]
struct Message {
    from: String,
    head: bool,
    mine: bool,
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

/// A message: the avatar and the name if it starts a group, the time, the text.
fn message_view(m: Message) -> AnyView {
    view! {
        <li class="line message" class:head=m.head class:mine=m.mine class:pending=m.seq.is_none() class:deleted=m.deleted id=m.seq.map(|seq| format!("m{seq}")) data-seq=m.seq>
            {m.head.then(|| avatar(&m.from))}
            <div class="body">
                // In a group only the first name shows; the others are there for screen readers,
                // which read each message on its own.
                <strong class="from" class:sr-only=!m.head><bdi>{m.from}</bdi></strong>
                " "
                <time class="ts" datetime=m.datetime title=m.title>{m.time}</time>
                {m.edited.then(|| view! { <span class="edited">"(edited)"</span> })}
                {m.reply_to.map(|quote| view! {
                    <a class="quote" href=format!("#m{}", quote.seq) data-reply-to=quote.seq>
                        <bdi class="quoted-from">{quote.from}</bdi>
                        {if quote.text.is_empty() { " message deleted".to_owned() } else { format!(" {}", quote.text) }}
                    </a>
                })}
                {match (m.deleted, m.html) {
                    (true, _) => view! { <div class="text deleted">"message deleted"</div> }.into_any(),
                    (false, Some(html)) => view! { <div class="text formatted" inner_html=html></div> }.into_any(),
                    (false, None) => view! { <div class="text">{m.text}</div> }.into_any(),
                }}
                {(!m.deleted && !m.reactions.is_empty()).then(|| view! {
                    <ul class="reactions">
                        {m.reactions.into_iter().map(|r| {
                            let who = r.names.join(", ");
                            view! { <li class="reaction" title=who>{r.emoji}" "{r.count}</li> }
                        }).collect_view()}
                    </ul>
                })}
            </div>
        </li>
    }
    .into_any()
}

/// "ann joined the room" (`class` "line notice join"), "ann left the room".
fn notice_view(name: String, class: &'static str, says: &'static str) -> AnyView {
    view! {
        <li class=class>
            <strong><bdi>{name}</bdi></strong>
            {says}
        </li>
    }
    .into_any()
}

/// A day's heading, or an error.
fn text_row(class: &'static str, text: String) -> AnyView {
    view! { <li class=class><span>{text}</span></li> }.into_any()
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
                Row::Line { line, head, mine } => {
                    let star = if *head { "*" } else { "" };
                    let you = if *mine { "(you)" } else { "" };
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
        Pending {
            client_id: id.into(),
            room: "general".into(),
            text: id.into(),
        }
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
        let rows = rows(&lines, &[], None, |ts| Zone::Utc.day(ts));
        assert_eq!(
            show(&rows),
            ["D1000", "*m1", "m2", "m3", "*m4", "*m5", "*m6"]
        );
        assert_eq!(
            rows[1].key(),
            RowKey::Line {
                key: 1,
                head: true,
                mine: false
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
        let utc = rows(&lines, &[], None, |ts| Zone::Utc.day(ts));
        assert_eq!(show(&utc), ["D1000", "*m1", "+bob", "*m3", "D1001", "*m4"]);
        // Two hours ahead of UTC, all three messages fall on day 1001: one heading, and the last two
        // messages are one group.
        let ahead = rows(&lines, &[], None, |ts| {
            ((ts + 120 * MIN) / (24 * 60 * MIN)) as i64
        });
        assert_eq!(show(&ahead), ["D1001", "*m1", "+bob", "*m3", "m4"]);
    }

    #[test]
    fn your_pending_messages_join_your_last_group() {
        let t = 1_000 * 24 * 60 * MIN;
        let (a, b) = (pending("a"), pending("b"));
        let lines = [message(1, "bob", t), message(2, "ann", t + MIN)];
        let rows_as = |me| rows(&lines, &[&a, &b], me, |ts| Zone::Utc.day(ts));
        assert_eq!(
            show(&rows_as(Some("ann"))),
            ["D1000", "*m1", "*m2(you)", "p:a", "p:b"]
        );
        assert_eq!(
            show(&rows_as(Some("bob"))),
            ["D1000", "*m1(you)", "*m2", "*p:a", "p:b"]
        );
        assert_eq!(
            show(&rows(&[], &[&a], None, |ts| Zone::Utc.day(ts))),
            ["*p:a"]
        );
    }
}
