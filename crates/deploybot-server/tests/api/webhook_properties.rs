//! Property tests of `POST /v1/webhooks/github` against one real controller:
//! whatever a correctly signed delivery holds, the answer is a JSON 2xx or
//! 4xx, never a 5xx; and nothing signed with another secret gets past 401.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use deploybot_wire::{DeliveryVerdict, WebhookResponse, signature};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};

use crate::helpers::{SECRET, SHA_A, push_payload, spawn_app};

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        // Each case is a real HTTP request; shrinking a failure can take many.
        max_shrink_iters: 256,
        ..Config::default()
    }
}

/// One delivery as it goes on the wire.
#[derive(Clone)]
struct Delivery {
    /// `X-GitHub-Event`; `None`: no header.
    event: Option<Vec<u8>>,
    /// `X-GitHub-Delivery`; `None`: no header.
    delivery_id: Option<Vec<u8>>,
    /// `Content-Type`; `None`: no header.
    content_type: Option<String>,
    body: Body,
}

#[derive(Debug, Clone)]
enum Body {
    /// Bytes sent as they are.
    Raw(Vec<u8>),
    /// JSON, sent as it is or as a form's `payload` field, depending on the content type.
    Json(Value),
    /// A push payload exactly as GitHub sends it (to check the happy path stays happy).
    ValidPush(Value),
}

/// Header values and bodies as (lossy) text, so a failing case is readable.
impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = |bytes: &Option<Vec<u8>>| {
            bytes
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
        };
        let body = match &self.body {
            Body::Raw(_) => "raw",
            Body::Json(_) => "json",
            Body::ValidPush(_) => "valid push",
        };
        let bytes = self.bytes();
        f.debug_struct("Delivery")
            .field("event", &text(&self.event))
            .field("delivery_id", &text(&self.delivery_id))
            .field("content_type", &self.content_type)
            .field(
                body,
                &String::from_utf8_lossy(&bytes[..bytes.len().min(2_000)]),
            )
            .field("body_len", &bytes.len())
            .finish()
    }
}

impl Delivery {
    /// The bytes of the body, encoded as its content type says.
    fn bytes(&self) -> Vec<u8> {
        let json = match &self.body {
            Body::Raw(bytes) => return bytes.clone(),
            Body::Json(value) | Body::ValidPush(value) => serde_json::to_string(value).unwrap(),
        };
        let form = self
            .content_type
            .as_deref()
            .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
        if form {
            serde_urlencoded::to_string([("payload", json.as_str())])
                .unwrap()
                .into_bytes()
        } else {
            json.into_bytes()
        }
    }

    /// Whether `X-GitHub-Event` names `name` (HTTP drops the spaces and
    /// tabs around a header value).
    fn event_is(&self, name: &str) -> bool {
        self.event
            .as_deref()
            .is_some_and(|e| e.trim_ascii_start().trim_ascii_end() == name.as_bytes())
    }

    /// Every header the way GitHub sends them, and a push or ping payload:
    /// such a delivery must be accepted.
    fn is_well_formed(&self) -> bool {
        let id_ok = self
            .delivery_id
            .as_ref()
            .is_none_or(|id| (1..=100).contains(&id.len()) && id.iter().all(u8::is_ascii_graphic));
        let json = self.content_type.as_deref().is_some_and(|ct| {
            matches!(ct, "application/json" | "application/x-www-form-urlencoded")
        });
        matches!(self.body, Body::ValidPush(_))
            && (self.event_is("push") || self.event_is("ping"))
            && id_ok
            && json
    }
}

// ---------------------------------------------------------------------------
// Strategies.

/// Bytes a header value may carry (visible ASCII, space, tab, obs-text).
fn header_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![8 => 0x20u8..0x7f, 1 => 0x80u8..=0xff, 1 => Just(b'\t')],
        0..max,
    )
}

