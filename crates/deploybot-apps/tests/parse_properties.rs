//! Property tests of `AppsConfig::parse`: it never panics, every problem it
//! reports points inside the text, whatever it accepts passes every check it
//! promises, and valid files round-trip whatever their YAML style.

use std::collections::BTreeMap;

use deploybot_apps::{AppsConfig, AppsError};
use deploybot_wire::names;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::Config;

const ORIGIN: &str = "conf/apps.yaml";

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------
// Checking one outcome of `parse`.

/// Lines as a YAML parser counts them: `\n`, `\r\n` and a lone `\r` each end one.
fn line_count(text: &str) -> u64 {
    let breaks =
        text.matches('\n').count() + text.matches('\r').count() - text.matches("\r\n").count();
    let unterminated = !(text.ends_with('\n') || text.ends_with('\r'));
    (breaks + usize::from(unterminated && !text.is_empty())) as u64
}

/// Characters in the longest line.
fn widest_line(text: &str) -> u64 {
    text.split(['\n', '\r'])
        .map(|line| line.chars().count())
        .max()
        .unwrap_or(0) as u64
}

/// What every outcome of `parse` must satisfy: problems exist, name the file
/// and point inside the text; an accepted file passes every documented check.
fn check_outcome(text: &str, outcome: Result<AppsConfig, AppsError>) -> Result<(), TestCaseError> {
    match outcome {
        Ok(config) => check_accepted(&config),
        Err(AppsError::Invalid(problems)) => {
            prop_assert!(
                !problems.is_empty(),
                "Invalid with no problem for {:?}",
                text
            );
            let lines = line_count(text);
            let width = widest_line(text);
            for problem in &problems {
                prop_assert_eq!(&problem.file, ORIGIN);
                prop_assert!(
                    (1..=lines + 1).contains(&problem.line),
                    "{} is outside the {} line(s) of {:?}",
                    problem,
                    lines,
                    text
                );
                prop_assert!(
                    (1..=width + 1).contains(&problem.column),
                    "{} is beyond column {} of {:?}",
                    problem,
                    width + 1,
                    text
                );
                prop_assert!(!problem.message.trim().is_empty(), "{:?}", problem);
            }
            Ok(())
        }
        Err(other) => Err(TestCaseError::fail(format!(
            "parse returned {other:?}, which only load may return"
        ))),
    }
}

