//! The integrators' documents against the code: the README's table of
//! services, `asyncapi.yaml` and what a live worker answers.

use msgr_tests::TestApp;

use crate::T;

/// Every full `msgr.v1.rpc.…` subject named in `text` (patterns like
/// `msgr.v1.rpc.*` left out).
fn rpc_subjects(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("msgr.v1.rpc.") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_'))
            .unwrap_or(tail.len());
        let s = tail[..end].trim_end_matches('.');
        let next = tail[end..].chars().next();
        if !matches!(next, Some('*' | '{' | '<')) && s.len() > "msgr.v1.rpc.".len() {
            out.insert(s.to_owned());
        }
        rest = &tail[end..];
    }
    out
}

/// The integrators' documents and the workers agree on the request/reply
/// services: the README's table, `asyncapi.yaml` and the subjects a live
/// worker answers are the same set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_services_are_the_ones_the_workers_answer() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let known: std::collections::BTreeSet<String> = msgr_nats::subject::rpc::ALL
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let table: String = readme
        .lines()
        .filter(|l| l.starts_with("| `msgr.v1.rpc."))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        rpc_subjects(&table),
        known,
        "the README's table of services"
    );
    let stray: Vec<_> = rpc_subjects(&readme).difference(&known).cloned().collect();
    assert!(
        stray.is_empty(),
        "the README names services that do not exist: {stray:?}"
    );
    let asyncapi =
        std::fs::read_to_string(root.join("schemas/asyncapi.yaml")).expect("asyncapi.yaml");
    let channels: String = asyncapi
        .lines()
        .filter(|l| l.trim_start().starts_with("address: msgr.v1.rpc."))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(rpc_subjects(&channels), known, "asyncapi.yaml's channels");
    let stray: Vec<_> = rpc_subjects(&asyncapi)
        .difference(&known)
        .cloned()
        .collect();
    assert!(
        stray.is_empty(),
        "asyncapi.yaml names services that do not exist: {stray:?}"
    );

    // The services a live worker subscribes to, read from nats-server's
    // monitor rather than from the list in the code: a service missing
    // from `rpc::ALL` (and so from the documents) shows here.
    let app = TestApp::spawn().await;
    let r = msgr_tests::http_get_raw(
        app.nats.monitor_addr(),
        "/connz?subs=detail&limit=1024",
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "nats-server's /connz");
    let connz: serde_json::Value = serde_json::from_slice(&r.body).expect("/connz JSON");
    let mut answered = std::collections::BTreeSet::new();
    for conn in connz["connections"].as_array().expect("connections") {
        for sub in conn["subscriptions_list_detail"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let subject = sub["subject"].as_str().unwrap_or_default();
            if subject.starts_with("msgr.v1.rpc.") {
                answered.insert(subject.to_owned());
            }
        }
    }
    assert_eq!(answered, known, "the services the worker subscribes to");

    // Each is answered (an empty request is refused, but answered).
    let nats = async_nats::connect(app.nats.url()).await.expect("nats");
    for s in &known {
        let r = tokio::time::timeout(T, nats.request(s.clone(), bytes::Bytes::new())).await;
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("{s}: no worker answers ({e})"),
            Err(_) => panic!("{s}: no answer in time"),
        }
    }
}

/// The project's documents stand on their own: no link or reference to a
/// file outside the repository (a user has only the repository).
#[test]
fn the_documents_name_no_file_outside_the_project() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![root.join("README.md")];
    for dir in [
        "docs", "schemas", "infra", "bench", "tests", "web", "nats", "workers", "edge",
    ] {
        let mut stack = vec![root.join(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                if p.is_dir() {
                    if !matches!(name, "node_modules" | "artifacts" | "target" | "results") {
                        stack.push(p);
                    }
                } else if name.ends_with(".md") || name.ends_with(".yaml") || name.ends_with(".rs")
                {
                    files.push(p);
                }
            }
        }
    }
    assert!(
        files.len() > 20,
        "walked the project: {} files",
        files.len()
    );
    let mut outside = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            if line.contains("../shared")
                || line.contains("shared/API.md")
                || line.contains("shared/DESIGN.md")
            {
                outside.push(format!("{}:{}", f.display(), n + 1));
            }
        }
    }
    // This file names the patterns it looks for.
    outside.retain(|l| !l.contains("contract.rs"));
    assert!(
        outside.is_empty(),
        "references outside the project: {outside:?}"
    );
}
