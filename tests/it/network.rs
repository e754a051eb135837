//! Streaming through an impaired link (`testkit::impair`): the server in namespace A (198.18.0.1), Chromium
//! in namespace B (198.18.0.2), everything between them through the userspace forwarder's loss, delay, rate
//! limit and blackouts.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use testkit::impair::{ADDR_A, ImpairedLink, LinkSpec};
use testkit::pattern::PatternKind;

use crate::stream::{SERIAL, Server, http};
use crate::support::Fixture;
use crate::support::browser::{Browser, Page};

/// A server behind the link and a Chromium viewer on the far side. Drop order: page, browser, server, desktop,
/// link.
struct Session {
    page: Page,
    _browser: Browser,
    srv: Server,
    _f: Fixture,
    link: Arc<ImpairedLink>,
}

impl Session {
    /// Start on a fresh link with `spec`; the viewer page is opened but not waited for.
    fn start(spec: &str, pattern: PatternKind, w: u32, h: u32, extra: &[&str]) -> Session {
        let link = Arc::new(ImpairedLink::new(spec.parse().expect("link spec")).expect("impaired link (needs root)"));
        let f = Fixture::with_pattern(w, h, pattern);
        let listen = format!("{ADDR_A}:0");
        let mut args = vec!["start", "--listen", &listen, "--no-tls"];
        args.extend(extra);
        let mut cmd = f.cli(&args);
        link.a.command(&mut cmd);
        let srv = Server::spawn(cmd);
        let url = srv.url("/");
        let (browser, page) = link.b.run(move || {
            let browser = Browser::launch();
            let page = browser.new_page(&url);
            (browser, page)
        });
        Session { page, _browser: browser, srv, _f: f, link }
    }

    /// `/api/status`, asked from the server's side of the link.
    fn status(&self) -> Value {
        let url = self.srv.url("/api/status");
        self.link.a.run(move || {
            let (code, body) = http("GET", &url, &[], "");
            assert_eq!(code, 200, "{body}");
            serde_json::from_str(&body).expect("json")
        })
    }
}

const DECODING: &str = "window.wlw && wlw.stats && wlw.stats.framesDecoded > 30";

#[test]
fn after_a_one_second_blackout_the_picture_is_back_quickly() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Session::start("delay=10ms", PatternKind::MovingBar, 1280, 720, &[]);
    s.page.wait_for(DECODING, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    // The blackout starts now, in the link's clock; the page notes its own "now".
    let t_page = s.page.eval("performance.now()").as_f64().expect("page clock");
    s.link.set(LinkSpec {
        delay: Duration::from_millis(10),
        blackouts: vec![(s.link.uptime(), Duration::from_secs(1))],
        ..Default::default()
    });
    std::thread::sleep(Duration::from_secs(4));
    let back = s
        .page
        .eval(&format!("wlw.frames.times.find(t => t > {} + 1000)", t_page))
        .as_f64()
        .map(|t| t - (t_page + 1000.0));
    let (ab, ba) = s.link.stats();
    eprintln!("1 s blackout: the first frame {back:?} ms after the link returned; A→B {ab:?}; B→A {ba:?}");
    let back = back.expect("no frame after the blackout");
    assert!(back < 500.0, "the picture came back {back:.0} ms after the link did");
    assert!(ab.lost_blackout > 0, "{ab:?}");
    assert_eq!(s.status()["viewers"].as_u64(), Some(1), "the viewer stayed");
}
