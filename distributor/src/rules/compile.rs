//! Conditions compiled once (regexes built, CIDRs parsed, names checked)
//! and evaluated per request without allocating, except where a value must
//! be decoded (Basic, JWT, percent-encoded query parameters).

use std::net::IpAddr;

use ipnet::IpNet;
use regex::bytes::{Regex, RegexBuilder};

use super::{
    Problem,
    config::{Condition, HostCondition, PathCondition, ValueTestFields},
    request::{RequestView, UserSpec, is_cookie_name, is_token, strip_port},
};

/// Deepest nesting of conditions (`when` itself is level 1).
pub const MAX_DEPTH: usize = 16;
/// Limit on the compiled size of one regex (bytes).
const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// Limit on the lazy DFA cache of one regex (bytes, per thread).
const REGEX_DFA_SIZE_LIMIT: usize = 1024 * 1024;

/// A problem and the dotted path of the field it is in (`when.any[1]...`).
#[derive(Debug)]
pub(super) struct FieldError {
    pub field: String,
    pub problem: Problem,
}

fn err<T>(field: impl Into<String>, problem: Problem) -> Result<T, FieldError> {
    Err(FieldError {
        field: field.into(),
        problem,
    })
}

/// A test on the value(s) of a piece of information.
#[derive(Debug)]
pub(super) enum ValueTest {
    Present,
    Absent,
    Equals(Box<[u8]>),
    Regex(Regex),
}

impl ValueTest {
    /// Applies the test to every value of the information: `Present` and
    /// `Absent` look at whether there is one; `Equals` and `Regex` hold if
    /// any value passes (none if there is no value).
    fn holds<V: AsRef<[u8]>>(&self, mut values: impl Iterator<Item = V>) -> bool {
        match self {
            Self::Present => values.next().is_some(),
            Self::Absent => values.next().is_none(),
            Self::Equals(want) => values.any(|v| v.as_ref() == &**want),
            Self::Regex(re) => values.any(|v| re.is_match(v.as_ref())),
        }
    }