fn event() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        12 => Just(Some(b"push".to_vec())),
        4 => Just(Some(b"ping".to_vec())),
        2 => select(vec!["issues", "PUSH", "push ", "pull_request", "release", ""])
            .prop_map(|e| Some(e.as_bytes().to_vec())),
        1 => header_bytes(80).prop_map(Some),
        1 => Just(None),
    ]
}

/// A number not used before in this run, to make delivery ids unique.
fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Delivery ids: unique GitHub-like ones (so most deliveries are new), and odd ones.
fn delivery_id() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        16 => Just(()).prop_map(|()| {
            Some(format!("prop-{}-72d3162e-cc78-11e3-81ab-4c9367dc0958", next_id()).into_bytes())
        }),
        3 => Just(None),
        1 => header_bytes(120).prop_map(Some),
        1 => (101usize..300).prop_map(|n| Some(vec![b'x'; n])),
    ]
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        10 => Just(Some("application/json".to_owned())),
        3 => Just(Some("application/x-www-form-urlencoded".to_owned())),
        1 => select(vec![
            "application/json; charset=utf-8",
            "Application/JSON",
            "text/plain",
            "application/xml",
            "multipart/form-data; boundary=x",
            "",
        ])
        .prop_map(|ct| Some(ct.to_owned())),
        1 => Just(None),
    ]
}

/// Strings that go wrong in interesting ways: control characters, bidi
/// overrides, NUL, unpaired-looking escapes, path tricks, and any text.
fn weird_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\u{0}-\u{1f}\u{7f}\u{80}-\u{9f}a-z/.@{~^:?*\\[\\\\ -]{0,30}",
        "refs/heads/[\u{0}-\u{1f}\u{202e}\u{feff}\u{2028}a-z./]{0,20}",
        select(vec![
            "",
            " ",
            "..",
            "refs/heads/../../etc/passwd",
            "refs/heads/main\n",
            "acme/web\u{0}",
            "acme/web/extra",
            "ACME/WEB",
            "refs/heads/main; rm -rf /",
            "$(reboot)",
            "\u{202e}niam",
            "0000000000000000000000000000000000000000",
            "not-a-sha",
            "Ø/Ø",
            "a/b",
        ])
        .prop_map(str::to_owned),
    ]
}

