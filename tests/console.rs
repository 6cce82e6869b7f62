//! `GET /console` (API.md §14): the embedded page and its files, each with the security
//! headers; the browser test (`console/test/console.test.mjs`) drives the page itself.

mod common;

use common::*;

#[test]
fn the_console_is_served_with_its_security_headers() {
    let h = Hookd::start(&[]);
    for (path, kind) in [
        ("/console", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/app.css", "text/css"),
    ] {
        let r = h.raw(reqwest::Method::GET, path).send().unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        let csp = header("content-security-policy");
        assert!(csp.starts_with("default-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert_eq!(header("referrer-policy"), "no-referrer");
        let body = r.text().unwrap();
        if kind == "text/html" {
            assert!(!body.contains("<script>"), "no inline script");
            assert!(!body.contains("style="), "no inline style");
            assert!(
                !body.contains("http://") && !body.contains("https://"),
                "no other origin"
            );
        }
    }
}
