//! The status page: who holds what, since when, who waits, and the recent
//! hand-overs, for an operator at `kubectl port-forward` distance.
//!
//! `GET /status` is HTML with this elector's identity and store filled in
//! here; `GET /status.js` lists every lock and election through the API
//! (`/v1/locks`, `/v1/elections`) and follows `/v1/history` with a
//! long-poll, from the browser; `GET /status.css` styles it. The three are
//! compiled into the binary, so the page works with no network beyond the
//! elector.
//!
//! It is routed on the API port only ([`crate::api::router`]), never on the
//! probe port (`--health-listen`): lock names and holders are for whoever
//! may reach the lease API, not for the pod network.
//!
//! Names and holders are chosen by clients, so the page treats them as
//! text: the script writes them with `textContent` only, the two values
//! rendered here are escaped, and the Content-Security-Policy allows no
//! inline script and no other origin, so a name that smuggles markup in
//! still cannot run.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::service::Service;

const PAGE: &str = include_str!("status/index.html");
/// The script, two files (what it knows and how it learns it; how it
/// draws it) under one function scope, so no name of theirs is global.
const SCRIPT: &str = concat!("(() => {\n", include_str!("status/live.js"), include_str!("status/view.js"), "})();\n");
const STYLE: &str = include_str!("status/status.css");

/// What the page may load: itself, its script and style, and the API it
/// calls, all from the elector; nothing inline, no frames, no forms.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; object-src 'none'";

/// `GET /status`: the page.
pub async fn page(State(service): State<Arc<Service>>) -> Response {
    let html =
        PAGE.replace("{{identity}}", &escape(service.identity())).replace("{{store}}", &escape(service.store_name()));
    answer("text/html; charset=utf-8", html)
}

/// `GET /status.js`: the script that fills the page and keeps it live.
pub async fn script() -> Response {
    answer("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /status.css`: the page's style.
pub async fn style() -> Response {
    answer("text/css; charset=utf-8", STYLE)
}

fn answer(content_type: &'static str, body: impl Into<Body>) -> Response {
    let headers: [(HeaderName, HeaderValue); 5] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        // Holders change by the second: a cached page would show old ones.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
    ];
    (headers, body.into()).into_response()
}

/// `text` as HTML text or attribute value.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_a_name_is_escaped_as_text() {
        assert_eq!(
            escape(r#"<img src=x onerror="a('b')">&"#),
            "&lt;img src=x onerror=&quot;a(&#39;b&#39;)&quot;&gt;&amp;"
        );
        assert_eq!(escape("pod-7.ns"), "pod-7.ns");
    }

    #[test]
    fn the_page_has_its_placeholders_and_loads_nothing_inline_or_from_elsewhere() {
        assert!(PAGE.contains("{{identity}}") && PAGE.contains("{{store}}"));
        let lower = PAGE.to_ascii_lowercase();
        // Inline script, handlers and style are refused by the policy: the
        // page would look right here and be dead in a browser.
        assert_eq!(lower.matches("<script").count(), lower.matches("<script src=\"/status.js\"").count());
        let handler = lower.split(" on").skip(1).find(|rest| {
            let attr: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
            !attr.is_empty() && rest[attr.len()..].starts_with('=')
        });
        assert!(handler.is_none(), "an inline handler: on{handler:?}");
        assert!(!lower.contains(" style=") && !lower.contains("<style"), "inline style is refused by the CSP");
        for external in ["http://", "https://", "//cdn"] {
            assert!(!lower.contains(external), "the page must work offline: {external}");
        }
        assert!(!SCRIPT.contains("innerHTML") && !SCRIPT.contains("insertAdjacentHTML"), "names go in as text only");
    }
}