/// Very long strings (up to 64 KiB).
fn long_string() -> impl Strategy<Value = String> {
    (
        1_000usize..65_536,
        select(vec!["a", "é", "😀", "\u{0}", "/", "."]),
    )
        .prop_map(|(n, unit)| unit.repeat(n / unit.len()))
}

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        weird_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((weird_string(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// The fields of a push payload we read (and one we do not).
const FIELDS: &[&[&str]] = &[
    &["ref"],
    &["after"],
    &["before"],
    &["deleted"],
    &["repository"],
    &["repository", "full_name"],
    &["pusher"],
    &["pusher", "name"],
    &["head_commit"],
    &["head_commit", "message"],
    &["compare"],
    &["unexpected"],
];

#[derive(Debug, Clone)]
enum Mutation {
    Remove(&'static [&'static str]),
    Set(&'static [&'static str], Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let field = select(FIELDS);
    prop_oneof![
        1 => field.clone().prop_map(Mutation::Remove),
        // A value of the wrong type, or of the right type but odd.
        1 => (field.clone(), json_value()).prop_map(|(f, v)| Mutation::Set(f, v)),
        2 => (field.clone(), weird_string()).prop_map(|(f, s)| Mutation::Set(f, s.into())),
        1 => (field, long_string()).prop_map(|(f, s)| Mutation::Set(f, s.into())),
    ]
}

fn apply(payload: &mut Value, mutation: &Mutation) {
    let (path, new) = match mutation {
        Mutation::Remove(path) => (path, None),
        Mutation::Set(path, value) => (path, Some(value.clone())),
    };
    let (last, parents) = path.split_last().unwrap();
    let mut at = payload;
    for key in parents {
        if !at[*key].is_object() {
            at[*key] = json!({});
        }
        at = &mut at[*key];
    }
    let object = at.as_object_mut().unwrap();
    match new {
        Some(value) => object.insert((*last).to_owned(), value),
        None => object.remove(*last),
    };
}

/// A push payload GitHub could send: a repo the controller knows or not, a
/// branch or tag, a SHA.
fn valid_push() -> impl Strategy<Value = Value> {
    (
        select(vec![
            "acme/web",
            "acme/api",
            "acme/docs",
            "acme/other",
            "Acme/Web",
        ]),
        select(vec![
            "refs/heads/main",
            "refs/heads/release/1.2",
            "refs/heads/feature/x",
            "refs/tags/v1.0.0",
            "refs/tags/nightly",
        ]),
        prop_oneof![Just(SHA_A.to_owned()), "[0-9a-f]{40}"],
        proptest::bool::weighted(0.2),
    )
        .prop_map(|(repo, git_ref, sha, deleted)| {
            let mut payload = push_payload(repo, git_ref, &sha);
            payload["deleted"] = json!(deleted);
            payload
        })
}

/// JSON text that serde_json refuses or reads specially: lone surrogates,
/// escaped NUL, duplicate keys, deep nesting, trailing garbage.
fn tricky_json() -> impl Strategy<Value = Vec<u8>> {
    let raw_ref = select(vec![
        "\\ud800",
        "\\udc00x",
        "\\u0000",
        "refs/heads/\\u0000main",
        "\\\"",
        "\\/",
        "\\uD83D\\uDE00",
    ]);
    prop_oneof![
        raw_ref.prop_map(|r| {
            format!(
                r#"{{"ref": "{r}", "after": "{SHA_A}", "repository": {{"full_name": "acme/web"}}}}"#
            )
            .into_bytes()
        }),
        Just(
            br#"{"ref": "refs/heads/main", "ref": "refs/heads/x", "repository": {"full_name": "acme/web"}}"#
                .to_vec()
        ),
        (1usize..20_000, select(vec![("[", "]"), ("{\"a\":", "}")])).prop_map(|(n, (open, close))| {
            format!(r#"{{"ref": "refs/heads/main", "x": {}1{}}}"#, open.repeat(n), close.repeat(n))
                .into_bytes()
        }),
        Just(br#"{"ref": "refs/heads/main"} trailing"#.to_vec()),
        Just(b"null".to_vec()),
        Just(b"[]".to_vec()),
        Just(b"\"push\"".to_vec()),
        Just(Vec::new()),
    ]
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..2_000).prop_map(Body::Raw),
        1 => tricky_json().prop_map(Body::Raw),
        1 => json_value().prop_map(Body::Json),
        4 => valid_push().prop_map(Body::ValidPush),
        6 => (valid_push(), proptest::collection::vec(mutation(), 1..3)).prop_map(
            |(mut payload, mutations)| {
                for m in &mutations {
                    apply(&mut payload, m);
                }
                Body::Json(payload)
            }
        ),
    ]
}

fn delivery() -> impl Strategy<Value = Delivery> {
    (event(), delivery_id(), content_type(), body()).prop_map(
        |(event, delivery_id, content_type, body)| Delivery {
            event,
            delivery_id,
            content_type,
            body,
        },
    )
}

/// Secrets that are not the test secret, nor equal to it as an HMAC key
/// (HMAC pads short keys with zero bytes, so no NUL).
fn other_secret() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,40}".prop_filter("another secret", |s| s != SECRET)
}

/// How a delivery can fail to be signed with the test secret.
#[derive(Debug, Clone)]
enum BadSignature {
    OtherSecret(String),
    /// Signed with the right secret, but over other bytes.
    OtherBody(Vec<u8>),
    Header(Vec<u8>),
    Missing,
}

fn bad_signature() -> impl Strategy<Value = BadSignature> {
    prop_oneof![
        4 => other_secret().prop_map(BadSignature::OtherSecret),
        1 => proptest::collection::vec(any::<u8>(), 0..50).prop_map(BadSignature::OtherBody),
        1 => prop_oneof![
            header_bytes(100),
            "sha256=[0-9a-f]{64}".prop_map(String::into_bytes),
            "sha1=[0-9a-f]{40}".prop_map(String::into_bytes),
        ]
        .prop_map(BadSignature::Header),
        1 => Just(BadSignature::Missing),
    ]
}

