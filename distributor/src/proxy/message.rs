//! Writing heads for the other side: the request as the backend gets it,
//! the response head as the client gets it.
//!
//! Both are rebuilt from the parsed head, never copied: hop-by-hop fields
//! (RFC 9110 §7.6.1) are dropped, a repeated `Content-Length` becomes one
//! normalised field, and the connection management fields are ours. A
//! backend can therefore never read a request differently from how we framed
//! it.

use std::net::IpAddr;

use crate::http::{BodyFraming, RequestHead, ResponseHead};

/// Fields that concern one connection only, plus `Expect` (we answer
/// `100-continue` ourselves and send the body whole) and `Upgrade` (never
/// forwarded: not supported).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "proxy-authorization",
];

/// Whether `name` must not cross the proxy: a fixed hop-by-hop field or one
/// the message's `Connection` field lists.
fn is_hop_by_hop(name: &str, connection_tokens: &[String]) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || connection_tokens
            .iter()
            .any(|t| name.eq_ignore_ascii_case(t))
}

fn connection_tokens(headers: &[(String, Vec<u8>)]) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(|&b| b == b','))
        .map(|t| String::from_utf8_lossy(t).trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

fn push_fields(
    out: &mut Vec<u8>,
    headers: &[(String, Vec<u8>)],
    framing: BodyFraming,
    skip_extra: &[&str],
) {
    let tokens = connection_tokens(headers);
    for (name, value) in headers {
        if is_hop_by_hop(name, &tokens)
            || skip_extra.iter().any(|s| name.eq_ignore_ascii_case(s))
            || (name.eq_ignore_ascii_case("content-length")
                && matches!(framing, BodyFraming::Length(_)))
        {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if let BodyFraming::Length(n) = framing {
        out.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes());
    }
}

/// The request head for the backend. The backend connection is always kept
/// alive (it is pooled): HTTP/1.1 needs nothing for that, an HTTP/1.0
/// request (forwarded as 1.0 so the backend never answers it chunked) says
/// `Connection: keep-alive`. The client's address is appended to
/// `X-Forwarded-For`.
#[must_use]
pub fn backend_request_head(head: &RequestHead, framing: BodyFraming, client: IpAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + head.target.len() + 64 * head.headers.len());
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.target.as_bytes());
    out.extend_from_slice(if head.version == 0 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    push_fields(&mut out, &head.headers, framing, &["x-forwarded-for"]);
    let prior: Vec<&[u8]> = head.headers_all("x-forwarded-for").collect();
    out.extend_from_slice(b"X-Forwarded-For: ");
    for p in prior {
        out.extend_from_slice(p);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(client.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    if head.version == 0 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// What to say about the client connection in a response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientConnection {
    /// HTTP/1.1 client staying open: nothing to say.
    KeepAlive11,
    /// HTTP/1.0 client staying open: `Connection: keep-alive`.
    KeepAlive10,
    /// The connection closes after this response: `Connection: close`.
    Close,
}

/// The response head for the client.
#[must_use]
pub fn client_response_head(
    head: &ResponseHead,
    framing: BodyFraming,
    conn: ClientConnection,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + 64 * head.headers.len());
    out.extend_from_slice(format!("HTTP/1.1 {} {}\r\n", head.status, head.reason).as_bytes());
    push_fields(&mut out, &head.headers, framing, &[]);
    match conn {
        ClientConnection::KeepAlive11 => {}
        ClientConnection::KeepAlive10 => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        ClientConnection::Close => out.extend_from_slice(b"Connection: close\r\n"),
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: u8, headers: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: "POST".into(),
            target: "/a?b=c".into(),
            version,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    fn text(v: &[u8]) -> String {
        String::from_utf8(v.to_vec()).unwrap()
    }

    #[test]
    fn request_head_drops_hop_by_hop_and_normalises_length() {
        let h = req(
            1,
            &[
                ("Host", "x"),
                ("Connection", "close, X-Secret"),
                ("X-Secret", "1"),
                ("Keep-Alive", "timeout=5"),
                ("Expect", "100-continue"),
                ("Content-Length", "5"),
                ("content-length", "5"),
                ("X-Forwarded-For", "192.0.2.99"),
                ("Cookie", "a=b"),
            ],
        );
        let out = text(&backend_request_head(
            &h,
            BodyFraming::Length(5),
            "198.51.100.2".parse().unwrap(),
        ));
        assert_eq!(
            out,
            "POST /a?b=c HTTP/1.1\r\nHost: x\r\nCookie: a=b\r\nContent-Length: 5\r\n\
             X-Forwarded-For: 192.0.2.99, 198.51.100.2\r\n\r\n"
        );
    }

    #[test]
    fn http10_request_stays_10_and_asks_keep_alive() {
        let out = text(&backend_request_head(
            &req(0, &[("Connection", "keep-alive")]),
            BodyFraming::None,
            "198.51.100.2".parse().unwrap(),
        ));
        assert!(out.starts_with("POST /a?b=c HTTP/1.0\r\n"));
        assert!(out.ends_with("Connection: keep-alive\r\n\r\n"));
        assert_eq!(out.matches("Connection").count(), 1);
    }

    #[test]
    fn chunked_request_keeps_its_transfer_encoding() {
        let out = text(&backend_request_head(
            &req(1, &[("Host", "x"), ("Transfer-Encoding", "chunked")]),
            BodyFraming::Chunked,
            "198.51.100.2".parse().unwrap(),
        ));
        assert!(out.contains("Transfer-Encoding: chunked\r\n"));
        assert!(!out.contains("Content-Length"));
    }

    #[test]
    fn response_head_sets_our_connection_field() {
        let head = ResponseHead {
            version: 1,
            status: 200,
            reason: "OK".into(),
            headers: vec![
                ("Connection".into(), b"keep-alive".to_vec()),
                ("Keep-Alive".into(), b"timeout=5".to_vec()),
                ("Content-Length".into(), b"3".to_vec()),
                ("X-Backend".into(), b"b1".to_vec()),
            ],
        };
        let close = text(&client_response_head(
            &head,
            BodyFraming::Length(3),
            ClientConnection::Close,
        ));
        assert_eq!(
            close,
            "HTTP/1.1 200 OK\r\nX-Backend: b1\r\nContent-Length: 3\r\nConnection: close\r\n\r\n"
        );
        let ka10 = text(&client_response_head(
            &head,
            BodyFraming::Length(3),
            ClientConnection::KeepAlive10,
        ));
        assert!(ka10.ends_with("Connection: keep-alive\r\n\r\n"));
        let ka11 = text(&client_response_head(
            &head,
            BodyFraming::Length(3),
            ClientConnection::KeepAlive11,
        ));
        assert!(!ka11.contains("Connection"));
    }
}
