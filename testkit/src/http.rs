//! A tiny static HTTP/1.1 server on 127.0.0.1 for browser tests: serves in-memory pages by path (GET/HEAD,
//! one request per connection, `Connection: close`). Dropping it stops the server and joins every thread.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long one connection may take to send its request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One in-memory resource.
#[derive(Clone)]
struct Resource {
    content_type: String,
    body: Vec<u8>,
}

/// A running static server; stops on drop.
pub struct HttpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Serve `(path, content_type, body)` resources on 127.0.0.1 at an ephemeral port; other paths get 404.
    pub fn start<'a>(resources: impl IntoIterator<Item = (&'a str, &'a str, Vec<u8>)>) -> HttpServer {
        let table: HashMap<String, Resource> = resources
            .into_iter()
            .map(|(path, ty, body)| (path.to_owned(), Resource { content_type: ty.to_owned(), body }))
            .collect();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind test HTTP server on 127.0.0.1");
        let addr = listener.local_addr().expect("local_addr");
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (stop, requests) = (stop.clone(), requests.clone());
            std::thread::Builder::new()
                .name("test-http".to_owned())
                .spawn(move || accept_loop(listener, Arc::new(table), stop, requests))
                .expect("spawn test HTTP server")
        };
        HttpServer { addr, stop, requests, acceptor: Some(acceptor) }
    }

    /// Serve HTML pages: `(path, html)`.
    pub fn html(pages: &[(&str, &str)]) -> HttpServer {
        HttpServer::start(
            pages.iter().map(|(path, html)| (*path, "text/html; charset=utf-8", html.as_bytes().to_vec())),
        )
    }

    /// The bound address (127.0.0.1:port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` + `path` (`path` starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Request lines seen so far ("GET /x HTTP/1.1"), in order.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept(); the loop sees `stop` and returns.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    table: Arc<HashMap<String, Resource>>,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
) {
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(conn) = conn else { continue };
        workers.retain(|w| !w.is_finished());
        let (table, stop, requests) = (table.clone(), stop.clone(), requests.clone());
        // Browsers open speculative connections that may never send a request: one thread per connection so
        // such a socket cannot stall the others.
        workers.push(std::thread::spawn(move || {
            let _ = serve(conn, &table, &stop, &requests);
        }));
    }
    for w in workers {
        let _ = w.join();
    }
}

fn serve(
    mut conn: TcpStream,
    table: &HashMap<String, Resource>,
    stop: &AtomicBool,
    log: &Mutex<Vec<String>>,
) -> io::Result<()> {
    // Short read timeouts so a worker notices `stop` quickly.
    conn.set_read_timeout(Some(Duration::from_millis(100)))?;
    conn.set_write_timeout(Some(Duration::from_secs(10)))?;
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if stop.load(Ordering::SeqCst) || Instant::now() > deadline || head.len() > 64 * 1024 {
            return Ok(());
        }
        match conn.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let request_line = head.lines().next().unwrap_or_default().to_owned();
    log.lock().unwrap_or_else(|e| e.into_inner()).push(request_line.clone());
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let path = target.split(['?', '#']).next().unwrap_or_default();

    let (status, content_type, body): (&str, &str, &[u8]) = match (method, table.get(path)) {
        ("GET" | "HEAD", Some(r)) => ("200 OK", &r.content_type, &r.body),
        ("GET" | "HEAD", None) => ("404 Not Found", "text/plain", b"not found\n"),
        _ => ("405 Method Not Allowed", "text/plain", b"method not allowed\n"),
    };
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(header.as_bytes())?;
    if method != "HEAD" {
        conn.write_all(body)?;
    }
    conn.flush()?;
    let _ = conn.shutdown(Shutdown::Write);
    Ok(())
}
