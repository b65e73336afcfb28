//! The request as the rules and the balancer see it, and the extraction of
//! the pieces of information they test or hash (path, host, cookies, query
//! parameters, user ids). Nothing here panics on malformed input: what
//! cannot be parsed is absent.

use crate::http::trim_ows;
use std::{borrow::Cow, net::IpAddr};

use base64::{
    Engine as _, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use serde::Deserialize;

use super::{Problem, config::UserSource};

/// Longest `Authorization` credentials (token68) we decode; longer ones are
/// treated as absent. Bounds the work per request.
const MAX_CREDENTIALS_LEN: usize = 8 * 1024;

/// Base64 with `+/`, padding optional (RFC 7617 says padded; be lenient).
const BASE64_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Base64url, padding optional (JWS uses it unpadded, RFC 7515 §2).
const BASE64_URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// A parsed request head, borrowed: what routing and key extraction read.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Method token, case preserved.
    pub method: &'a str,
    /// Request target as sent (origin, absolute, authority or asterisk form).
    pub target: &'a str,
    /// The client's source address.
    pub client_addr: IpAddr,
    /// Header fields in order: names as received, values as raw bytes
    /// (without surrounding whitespace).
    pub headers: &'a [(String, Vec<u8>)],
}

impl<'a> RequestView<'a> {
    /// The path of the request target: for origin form (`/a/b?q`) the part
    /// before `?`; for absolute form (`http://h/a/b?q`) the path after the
    /// authority (`/` if empty); `*` for asterisk form; empty for authority
    /// form (`CONNECT host:port`). Not percent-decoded, not normalised.
    #[must_use]
    pub fn path(&self) -> &'a str {
        let target = self.target;
        let rest = if target.starts_with('/') {
            target
        } else if let Some(after_scheme) = strip_scheme(target) {
            match after_scheme.find(['/', '?', '#']) {
                Some(i) if after_scheme.as_bytes()[i] == b'/' => &after_scheme[i..],
                _ => return "/",
            }
        } else if target == "*" {
            return "*";
        } else {
            return "";
        };
        rest.find(['?', '#']).map_or(rest, |end| &rest[..end])
    }

    /// The query of the request target (after `?`, before any `#`), if any.
    #[must_use]
    pub fn query(&self) -> Option<&'a str> {
        let (_, query) = self.target.split_once('?')?;
        Some(query.find('#').map_or(query, |end| &query[..end]))
    }

    /// The first `Host` header without its port (`[v6]` keeps its brackets).
    #[must_use]
    pub fn host(&self) -> Option<&'a [u8]> {
        self.header("host").map(strip_port)
    }

    /// The first value of the header `name` (ASCII case ignored).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers(name).next()
    }

    /// Every value of the header `name` (ASCII case ignored), in order.
    pub fn headers<'n>(&self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        let headers: &'a [(String, Vec<u8>)] = self.headers;
        headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The value of the first cookie `name` (case-sensitive) in the `Cookie`
    /// header(s); surrounding double quotes are removed.
    #[must_use]
    pub fn cookie(&self, name: &str) -> Option<&'a [u8]> {
        self.cookies(name).next()
    }

    /// The values of every cookie `name` across all `Cookie` headers
    /// (`a=b; c=d`), in order. Pairs without `=` are skipped.
    pub fn cookies<'n>(&self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.headers("cookie")
            .flat_map(|value| value.split(|&b| b == b';'))
            .filter_map(move |pair| {
                let eq = pair.iter().position(|&b| b == b'=')?;
                let (n, v) = (trim_ows(&pair[..eq]), trim_ows(&pair[eq + 1..]));
                (n == name.as_bytes()).then(|| unquote(v))
            })
    }

    /// The value of the first query parameter whose percent-decoded name is
    /// `name`, percent-decoded (`+` is a space, malformed `%` escapes are
    /// kept as they are). A parameter without `=` has an empty value.
    /// Allocates only if the value contains `%` or `+`.
    #[must_use]
    pub fn query_param(&self, name: &str) -> Option<Cow<'a, [u8]>> {
        self.query()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            PercentDecode::new(k.as_bytes())
                .eq(name.bytes())
                .then(|| percent_decode(v.as_bytes()))
        })
    }

    /// The individual user id according to `spec`; see [`UserSpec`]. An
    /// empty id is absent.
    #[must_use]
    pub fn user_id(&self, spec: &UserSpec) -> Option<Cow<'a, [u8]>> {
        match spec {
            UserSpec::Basic => self
                .headers("authorization")
                .find_map(|v| credentials(v, "basic").and_then(basic_user))
                .map(Cow::Owned),
            UserSpec::Header(name) => self
                .headers(name)
                .find(|v| !v.is_empty())
                .map(Cow::Borrowed),
            UserSpec::Query(name) => self.query_param(name).filter(|v| !v.is_empty()),
            UserSpec::JwtSub => self
                .headers("authorization")
                .find_map(|v| credentials(v, "bearer").and_then(jwt_sub))
                .map(Cow::Owned),
        }
    }
}