// ---------------------------------------------------------------------------
// Sending and checking.

struct Answer {
    status: reqwest::StatusCode,
    content_type: Option<String>,
    body: String,
}

async fn send(
    client: &reqwest::Client,
    url: &str,
    delivery: &Delivery,
    signature: Option<Vec<u8>>,
) -> Answer {
    let bytes = delivery.bytes();
    let mut request = client.post(url);
    let headers = [
        ("X-GitHub-Event", delivery.event.clone()),
        ("X-GitHub-Delivery", delivery.delivery_id.clone()),
        (
            "Content-Type",
            delivery.content_type.clone().map(String::into_bytes),
        ),
        ("X-Hub-Signature-256", signature),
    ];
    for (name, value) in headers {
        if let Some(value) = value {
            request = request.header(name, HeaderValue::from_bytes(&value).unwrap());
        }
    }
    let response = request.body(bytes).send().await.unwrap();
    Answer {
        status: response.status(),
        content_type: response
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        body: response.text().await.unwrap(),
    }
}

/// The error shape every 4xx has: `{"error": {"code", "message"}, "detail"}`.
fn check_error_shape(answer: &Answer, json: &Value) -> Result<(), TestCaseError> {
    let code = json["error"]["code"].as_str();
    let message = json["error"]["message"].as_str();
    prop_assert!(
        code.is_some_and(|c| !c.is_empty()) && message.is_some_and(|m| !m.is_empty()),
        "{} without the error shape: {}",
        answer.status,
        answer.body
    );
    prop_assert_eq!(json["detail"].as_str(), message, "{}", answer.body);
    Ok(())
}

/// Answer is JSON, labelled so.
fn parse_json(answer: &Answer) -> Result<Value, TestCaseError> {
    prop_assert!(
        answer
            .content_type
            .as_deref()
            .is_some_and(|ct| ct.starts_with("application/json")),
        "{} with content type {:?}: {}",
        answer.status,
        answer.content_type,
        answer.body
    );
    serde_json::from_str(&answer.body).map_err(|err| {
        TestCaseError::fail(format!(
            "{} with a body that is not JSON ({err}): {:?}",
            answer.status, answer.body
        ))
    })
}

/// How many answers were 200 and 4xx.
#[derive(Default)]
struct Tally {
    ok: Cell<u64>,
    client_error: Cell<u64>,
}

/// Property: a correctly signed delivery, whatever its headers and body, is
/// answered 200 with the webhook response shape or 4xx with the error shape:
/// never 5xx, never anything but JSON. A delivery GitHub could really send is
/// always 200, with a verdict that fits its event.
fn check_signed(answer: &Answer, delivery: &Delivery, tally: &Tally) -> Result<(), TestCaseError> {
    prop_assert!(
        !answer.status.is_server_error(),
        "{} for {:?}: {}",
        answer.status,
        delivery,
        answer.body
    );
    let json = parse_json(answer)?;
    if answer.status.is_success() {
        tally.ok.set(tally.ok.get() + 1);
        prop_assert_eq!(answer.status, reqwest::StatusCode::OK);
        let response: WebhookResponse = serde_json::from_value(json).map_err(|err| {
            TestCaseError::fail(format!("not a WebhookResponse ({err}): {}", answer.body))
        })?;
        prop_assert!(response.received, "{}", answer.body);
        prop_assert!(!response.delivery_id.is_empty(), "{}", answer.body);
        if !response.duplicate {
            let expected: &[DeliveryVerdict] = if delivery.event_is("push") {
                &[
                    DeliveryVerdict::Queued,
                    DeliveryVerdict::Deleted,
                    DeliveryVerdict::NoMatch,
                ]
            } else if delivery.event_is("ping") {
                &[DeliveryVerdict::Ping]
            } else {
                &[DeliveryVerdict::IgnoredEvent]
            };
            prop_assert!(
                expected.contains(&response.verdict),
                "verdict {:?} for event {:?}: {}",
                response.verdict,
                delivery.event.as_deref().map(String::from_utf8_lossy),
                answer.body
            );
        }
    } else {
        tally.client_error.set(tally.client_error.get() + 1);
        prop_assert!(
            answer.status.is_client_error(),
            "{} is neither 2xx nor 4xx: {}",
            answer.status,
            answer.body
        );
        check_error_shape(answer, &json)?;
        prop_assert!(
            !delivery.is_well_formed(),
            "a well-formed delivery was refused with {}: {}\n{:?}",
            answer.status,
            answer.body,
            delivery
        );
    }
    Ok(())
}