/// Everything the validation in `file.rs` promises about an accepted file.
fn check_accepted(config: &AppsConfig) -> Result<(), TestCaseError> {
    let mut seen = Vec::new();
    for app in config.apps() {
        prop_assert!(names::check_app_name(&app.name).is_ok(), "{:?}", app.name);
        prop_assert!(!seen.contains(&app.name), "duplicate app {:?}", app.name);
        seen.push(app.name.clone());
        prop_assert!(names::check_repo(&app.repo).is_ok(), "{:?}", app.repo);
        prop_assert!(!app.hosts.is_empty(), "app {} has no hosts", app.name);
        for (i, host) in app.hosts.iter().enumerate() {
            prop_assert!(names::check_hostname(host).is_ok(), "{:?}", host);
            prop_assert!(!app.hosts[..i].contains(host), "{:?} twice", host);
        }
        let patterns = app.branches.iter().flatten().chain(&app.tags);
        for pattern in patterns {
            prop_assert!(!pattern.as_str().is_empty(), "app {}", app.name);
        }
        let deploy = &app.deploy;
        prop_assert!(
            deploy
                .command
                .first()
                .is_some_and(|program| !program.is_empty()),
            "app {}: {:?}",
            app.name,
            deploy.command
        );
        prop_assert!(
            !deploy.command.iter().any(|arg| arg.contains('\0')),
            "{:?}",
            deploy.command
        );
        if let Some(workdir) = &deploy.workdir {
            prop_assert!(workdir.starts_with('/'), "{:?}", workdir);
        }
        for key in deploy.env.keys() {
            prop_assert!(
                key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !key.starts_with("DEPLOYBOT_"),
                "env {:?}",
                key
            );
        }
        prop_assert!(
            (1..=24 * 60 * 60).contains(&deploy.timeout_secs),
            "timeout {}",
            deploy.timeout_secs
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// YAML text.

/// A YAML double-quoted scalar holding exactly `s`.
fn double_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~'
            | '\u{a0}'..='\u{d7ff}'
            | '\u{e000}'..='\u{fefe}'
            | '\u{ff00}'..='\u{fffd}' => {
                out.push(c);
            }
            c if (c as u32) >= 0x10000 => out.push(c),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// `s` as a plain scalar when YAML reads that back as the same string, else double-quoted.
fn plain_or_quoted(s: &str) -> String {
    let safe_plain = s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '/' || c == '.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null" | ".inf" | ".nan"
        );
    if safe_plain {
        s.to_owned()
    } else {
        double_quoted(s)
    }
}

/// A YAML single-quoted scalar holding exactly `s` (printable, one line).
fn single_quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A YAML node; scalars are already written as YAML.
#[derive(Debug, Clone)]
enum Node {
    Scalar(String),
    /// `indent`: how much deeper than its parent a block collection starts.
    List {
        items: Vec<Node>,
        flow: bool,
        indent: usize,
    },
    Map {
        entries: Vec<(String, Node)>,
        flow: bool,
        indent: usize,
    },
}

impl Node {
    fn is_block(&self) -> bool {
        match self {
            Node::Scalar(_) => false,
            Node::List { items, flow, .. } => !flow && !items.is_empty(),
            Node::Map { entries, flow, .. } => !flow && !entries.is_empty(),
        }
    }

    fn indent(&self) -> usize {
        match self {
            Node::Scalar(_) => 0,
            Node::List { indent, .. } | Node::Map { indent, .. } => *indent,
        }
    }

    fn flow(&self) -> String {
        match self {
            Node::Scalar(s) => s.clone(),
            Node::List { items, .. } => {
                let items: Vec<String> = items.iter().map(Node::flow).collect();
                format!("[{}]", items.join(", "))
            }
            Node::Map { entries, .. } => {
                let entries: Vec<String> = entries
                    .iter()
                    .map(|(key, value)| format!("{key}: {}", value.flow()))
                    .collect();
                format!("{{{}}}", entries.join(", "))
            }
        }
    }

    /// Appends this block collection with its lines starting at column `at`.
    fn block(&self, at: usize, out: &mut String) {
        let pad = " ".repeat(at);
        match self {
            Node::Scalar(_) => unreachable!("scalars are written inline"),
            Node::List { items, .. } => {
                for item in items {
                    if !item.is_block() {
                        out.push_str(&format!("{pad}- {}\n", item.flow()));
                    } else if matches!(item, Node::Map { indent: 2, .. }) {
                        // The usual `- key: value` form: the map's first line shares the dash's.
                        let mut map = String::new();
                        item.block(at + 2, &mut map);
                        out.push_str(&format!("{pad}- {}", &map[at + 2..]));
                    } else {
                        out.push_str(&format!("{pad}-\n"));
                        item.block(at + item.indent(), out);
                    }
                }
            }
            Node::Map { entries, .. } => {
                for (key, value) in entries {
                    if value.is_block() {
                        out.push_str(&format!("{pad}{key}:\n"));
                        value.block(at + value.indent(), out);
                    } else {
                        let value = value.flow();
                        if value.is_empty() {
                            out.push_str(&format!("{pad}{key}:\n"));
                        } else {
                            out.push_str(&format!("{pad}{key}: {value}\n"));
                        }
                    }
                }
            }
        }
    }

    fn document(&self) -> String {
        if self.is_block() {
            let mut out = String::new();
            self.block(0, &mut out);
            out
        } else {
            format!("{}\n", self.flow())
        }
    }
}

/// A scalar as it might appear in apps.yaml: plausible values for every key,
/// YAML's special forms, values that are wrong in interesting ways, and
/// arbitrary text in both quoting styles.
fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(vec![
            "web", "api", "acme/web", "acme", "-acme/web", "acme/..", "a/b/c", "web-01",
            "web_02.prod", "-web", "web..01", "main", "release/*", "v*", "**", "**a",
            "release/[x", "[!a-z]", "[]", "./deploy.sh", "make", "/srv/web", "srv/web", "10m",
            "90", "600", "0", "-1", "86400", "86401", "1h", "24h", "25h", "0s", "1ns", "soon",
            "99999999999999999999999", "18446744073709551616", "1e400", "1.5", "0x1F", "0o17",
            ".inf", ".nan", "true", "false", "yes", "no", "on", "null", "~", "", "PORT",
            "RAILS_ENV", "DEPLOYBOT_JOB_ID", "9LIVES", "A-B", "&a web", "&b [x, y]", "*a", "*b",
            "*nope", "!!str 5", "!!int x", "!!binary aGVsbG8=", "!custom x", "|", ">-",
            "'it''s'", "\"esc\\x00aped\"", "\"\\u0000\"", "\"tab\\there\"", "# comment", "- x",
            "? x", ": x", "a: b", "{a", "[a", "a]", "}", "%YAML 1.2", "---", "...", "@x", "`x",
        ]).prop_map(str::to_owned),
        2 => "[a-zA-Z][a-zA-Z0-9._/*-]{0,12}",
        1 => "[0-9]{1,25}",
        1 => any::<String>().prop_map(|s| double_quoted(&s)),
        1 => "[ -~\u{e9}\u{1F600}]{0,20}".prop_map(|s| single_quoted(&s)),
    ]
}

