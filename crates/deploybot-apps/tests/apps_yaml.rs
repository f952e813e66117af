use deploybot_apps::{AppsConfig, AppsError, PairingError};

const GOOD: &str = r#"
apps:
  - name: web
    repo: acme/web
    hosts: [web-01, web-02]
    deploy_on_push: true
    branches: [main, "release/*"]
    tags: ["v*"]
    deploy:
      command: ["./deploy.sh", "--fast"]
      workdir: /srv/web
      env: {RAILS_ENV: production, PORT: 8080}
      timeout: 10m
  - name: worker
    repo: acme/web
    hosts: [worker-01]
    deploy:
      command: [make, deploy]
  - name: docs
    repo: acme/docs
    hosts: [web-01]
    deploy_on_push: false
    deploy:
      command: [./publish]
      timeout: 90
"#;

fn problems(text: &str) -> Vec<String> {
    match AppsConfig::parse(text, "apps.yaml") {
        Err(AppsError::Invalid(problems)) => problems.iter().map(ToString::to_string).collect(),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("accepted invalid apps.yaml:\n{text}"),
    }
}

#[test]
fn a_valid_file_loads_with_defaults() {
    let config = AppsConfig::parse(GOOD, "apps.yaml").unwrap();
    let web = config.app("web").unwrap();
    assert_eq!(web.hosts, ["web-01", "web-02"]);
    assert_eq!(web.deploy.command, ["./deploy.sh", "--fast"]);
    assert_eq!(web.deploy.timeout_secs, 600);
    assert_eq!(web.deploy.env["PORT"], "8080");
    assert_eq!(web.deploy.workdir.as_deref(), Some("/srv/web"));
    let worker = config.app("worker").unwrap();
    assert!(worker.deploy_on_push);
    assert_eq!(worker.deploy.timeout_secs, 30 * 60);
    assert_eq!(config.app("docs").unwrap().deploy.timeout_secs, 90);
    assert_eq!(
        config.hosts().into_iter().collect::<Vec<_>>(),
        ["web-01", "web-02", "worker-01"]
    );
}

#[test]
fn unknown_keys_are_reported_with_their_position() {
    let text = "apps:\n  - name: web\n    repo: acme/web\n    hostz: [a]\n";
    let found = problems(text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("apps.yaml:4:5: "), "{found:?}");
    assert!(found[0].contains("hostz"), "{found:?}");
}

#[test]
fn semantic_problems_are_all_reported_with_positions() {
    let text = r#"apps:
  - name: web
    repo: not-a-repo
    hosts: []
    deploy:
      command: [./d]
  - name: web
    repo: acme/web
    hosts: [web-01]
    branches: ["release/[x"]
    deploy:
      command: [./d]
      timeout: soon
  - name: api
    repo: acme/api
    hosts: ["bad host"]
"#;
    let found = problems(text);
    let expected_prefixes = [
        "apps.yaml:3:11: app web: repo \"not-a-repo\" must look like owner/name",
        "apps.yaml:4:12: app web: hosts is empty",
        "apps.yaml:7:11: duplicate app name \"web\"",
        "apps.yaml:10:16: app web: bad branches pattern \"release/[x\"",
        "apps.yaml:13:16: app web: deploy.timeout \"soon\" is not a duration",
        "apps.yaml:16:13: app api: host \"bad host\" is not a valid host name",
        "apps.yaml:14:11: app api: missing `deploy` section",
    ];
    assert_eq!(found.len(), expected_prefixes.len(), "{found:#?}");
    for prefix in expected_prefixes {
        assert!(
            found.iter().any(|p| p.starts_with(prefix)),
            "missing {prefix:?} in {found:#?}"
        );
    }
}

#[test]
fn a_string_command_is_refused_because_there_is_no_shell() {
    let text = "apps:\n  - name: web\n    repo: acme/web\n    hosts: [a]\n    deploy:\n      command: ./deploy.sh --fast\n";
    let found = problems(text);
    assert_eq!(
        found,
        ["apps.yaml:6:16: `command` must be a list, e.g. `command: [\"./deploy.sh\", \"--fast\"]`"]
    );
}