// One controller for every case (starting one per case would dominate the
// run time); both properties run against it in turn.
#[test]
fn webhook_answers_are_json_2xx_or_4xx_never_5xx_and_other_secrets_get_401() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = runtime.block_on(spawn_app());
    // A client of our own: GitHub sends no Authorization header, only the signature.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = app.url("/v1/webhooks/github");

    // Property 1 (see `check_signed`). Why: GitHub retries 5xx answers and
    // alerts on them, and a panic or a database error reachable from a
    // payload is a bug; a non-JSON answer breaks every client's error path.
    let tally = Tally::default();
    let mut runner = TestRunner::new(config(300));
    let result = runner.run(&delivery(), |delivery| {
        let signature = signature::sign(SECRET.as_bytes(), &delivery.bytes()).into_bytes();
        let answer = runtime.block_on(send(&client, &url, &delivery, Some(signature)));
        check_signed(&answer, &delivery, &tally)
    });
    if let Err(err) = result {
        panic!("a signed delivery got a wrong answer: {err}");
    }
    // Guards against the property holding vacuously (e.g. everything refused).
    let (ok, client_errors) = (tally.ok.get(), tally.client_error.get());
    assert!(
        ok >= 25 && client_errors >= 25,
        "too one-sided to mean anything: {ok} ok, {client_errors} client errors"
    );

    // Property 2: a delivery not signed with the webhook secret (another
    // secret, the right secret over other bytes, a forged or missing header)
    // is 401 with the error shape, whatever else it holds, and records nothing.
    // Why: the signature is the webhook's only credential.
    let mut runner = TestRunner::new(config(150));
    let result = runner.run(&(delivery(), bad_signature()), |(mut delivery, bad)| {
        delivery.delivery_id = Some(format!("unsigned-{}", next_id()).into_bytes());
        let body = delivery.bytes();
        let signature = match &bad {
            BadSignature::OtherSecret(secret) => {
                Some(signature::sign(secret.as_bytes(), &body).into_bytes())
            }
            BadSignature::OtherBody(other) => {
                prop_assume!(*other != body);
                Some(signature::sign(SECRET.as_bytes(), other).into_bytes())
            }
            BadSignature::Header(header) => Some(header.clone()),
            BadSignature::Missing => None,
        };
        let answer = runtime.block_on(send(&client, &url, &delivery, signature));
        prop_assert_eq!(
            answer.status,
            reqwest::StatusCode::UNAUTHORIZED,
            "{:?} / {:?}: {}",
            bad,
            delivery,
            answer.body
        );
        let json = parse_json(&answer)?;
        check_error_shape(&answer, &json)?;
        let code = json["error"]["code"].as_str().unwrap_or_default();
        prop_assert!(
            matches!(code, "bad_signature" | "missing_signature"),
            "{}",
            answer.body
        );
        Ok(())
    });
    if let Err(err) = result {
        panic!("a delivery not signed with the secret was not refused: {err}");
    }
    let recorded = runtime.block_on(app.deliveries());
    assert!(
        recorded
            .iter()
            .all(|d| !d.delivery_id.starts_with("unsigned-")),
        "an unsigned delivery was recorded"
    );

    drop(app);
    drop(runtime);
}
