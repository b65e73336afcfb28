use std::{borrow::Cow, net::IpAddr};

use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use serde::Deserialize;

use super::{
    RuleSet,
    config::RuleConfig,
    request::{KeySource, RequestView, UserSpec, strip_port},
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    rules: Vec<RuleConfig>,
}

/// Parses and compiles a `[[rules]]` TOML text; any error as a string.
fn compile(text: &str) -> Result<RuleSet, String> {
    let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
    RuleSet::compile(&file.rules).map_err(|e| e.to_string())
}

/// A single rule with condition `when` (TOML inline table).
fn single(when: &str) -> RuleSet {
    let text = format!("[[rules]]\nname = \"r\"\npool = \"p\"\nwhen = {when}\n");
    match compile(&text) {
        Ok(set) => set,
        Err(e) => panic!("{when}: {e}"),
    }
}

#[derive(Debug, Clone)]
struct Req {
    method: &'static str,
    target: &'static str,
    addr: IpAddr,
    headers: Vec<(String, Vec<u8>)>,
}

fn req(target: &'static str) -> Req {
    Req {
        method: "GET",
        target,
        addr: "192.0.2.1".parse().unwrap(),
        headers: Vec::new(),
    }
}

impl Req {
    fn method(mut self, method: &'static str) -> Self {
        self.method = method;
        self
    }

    fn addr(mut self, addr: &str) -> Self {
        self.addr = addr.parse().unwrap();
        self
    }

    fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_owned(), value.as_ref().to_vec()));
        self
    }

    fn view(&self) -> RequestView<'_> {
        RequestView {
            method: self.method,
            target: self.target,
            client_addr: self.addr,
            headers: &self.headers,
        }
    }
}

fn basic(credentials: &str) -> String {
    format!("Basic {}", STANDARD.encode(credentials))
}

fn jwt(payload: &str) -> String {
    format!(
        "Bearer {}.{}.c2ln",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(payload)
    )
}

/// Compiles a rule with condition `when` and checks each request routes
/// (`true`) or not.
fn check(when: &str, cases: &[(Req, bool)]) {
    let set = single(when);
    for (request, want) in cases {
        let got = set.route(&request.view()).is_some();
        assert_eq!(got, *want, "when = {when}\nrequest = {request:?}");
    }
}

#[test]
fn method_and_path() {
    let get_head = r#"{ method = { is = ["GET", "HEAD"] } }"#;
    check(
        get_head,
        &[
            (req("/"), true),
            (req("/").method("HEAD"), true),
            (req("/").method("POST"), false),
            (req("/").method("get"), false),
        ],
    );
    check(
        r#"{ method = { is = "POST" } }"#,
        &[(req("/").method("POST"), true)],
    );
    check(
        r#"{ path = { exact = "/x" } }"#,
        &[
            (req("/x?y=1"), true),
            (req("/x/"), false),
            (req("http://h.example/x?q"), true),
        ],
    );
    check(
        r#"{ path = { exact = "*" } }"#,
        &[(req("*").method("OPTIONS"), true)],
    );
    check(
        r#"{ path = { prefix = "/api/" } }"#,
        &[
            (req("/api/v1/users"), true),
            (req("/api"), false),
            (req("/apix/"), false),
            (req("/x?next=/api/"), false),
        ],
    );
    check(
        r#"{ path = { regex = "^/img/.*\\.png$" } }"#,
        &[(req("/img/a/b.png?v=2"), true), (req("/img/a.jpg"), false)],
    );
    check(
        r#"{ path = { prefix = "/" } }"#,
        &[(req("example.com:443").method("CONNECT"), false)],
    );
}

