//! How orca reaches NATS: one server URL (or several, comma-separated), the credentials to
//! present and the TLS to use. Every connection orca makes (service, worker, client verbs, demo,
//! bench) goes through [`Nats::connect`], so each takes the same flags.
//!
//! Credentials come from the URL (`nats://user:password@host`, `nats://token@host`) or from
//! flags: a user and password, a token, a credentials file (JWT and nkey seed, as `nsc` writes
//! them) or an nkey seed file. They are taken out of the URL before it is used or shown, and
//! never printed: what a message names is [`Nats::url`].

use std::fmt;
use std::path::PathBuf;

use anyhow::{Context, bail};

/// The connection flags every verb takes.
#[derive(clap::Args, Clone, Default)]
pub struct NatsFlags {
    /// User to authenticate as (with --nats-password; or in the URL: nats://user:password@host).
    #[arg(long, global = true, env = "ORCA_NATS_USER")]
    pub nats_user: Option<String>,
    /// Password of --nats-user. Prefer the environment variable: a flag shows in `ps`.
    #[arg(
        long,
        global = true,
        env = "ORCA_NATS_PASSWORD",
        hide_env_values = true
    )]
    pub nats_password: Option<String>,
    /// Token to authenticate with (or in the URL: nats://token@host).
    #[arg(long, global = true, env = "ORCA_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,
    /// Credentials file (a user JWT and its nkey seed, as `nsc` writes them).
    #[arg(long, global = true, env = "ORCA_NATS_CREDS", value_name = "FILE")]
    pub creds: Option<PathBuf>,
    /// File holding an nkey seed (`SU…`) to authenticate with.
    #[arg(long, global = true, env = "ORCA_NATS_NKEY", value_name = "FILE")]
    pub nkey: Option<PathBuf>,
    /// CA certificate(s), PEM, to verify the server with; turns TLS on.
    #[arg(long, global = true, env = "ORCA_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate, PEM, for servers that verify clients (with --tls-key).
    #[arg(long, global = true, env = "ORCA_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Key of --tls-cert, PEM.
    #[arg(long, global = true, env = "ORCA_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

/// The secret a connection presents.
#[derive(Clone, Default)]
enum Auth {
    #[default]
    None,
    UserPassword(String, String),
    Token(String),
    Creds(PathBuf),
    Nkey(PathBuf),
}

/// Where and how to reach NATS; its `Debug` and `Display` show no secret.
#[derive(Clone, Default)]
pub struct Nats {
    /// The servers, without credentials.
    url: String,
    auth: Auth,
    tls_ca: Option<PathBuf>,
    tls_client: Option<(PathBuf, PathBuf)>,
    /// A `tls://` URL, or a CA given: refuse a server that does not speak TLS.
    require_tls: bool,
}

impl fmt::Debug for Nats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nats({self})")
    }
}

impl fmt::Display for Nats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)?;
        match &self.auth {
            Auth::None => Ok(()),
            Auth::UserPassword(user, _) => write!(f, " (as {user})"),
            Auth::Token(_) => f.write_str(" (with a token)"),
            Auth::Creds(p) => write!(f, " (with credentials {})", p.display()),
            Auth::Nkey(p) => write!(f, " (with nkey {})", p.display()),
        }
    }
}