const APP_KEYS: &[&str] = &[
    "name",
    "repo",
    "hosts",
    "branches",
    "tags",
    "deploy",
    "deploy_on_push",
];
const DEPLOY_KEYS: &[&str] = &["command", "workdir", "env", "timeout"];

/// A key: mostly apps.yaml's own, sometimes a near miss or YAML oddity.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => select(
            [&["apps", "webhook_secret_env"], APP_KEYS, DEPLOY_KEYS].concat()
        ).prop_map(str::to_owned),
        1 => select(vec![
            "hostz", "Apps", "\"name\"", "'repo'", "? name", "<<", "-", "\"\"", "1", "null",
            "&k name", "*k", "name ", "x\ty",
        ]).prop_map(str::to_owned),
    ]
}

/// Indentation of a nested block collection: usually 2, sometimes anything.
fn indent() -> impl Strategy<Value = usize> {
    prop_oneof![10 => Just(2), 1 => 0..=5usize]
}

fn list_of(
    item: impl Strategy<Value = Node>,
    size: std::ops::Range<usize>,
) -> impl Strategy<Value = Node> {
    (
        proptest::collection::vec(item, size),
        any::<bool>(),
        indent(),
    )
        .prop_map(|(items, flow, indent)| Node::List {
            items,
            flow,
            indent,
        })
}

fn map_of(
    entry: impl Strategy<Value = (String, Node)>,
    size: std::ops::Range<usize>,
) -> impl Strategy<Value = Node> {
    (
        proptest::collection::vec(entry, size),
        any::<bool>(),
        indent(),
    )
        .prop_map(|(entries, flow, indent)| Node::Map {
            entries,
            flow,
            indent,
        })
}

/// Any node: scalars, lists and maps nested a few levels.
fn node() -> impl Strategy<Value = Node> {
    scalar()
        .prop_map(Node::Scalar)
        .prop_recursive(4, 40, 6, |inner| {
            prop_oneof![list_of(inner.clone(), 0..5), map_of((key(), inner), 0..6),]
        })
}

/// How much of a generated file is off: 0 means every value has the right
/// type and a plausible value (only names, durations, duplicates and
/// indentation can still be wrong); higher means more values replaced by
/// anything at all.
type Noise = u32;

/// `plausible` most of the time, with `noise`, anything else instead.
fn noisy<T: std::fmt::Debug + 'static>(
    plausible: BoxedStrategy<T>,
    noise: Noise,
    other: BoxedStrategy<T>,
) -> BoxedStrategy<T> {
    if noise == 0 {
        plausible
    } else {
        prop_oneof![16 => plausible, noise => other].boxed()
    }
}

/// A scalar that suits `key`, written as YAML.
fn scalar_for(key: &'static str, noise: Noise) -> BoxedStrategy<Node> {
    let text: BoxedStrategy<String> = match key {
        "name" => "[a-z][a-z0-9-]{0,8}".boxed(),
        "repo" => "[a-z]{1,5}/[a-z]{1,5}".boxed(),
        "hosts" => "[a-z]{1,5}-0[0-9]".boxed(),
        "branches" | "tags" => pattern().boxed(),
        "command" => "[a-z./]{1,8}".boxed(),
        "workdir" => "/[a-z/]{0,8}".boxed(),
        "env" => "[A-Z_]{1,6}".boxed(),
        _ => "[a-zA-Z0-9 ]{0,8}".boxed(),
    };
    let plausible: BoxedStrategy<String> = match key {
        "timeout" => select(vec!["10m", "90", "1h", "0", "25h", "86400", "soon"])
            .prop_map(str::to_owned)
            .boxed(),
        "deploy_on_push" => select(vec!["true", "false"])
            .prop_map(str::to_owned)
            .boxed(),
        _ => text.prop_map(|s| plain_or_quoted(&s)).boxed(),
    };
    noisy(plausible, noise, scalar().boxed())
        .prop_map(Node::Scalar)
        .boxed()
}

