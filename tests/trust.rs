//! Trust end to end, on a real nats-server run with `deploy/nats-auth.conf`: the service, the
//! worker and a client each authenticate as their role; the whole create → terminate story runs
//! under the permissions that file grants; the command's actor is the authenticated user, not the
//! one claimed; every publish a role is not allowed is refused by the server; and no secret is
//! ever printed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orca::client::OrcaClient;
use orca::connect::Nats;
use support::*;

const LONG: Duration = Duration::from_secs(30);

/// The passwords the configuration reads from the environment.
const PASSWORDS: &[(&str, &str)] = &[
    ("ORCA_SERVICE_PASSWORD", "service-Secr3t"),
    ("ORCA_WORKER_PASSWORD", "worker-Secr3t"),
    ("ORCA_CLIENT_PASSWORD", "client-Secr3t"),
];

/// `deploy/nats-auth.conf` as shipped, but for its JetStream store: one in `dir`.
fn config(dir: &std::path::Path) -> PathBuf {
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nats-auth.conf");
    let text = std::fs::read_to_string(shipped).unwrap();
    let store = "store_dir: /var/lib/nats/jetstream";
    assert!(text.contains(store));
    let copy = dir.join("nats-auth.conf");
    let text = text.replace(store, &format!("store_dir: {:?}", dir.join("js")));
    std::fs::write(&copy, text).unwrap();
    copy
}

fn as_user(url: &str, user: &str, password: &str) -> String {
    url.replacen("nats://", &format!("nats://{user}:{password}@"), 1)
}

/// A connection as `user` that keeps every error the server sends it.
async fn recording(url: &str, user: &str, password: &str) -> (async_nats::Client, Errors) {
    let errors: Errors = Arc::new(Mutex::new(Vec::new()));
    let kept = errors.clone();
    let client = Nats::parse(&as_user(url, user, password))
        .unwrap()
        .options()
        .await
        .unwrap()
        .event_callback(move |event| {
            let kept = kept.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    kept.lock().unwrap().push(e.to_string());
                }
            }
        })
        .connect(url)
        .await
        .unwrap();
    (client, errors)
}

type Errors = Arc<Mutex<Vec<String>>>;