impl Nats {
    /// `url` with no flags: credentials only from the URL.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        Self::new(url, &NatsFlags::default())
    }

    /// `url` (one or more servers, comma-separated) with `flags`. Credentials in the URL and in
    /// the flags, or two kinds of credentials, are refused: which would be used is not clear.
    pub fn new(url: &str, flags: &NatsFlags) -> anyhow::Result<Self> {
        let mut servers = Vec::new();
        let mut from_url: Option<Auth> = None;
        let mut require_tls = false;
        for server in url.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (clean, auth, tls) = split_credentials(server)?;
            require_tls |= tls;
            if let Some(auth) = auth {
                if from_url.is_some() {
                    bail!("the NATS URL holds credentials more than once; give them once");
                }
                from_url = Some(auth);
            }
            servers.push(clean);
        }
        if servers.is_empty() {
            bail!("the NATS URL names no server");
        }
        let mut given: Vec<(&str, Auth)> = Vec::new();
        if let Some(auth) = from_url {
            given.push(("the URL's", auth));
        }
        match (&flags.nats_user, &flags.nats_password) {
            (Some(user), Some(password)) => given.push((
                "--nats-user",
                Auth::UserPassword(user.clone(), password.clone()),
            )),
            (Some(_), None) => bail!("--nats-user needs --nats-password (or ORCA_NATS_PASSWORD)"),
            (None, Some(_)) => bail!("--nats-password needs --nats-user"),
            (None, None) => {}
        }
        if let Some(token) = &flags.nats_token {
            given.push(("--nats-token", Auth::Token(token.clone())));
        }
        if let Some(creds) = &flags.creds {
            given.push(("--creds", Auth::Creds(creds.clone())));
        }
        if let Some(nkey) = &flags.nkey {
            given.push(("--nkey", Auth::Nkey(nkey.clone())));
        }
        if given.len() > 1 {
            let names: Vec<&str> = given.iter().map(|(n, _)| *n).collect();
            bail!(
                "more than one way to authenticate to NATS ({}): give one",
                names.join(", ")
            );
        }
        let tls_client = match (&flags.tls_cert, &flags.tls_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            (Some(_), None) => bail!("--tls-cert needs --tls-key"),
            (None, Some(_)) => bail!("--tls-key needs --tls-cert"),
        };
        Ok(Self {
            url: servers.join(","),
            auth: given.pop().map(|(_, a)| a).unwrap_or_default(),
            require_tls: require_tls || flags.tls_ca.is_some() || tls_client.is_some(),
            tls_ca: flags.tls_ca.clone(),
            tls_client,
        })
    }

    /// The servers, without credentials: what messages may show.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Connects, as `name` (what the server's monitoring shows).
    pub async fn connect(&self, name: &str) -> anyhow::Result<async_nats::Client> {
        self.options()
            .await?
            .name(name)
            .connect(self.url.as_str())
            .await
            .with_context(|| format!("connecting to NATS at {self}"))
    }

    /// The connect options: credentials and TLS.
    pub async fn options(&self) -> anyhow::Result<async_nats::ConnectOptions> {
        let mut options = async_nats::ConnectOptions::new();
        options = match &self.auth {
            Auth::None => options,
            Auth::UserPassword(user, password) => {
                options.user_and_password(user.clone(), password.clone())
            }
            Auth::Token(token) => options.token(token.clone()),
            Auth::Creds(path) => options
                .credentials_file(path)
                .await
                .with_context(|| format!("reading the credentials file {}", path.display()))?,
            Auth::Nkey(path) => {
                let seed = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the nkey seed file {}", path.display()))?;
                let seed = seed
                    .lines()
                    .map(str::trim)
                    .find(|l| l.starts_with('S'))
                    .with_context(|| format!("{} holds no nkey seed (S…)", path.display()))?;
                options.nkey(seed.to_owned())
            }
        };
        if let Some(ca) = &self.tls_ca {
            if !ca.is_file() {
                bail!("--tls-ca {}: no such file", ca.display());
            }
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.tls_client {
            for f in [cert, key] {
                if !f.is_file() {
                    bail!("{}: no such file", f.display());
                }
            }
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(options.require_tls(self.require_tls))
    }
}

/// One server of a URL without its credentials, the credentials, and whether it asks for TLS.
fn split_credentials(server: &str) -> anyhow::Result<(String, Option<Auth>, bool)> {
    let with_scheme = if server.contains("://") {
        server.to_owned()
    } else {
        format!("nats://{server}")
    };
    let mut url = url::Url::parse(&with_scheme)
        .map_err(|e| anyhow::anyhow!("not a NATS URL ({e}): {}", redact(server)))?;
    let tls = url.scheme() == "tls";
    if !matches!(url.scheme(), "nats" | "tls" | "ws" | "wss") {
        bail!(
            "unknown NATS URL scheme {:?}: use nats://, tls://, ws:// or wss://",
            url.scheme()
        );
    }
    let decode = |s: &str| -> anyhow::Result<String> {
        Ok(percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .with_context(|| format!("the credentials in {} are not UTF-8", redact(server)))?
            .into_owned())
    };
    let user = decode(url.username())?;
    let password = url.password().map(decode).transpose()?;
    let auth = match (user.is_empty(), password) {
        (true, None) => None,
        (false, None) => Some(Auth::Token(user)),
        (_, Some(password)) => Some(Auth::UserPassword(user, password)),
    };
    // Setting them empty cannot fail on a nats:// URL (it has a host).
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let mut clean = url.to_string();
    if clean.ends_with('/') && !server.ends_with('/') {
        clean.pop();
    }
    Ok((clean, auth, tls))
}

/// A URL with whatever stands before `@` hidden: for error messages.
fn redact(server: &str) -> String {
    match server.rsplit_once('@') {
        Some((before, after)) => {
            let scheme = before.split_once("://").map_or("", |(s, _)| s);
            if scheme.is_empty() {
                format!("***@{after}")
            } else {
                format!("{scheme}://***@{after}")
            }
        }
        None => server.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn credentials_leave_the_url_and_never_show() {
        let n = Nats::parse("nats://alice:s%40cret@127.0.0.1:4222").unwrap();
        assert_eq!(n.url(), "nats://127.0.0.1:4222");
        assert!(matches!(&n.auth, Auth::UserPassword(u, p) if u == "alice" && p == "s@cret"));
        let shown = format!("{n} {n:?}");
        assert!(
            !shown.contains("s@cret") && !shown.contains("s%40cret"),
            "{shown}"
        );
        assert!(shown.contains("alice"));

        let t = Nats::parse("tls://T0K3N@nats.example:4443").unwrap();
        assert_eq!(t.url(), "tls://nats.example:4443");
        assert!(matches!(&t.auth, Auth::Token(tok) if tok == "T0K3N"));
        assert!(t.require_tls);
        assert!(!format!("{t} {t:?}").contains("T0K3N"));

        let plain = Nats::parse("127.0.0.1:4222, nats://127.0.0.1:4223").unwrap();
        assert_eq!(plain.url(), "nats://127.0.0.1:4222,nats://127.0.0.1:4223");
        assert!(matches!(plain.auth, Auth::None));
        assert!(!plain.require_tls);
    }

    #[test]
    fn two_ways_to_authenticate_or_half_a_pair_are_refused_without_showing_secrets() {
        let flags = NatsFlags {
            nats_token: Some("tok".into()),
            ..Default::default()
        };
        let e = Nats::new("nats://u:hunter2@h:4222", &flags)
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than one way"), "{e}");
        assert!(!e.contains("hunter2"));

        let half = NatsFlags {
            nats_user: Some("u".into()),
            ..Default::default()
        };
        assert!(Nats::new("nats://h:4222", &half).is_err());
        let half_tls = NatsFlags {
            tls_cert: Some("c.pem".into()),
            ..Default::default()
        };
        assert!(Nats::new("nats://h:4222", &half_tls).is_err());

        let bad = Nats::parse("nats://u:hunter2@").unwrap_err().to_string();
        assert!(!bad.contains("hunter2"), "{bad}");
        assert!(Nats::parse("http://h:4222").is_err());
    }

    #[test]
    fn flags_give_credentials_and_tls() {
        let flags = NatsFlags {
            nats_user: Some("svc".into()),
            nats_password: Some("pw".into()),
            tls_ca: Some("ca.pem".into()),
            ..Default::default()
        };
        let n = Nats::new("nats://h:4222", &flags).unwrap();
        assert!(matches!(&n.auth, Auth::UserPassword(u, p) if u == "svc" && p == "pw"));
        assert!(n.require_tls, "a CA turns TLS on");
    }
}