/// A value for `key`: of the right type unless noise says otherwise.
fn value_for(key: &'static str, noise: Noise) -> BoxedStrategy<Node> {
    let right: BoxedStrategy<Node> = match key {
        "hosts" | "branches" | "tags" | "command" => list_of(scalar_for(key, noise), 0..4).boxed(),
        "env" => map_of(
            (scalar_for("env", noise), scalar_for("env value", noise))
                .prop_map(|(k, v)| (k.flow(), v)),
            0..4,
        )
        .boxed(),
        "deploy" => keyed_map(
            &[
                ("command", 0.98),
                ("workdir", 0.4),
                ("env", 0.4),
                ("timeout", 0.4),
            ],
            noise,
        )
        .boxed(),
        _ => scalar_for(key, noise),
    };
    noisy(right, noise, node().boxed())
}

/// A map holding each of `keys` with its probability, and now and then one
/// more entry of any key and value.
fn keyed_map(keys: &[(&'static str, f64)], noise: Noise) -> impl Strategy<Value = Node> {
    let fields: Vec<_> = keys
        .iter()
        .map(|&(key, p)| {
            proptest::option::weighted(
                p,
                value_for(key, noise).prop_map(move |v| (key.to_owned(), v)),
            )
        })
        .collect();
    let extra = proptest::option::weighted(0.05 * f64::from(noise + 1), (key(), node()));
    (
        fields,
        extra,
        any::<bool>(),
        indent(),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(fields, extra, flow, indent, at)| {
            let mut entries: Vec<(String, Node)> = fields.into_iter().flatten().collect();
            if let Some(extra) = extra {
                entries.insert(at.index(entries.len() + 1), extra);
            }
            Node::Map {
                entries,
                flow: flow && at.index(4) == 0,
                indent,
            }
        })
}

/// A whole file that looks like apps.yaml: an `apps:` list of app-like maps,
/// sometimes with extra top-level keys; or any YAML at all.
fn plausible_file() -> impl Strategy<Value = String> {
    let noise = prop_oneof![2 => Just(0), 1 => 1..4 as Noise];
    let top = noise.prop_flat_map(|noise| {
        let app = keyed_map(
            &[
                ("name", 0.98),
                ("repo", 0.98),
                ("hosts", 0.98),
                ("deploy_on_push", 0.3),
                ("branches", 0.3),
                ("tags", 0.3),
                ("deploy", 0.98),
                ("webhook_secret_env", 0.05),
            ],
            noise,
        );
        let apps = noisy(list_of(app, 0..4).boxed(), noise, node().boxed());
        let extra = proptest::option::weighted(0.02 + 0.1 * f64::from(noise), (key(), node()));
        (apps, extra, indent()).prop_map(|(apps, extra, indent)| Node::Map {
            entries: std::iter::once(("apps".to_owned(), apps))
                .chain(extra)
                .collect(),
            flow: false,
            indent,
        })
    });
    prop_oneof![
        6 => top.prop_map(|n| n.document()),
        1 => node().prop_map(|n| n.document()),
    ]
}

// ---------------------------------------------------------------------------
// Valid files.

#[derive(Debug, Clone)]
struct AppSpec {
    name: String,
    repo: String,
    hosts: Vec<String>,
    deploy_on_push: Option<bool>,
    branches: Option<Vec<String>>,
    tags: Vec<String>,
    command: Vec<String>,
    workdir: Option<String>,
    env: BTreeMap<String, String>,
    /// As written, and the seconds it means.
    timeout: Option<(String, u64)>,
}

fn timeout() -> impl Strategy<Value = (String, u64)> {
    prop_oneof![
        (1u64..=86_400).prop_map(|s| (s.to_string(), s)),
        (1u64..=86_400).prop_map(|s| (format!("{s}s"), s)),
        (1u64..=1_440).prop_map(|m| (format!("{m}m"), m * 60)),
        (1u64..=24).prop_map(|h| (format!("{h}h"), h * 3600)),
        (1u64..=24).prop_map(|h| (format!("\"{h}h\""), h * 3600)),
        (1u64..=23, 1u64..=59).prop_map(|(h, m)| (format!("{h}h {m}m"), h * 3600 + m * 60)),
    ]
}

fn pattern() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec![
            "main",
            "release/*",
            "v*",
            "**",
            "hotfix-?",
            "[a-c]*",
            "[!x]*",
            "feat/**/wip"
        ])
        .prop_map(str::to_owned),
        "[a-z0-9][a-z0-9/._-]{0,12}",
    ]
}