/// Waits until the server has said `what` to this connection.
async fn server_said(errors: &Errors, what: &str) {
    let said = || errors.lock().unwrap().iter().any(|e| e.contains(what));
    wait_until(LONG, || async { said() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_deployed_permissions_the_story_runs_and_every_forbidden_publish_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start_configured(&config(dir.path()), PASSWORDS).unwrap();
    let url = nats.url();
    let data = dir.path().join("data");
    let data_arg = data.to_string_lossy().into_owned();

    // No credentials: refused, and said so.
    let out = Command::new(orca_bin())
        .args(["engine", "status", "--nats-url", &url])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("authorization"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The service: user by flag, password from the environment. The worker: both in the URL.
    let serve = Proc::spawn_env(
        &[
            "serve",
            "--nats-url",
            &url,
            "--nats-user",
            "orca-service",
            "--data-dir",
            &data_arg,
        ],
        &[("ORCA_NATS_PASSWORD", "service-Secr3t")],
        dir.path().join("serve.log"),
    );
    let worker = Proc::spawn_env(
        &[
            "worker",
            "example",
            "--nats-url",
            &as_user(&url, "orca-worker", "worker-Secr3t"),
        ],
        &[],
        dir.path().join("worker.log"),
    );
    let alice = OrcaClient::connect(&as_user(&url, "alice", "client-Secr3t"), "orca")
        .await
        .unwrap();
    wait_until(LONG, || async { alice.info().await.is_ok() }).await;

    // The story, claiming to be someone else: the actor is who the server says sent it.
    let mut create = create_cmd("Trusted");
    create.actor = "mallory".into();
    let created = accepted(&alice.start(&create).await.unwrap());
    let p = wait_status(&alice, &created.process_id, "completed").await;
    assert_eq!(p.actor, "alice");
    let mut terminate = terminate_cmd(&created.subscription_id);
    terminate.actor = "mallory".into();
    let terminated = accepted(&alice.start(&terminate).await.unwrap());
    let p = wait_status(&alice, &terminated.process_id, "completed").await;
    assert_eq!(p.actor, "alice");

    // The CLI as alice, by flag and environment.
    let out = Command::new(orca_bin())
        .args([
            "subscription",
            "get",
            &created.subscription_id,
            "--json",
            "--nats-url",
            &url,
            "--nats-user",
            "alice",
        ])
        .env("ORCA_NATS_PASSWORD", "client-Secr3t")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sub: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sub["status"], "terminated", "{sub}");

    // A client may not publish events or tasks, report on a task, or answer commands.
    let (client, errors) = recording(&url, "alice", "client-Secr3t").await;
    for subject in [
        "orca.evt.process.x.process_completed",
        "orca.task.provision_user_group",
        "orca.cmd.task.complete",
    ] {
        client.publish(subject, "forged".into()).await.unwrap();
        client.flush().await.unwrap();
        server_said(&errors, &format!("Publish to \"{subject}\"")).await;
    }
    let _answering = client.subscribe("orca.cmd.process.start").await.unwrap();
    client.flush().await.unwrap();
    server_said(&errors, "Subscription to \"orca.cmd.process.start\"").await;

    // A worker may only take tasks and report: no events, no tasks, no other command, no
    // answering.
    let (w, errors) = recording(&url, "orca-worker", "worker-Secr3t").await;
    for subject in [
        "orca.evt.process.x.process_completed",
        "orca.task.provision_user_group",
        "orca.cmd.process.start",
    ] {
        w.publish(subject, "forged".into()).await.unwrap();
        w.flush().await.unwrap();
        server_said(&errors, &format!("Publish to \"{subject}\"")).await;
    }
    let _answering = w.subscribe("orca.cmd.>").await.unwrap();
    w.flush().await.unwrap();
    server_said(&errors, "Subscription to \"orca.cmd.>\"").await;

    // Orca went on untouched, and printed no secret.
    let again = accepted(&alice.start(&create_cmd("After")).await.unwrap());
    wait_status(&alice, &again.process_id, "completed").await;
    for (name, text) in [("serve", serve.log_text()), ("worker", worker.log_text())] {
        for (_, secret) in PASSWORDS {
            assert!(!text.contains(secret), "the {name} log shows a password");
        }
        // Each role was allowed all it needed.
        assert!(!text.contains("Permissions Violation"), "{name}: {text}");
    }
}

/// The service and the worker started with the connection arguments `secure` (data and logs in
/// `dir`), a client connected with `flags`: a create completes, and the CLI reads it back the
/// same way. The service and the worker stop when it returns.
async fn story(
    dir: &std::path::Path,
    url: &str,
    secure: &[&str],
    flags: &orca::connect::NatsFlags,
    name: &str,
) {
    let data = dir.join("data").to_string_lossy().into_owned();
    let mut args = vec!["serve", "--data-dir", data.as_str()];
    args.extend(secure);
    let _serve = Proc::spawn_env(&args, &[], dir.join("serve.log"));
    let mut args = vec!["worker", "example"];
    args.extend(secure);
    let _worker = Proc::spawn_env(&args, &[], dir.join("worker.log"));

    let client = OrcaClient::connect_to(&Nats::new(url, flags).unwrap(), "orca")
        .await
        .unwrap();
    wait_until(LONG, || async { client.info().await.is_ok() }).await;
    let a = accepted(&client.start(&create_cmd(name)).await.unwrap());
    wait_status(&client, &a.process_id, "completed").await;

    let mut args = vec!["process", "get", a.process_id.as_str(), "--json"];
    args.extend(secure);
    let out = Command::new(orca_bin()).args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["status"], "completed", "{p}");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files in `dir`:
/// (ca, server cert, server key, client cert, client key).
fn certificates(dir: &std::path::Path) -> [PathBuf; 5] {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca, &ca_key)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["orca-client".to_owned()])
        .unwrap()
        .signed_by(&client_key, &ca, &ca_key)
        .unwrap();
    let files = [
        ("ca.pem", ca.pem()),
        ("server.pem", server.pem()),
        ("server.key", server_key.serialize_pem()),
        ("client.pem", client.pem()),
        ("client.key", client_key.serialize_pem()),
    ];
    files.map(|(name, pem)| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    })
}