/// `scheme://` removed from `target`, if it starts with a URI scheme.
fn strip_scheme(target: &str) -> Option<&str> {
    let (scheme, rest) = target.split_once("://")?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(rest)
}

/// `host[:port]` without the port; `[v6]:port` keeps the brackets.
pub(super) fn strip_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return match host.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(colon) if host[colon + 1..].iter().all(u8::is_ascii_digit) => &host[..colon],
        _ => host,
    }
}

/// A cookie value without its surrounding double quotes (RFC 6265 §4.1.1).
fn unquote(value: &[u8]) -> &[u8] {
    match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    }
}

/// Decodes `%XX` and `+` lazily, byte by byte.
struct PercentDecode<'a> {
    rest: &'a [u8],
}

impl<'a> PercentDecode<'a> {
    fn new(input: &'a [u8]) -> Self {
        Self { rest: input }
    }
}

impl Iterator for PercentDecode<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        let (&first, tail) = self.rest.split_first()?;
        match (first, tail) {
            (b'%', [hi, lo, after @ ..]) => {
                if let (Some(hi), Some(lo)) = (hex_digit(*hi), hex_digit(*lo)) {
                    self.rest = after;
                    return Some(hi << 4 | lo);
                }
                self.rest = tail;
                Some(b'%')
            }
            (b'+', _) => {
                self.rest = tail;
                Some(b' ')
            }
            _ => {
                self.rest = tail;
                Some(first)
            }
        }
    }
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `input` percent-decoded; borrowed when there is nothing to decode.
fn percent_decode(input: &[u8]) -> Cow<'_, [u8]> {
    if input.iter().any(|&b| b == b'%' || b == b'+') {
        Cow::Owned(PercentDecode::new(input).collect())
    } else {
        Cow::Borrowed(input)
    }
}

/// The credentials of an `Authorization` value if its scheme is `scheme`
/// (lower case; compared ignoring ASCII case).
fn credentials<'v>(value: &'v [u8], scheme: &str) -> Option<&'v [u8]> {
    let space = value.iter().position(|&b| b == b' ')?;
    if !value[..space].eq_ignore_ascii_case(scheme.as_bytes()) {
        return None;
    }
    let token = trim_ows(&value[space + 1..]);
    (!token.is_empty() && token.len() <= MAX_CREDENTIALS_LEN).then_some(token)
}

/// The user name of Basic credentials, `base64(user:pass)`; absent if the
/// base64 or the colon is missing, or the user name is empty.
fn basic_user(token: &[u8]) -> Option<Vec<u8>> {
    let mut decoded = BASE64_STANDARD.decode(token).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    decoded.truncate(colon);
    (!decoded.is_empty()).then_some(decoded)
}