#[test]
fn host_and_client_addr() {
    check(
        r#"{ host = { equals = "example.com" } }"#,
        &[
            (req("/").header("Host", "Example.COM:8080"), true),
            (req("/").header("host", "example.com"), true),
            (req("/").header("Host", "example.org"), false),
            (req("/"), false),
        ],
    );
    check(
        r#"{ host = { equals = "[2001:db8::1]" } }"#,
        &[(req("/").header("Host", "[2001:db8::1]:80"), true)],
    );
    check(
        r#"{ host = { regex = "^(www\\.)?example\\.com$" } }"#,
        &[
            (req("/").header("Host", "WWW.Example.com"), true),
            (req("/").header("Host", "api.example.com"), false),
            (req("/"), false),
        ],
    );
    check(
        r#"{ client_addr = { cidr = ["198.51.100.0/24", "203.0.113.7/32"] } }"#,
        &[
            (req("/").addr("198.51.100.42"), true),
            (req("/").addr("203.0.113.7"), true),
            (req("/").addr("203.0.113.8"), false),
            // IPv4-mapped IPv6, as a dual-stack socket reports IPv4 clients.
            (req("/").addr("::ffff:198.51.100.9"), true),
        ],
    );
    check(
        r#"{ client_addr = { cidr = ["2001:db8::/32"] } }"#,
        &[
            (req("/").addr("2001:db8:1::5"), true),
            (req("/").addr("2001:db9::5"), false),
            (req("/").addr("198.51.100.9"), false),
        ],
    );
    check(
        r#"{ client_addr = { cidr = ["203.0.113.7", "2001:db8::7"] } }"#,
        &[
            (req("/").addr("2001:db8::7"), true),
            (req("/").addr("203.0.113.7"), true),
            (req("/").addr("2001:db8::8"), false),
        ],
    );
}

