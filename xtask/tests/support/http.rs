//! A tiny HTTP/1.1 server on loopback for the download tests: plain `std::net`, serving bytes with or
//! without `Range` support, optionally dropping the connection part-way.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct Route {
    pub body: Vec<u8>,
    /// Honour `Range: bytes=N-` with 206.
    pub ranges: bool,
    /// The first `drops` responses stop after `drop_after` body bytes and close the connection.
    pub drops: usize,
    pub drop_after: usize,
}

/// `(path, Range header)` of every request, in order.
pub type RequestLog = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A tiny HTTP/1.1 server: one thread, one request per connection.
pub struct Server {
    base: String,
    log: RequestLog,
}

impl Server {
    pub fn start(routes: HashMap<&'static str, Route>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let routes = Arc::new(Mutex::new(routes));
        let server_log = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let _ = serve(stream, &routes, &server_log);
            }
        });
        Server { base, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn requests(&self) -> Vec<(String, Option<String>)> {
        self.log.lock().unwrap().clone()
    }
}

fn serve(
    mut stream: TcpStream,
    routes: &Mutex<HashMap<&'static str, Route>>,
    log: &Mutex<Vec<(String, Option<String>)>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        if h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    log.lock().unwrap().push((path.clone(), range.clone()));
    let mut routes = routes.lock().unwrap();
    let Some(route) = routes.get_mut(path.as_str()) else {
        stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    };
    let len = route.body.len();
    let start = match (&range, route.ranges) {
        (Some(r), true) => r
            .trim_start_matches("bytes=")
            .trim_end_matches('-')
            .parse::<usize>()
            .unwrap_or(0),
        _ => 0,
    };
    let head = if range.is_some() && route.ranges {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{len}\r\nConnection: close\r\n\r\n",
            len - start,
            len - 1
        )
    } else {
        format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
    };
    stream.write_all(head.as_bytes())?;
    let mut body = &route.body[start..];
    if route.drops > 0 {
        route.drops -= 1;
        body = &body[..route.drop_after.min(body.len())];
    }
    stream.write_all(body)?;
    stream.flush()?;
    Ok(())
}

/// A route serving `body`, honouring `Range` when `ranges`, never dropping.
pub fn route(body: &[u8], ranges: bool) -> Route {
    Route {
        body: body.to_vec(),
        ranges,
        drops: 0,
        drop_after: 0,
    }
}