// The usual first mistakes get a message that says what to write instead.
#[test]
fn common_mistakes_are_explained_where_they_are() {
    let app = |line: &str| {
        format!(
            "apps:\n  - name: web\n    repo: acme/web\n    hosts: [a]\n{line}    deploy: {{command: [./d]}}\n"
        )
    };
    assert_eq!(
        problems(&app("    branches: main\n")),
        ["apps.yaml:5:15: `branches` must be a list, e.g. `branches: [\"main\"]`"]
    );
    assert_eq!(
        problems("- name: web\n  repo: acme/web\n"),
        [
            "apps.yaml:1:1: the file must start with `apps:`, the list of apps (`apps:` then `  - name: web` …)"
        ]
    );
    for url in [
        "https://github.com/acme/web",
        "https://github.com/acme/web.git",
        "git@github.com:acme/web.git",
    ] {
        let text = format!(
            "apps:\n  - name: web\n    repo: {url}\n    hosts: [a]\n    deploy: {{command: [./d]}}\n"
        );
        assert_eq!(
            problems(&text),
            [
                "apps.yaml:3:11: app web: repo is the repository's owner/name, not its URL: write `repo: acme/web`"
            ],
            "{url}"
        );
    }
    // A tab where YAML wants spaces: its own line and column.
    assert_eq!(
        problems("apps:\n  - name: web\n    repo: acme/web\n\thosts: [a]\n"),
        ["apps.yaml:4:1: a tab in the indentation: YAML indents with spaces only"]
    );
}

#[test]
fn syntax_errors_and_empty_files_have_positions() {
    assert!(problems("apps: [")[0].starts_with("apps.yaml:1:"));
    assert_eq!(
        problems("\n"),
        ["apps.yaml:1:1: the file is empty; it needs an `apps:` list"]
    );
}

#[test]
fn branch_pushes_match_branch_globs_only() {
    let config = AppsConfig::parse(GOOD, "apps.yaml").unwrap();
    let names = |git_ref: &str| -> Vec<String> {
        config
            .plan_push("acme/web", git_ref)
            .targets
            .iter()
            .map(|a| a.name.clone())
            .collect()
    };
    assert_eq!(names("refs/heads/main"), ["web", "worker"]);
    assert_eq!(names("refs/heads/release/1.2"), ["web", "worker"]);
    // `*` does not cross `/`; worker has no branch filter so it takes every branch.
    assert_eq!(names("refs/heads/release/1.2/hotfix"), ["worker"]);
    assert_eq!(names("refs/heads/feature"), ["worker"]);
    // Tags only deploy through tag patterns.
    assert_eq!(names("refs/tags/v1.0"), ["web"]);
    assert!(names("refs/tags/nightly").is_empty());
    // Repo names are case-insensitive, as on GitHub.
    assert_eq!(
        config
            .plan_push("ACME/Web", "refs/heads/main")
            .targets
            .len(),
        2
    );
}

// A release app (tags, no branches) must not deploy `main`: a branch push
// would supersede the pending release and production would get `main`.
#[test]
fn an_app_listing_only_tags_deploys_no_branch_pushes() {
    let text = r#"
apps:
  - name: release
    repo: acme/web
    hosts: [web-01]
    tags: ["v*"]
    deploy: {command: [./deploy]}
  - name: nothing
    repo: acme/web
    hosts: [web-01]
    branches: []
    deploy: {command: [./deploy]}
  - name: preview
    repo: acme/web
    hosts: [web-02]
    deploy: {command: [./deploy]}
"#;
    let config = AppsConfig::parse(text, "apps.yaml").unwrap();
    let names = |git_ref: &str| -> Vec<String> {
        config
            .plan_push("acme/web", git_ref)
            .targets
            .iter()
            .map(|a| a.name.clone())
            .collect()
    };
    assert_eq!(names("refs/heads/main"), ["preview"]);
    assert_eq!(names("refs/tags/v1.2.0"), ["release"]);
    let plan = config.plan_push("acme/web", "refs/heads/main");
    assert_eq!(
        plan.skipped[0].reason,
        "branch main not deployed: deploys tags [v*] only, no branch pushes (it lists tags and no branches)"
    );
    let rules: Vec<String> = config.apps().iter().map(|a| a.push_rule()).collect();
    assert_eq!(
        rules,
        [
            "deploys tags [v*] only, no branch pushes (it lists tags and no branches)",
            "deploys no pushes (branches is empty and no tags are listed)",
            "deploys pushes to every branch and no tags",
        ]
    );
}