/// TLS with client certificates, and an nkey instead of a password: the service, the worker and
/// the CLI each connect with `--tls-ca`, `--tls-cert`, `--tls-key` and `--nkey`; without the CA
/// or without the key the server is not reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates_and_an_nkey_carry_the_story() {
    let dir = tempfile::tempdir().unwrap();
    let [ca, server_cert, server_key, client_cert, client_key] = certificates(dir.path());
    let user = nkeys::KeyPair::new_user();
    let seed = dir.path().join("orca.nk");
    std::fs::write(&seed, format!("{}\n", user.seed().unwrap())).unwrap();
    let config = dir.path().join("nats-tls.conf");
    std::fs::write(
        &config,
        format!(
            "jetstream {{ store_dir: {:?} }}\n\
             tls {{ cert_file: {:?}, key_file: {:?}, ca_file: {:?}, verify: true }}\n\
             authorization {{ users: [ {{ nkey: {:?} }} ] }}\n",
            dir.path().join("js"),
            server_cert,
            server_key,
            ca,
            user.public_key()
        ),
    )
    .unwrap();
    let nats = NatsServer::start_configured(&config, &[]).unwrap();
    let url = nats.url().replacen("nats://", "tls://", 1);
    let path = |p: &PathBuf| p.to_string_lossy().into_owned();
    let (ca, cert, key, seed) = (
        path(&ca),
        path(&client_cert),
        path(&client_key),
        path(&seed),
    );
    let secure = [
        "--nats-url",
        url.as_str(),
        "--tls-ca",
        &ca,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--nkey",
        &seed,
    ];
    let flags = orca::connect::NatsFlags {
        tls_ca: Some(ca.clone().into()),
        tls_cert: Some(cert.clone().into()),
        tls_key: Some(key.clone().into()),
        nkey: Some(seed.clone().into()),
        ..Default::default()
    };
    story(dir.path(), &url, &secure, &flags, "Sealed").await;

    // Without the CA the server is not trusted; without the nkey it does not let us in.
    let no_ca: Vec<&str> = ["engine", "status"]
        .into_iter()
        .chain(
            secure
                .iter()
                .copied()
                .filter(|a| *a != "--tls-ca" && *a != ca),
        )
        .collect();
    let no_key: Vec<&str> = ["engine", "status"]
        .into_iter()
        .chain(
            secure
                .iter()
                .copied()
                .filter(|a| *a != "--nkey" && *a != seed),
        )
        .collect();
    for (args, why) in [(no_ca, "certificate"), (no_key, "authorization")] {
        let out = Command::new(orca_bin()).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(err.contains(why), "{args:?}: {err}");
        assert!(!err.contains(&user.seed().unwrap().to_lowercase()));
    }
}

/// A JWT of `claims`, signed by `issuer` (what `nsc` writes).
fn jwt(issuer: &nkeys::KeyPair, subject: &str, nats: serde_json::Value) -> String {
    use data_encoding::BASE64URL_NOPAD;
    let header = BASE64URL_NOPAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = serde_json::json!({
        "jti": uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
        "iat": 1_700_000_000,
        "iss": issuer.public_key(),
        "name": subject,
        "sub": subject,
        "nats": nats,
    });
    let claims = BASE64URL_NOPAD.encode(claims.to_string().as_bytes());
    let signed = format!("{header}.{claims}");
    let signature = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", BASE64URL_NOPAD.encode(&signature))
}

/// Decentralized auth (an operator, an account with JetStream, a user): the service, the worker
/// and the CLI each connect with a `--creds` file, as `nsc` writes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credentials_file_carries_the_story() {
    let dir = tempfile::tempdir().unwrap();
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let system = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        serde_json::json!({"type": "operator", "version": 2}),
    );
    let unlimited = serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
        "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
    });
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        serde_json::json!({"type": "account", "version": 2, "limits": unlimited}),
    );
    let system_jwt = jwt(
        &operator,
        &system.public_key(),
        serde_json::json!({"type": "account", "version": 2}),
    );
    let user_jwt = jwt(
        &account,
        &user.public_key(),
        serde_json::json!({"type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}),
    );
    let config = dir.path().join("nats-operator.conf");
    std::fs::write(
        &config,
        format!(
            "jetstream {{ store_dir: {:?} }}\n\
             operator: {operator_jwt:?}\n\
             system_account: {:?}\n\
             resolver: MEMORY\n\
             resolver_preload: {{ {}: {account_jwt:?}, {}: {system_jwt:?} }}\n",
            dir.path().join("js"),
            system.public_key(),
            account.public_key(),
            system.public_key(),
        ),
    )
    .unwrap();
    let creds = dir.path().join("orca.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().unwrap()
        ),
    )
    .unwrap();
    let nats = NatsServer::start_configured(&config, &[]).unwrap();
    let url = nats.url();
    let creds = creds.to_string_lossy().into_owned();
    let secure = ["--nats-url", url.as_str(), "--creds", creds.as_str()];
    let flags = orca::connect::NatsFlags {
        creds: Some(creds.clone().into()),
        ..Default::default()
    };
    story(dir.path(), &url, &secure, &flags, "Decentral").await;
    // Without the credentials the server does not let us in.
    let out = Command::new(orca_bin())
        .args(["engine", "status", "--nats-url", &url])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
