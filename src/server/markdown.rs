//! Message formatting: a safe Markdown subset rendered to HTML on the server, with pulldown-cmark's
//! parser and a writer of our own that only ever emits the tags below.
//!
//! **What renders**: `**bold**`, `*italic*`, `` `code` ``, fenced and indented code blocks, quotes,
//! lists, line breaks, `[links](https://…)` and bare `http(s)://` URLs (as links with
//! `rel="noopener noreferrer"`). Headings show as bold lines; images as their alt text.
//! **What never does**: raw HTML (block or inline) is shown as the text it is; a link to anything but
//! `http:`, `https:` or `mailto:` (`javascript:`, `data:`…) keeps its text and loses its link. Every
//! piece of text is escaped, so no input can make the writer emit a tag or attribute it does not
//! choose.
//!
//! Rendered here only, never in the page: the page shows the HTML it is sent (`ChatMessage::html`),
//! so the server's render and the hydrated page's are the same bytes, and the WASM carries no parser.
//! A message without formatting gets no HTML at all (the page shows its text).

use std::fmt::Write;

use pulldown_cmark::{CodeBlockKind, Event, Parser, Tag, TagEnd};

use crate::html::escape;

/// A message's HTML is at most this many times its text, plus [`MAX_HTML_EXTRA`] bytes; past that
/// (text made of characters that escape to several bytes each) it gets none, and the page shows the
/// text as it is. So formatting never multiplies what a message costs to replay or send by more than
/// a small factor.
pub const MAX_HTML_GROWTH: usize = 2;
pub const MAX_HTML_EXTRA: usize = 1024;

/// The message's HTML, or `None` when it has no formatting (paragraphs of plain text, no link): the
/// page shows such text as it is, line breaks included. Line breaks are written as line breaks (the
/// page keeps white space in a message), so the HTML's text is the message's.
pub fn render(text: &str) -> Option<String> {
    let mut html = String::with_capacity(text.len() + text.len() / 4 + 16);
    let mut plain = true;
    // For each link open: whether its `<a>` was written (a refused destination writes none).
    let mut links: Vec<bool> = Vec::new();
    // Inside a code block, an image's alt text or a link: text as it is, no autolinks.
    let mut verbatim = 0usize;
    for event in Parser::new(text) {
        match event {
            Event::Start(tag) => {
                plain &= matches!(tag, Tag::Paragraph);
                open(&mut html, tag, &mut links, &mut verbatim);
            }
            Event::End(tag) => close(&mut html, tag, &mut links, &mut verbatim),
            Event::Text(text) if verbatim > 0 => escape(&mut html, &text),
            Event::Text(text) => plain &= !autolink(&mut html, &text),
            Event::Code(code) => {
                plain = false;
                html.push_str("<code>");
                escape(&mut html, &code);
                html.push_str("</code>");
            }
            // Raw HTML is shown as the text it is.
            Event::Html(raw) | Event::InlineHtml(raw) => {
                plain = false;
                escape(&mut html, &raw);
            }
            Event::SoftBreak | Event::HardBreak => html.push('\n'),
            Event::Rule => {
                plain = false;
                html.push_str("<hr>");
            }
            Event::FootnoteReference(text) | Event::InlineMath(text) | Event::DisplayMath(text) => {
                escape(&mut html, &text)
            }
            Event::TaskListMarker(done) => html.push_str(if done { "[x] " } else { "[ ] " }),
        }
    }
    let bounded = html.len() <= MAX_HTML_GROWTH * text.len() + MAX_HTML_EXTRA;
    (!plain && bounded).then_some(html)
}