#[test]
fn client_id_and_value_tests() {
    let id = |test: &str| format!(r#"{{ client_id = {{ header = "x-client-id", {test} }} }}"#);
    check(
        &id("present = true"),
        &[
            (req("/").header("X-Client-ID", "acme"), true),
            (req("/").header("X-Client-ID", ""), true),
            (req("/"), false),
        ],
    );
    for absent in ["absent = true", "present = false"] {
        check(
            &id(absent),
            &[
                (req("/"), true),
                (req("/").header("x-client-id", "acme"), false),
            ],
        );
    }
    check(
        &id("absent = false"),
        &[(req("/").header("x-client-id", "a"), true)],
    );
    check(
        &id(r#"equals = "acme""#),
        &[
            (req("/").header("x-client-id", "acme"), true),
            (req("/").header("x-client-id", "ACME"), false),
            (req("/"), false),
        ],
    );
    check(
        &id(r#"regex = "^a""#),
        &[
            (req("/").header("x-client-id", "acme"), true),
            (req("/"), false),
        ],
    );
}

#[test]
fn user_from_basic_header_query_jwt() {
    let alice = |from: &str| format!(r#"{{ user = {{ {from}, equals = "alice" }} }}"#);
    check(
        &alice(r#"from = "basic""#),
        &[
            (req("/").header("Authorization", basic("alice:s:e:c")), true),
            (req("/").header("authorization", basic("bob:x")), false),
            (
                req("/").header(
                    "Authorization",
                    format!("basic  {}", STANDARD.encode("alice:x")),
                ),
                true,
            ),
            (
                req("/").header(
                    "Authorization",
                    format!("Basic {}", STANDARD.encode("alice:x").trim_end_matches('=')),
                ),
                true,
            ),
            (req("/"), false),
        ],
    );
    check(
        r#"{ user = { from = "basic", present = false } }"#,
        &[
            (req("/"), true),
            (req("/").header("Authorization", basic("a:b")), false),
        ],
    );
    check(
        &alice(r#"from = "header", name = "x-user""#),
        &[
            (req("/").header("X-User", "alice"), true),
            (
                req("/").header("X-User", "").header("x-user", "alice"),
                true,
            ),
            (req("/").header("X-User", "bob"), false),
        ],
    );
    check(
        r#"{ user = { from = "header", name = "x-user", present = true } }"#,
        &[(req("/").header("X-User", ""), false)],
    );
    check(
        r#"{ user = { from = "query", name = "user", equals = "alice smith" } }"#,
        &[
            (req("/p?a=1&user=alice%20smith"), true),
            (req("/p?user=alice+smith&b"), true),
            (req("/p?u%73er=alice%20smith"), true),
            (req("/p?user=alice"), false),
        ],
    );
    check(
        r#"{ user = { from = "query", name = "user", equals = "é" } }"#,
        &[(req("/p?user=%C3%A9"), true)],
    );
    check(
        r#"{ user = { from = "query", name = "user", equals = "a%zz%4" } }"#,
        &[(req("/p?user=a%zz%4"), true)],
    );
    check(
        r#"{ user = { from = "query", name = "user", present = true } }"#,
        &[
            (req("/p?user="), false),
            (req("/p?username=x&xuser=y"), false),
            (req("/p#user=x"), false),
            (req("/p?user"), false),
        ],
    );
    check(
        &alice(r#"from = "jwt-sub""#),
        &[
            (
                req("/").header("Authorization", jwt(r#"{"sub":"alice","exp":1}"#)),
                true,
            ),
            (
                req("/").header("Authorization", jwt(r#"{"sub":"bob"}"#)),
                false,
            ),
            (req("/").header("Authorization", basic("alice:x")), false),
        ],
    );
    check(
        r#"{ user = { from = "basic", present = true } }"#,
        &[(
            req("/").header("Authorization", jwt(r#"{"sub":"alice"}"#)),
            false,
        )],
    );
}

#[test]
fn cookie_and_header() {
    check(
        r#"{ cookie = { name = "tier", equals = "gold" } }"#,
        &[
            (req("/").header("Cookie", "a=b; tier=gold"), true),
            (
                req("/")
                    .header("Cookie", "a=b")
                    .header("cookie", "c=d;tier=gold"),
                true,
            ),
            (req("/").header("Cookie", "tier=\"gold\""), true),
            (req("/").header("Cookie", "tier=silver; tier=gold"), true),
            (req("/").header("Cookie", "tier=silver"), false),
            (req("/").header("Cookie", "Tier=gold"), false),
            (req("/").header("Cookie", "xtier=gold; tier"), false),
            (req("/").header("Set-Cookie", "tier=gold"), false),
            (req("/"), false),
        ],
    );
    check(
        r#"{ cookie = { name = "tier", present = true } }"#,
        &[
            (req("/").header("Cookie", "tier="), true),
            (req("/").header("Cookie", "a=tier"), false),
        ],
    );
    check(
        r#"{ cookie = { name = "tier", regex = "^g" } }"#,
        &[(req("/").header("Cookie", "tier=gold"), true)],
    );
    check(
        r#"{ header = { name = "x-foo", equals = "b" } }"#,
        &[
            (req("/").header("x-foo", "a").header("X-Foo", "b"), true),
            (req("/").header("x-foo", "a").header("X-Foo", "c"), false),
        ],
    );
    check(
        r#"{ header = { name = "X-FOO", present = true } }"#,
        &[
            (req("/").header("x-foo", ""), true),
            (req("/").header("x-bar", "1"), false),
        ],
    );
    check(
        r#"{ header = { name = "x-foo", regex = "^v[0-9]+$" } }"#,
        &[
            (req("/").header("x-foo", "v12"), true),
            (req("/").header("x-foo", b"v1\xff"), false),
            (req("/"), false),
        ],
    );
}

#[test]
fn combinators() {
    check(
        r#"{ all = [ { method = { is = "GET" } }, { path = { prefix = "/api/" } } ] }"#,
        &[
            (req("/api/x"), true),
            (req("/api/x").method("PUT"), false),
            (req("/x"), false),
        ],
    );
    check(
        r#"{ any = [ { path = { prefix = "/api/" } }, { header = { name = "x-priority", present = true } } ] }"#,
        &[
            (req("/x").header("X-Priority", "1"), true),
            (req("/api/x"), true),
            (req("/x"), false),
        ],
    );
    check(
        r#"{ not = { not = { path = { exact = "/" } } } }"#,
        &[(req("/"), true), (req("/a"), false)],
    );
    check(
        r#"{ any = [ { all = [ { cookie = { name = "t", equals = "1" } }, { not = { host = { equals = "a.example" } } } ] }, { method = { is = "DELETE" } } ] }"#,
        &[
            (
                req("/").header("Cookie", "t=1").header("Host", "b.example"),
                true,
            ),
            (
                req("/").header("Cookie", "t=1").header("Host", "a.example"),
                false,
            ),
            (req("/").header("Host", "a.example").method("DELETE"), true),
        ],
    );
}

#[test]
fn malformed_credentials_are_absent_not_errors() {
    let bad: Vec<Vec<u8>> = vec![
        b"Basic".to_vec(),
        b"Basic ".to_vec(),
        b"Basic !!!not-base64!!!".to_vec(),
        b"Basic YWxpY2U".to_vec(), // "alice": no colon
        basic(":password").into_bytes(),
        b"Basic \xff\xfe".to_vec(),
        format!("Basic {}", "A".repeat(20_000)).into_bytes(),
        b"Bearer".to_vec(),
        b"Bearer a.b".to_vec(),
        b"Bearer a.b.c.d".to_vec(),
        b"Bearer a.%%%.c".to_vec(),
        format!("Bearer a.{}.c", URL_SAFE_NO_PAD.encode("not json")).into_bytes(),
        jwt(r#"{"sub":42}"#).into_bytes(),
        jwt(r#"{"sub":""}"#).into_bytes(),
        jwt(r#"{"sub":null}"#).into_bytes(),
        jwt("{}").into_bytes(),
        jwt(r#"["sub"]"#).into_bytes(),
        b"Digest username=\"alice\"".to_vec(),
        b"".to_vec(),
    ];
    for spec in [UserSpec::Basic, UserSpec::JwtSub] {
        for value in &bad {
            let r = req("/").header("Authorization", value);
            assert_eq!(
                r.view().user_id(&spec),
                None,
                "{spec:?} {:?}",
                String::from_utf8_lossy(value)
            );
        }
    }
    // The first Authorization header with the right scheme counts.
    let r = req("/")
        .header("Authorization", "Basic !!!")
        .header("Authorization", basic("carol:x"));
    assert_eq!(
        r.view().user_id(&UserSpec::Basic).as_deref(),
        Some(&b"carol"[..])
    );
}

#[test]
fn request_parts() {
    let paths = [
        ("/a/b?c=d", "/a/b", Some("c=d")),
        ("/a#frag", "/a", None),
        ("/a?b=1#f", "/a", Some("b=1")),
        ("/", "/", None),
        ("http://h.example:8080/p/q?x=1", "/p/q", Some("x=1")),
        ("HTTPS://h.example", "/", None),
        ("http://h.example?x", "/", Some("x")),
        ("*", "*", None),
        ("h.example:443", "", None),
        ("", "", None),
    ];
    for (target, path, query) in paths {
        let r = req(target);
        assert_eq!(r.view().path(), path, "{target:?}");
        assert_eq!(r.view().query(), query, "{target:?}");
    }
    let hosts: [(&[u8], &[u8]); 7] = [
        (b"h.example:80", b"h.example"),
        (b"h.example", b"h.example"),
        (b"h.example:", b"h.example"),
        (b"[::1]:80", b"[::1]"),
        (b"[::1]", b"[::1]"),
        (b"[::1", b"[::1"),
        (b"h:x", b"h:x"),
    ];
    for (host, want) in hosts {
        assert_eq!(strip_port(host), want);
    }
}

#[test]
fn extraction_borrows_when_it_can() {
    let r = req("/?user=plain&enc=a%41")
        .header("Cookie", "session=abc")
        .header("x-user", "bob");
    let v = r.view();
    assert!(matches!(
        v.user_id(&UserSpec::Query("user".into())),
        Some(Cow::Borrowed(b"plain"))
    ));
    assert!(matches!(
        v.user_id(&UserSpec::Query("enc".into())),
        Some(Cow::Owned(ref o)) if o == b"aA"
    ));
    assert!(matches!(
        v.user_id(&UserSpec::Header("X-User".into())),
        Some(Cow::Borrowed(b"bob"))
    ));
    assert!(matches!(
        KeySource::Cookie("session".into()).extract(&v),
        Some(Cow::Borrowed(b"abc"))
    ));
    assert_eq!(v.cookie("session"), Some(&b"abc"[..]));
    assert_eq!(v.cookie("sess"), None);
}

#[derive(Deserialize)]
struct KeyFile {
    key: KeySource,
}

fn key(text: &str) -> Result<KeySource, String> {
    toml::from_str::<KeyFile>(&format!("key = {text}\n"))
        .map(|f| f.key)
        .map_err(|e| e.to_string())
}

#[test]
fn key_sources() {
    let r = req("/?uid=u%31")
        .addr("::ffff:198.51.100.9")
        .header("Cookie", "session=s1")
        .header("X-User", "h1")
        .header("Authorization", jwt(r#"{"sub":"j1"}"#));
    let v = r.view();
    let cases: [(&str, Option<&[u8]>); 7] = [
        (r#"{ cookie = "session" }"#, Some(b"s1")),
        (r#"{ cookie = "other" }"#, None),
        (r#"{ header = "x-user" }"#, Some(b"h1")),
        (r#"{ user = { from = "jwt-sub" } }"#, Some(b"j1")),
        (
            r#"{ user = { from = "query", name = "uid" } }"#,
            Some(b"u1"),
        ),
        (r#"{ user = { from = "basic" } }"#, None),
        (r#""client_addr""#, Some(&[198, 51, 100, 9])),
    ];
    for (text, want) in cases {
        let source = key(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(source.extract(&v).as_deref(), want, "{text}");
    }
    let v6 = req("/").addr("2001:db8::1");
    let bytes = KeySource::ClientAddr.extract(&v6.view()).unwrap();
    assert_eq!(bytes.len(), 16);

    let errors = [
        (
            r#"{ user = { from = "header" } }"#,
            "`name` is required when from = \"header\"",
        ),
        (
            r#"{ user = { from = "basic", name = "x" } }"#,
            "`name` is not used",
        ),
        (r#"{ user = { from = "cookie" } }"#, "unknown variant"),
        (
            r#"{ user = { from = "basic", extra = 1 } }"#,
            "unknown field",
        ),
        (r#"{ header = "bad name" }"#, "not a valid header name"),
        (r#"{ cookie = "" }"#, "not a valid cookie name"),
        (r#""client""#, "unknown variant"),
    ];
    for (text, want) in errors {
        let err = key(text).expect_err(text);
        assert!(err.contains(want), "{text}: {err:?} lacks {want:?}");
    }
}

#[test]
fn first_matching_rule_wins_in_config_order() {
    let set = compile(
        r#"
[[rules]]
name = "gold-users"
pool = "priority"
when = { cookie = { name = "tier", equals = "gold" } }

[[rules]]
name = "api-or-flagged"
pool = "priority"
when = { any = [ { path = { prefix = "/api/" } }, { header = { name = "x-priority", present = true } } ] }

[[rules]]
name = "anonymous"
pool = "default"
when = { not = { user = { from = "basic", present = true } } }
"#,
    )
    .unwrap();
    let gold_api = req("/api/x").header("Cookie", "tier=gold");
    let m = set.route(&gold_api.view()).unwrap();
    assert_eq!((m.index, m.name, m.pool), (0, "gold-users", "priority"));
    let api = req("/api/x");
    let m = set.route(&api.view()).unwrap();
    assert_eq!((m.index, m.name, m.pool), (1, "api-or-flagged", "priority"));
    let anon = req("/");
    let m = set.route(&anon.view()).unwrap();
    assert_eq!((m.index, m.name, m.pool), (2, "anonymous", "default"));
    let known = req("/").header("Authorization", basic("alice:x"));
    assert_eq!(set.route(&known.view()), None);
    assert_eq!(
        set.pools_referenced().collect::<Vec<_>>(),
        ["priority", "priority", "default"]
    );
    let empty = compile("").unwrap();
    assert_eq!(empty.route(&anon.view()), None);
    assert_eq!(empty.pools_referenced().count(), 0);
}

fn nested_nots(levels: usize) -> String {
    let mut when = r#"{ path = { exact = "/" } }"#.to_owned();
    for _ in 1..levels {
        when = format!("{{ not = {when} }}");
    }
    when
}

#[test]
fn nesting_limit() {
    // 16 levels (the leaf under 15 `not`s) compile, 17 do not.
    assert!(
        compile(&format!(
            "[[rules]]\nname = \"r\"\npool = \"p\"\nwhen = {}\n",
            nested_nots(16)
        ))
        .is_ok()
    );
    let err = compile(&format!(
        "[[rules]]\nname = \"r\"\npool = \"p\"\nwhen = {}\n",
        nested_nots(17)
    ))
    .unwrap_err();
    assert!(err.contains("nested deeper than 16"), "{err}");
    assert!(
        err.contains(&format!("when{}:", ".not".repeat(16))),
        "{err}"
    );
}

#[test]
fn config_errors_name_rule_and_field() {
    let rule = |when: &str| format!("[[rules]]\nname = \"r\"\npool = \"p\"\nwhen = {when}\n");
    let cases: Vec<(String, &str)> = vec![
        (
            "[[rules]]\nname = \"a\"\npool = \"p\"\nwhen = { method = { is = \"GET\" } }\n[[rules]]\nname = \"a\"\npool = \"q\"\nwhen = { method = { is = \"GET\" } }\n".to_owned(),
            "rules[1] \"a\": name: duplicate, first used by rules[0]",
        ),
        (
            "[[rules]]\nname = \"\"\npool = \"p\"\nwhen = { method = { is = \"GET\" } }\n".to_owned(),
            "rules[0] \"\": name: must not be empty",
        ),
        (
            "[[rules]]\nname = \"r\"\npool = \"\"\nwhen = { method = { is = \"GET\" } }\n".to_owned(),
            "rules[0] \"r\": pool: must not be empty",
        ),
        (
            "[[rules]]\nname = \"r\"\nwhen = { method = { is = \"GET\" } }\n".to_owned(),
            "missing field `pool`",
        ),
        (
            "[[rules]]\nname = \"r\"\npool = \"p\"\nwhen = { method = { is = \"GET\" } }\npriority = 1\n".to_owned(),
            "unknown field `priority`",
        ),
        (
            format!(
                "[[rules]]\nname = \"ok\"\npool = \"p\"\nwhen = {{ method = {{ is = \"GET\" }} }}\n{}",
                rule(r#"{ any = [ { path = { prefix = "/a" } }, { cookie = { name = "tier", regex = "(" } } ] }"#)
                    .replace("name = \"r\"", "name = \"gold-users\"")
            ),
            "rules[1] \"gold-users\": when.any[1].cookie.regex: invalid regex",
        ),
        (rule(r#"{ header = { name = "x-a" } }"#), "rules[0] \"r\": when.header: one of `present`, `absent`, `equals`, `regex` is required"),
        (rule(r#"{ cookie = { name = "a", present = true, equals = "x" } }"#), "when.cookie: only one of `present`, `absent`, `equals`, `regex` may be given, found present, equals"),
        (rule(r#"{ client_id = { header = "x-id", absent = true, regex = "x" } }"#), "when.client_id: only one of"),
        (rule(r#"{ client_id = { header = "x id", present = true } }"#), "when.client_id.header: \"x id\" is not a valid header name"),
        (rule(r#"{ header = { name = "", present = true } }"#), "when.header.name: \"\" is not a valid header name"),
        (rule(r#"{ cookie = { name = "a=b", present = true } }"#), "when.cookie.name: \"a=b\" is not a valid cookie name"),
        (rule(r#"{ cookie = { name = "a", valeu = "x" } }"#), "unknown field `valeu`"),
        (rule(r#"{ cookies = { name = "a", present = true } }"#), "unknown variant `cookies`"),
        (rule(r#"{ client_addr = { cidr = ["10.0.0.0/8", "10.0.0.0/33"] } }"#), "when.client_addr.cidr[1]: invalid CIDR \"10.0.0.0/33\""),
        (rule(r#"{ client_addr = { cidr = ["not-an-ip"] } }"#), "when.client_addr.cidr[0]: invalid CIDR"),
        (rule("{ client_addr = { cidr = [] } }"), "when.client_addr.cidr: must not be empty"),
        (rule(r#"{ user = { from = "header", present = true } }"#), "when.user.name: `name` is required when from = \"header\""),
        (rule(r#"{ user = { from = "query", name = "", present = true } }"#), "when.user.name: must not be empty"),
        (rule(r#"{ user = { from = "jwt-sub", name = "sub", present = true } }"#), "when.user.name: `name` is not used when from = \"jwt-sub\""),
        (rule(r#"{ user = { from = "header", name = "a b", present = true } }"#), "when.user.name: \"a b\" is not a valid header name"),
        (rule(r#"{ user = { from = "oauth", present = true } }"#), "unknown variant `oauth`"),
        (rule(r#"{ method = { is = ["GET", "GE T"] } }"#), "when.method.is[1]: \"GE T\" is not a valid method"),
        (rule("{ method = { is = [] } }"), "when.method.is: must not be empty"),
        (rule("{ method = { is = 1 } }"), "a string or a list of strings"),
        (rule(r#"{ path = { exact = "" } }"#), "when.path.exact: must not be empty"),
        (rule(r#"{ path = { prefix = "" } }"#), "when.path.prefix: must not be empty"),
        (rule(r#"{ path = { regex = "[" } }"#), "when.path.regex: invalid regex"),
        (rule(r#"{ path = { glob = "*" } }"#), "unknown variant `glob`"),
        (rule(r#"{ host = { equals = "example.com:80" } }"#), "when.host.equals: \"example.com:80\" must not include a port"),
        (rule(r#"{ host = { regex = "a{2,1}" } }"#), "when.host.regex: invalid regex"),
        (rule(r#"{ path = { regex = "\\w{1000}{1000}" } }"#), "size limit"),
        (rule("{ any = [] }"), "when.any: must not be empty"),
        (rule("{ all = [] }"), "when.all: must not be empty"),
        (rule(r#"{ not = { all = [ { method = { is = "GET" } }, { header = { name = "x" } } ] } }"#), "when.not.all[1].header: one of"),
    ];
    for (text, want) in &cases {
        let Err(err) = compile(text) else {
            panic!("accepted:\n{text}");
        };
        assert!(err.contains(want), "{text}\n{err:?}\nlacks {want:?}");
    }
}

#[test]
fn two_keys_in_one_condition_are_rejected() {
    let text = "[[rules]]\nname = \"r\"\npool = \"p\"\nwhen = { method = { is = \"GET\" }, path = { exact = \"/\" } }\n";
    let err = compile(text).unwrap_err();
    assert!(err.contains("wanted exactly 1 element"), "{err}");
}