/// Any text but NUL (which `deploy.command` refuses).
fn text_without_nul() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,20}"
}

fn app_spec(index: usize) -> impl Strategy<Value = AppSpec> {
    let hosts =
        proptest::collection::btree_set("[a-z][a-z0-9-]{0,8}(\\.[a-z][a-z0-9_]{0,5}){0,2}", 1..4)
            .prop_map(|hosts| hosts.into_iter().collect::<Vec<_>>());
    let env = proptest::collection::btree_map(
        "[A-Z_][A-Z0-9_]{0,10}".prop_filter("reserved", |k| !k.starts_with("DEPLOYBOT_")),
        text_without_nul(),
        0..4,
    );
    let command = (
        "[^\u{0}]{1,20}",
        proptest::collection::vec(text_without_nul(), 0..4),
    )
        .prop_map(|(program, mut args)| {
            args.insert(0, program);
            args
        });
    (
        (
            "[a-z][a-z0-9_.-]{0,20}",
            "[a-zA-Z0-9][a-zA-Z0-9-]{0,15}/[a-zA-Z0-9_-][a-zA-Z0-9._-]{0,15}",
            hosts,
            proptest::option::of(any::<bool>()),
            proptest::option::of(proptest::collection::vec(pattern(), 0..3)),
            proptest::collection::vec(pattern(), 0..3),
        ),
        (
            command,
            proptest::option::of("/[a-zA-Z0-9/._ -]{0,20}"),
            env,
            proptest::option::of(timeout()),
        ),
    )
        .prop_map(
            move |(
                (name, repo, hosts, deploy_on_push, branches, tags),
                (command, workdir, env, timeout),
            )| AppSpec {
                // The index keeps names unique; a prefix keeps them to 64 bytes.
                name: format!("{}-{index}", &name[..name.len().min(50)]),
                repo,
                hosts,
                deploy_on_push,
                branches,
                tags,
                command,
                workdir,
                env,
                timeout,
            },
        )
}

fn app_specs() -> impl Strategy<Value = Vec<AppSpec>> {
    (1usize..6).prop_flat_map(|n| (0..n).map(app_spec).collect::<Vec<_>>())
}

/// How a valid file is written: all of it is YAML-equivalent.
#[derive(Debug, Clone)]
struct Style {
    /// Spaces per nesting level.
    width: usize,
    /// `[a, b]` rather than one `- a` line per item.
    flow_lists: bool,
    /// `{K: v}` rather than one `K: v` line per entry.
    flow_env: bool,
    /// Plain scalars where YAML allows it, double quotes otherwise.
    plain: bool,
    /// A comment line after each app, and a blank line.
    comments: bool,
}

fn style() -> impl Strategy<Value = Style> {
    (
        2usize..=4,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(width, flow_lists, flow_env, plain, comments)| Style {
            width,
            flow_lists,
            flow_env,
            plain,
            comments,
        })
}

/// `s` as YAML: plain when the style allows and `s` is safely plain, else quoted.
fn yaml_string(s: &str, style: &Style) -> String {
    if style.plain {
        plain_or_quoted(s)
    } else {
        double_quoted(s)
    }
}

fn write_list(out: &mut String, pad: &str, key: &str, items: &[String], style: &Style) {
    let items: Vec<String> = items.iter().map(|i| yaml_string(i, style)).collect();
    if style.flow_lists || items.is_empty() {
        out.push_str(&format!("{pad}{key}: [{}]\n", items.join(", ")));
    } else {
        out.push_str(&format!("{pad}{key}:\n"));
        for item in items {
            out.push_str(&format!("{pad}{}- {item}\n", " ".repeat(style.width)));
        }
    }
}