fn open(html: &mut String, tag: Tag, links: &mut Vec<bool>, verbatim: &mut usize) {
    match tag {
        Tag::Paragraph => html.push_str("<p>"),
        Tag::Heading { .. } => html.push_str("<p><strong>"),
        Tag::BlockQuote(_) => html.push_str("<blockquote>"),
        Tag::CodeBlock(kind) => {
            *verbatim += 1;
            html.push_str("<pre><code");
            if let CodeBlockKind::Fenced(language) = kind {
                let language = language.split_whitespace().next().unwrap_or("");
                if !language.is_empty() {
                    html.push_str(" data-language=\"");
                    escape(html, language);
                    html.push('"');
                }
            }
            html.push('>');
        }
        Tag::List(Some(1)) => html.push_str("<ol>"),
        Tag::List(Some(start)) => {
            let _ = write!(html, "<ol start=\"{start}\">");
        }
        Tag::List(None) => html.push_str("<ul>"),
        Tag::Item => html.push_str("<li>"),
        Tag::Emphasis => html.push_str("<em>"),
        Tag::Strong => html.push_str("<strong>"),
        Tag::Strikethrough => html.push_str("<del>"),
        Tag::Link { dest_url, .. } => {
            *verbatim += 1;
            let safe = is_safe_link(&dest_url);
            if safe {
                link_start(html, &dest_url);
            }
            links.push(safe);
        }
        // Its alt text, as text.
        Tag::Image { .. } => *verbatim += 1,
        _ => {}
    }
}

fn close(html: &mut String, tag: TagEnd, links: &mut Vec<bool>, verbatim: &mut usize) {
    match tag {
        TagEnd::Paragraph => html.push_str("</p>"),
        TagEnd::Heading(_) => html.push_str("</strong></p>"),
        TagEnd::BlockQuote(_) => html.push_str("</blockquote>"),
        TagEnd::CodeBlock => {
            *verbatim = verbatim.saturating_sub(1);
            html.push_str("</code></pre>");
        }
        TagEnd::List(true) => html.push_str("</ol>"),
        TagEnd::List(false) => html.push_str("</ul>"),
        TagEnd::Item => html.push_str("</li>"),
        TagEnd::Emphasis => html.push_str("</em>"),
        TagEnd::Strong => html.push_str("</strong>"),
        TagEnd::Strikethrough => html.push_str("</del>"),
        TagEnd::Link => {
            *verbatim = verbatim.saturating_sub(1);
            if links.pop() == Some(true) {
                html.push_str("</a>");
            }
        }
        TagEnd::Image => *verbatim = verbatim.saturating_sub(1),
        _ => {}
    }
}

/// Only links that leave for the web or a mail client: never `javascript:`, `data:`, a relative
/// path into this site, or anything else a browser would run or resolve here.
fn is_safe_link(url: &str) -> bool {
    let lower = url.trim_start().to_ascii_lowercase();
    ["http://", "https://", "mailto:"]
        .iter()
        .any(|scheme| lower.starts_with(scheme) && lower.len() > scheme.len())
}

fn link_start(html: &mut String, url: &str) {
    html.push_str("<a href=\"");
    escape(html, url);
    html.push_str("\" rel=\"noopener noreferrer\" target=\"_blank\">");
}

/// Writes `text` escaped, with each bare `http(s)://` URL in it as a link and each `@name` as a
/// mention; whether it made any.
fn autolink(html: &mut String, text: &str) -> bool {
    let mut rest = text;
    let mut linked = false;
    while let Some(start) = find_url(rest) {
        let (before, from) = rest.split_at(start);
        linked |= mentions(html, before);
        let end = from
            .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"' | '`'))
            .unwrap_or(from.len());
        // Trailing punctuation ends a sentence, not the URL.
        let url = from
            .get(..end)
            .unwrap_or(from)
            .trim_end_matches(['.', ',', ';', ':', '!', '?', ')', '\'']);
        if url.len() > "https://".len() {
            link_start(html, url);
            escape(html, url);
            html.push_str("</a>");
            linked = true;
        } else {
            escape(html, url);
        }
        rest = from.get(url.len()..).unwrap_or_default();
    }
    linked | mentions(html, rest)
}

/// Writes `text` escaped, with each `@name` in it (an `@` that starts a word, then letters, digits,
/// `_`, `-` or inner dots) as `<span class="mention">`; whether it marked any. The page makes a mention
/// of its reader stronger; here every mention is marked alike, so the HTML is the same for everyone.
fn mentions(html: &mut String, text: &str) -> bool {
    let is_name = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.');
    let mut marked = false;
    let mut written = 0;
    for (at, _) in text.match_indices('@') {
        let starts_word = text[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric() && c != '_');
        let after = &text[at + 1..];
        let end = after.find(|c: char| !is_name(c)).unwrap_or(after.len());
        let name = after[..end].trim_end_matches('.');
        if at < written || !starts_word || name.is_empty() {
            continue;
        }
        escape(html, &text[written..at]);
        html.push_str("<span class=\"mention\">@");
        escape(html, name);
        html.push_str("</span>");
        written = at + 1 + name.len();
        marked = true;
    }
    escape(html, &text[written..]);
    marked
}

