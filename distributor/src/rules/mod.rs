//! Layer-7 routing rules: which pool a request goes to.
//!
//! The configuration is a list of `[[rules]]`, each with a unique `name`, a
//! target `pool` and a condition `when`. [`RuleSet::compile`] checks and
//! compiles them once; [`RuleSet::route`] returns the first rule, in
//! configuration order, whose condition the request satisfies, or `None`
//! (the caller's default pool).
//!
//! ```toml
//! [[rules]]
//! name = "gold-users"
//! pool = "priority"
//! when = { cookie = { name = "tier", equals = "gold" } }
//!
//! [[rules]]
//! name = "api-or-flagged"
//! pool = "priority"
//! when = { any = [ { path = { prefix = "/api/" } }, { header = { name = "x-priority", present = true } } ] }
//!
//! [[rules]]
//! name = "anonymous"
//! pool = "default"
//! when = { not = { user = { from = "basic", present = true } } }
//! ```
//!
//! Conditions (an inline table with exactly one key):
//! - `method = { is = ["GET", "HEAD"] }` (or `is = "GET"`): case-sensitive.
//! - `path = { exact = "/x" }` | `{ prefix = "/api/" }` | `{ regex = "..." }`:
//!   the path of the request target before `?`, as sent (not
//!   percent-decoded or normalised).
//! - `host = { equals = "example.com" }` | `{ regex = "..." }`: the first
//!   `Host` header without its port, ASCII case ignored (the regex is
//!   compiled case-insensitive). No `Host`: no match.
//! - `client_addr = { cidr = ["198.51.100.0/24", "2001:db8::/32", "203.0.113.7"] }`:
//!   the client's source address; an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`)
//!   also matches IPv4 networks.
//! - `client_id = { header = "x-client-id", <value test> }`.
//! - `user = { from = "basic" | "header" | "query" | "jwt-sub", name = "...", <value test> }`:
//!   the individual user id, see [`request::UserSpec`]; `name` is required for
//!   `header` and `query` and rejected otherwise. An empty id is absent.
//!   **`jwt-sub` decodes the JWT WITHOUT verifying its signature: it is
//!   for routing only, never for authorization.**
//! - `cookie = { name = "tier", <value test> }`: all `Cookie` headers are
//!   read; names are case-sensitive; surrounding `"` are removed.
//! - `header = { name = "x-foo", <value test> }`: name case-insensitive.
//! - `all = [ ... ]`, `any = [ ... ]` (non-empty), `not = { ... }`; at most
//!   16 levels deep (`when` is level 1).
//!
//! A `<value test>` is exactly one of `present = true`, `absent = true`
//! (`present = false` is the same as `absent = true` and vice versa),
//! `equals = "..."` (exact bytes), `regex = "..."`. When the information
//! occurs several times (repeated header, repeated cookie) `equals` and
//! `regex` pass if any value passes. Absent information never passes
//! `equals` or `regex`. Regexes are the `regex` crate's syntax, unanchored
//! (use `^...$`), matched on raw bytes.

mod compile;
pub mod config;
pub mod request;

#[cfg(test)]
mod tests;

use std::collections::HashMap;

pub use config::RuleConfig;
pub use request::{KeySource, RequestView};

use compile::Cond;

/// What is wrong with a field (see [`RuleError`] for where).
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("must not be empty")]
    Empty,
    #[error("invalid regex: {0}")]
    Regex(regex::Error),
    #[error("invalid CIDR {value:?}: {source}")]
    Cidr {
        value: String,
        source: ipnet::AddrParseError,
    },
    #[error("{0:?} is not a valid header name")]
    HeaderName(String),
    #[error("{0:?} is not a valid cookie name")]
    CookieName(String),
    #[error("{0:?} is not a valid method")]
    Method(String),
    #[error("{0:?} must not include a port (the port is removed from Host before comparing)")]
    HostWithPort(String),
    #[error("one of `present`, `absent`, `equals`, `regex` is required")]
    NoValueTest,
    #[error("only one of `present`, `absent`, `equals`, `regex` may be given, found {0}")]
    SeveralValueTests(String),
    #[error("conditions nested deeper than {0} levels")]
    TooDeep(usize),
    #[error("`name` is required when from = \"{0}\"")]
    MissingName(&'static str),
    #[error("`name` is not used when from = \"{0}\"")]
    UnexpectedName(&'static str),
}

/// A rule that cannot be compiled, naming the rule and the field.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// `rules[2] "gold-users": when.any[1].cookie.regex: invalid regex: ...`
    #[error("rules[{index}] \"{rule}\": {field}: {problem}")]
    Invalid {
        index: usize,
        rule: String,
        field: String,
        problem: Problem,
    },
    #[error("rules[{index}] \"{rule}\": name: duplicate, first used by rules[{first}]")]
    DuplicateName {
        index: usize,
        rule: String,
        first: usize,
    },
}

#[derive(Debug)]
struct Rule {
    name: Box<str>,
    pool: Box<str>,
    cond: Cond,
}

/// The compiled `[[rules]]`, in configuration order.
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Box<[Rule]>,
}

/// The rule that routed a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleMatch<'a> {
    /// Position in the configuration (`rules[index]`).
    pub index: usize,
    pub name: &'a str,
    pub pool: &'a str,
}

impl RuleSet {
    /// Checks and compiles `configs`: non-empty unique names, non-empty
    /// pools, valid conditions (regexes, CIDRs, names, value tests, depth).
    /// Pool existence is the caller's: see [`Self::pools_referenced`].
    pub fn compile(configs: &[RuleConfig]) -> Result<Self, RuleError> {
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(configs.len());
        let mut rules = Vec::with_capacity(configs.len());
        for (index, config) in configs.iter().enumerate() {
            let invalid = |field: &str, problem| RuleError::Invalid {
                index,
                rule: config.name.clone(),
                field: field.to_owned(),
                problem,
            };
            if config.name.is_empty() {
                return Err(invalid("name", Problem::Empty));
            }
            if let Some(&first) = seen.get(config.name.as_str()) {
                return Err(RuleError::DuplicateName {
                    index,
                    rule: config.name.clone(),
                    first,
                });
            }
            seen.insert(&config.name, index);
            if config.pool.is_empty() {
                return Err(invalid("pool", Problem::Empty));
            }
            let cond =
                Cond::compile(&config.when, "when", 1).map_err(|e| invalid(&e.field, e.problem))?;
            rules.push(Rule {
                name: config.name.as_str().into(),
                pool: config.pool.as_str().into(),
                cond,
            });
        }
        Ok(Self {
            rules: rules.into_boxed_slice(),
        })
    }

    /// The first rule, in configuration order, that `req` satisfies; `None`
    /// routes to the default pool.
    #[must_use]
    pub fn route(&self, req: &RequestView<'_>) -> Option<RuleMatch<'_>> {
        self.rules
            .iter()
            .enumerate()
            .find(|(_, rule)| rule.cond.matches(req))
            .map(|(index, rule)| RuleMatch {
                index,
                name: &rule.name,
                pool: &rule.pool,
            })
    }

    /// The pool of every rule, in configuration order (repeats included).
    pub fn pools_referenced(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|rule| &*rule.pool)
    }
}