fn write_file(apps: &[AppSpec], style: &Style) -> String {
    let w = style.width;
    let app_pad = " ".repeat(w + 2);
    let deploy_pad = " ".repeat(w + 2 + w);
    let mut out = String::from("# generated\napps:\n");
    for app in apps {
        out.push_str(&format!(
            "{}- name: {}\n",
            " ".repeat(w),
            yaml_string(&app.name, style)
        ));
        out.push_str(&format!(
            "{app_pad}repo: {}\n",
            yaml_string(&app.repo, style)
        ));
        write_list(&mut out, &app_pad, "hosts", &app.hosts, style);
        if let Some(on) = app.deploy_on_push {
            out.push_str(&format!("{app_pad}deploy_on_push: {on}\n"));
        }
        if let Some(branches) = &app.branches {
            write_list(&mut out, &app_pad, "branches", branches, style);
        }
        if !app.tags.is_empty() {
            write_list(&mut out, &app_pad, "tags", &app.tags, style);
        }
        out.push_str(&format!("{app_pad}deploy:\n"));
        write_list(&mut out, &deploy_pad, "command", &app.command, style);
        if let Some(workdir) = &app.workdir {
            out.push_str(&format!(
                "{deploy_pad}workdir: {}\n",
                yaml_string(workdir, style)
            ));
        }
        if !app.env.is_empty() {
            let entries = app
                .env
                .iter()
                .map(|(k, v)| (k.clone(), yaml_string(v, style)));
            if style.flow_env {
                let entries: Vec<String> = entries.map(|(k, v)| format!("{k}: {v}")).collect();
                out.push_str(&format!("{deploy_pad}env: {{{}}}\n", entries.join(", ")));
            } else {
                out.push_str(&format!("{deploy_pad}env:\n"));
                for (k, v) in entries {
                    out.push_str(&format!("{deploy_pad}{}{k}: {v}\n", " ".repeat(w)));
                }
            }
        }
        if let Some((written, _)) = &app.timeout {
            out.push_str(&format!("{deploy_pad}timeout: {written}\n"));
        }
        if style.comments {
            out.push_str("\n  # next app\n");
        }
    }
    out
}