fn find_url(text: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    match (lower.find("http://"), lower.find("https://")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::{render, MAX_HTML_EXTRA, MAX_HTML_GROWTH};

    #[test]
    fn plain_text_needs_no_html() {
        assert_eq!(render("hello there"), None);
        assert_eq!(render("1 < 2 & so on"), None);
    }

    #[test]
    fn mentions_are_marked_and_addresses_are_not() {
        assert_eq!(
            render("hi @ann-b and @Zoë. mail bob@example.com, @ alone").as_deref(),
            Some(
                "<p>hi <span class=\"mention\">@ann-b</span> and <span class=\"mention\">@Zoë</span>. \
                 mail bob@example.com, @ alone</p>"
            )
        );
        assert_eq!(
            render("**@ann** <b>@x</b>").as_deref(),
            Some(
                "<p><strong><span class=\"mention\">@ann</span></strong> &lt;b&gt;\
                 <span class=\"mention\">@x</span>&lt;/b&gt;</p>"
            )
        );
        assert_eq!(render("no one here, ann@x"), None);
    }

    #[test]
    fn the_subset_renders() {
        assert_eq!(
            render("**bold** and *it* and `x<y`").as_deref(),
            Some("<p><strong>bold</strong> and <em>it</em> and <code>x&lt;y</code></p>")
        );
        assert_eq!(
            render("```rust\nfn main() {}\n```").as_deref(),
            Some("<pre><code data-language=\"rust\">fn main() {}\n</code></pre>")
        );
        assert_eq!(
            render("> quoted").as_deref(),
            Some("<blockquote><p>quoted</p></blockquote>")
        );
        assert_eq!(render("one\ntwo"), None, "line breaks are not formatting");
        assert_eq!(
            render("*one*\ntwo").as_deref(),
            Some("<p><em>one</em>\ntwo</p>")
        );
        assert_eq!(
            render("see https://example.com/a?b=1&c=2.").as_deref(),
            Some(
                "<p>see <a href=\"https://example.com/a?b=1&amp;c=2\" rel=\"noopener noreferrer\" \
                 target=\"_blank\">https://example.com/a?b=1&amp;c=2</a>.</p>"
            )
        );
    }

    #[test]
    fn html_never_grows_far_past_its_text() {
        // Every `&` escapes to five bytes: past the bound the text is shown as it is, without HTML.
        let amplified = format!("**a** {}", "&".repeat(10_000));
        assert_eq!(render(&amplified), None);
        let fine = format!("**a** {}", "&".repeat(100));
        assert!(render(&fine)
            .is_some_and(|html| html.len() <= MAX_HTML_GROWTH * fine.len() + MAX_HTML_EXTRA));
    }

    #[test]
    fn hostile_input_renders_inert() {
        let script = render("<script>alert(1)</script>").unwrap();
        assert!(!script.contains("<script"), "{script}");
        assert!(script.contains("&lt;script&gt;"), "{script}");
        let inline = render("hi <img src=x onerror=alert(1)> there").unwrap();
        assert!(!inline.contains("<img"), "{inline}");
        for hostile in [
            "[click](javascript:alert(1))",
            "[click](JavaScript:alert(1))",
            "[click]( javascript:alert(1))",
            "[click](data:text/html,<script>alert(1)</script>)",
            "<javascript:alert(1)>",
            "[x](/relative)",
        ] {
            let html = render(hostile).unwrap_or_default();
            assert!(!html.contains("href"), "{hostile} -> {html}");
        }
        let quoted = render("[a](https://x.example/\"onmouseover=alert(1))").unwrap();
        assert!(!quoted.contains("\"onmouseover"), "{quoted}");
        let image = render("![alt <b>](https://x.example/i.png)").unwrap();
        assert!(!image.contains("<img") && !image.contains("<b>"), "{image}");
    }
}