/// The `sub` claim of a JWS compact token (`header.payload.signature`).
///
/// **The signature is NOT verified.** Anyone can send a token with any
/// `sub`: this is for spreading and routing traffic only, never for
/// authorization. Absent if the token is malformed or `sub` is not a
/// non-empty string.
fn jwt_sub(token: &[u8]) -> Option<Vec<u8>> {
    #[derive(Deserialize)]
    struct Claims {
        sub: Option<String>,
    }
    let mut parts = token.split(|&b| b == b'.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let json = BASE64_URL.decode(payload).ok()?;
    // The claims set is a JSON object; serde would also take `["x"]` as a
    // struct written as a sequence.
    if json.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    let claims: Claims = serde_json::from_slice(&json).ok()?;
    claims
        .sub
        .filter(|sub| !sub.is_empty())
        .map(String::into_bytes)
}

/// Whether `s` is an HTTP token (RFC 9110 §5.6.2): header names, methods.
pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `s` can be a cookie name: a token (RFC 6265 §4.1.1).
pub(super) fn is_cookie_name(s: &str) -> bool {
    is_token(s)
}

/// Where an individual user id comes from; deserialized from
/// `{ from = "basic" | "header" | "query" | "jwt-sub", name = "..." }`.
///
/// `JwtSub` reads the `sub` claim of an `Authorization: Bearer` JWT WITHOUT
/// verifying its signature: any client can claim to be anyone. Use it to
/// route or spread load, never to grant anything.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "UserSpecConfig")]
pub enum UserSpec {
    /// The user name of `Authorization: Basic` credentials.
    Basic,
    /// The first non-empty value of this header.
    Header(String),
    /// The first query parameter of this name, percent-decoded.
    Query(String),
    /// The `sub` claim of an `Authorization: Bearer` JWT (UNVERIFIED).
    JwtSub,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserSpecConfig {
    from: UserSource,
    name: Option<String>,
}

impl TryFrom<UserSpecConfig> for UserSpec {
    type Error = Problem;

    fn try_from(config: UserSpecConfig) -> Result<Self, Problem> {
        Self::new(config.from, config.name.as_deref())
    }
}

impl UserSpec {
    /// Checks that `name` is given exactly when `from` needs one (and is a
    /// valid header name for `header`).
    pub fn new(from: UserSource, name: Option<&str>) -> Result<Self, Problem> {
        match (from, name) {
            (UserSource::Header, Some(name)) if is_token(name) => Ok(Self::Header(name.to_owned())),
            (UserSource::Header, Some(name)) => Err(Problem::HeaderName(name.to_owned())),
            (UserSource::Query, Some("")) => Err(Problem::Empty),
            (UserSource::Query, Some(name)) => Ok(Self::Query(name.to_owned())),
            (UserSource::Header | UserSource::Query, None) => {
                Err(Problem::MissingName(from.as_str()))
            }
            (UserSource::Basic | UserSource::JwtSub, Some(_)) => {
                Err(Problem::UnexpectedName(from.as_str()))
            }
            (UserSource::Basic, None) => Ok(Self::Basic),
            (UserSource::JwtSub, None) => Ok(Self::JwtSub),
        }
    }
}

/// What the consistent-hash balancer hashes. TOML forms:
/// `key = { cookie = "session" }`, `key = { header = "x-user" }`,
/// `key = { user = { from = "basic" } }` (see [`UserSpec`]),
/// `key = "client_addr"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "KeySourceConfig")]
pub enum KeySource {
    /// The first cookie of this name.
    Cookie(String),
    /// The first value of this header.
    Header(String),
    /// The user id (see [`UserSpec`]).
    User(UserSpec),
    /// The client's IP address (IPv4-mapped IPv6 as IPv4): 4 or 16 bytes.
    ClientAddr,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum KeySourceConfig {
    Cookie(String),
    Header(String),
    User(UserSpec),
    ClientAddr,
}

impl TryFrom<KeySourceConfig> for KeySource {
    type Error = Problem;

    fn try_from(config: KeySourceConfig) -> Result<Self, Problem> {
        Ok(match config {
            KeySourceConfig::Cookie(name) if is_cookie_name(&name) => Self::Cookie(name),
            KeySourceConfig::Cookie(name) => return Err(Problem::CookieName(name)),
            KeySourceConfig::Header(name) if is_token(&name) => Self::Header(name),
            KeySourceConfig::Header(name) => return Err(Problem::HeaderName(name)),
            KeySourceConfig::User(spec) => Self::User(spec),
            KeySourceConfig::ClientAddr => Self::ClientAddr,
        })
    }
}

impl KeySource {
    /// The key bytes of `req`, or `None` if the information is absent.
    /// Borrows from the request where it can (cookie, header, plain query).
    #[must_use]
    pub fn extract<'a>(&self, req: &RequestView<'a>) -> Option<Cow<'a, [u8]>> {
        match self {
            Self::Cookie(name) => req.cookie(name).map(Cow::Borrowed),
            Self::Header(name) => req.header(name).map(Cow::Borrowed),
            Self::User(spec) => req.user_id(spec),
            Self::ClientAddr => Some(Cow::Owned(match req.client_addr.to_canonical() {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                IpAddr::V6(v6) => v6.octets().to_vec(),
            })),
        }
    }
}