/// A valid file with a few random edits: characters inserted or removed,
/// lines duplicated, dropped or re-indented.
#[derive(Debug, Clone)]
enum Edit {
    Insert(prop::sample::Index, char),
    Remove(prop::sample::Index),
    DuplicateLine(prop::sample::Index),
    RemoveLine(prop::sample::Index),
    Indent(prop::sample::Index, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let special = prop_oneof![
        4 => select(vec![
            ':', '-', ' ', '\t', '\n', '\r', '#', '[', ']', '{', '}', ',', '"', '\'', '&', '*',
            '!', '|', '>', '?', '%', '@', '`', '\\', '\0', '\u{feff}', '\u{85}', '\u{2028}',
        ]),
        1 => any::<char>(),
    ];
    prop_oneof![
        3 => (any::<prop::sample::Index>(), special).prop_map(|(at, c)| Edit::Insert(at, c)),
        2 => any::<prop::sample::Index>().prop_map(Edit::Remove),
        1 => any::<prop::sample::Index>().prop_map(Edit::DuplicateLine),
        1 => any::<prop::sample::Index>().prop_map(Edit::RemoveLine),
        1 => (any::<prop::sample::Index>(), 0usize..4).prop_map(|(at, n)| Edit::Indent(at, n)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for edit in edits {
        match edit {
            Edit::Insert(at, c) => {
                let at = at.index(chars.len() + 1);
                chars.insert(at, *c);
            }
            Edit::Remove(at) if !chars.is_empty() => {
                chars.remove(at.index(chars.len()));
            }
            Edit::Remove(_) => {}
            Edit::DuplicateLine(at) | Edit::RemoveLine(at) | Edit::Indent(at, _) => {
                let text: String = chars.iter().collect();
                let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
                let i = at.index(lines.len());
                match edit {
                    Edit::DuplicateLine(_) => lines.insert(i, lines[i].clone()),
                    Edit::RemoveLine(_) => {
                        lines.remove(i);
                    }
                    Edit::Indent(_, n) => lines[i] = format!("{}{}", " ".repeat(*n), lines[i]),
                    _ => unreachable!(),
                }
                chars = lines.join("\n").chars().collect();
            }
        }
    }
    chars.into_iter().collect()
}

// ---------------------------------------------------------------------------
// Properties.

proptest! {
    #![proptest_config(config(512))]

    // Property: any text at all is either a config or problems located inside it.
    // Why: apps.yaml is edited by hand and reloaded on SIGHUP; a panic there
    // takes the controller down, and a problem pointing nowhere helps no one.
    #[test]
    fn arbitrary_text_never_panics_and_problems_point_inside_it(
        text in prop_oneof![
            any::<String>(),
            "[ -~\t\n]{0,300}",
            "[a-z:\\-\\[\\]{}, \n#&*!|>'\"]{0,200}",
            // Deep nesting, which a recursive parser could overflow the stack on.
            (1usize..5_000, select(vec!["[", "{", "- ", "a:\n ", "? "]))
                .prop_map(|(n, open)| open.repeat(n)),
        ],
    ) {
        let outcome = AppsConfig::parse(&text, ORIGIN);
        check_outcome(&text, outcome)?;
    }

    // Property: text that looks like apps.yaml (known keys, values of the right
    // type or not, random nesting and indentation) either parses into a config
    // that passes every check, or yields problems located inside the text.
    // Why: these are the mistakes people actually make in the file.
    #[test]
    fn plausible_yaml_never_panics_and_problems_point_inside_it(text in plausible_file()) {
        let outcome = AppsConfig::parse(&text, ORIGIN);
        check_outcome(&text, outcome)?;
    }

    // Property: a valid file with a few typos (characters, lines, indentation)
    // never panics and any problem is located inside the text.
    // Why: a near-valid file is the most common input after a valid one.
    #[test]
    fn a_valid_file_with_typos_never_panics_and_problems_point_inside_it(
        apps in app_specs(),
        style in style(),
        edits in proptest::collection::vec(edit(), 1..5),
    ) {
        let text = apply(&write_file(&apps, &style), &edits);
        let outcome = AppsConfig::parse(&text, ORIGIN);
        check_outcome(&text, outcome)?;
    }
}

proptest! {
    #![proptest_config(config(256))]

    // Property: a valid file, in any YAML style, loads into exactly the apps
    // it describes (count, order and every field, defaults included).
    // Why: a file that silently loads differently from what it says deploys
    // the wrong thing to the wrong hosts.
    #[test]
    fn a_valid_file_round_trips_to_its_apps(apps in app_specs(), style in style()) {
        let text = write_file(&apps, &style);
        let config = match AppsConfig::parse(&text, ORIGIN) {
            Ok(config) => config,
            Err(err) => return Err(TestCaseError::fail(format!("{err}\nin:\n{text}"))),
        };
        prop_assert_eq!(config.apps().len(), apps.len(), "{}", text);
        for (app, spec) in config.apps().iter().zip(&apps) {
            prop_assert_eq!(&app.name, &spec.name);
            prop_assert_eq!(&app.repo, &spec.repo);
            prop_assert_eq!(&app.hosts, &spec.hosts);
            prop_assert_eq!(app.deploy_on_push, spec.deploy_on_push.unwrap_or(true));
            let branches = app
                .branches
                .as_ref()
                .map(|ps| ps.iter().map(|p| p.as_str().to_owned()).collect::<Vec<_>>());
            // Tags listed and branches omitted: no branch pushes.
            let expected = match &spec.branches {
                None if !spec.tags.is_empty() => Some(Vec::new()),
                other => other.clone(),
            };
            prop_assert_eq!(&branches, &expected);
            let tags: Vec<&str> = app.tags.iter().map(|p| p.as_str()).collect();
            prop_assert_eq!(tags, spec.tags.iter().map(String::as_str).collect::<Vec<_>>());
            prop_assert_eq!(&app.deploy.command, &spec.command);
            prop_assert_eq!(&app.deploy.workdir, &spec.workdir);
            prop_assert_eq!(&app.deploy.env, &spec.env);
            let timeout = spec
                .timeout
                .as_ref()
                .map_or(deploybot_apps::DEFAULT_TIMEOUT_SECS, |(_, secs)| *secs);
            prop_assert_eq!(app.deploy.timeout_secs, timeout);
        }
        check_accepted(&config)?;
    }
}

// An app name holding a line break must not split a problem over two lines:
// every problem prints as one `file:line:column: message` line.
#[test]
fn every_problem_prints_as_one_line() {
    let text =
        "apps:\n  - name: \"a\\nb\"\n    repo: bad\n    hosts: [h]\n    deploy: {command: [x]}\n";
    let Err(AppsError::Invalid(problems)) = AppsConfig::parse(text, ORIGIN) else {
        panic!("accepted {text:?}");
    };
    for problem in &problems {
        let shown = problem.to_string();
        assert!(!shown.contains('\n'), "{shown:?}");
    }
}
