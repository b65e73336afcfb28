//! HTTP/1.x message framing (RFC 9112).