    fn compile(fields: ValueTestFields<'_>, field: &str) -> Result<Self, FieldError> {
        let given: Vec<&str> = [
            ("present", fields.present.is_some()),
            ("absent", fields.absent.is_some()),
            ("equals", fields.equals.is_some()),
            ("regex", fields.regex.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect();
        if given.len() > 1 {
            return err(field, Problem::SeveralValueTests(given.join(", ")));
        }
        Ok(match fields {
            ValueTestFields {
                present: Some(present),
                ..
            } => {
                if present {
                    Self::Present
                } else {
                    Self::Absent
                }
            }
            ValueTestFields {
                absent: Some(absent),
                ..
            } => {
                if absent {
                    Self::Absent
                } else {
                    Self::Present
                }
            }
            ValueTestFields {
                equals: Some(equals),
                ..
            } => Self::Equals(equals.as_bytes().into()),
            ValueTestFields {
                regex: Some(regex), ..
            } => Self::Regex(compile_regex(regex, false, &format!("{field}.regex"))?),
            _ => return err(field, Problem::NoValueTest),
        })
    }
}

/// A compiled condition.
#[derive(Debug)]
pub(super) enum Cond {
    Method(Box<[Box<str>]>),
    PathExact(Box<str>),
    PathPrefix(Box<str>),
    PathRegex(Regex),
    HostEquals(Box<str>),
    /// Compiled case-insensitive.
    HostRegex(Regex),
    ClientAddr(Box<[IpNet]>),
    /// `header` and `client_id`.
    Header {
        name: Box<str>,
        test: ValueTest,
    },
    Cookie {
        name: Box<str>,
        test: ValueTest,
    },
    User {
        spec: UserSpec,
        test: ValueTest,
    },
    All(Box<[Cond]>),
    Any(Box<[Cond]>),
    Not(Box<Cond>),
}

impl Cond {
    /// Whether `req` satisfies the condition.
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        match self {
            Self::Method(methods) => methods.iter().any(|m| **m == *req.method),
            Self::PathExact(path) => req.path() == &**path,
            Self::PathPrefix(prefix) => req.path().starts_with(&**prefix),
            Self::PathRegex(re) => re.is_match(req.path().as_bytes()),
            Self::HostEquals(host) => req
                .host()
                .is_some_and(|h| h.eq_ignore_ascii_case(host.as_bytes())),
            Self::HostRegex(re) => req.host().is_some_and(|h| re.is_match(h)),
            Self::ClientAddr(nets) => {
                let addr = req.client_addr;
                let canonical = addr.to_canonical();
                nets.iter()
                    .any(|net| net.contains(&addr) || net.contains(&canonical))
            }
            Self::Header { name, test } => test.holds(req.headers(name)),
            Self::Cookie { name, test } => test.holds(req.cookies(name)),
            Self::User { spec, test } => test.holds(req.user_id(spec).into_iter()),
            Self::All(conds) => conds.iter().all(|c| c.matches(req)),
            Self::Any(conds) => conds.iter().any(|c| c.matches(req)),
            Self::Not(cond) => !cond.matches(req),
        }
    }

    /// Compiles `cond`, found at `field` (`when`, `when.any[1]`, ...) at
    /// nesting level `depth` (1 for `when`).
    pub fn compile(cond: &Condition, field: &str, depth: usize) -> Result<Self, FieldError> {
        if depth > MAX_DEPTH {
            return err(field, Problem::TooDeep(MAX_DEPTH));
        }
        Ok(match cond {
            Condition::Method(m) => {
                compile_methods(m.is.as_slice(), &format!("{field}.method.is"))?
            }
            Condition::Path(p) => compile_path(p, field)?,
            Condition::Host(h) => compile_host(h, field)?,
            Condition::ClientAddr(c) => Self::ClientAddr(compile_cidrs(
                &c.cidr,
                &format!("{field}.client_addr.cidr"),
            )?),
            Condition::ClientId(c) => {
                let field = format!("{field}.client_id");
                if !is_token(&c.header) {
                    return err(
                        format!("{field}.header"),
                        Problem::HeaderName(c.header.clone()),
                    );
                }
                Self::Header {
                    name: c.header.as_str().into(),
                    test: ValueTest::compile(c.value_test(), &field)?,
                }
            }
            Condition::User(u) => {
                let field = format!("{field}.user");
                let spec = UserSpec::new(u.from, u.name.as_deref())
                    .or_else(|problem| err(format!("{field}.name"), problem))?;
                Self::User {
                    spec,
                    test: ValueTest::compile(u.value_test(), &field)?,
                }
            }
            Condition::Cookie(c) => {
                let field = format!("{field}.cookie");
                if !is_cookie_name(&c.name) {
                    return err(format!("{field}.name"), Problem::CookieName(c.name.clone()));
                }
                Self::Cookie {
                    name: c.name.as_str().into(),
                    test: ValueTest::compile(c.value_test(), &field)?,
                }
            }
            Condition::Header(h) => {
                let field = format!("{field}.header");
                if !is_token(&h.name) {
                    return err(format!("{field}.name"), Problem::HeaderName(h.name.clone()));
                }
                Self::Header {
                    name: h.name.as_str().into(),
                    test: ValueTest::compile(h.value_test(), &field)?,
                }
            }
            Condition::All(conds) => {
                Self::All(compile_list(conds, &format!("{field}.all"), depth)?)
            }
            Condition::Any(conds) => {
                Self::Any(compile_list(conds, &format!("{field}.any"), depth)?)
            }
            Condition::Not(cond) => Self::Not(Box::new(Self::compile(
                cond,
                &format!("{field}.not"),
                depth + 1,
            )?)),
        })
    }
}

fn compile_methods(methods: &[String], field: &str) -> Result<Cond, FieldError> {
    if methods.is_empty() {
        return err(field, Problem::Empty);
    }
    for (i, method) in methods.iter().enumerate() {
        if !is_token(method) {
            return err(format!("{field}[{i}]"), Problem::Method(method.clone()));
        }
    }
    Ok(Cond::Method(
        methods.iter().map(|m| m.as_str().into()).collect(),
    ))
}

fn compile_path(cond: &PathCondition, field: &str) -> Result<Cond, FieldError> {
    Ok(match cond {
        PathCondition::Exact(path) => {
            non_empty(path, &format!("{field}.path.exact"))?;
            Cond::PathExact(path.as_str().into())
        }
        PathCondition::Prefix(prefix) => {
            non_empty(prefix, &format!("{field}.path.prefix"))?;
            Cond::PathPrefix(prefix.as_str().into())
        }
        PathCondition::Regex(re) => {
            Cond::PathRegex(compile_regex(re, false, &format!("{field}.path.regex"))?)
        }
    })
}

fn compile_host(cond: &HostCondition, field: &str) -> Result<Cond, FieldError> {
    Ok(match cond {
        HostCondition::Equals(host) => {
            let field = format!("{field}.host.equals");
            non_empty(host, &field)?;
            if strip_port(host.as_bytes()) != host.as_bytes() {
                return err(field, Problem::HostWithPort(host.clone()));
            }
            Cond::HostEquals(host.as_str().into())
        }
        HostCondition::Regex(re) => {
            Cond::HostRegex(compile_regex(re, true, &format!("{field}.host.regex"))?)
        }
    })
}

fn compile_cidrs(cidrs: &[String], field: &str) -> Result<Box<[IpNet]>, FieldError> {
    if cidrs.is_empty() {
        return err(field, Problem::Empty);
    }
    cidrs
        .iter()
        .enumerate()
        .map(|(i, s)| parse_net(s).or_else(|problem| err(format!("{field}[{i}]"), problem)))
        .collect()
}

fn compile_list(conds: &[Condition], field: &str, depth: usize) -> Result<Box<[Cond]>, FieldError> {
    if conds.is_empty() {
        return err(field, Problem::Empty);
    }
    conds
        .iter()
        .enumerate()
        .map(|(i, c)| Cond::compile(c, &format!("{field}[{i}]"), depth + 1))
        .collect()
}

fn non_empty(value: &str, field: &str) -> Result<(), FieldError> {
    if value.is_empty() {
        return err(field, Problem::Empty);
    }
    Ok(())
}

fn compile_regex(pattern: &str, case_insensitive: bool, field: &str) -> Result<Regex, FieldError> {
    RegexBuilder::new(pattern)
        .case_insensitive(case_insensitive)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
        .build()
        .or_else(|e| err(field, Problem::Regex(e)))
}

/// `a.b.c.d/n`, `x::/n`, or a single address (as `/32`, `/128`).
fn parse_net(s: &str) -> Result<IpNet, Problem> {
    s.parse::<IpNet>().or_else(|source| {
        s.parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| Problem::Cidr {
                value: s.to_owned(),
                source,
            })
    })
}