#[test]
fn skipped_apps_say_why() {
    let config = AppsConfig::parse(GOOD, "apps.yaml").unwrap();
    let plan = config.plan_push("acme/docs", "refs/heads/main");
    assert!(plan.targets.is_empty());
    assert_eq!(
        plan.no_match_reason("acme/docs", "refs/heads/main"),
        "push to refs/heads/main deploys nothing: app docs: deploy_on_push is off"
    );
    let plan = config.plan_push("acme/web", "refs/tags/nightly");
    let reason = plan.no_match_reason("acme/web", "refs/tags/nightly");
    assert!(
        reason.contains("app web: tag nightly matches none of tags [v*]"),
        "{reason}"
    );
    assert!(
        reason.contains("app worker: tag nightly not deployed"),
        "{reason}"
    );
    assert_eq!(
        config
            .plan_push("acme/nope", "refs/heads/main")
            .no_match_reason("acme/nope", "refs/heads/main"),
        "no app in apps.yaml deploys repo acme/nope"
    );
}

#[test]
fn manual_deploys_find_the_app_pairing_repo_and_host() {
    let config = AppsConfig::parse(GOOD, "apps.yaml").unwrap();
    assert_eq!(
        config.app_for("acme/web", "web-02", None).unwrap().name,
        "web"
    );
    assert_eq!(
        config.app_for("acme/web", "web-09", None).unwrap_err(),
        PairingError::HostNotPaired {
            repo: "acme/web".into(),
            host: "web-09".into(),
            hosts: vec!["web-01".into(), "web-02".into(), "worker-01".into()],
        }
    );
    assert!(matches!(
        config.app_for("acme/other", "web-01", None),
        Err(PairingError::UnknownRepo { .. })
    ));
    assert!(matches!(
        config.app_for("acme/web", "web-01", Some("docs")),
        Err(PairingError::OtherRepo { .. })
    ));
}

const WITH_SECRETS: &str = r#"
apps:
  - name: web
    repo: acme/web
    hosts: [web-01]
    deploy:
      command: [./deploy.sh]
      env: {RAILS_ENV: production}
      secret_env: {DB_PASSWORD: DEPLOY_WEB_DB_PASSWORD, API_TOKEN: WEB_API}
"#;

fn controller_env(name: &str) -> Option<String> {
    match name {
        "DEPLOY_WEB_DB_PASSWORD" => Some("hunter2-but-longer".to_owned()),
        "WEB_API" => Some("tok-123456".to_owned()),
        _ => None,
    }
}

#[test]
fn secret_variables_are_read_from_the_controller_and_kept_out_of_the_deploy_spec() {
    let config = AppsConfig::parse_with_env(WITH_SECRETS, "apps.yaml", &controller_env).unwrap();
    let web = config.app("web").unwrap();
    let secrets: Vec<(&str, &str)> = web
        .secrets
        .iter()
        .map(|(name, value)| (name.as_str(), value.expose()))
        .collect();
    assert_eq!(
        secrets,
        [
            ("API_TOKEN", "tok-123456"),
            ("DB_PASSWORD", "hunter2-but-longer")
        ]
    );
    // The deploy spec, which is stored with every job, holds none of them.
    assert_eq!(web.deploy.env.keys().collect::<Vec<_>>(), ["RAILS_ENV"]);
    assert!(!format!("{:?}", web.deploy).contains("hunter2"));
    assert!(!format!("{web:?}").contains("hunter2"));
}

#[test]
fn secret_variables_that_cannot_be_read_or_clash_are_errors() {
    let cases = [
        (
            "secret_env: {DB_PASSWORD: NOT_SET_ANYWHERE}",
            "names NOT_SET_ANYWHERE, which is not set",
        ),
        (
            "env: {DB_PASSWORD: x}\n      secret_env: {DB_PASSWORD: WEB_API}",
            "in both deploy.env and deploy.secret_env",
        ),
        (
            "secret_env: {DEPLOYBOT_SHA: WEB_API}",
            "DEPLOYBOT_* variables are set by the agent",
        ),
        ("secret_env: {\"1BAD\": WEB_API}", "must be letters, digits"),
        ("secret_env: {GOOD: \"not a name\"}", "must name a variable"),
    ];
    for (yaml, expected) in cases {
        let text = format!(
            "apps:\n  - name: web\n    repo: acme/web\n    hosts: [web-01]\n    deploy:\n      command: [./d]\n      {yaml}\n"
        );
        let found = match AppsConfig::parse_with_env(&text, "apps.yaml", &controller_env) {
            Err(AppsError::Invalid(problems)) => problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
            other => panic!("{yaml}: {other:?}"),
        };
        assert!(found.contains(expected), "{yaml}: {found}");
        assert!(found.starts_with("apps.yaml:"), "{found}");
    }
}
