//! The `[[rules]]` configuration as written in TOML (serde types only; see
//! `compile.rs` for the checks the types cannot express).

use serde::Deserialize;

/// One `[[rules]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique among the rules; used in logs and errors.
    pub name: String,
    /// The pool the matching requests go to; the caller checks that it
    /// exists (`RuleSet::pools_referenced`).
    pub pool: String,
    /// The condition; exactly one key (`cookie`, `any`, ...).
    pub when: Condition,
}

/// A condition on the request: an inline table with exactly one key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// `method = { is = ["GET", "HEAD"] }` (or `is = "GET"`).
    Method(MethodCondition),
    /// `path = { exact = "/x" }` | `{ prefix = "/api/" }` | `{ regex = "..." }`.
    Path(PathCondition),
    /// `host = { equals = "example.com" }` | `{ regex = "..." }`.
    Host(HostCondition),
    /// `client_addr = { cidr = ["198.51.100.0/24", "2001:db8::/32"] }`.
    ClientAddr(ClientAddrCondition),
    /// `client_id = { header = "x-client-id", <value test> }`.
    ClientId(ClientIdCondition),
    /// `user = { from = "basic" | "header" | "query" | "jwt-sub", name = "...", <value test> }`.
    User(UserCondition),
    /// `cookie = { name = "tier", <value test> }`.
    Cookie(CookieCondition),
    /// `header = { name = "x-foo", <value test> }`.
    Header(HeaderCondition),
    /// `all = [ ... ]`: every condition holds (must not be empty).
    All(Vec<Condition>),
    /// `any = [ ... ]`: at least one condition holds (must not be empty).
    Any(Vec<Condition>),
    /// `not = { ... }`: the condition does not hold.
    Not(Box<Condition>),
}

/// `method = { is = ... }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodCondition {
    /// Method tokens, compared case-sensitively (RFC 9110 §9.1).
    pub is: OneOrMany,
}

/// A string or a list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged, expecting = "a string or a list of strings")]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// The strings, in order.
    pub fn as_slice(&self) -> &[String] {
        match self {
            Self::One(one) => std::slice::from_ref(one),
            Self::Many(many) => many,
        }
    }
}

/// `path = { ... }`: on the path of the request target, before `?`, as sent
/// (not percent-decoded, not normalised).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathCondition {
    Exact(String),
    Prefix(String),
    Regex(String),
}

/// `host = { ... }`: on the `Host` header without its port, ignoring ASCII
/// case.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostCondition {
    Equals(String),
    Regex(String),
}

/// `client_addr = { cidr = [...] }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAddrCondition {
    /// Networks (`a.b.c.d/n`, `x::/n`) or single addresses.
    pub cidr: Vec<String>,
}

/// The value test shared by the conditions on a piece of information:
/// exactly one of the four must be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ValueTestFields<'a> {
    pub present: Option<bool>,
    pub absent: Option<bool>,
    pub equals: Option<&'a str>,
    pub regex: Option<&'a str>,
}

/// `client_id = { header = "x-client-id", <value test> }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientIdCondition {
    /// The header carrying the client identification.
    pub header: String,
    pub present: Option<bool>,
    pub absent: Option<bool>,
    pub equals: Option<String>,
    pub regex: Option<String>,
}

/// Where the individual user id comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UserSource {
    /// The user name of `Authorization: Basic base64(user:pass)`.
    Basic,
    /// A header (`name` = the header name).
    Header,
    /// A query parameter, percent-decoded (`name` = the parameter name).
    Query,
    /// The `sub` claim of an `Authorization: Bearer` JWT, NOT verified.
    JwtSub,
}

impl UserSource {
    /// The spelling used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Basic => "basic",
            Self::Header => "header",
            Self::Query => "query",
            Self::JwtSub => "jwt-sub",
        }
    }
}

/// `user = { from = ..., name = ..., <value test> }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserCondition {
    pub from: UserSource,
    /// Header or query parameter name; required for `header` and `query`,
    /// rejected for `basic` and `jwt-sub`.
    pub name: Option<String>,
    pub present: Option<bool>,
    pub absent: Option<bool>,
    pub equals: Option<String>,
    pub regex: Option<String>,
}

/// `cookie = { name = "tier", <value test> }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CookieCondition {
    /// The cookie name, compared case-sensitively.
    pub name: String,
    pub present: Option<bool>,
    pub absent: Option<bool>,
    pub equals: Option<String>,
    pub regex: Option<String>,
}

/// `header = { name = "x-foo", <value test> }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderCondition {
    /// The header name, compared ignoring ASCII case.
    pub name: String,
    pub present: Option<bool>,
    pub absent: Option<bool>,
    pub equals: Option<String>,
    pub regex: Option<String>,
}

macro_rules! value_test_fields {
    ($($ty:ty),*) => {$(
        impl $ty {
            /// The value-test keys of this condition.
            pub fn value_test(&self) -> ValueTestFields<'_> {
                ValueTestFields {
                    present: self.present,
                    absent: self.absent,
                    equals: self.equals.as_deref(),
                    regex: self.regex.as_deref(),
                }
            }
        }
    )*};
}

value_test_fields!(
    ClientIdCondition,
    UserCondition,
    CookieCondition,
    HeaderCondition
);
