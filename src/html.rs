//! Escaping text into HTML: the one escaper for the HTML this project writes itself, on the server
//! (formatted messages, `server/markdown.rs`) and in the page (search hits, `app/search.rs`).

/// Appends `text` to `html` with `&`, `<`, `>`, `"` and `'` escaped: safe as element content and
/// inside a quoted attribute.
pub fn escape(html: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => html.push_str("&amp;"),
            '<' => html.push_str("&lt;"),
            '>' => html.push_str("&gt;"),
            '"' => html.push_str("&quot;"),
            '\'' => html.push_str("&#39;"),
            c => html.push(c),
        }
    }
}
