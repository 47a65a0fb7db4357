//! Managed auth: who hubferry's own clients are. Users come from an htpasswd
//! file (bcrypt entries only) and a list of static tokens; a client proves itself with HTTP
//! Basic credentials at `/token` (a static token is a password, with any user name, the way
//! Docker Hub takes access tokens). Also the `Secret` wrapper that keeps passwords out of
//! `Debug` output, and so out of logs.

use std::fmt;

use base64::Engine as _;
use subtle::ConstantTimeEq;

/// A secret string: its `Debug` and `Display` never show it, so a config dump or an error
/// message cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The secret itself: only where it is sent or compared.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The user name and password (or access token) hubferry itself uses at one upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

impl Credentials {
    /// `Authorization: Basic ...` for these credentials.
    pub fn basic_header(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password.expose());
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

/// hubferry's own users: bcrypt htpasswd entries and static tokens.
#[derive(Debug, Clone, Default)]
pub struct Users {
    /// (user, bcrypt hash)
    htpasswd: Vec<(String, String)>,
    tokens: Vec<Secret>,
    /// Checked in place of a user nobody has, at the highest cost of the real entries, so
    /// that an unknown name takes as long to refuse as a wrong password.
    dummy_hash: Option<String>,
}

/// The longest password bcrypt reads: it ignores every byte after the 72nd, so a longer one
/// would be accepted with any suffix. Longer passwords are refused instead.
pub const MAX_PASSWORD: usize = 72;

/// Who a client is, once authenticated: put in its token and the log, never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Anonymous,
    User(String),
    /// A static token, by its position in `auth.tokens` (the token itself is a secret).
    Token(usize),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Anonymous => f.write_str("anonymous"),
            Subject::User(user) => write!(f, "user:{user}"),
            Subject::Token(i) => write!(f, "token#{}", i + 1),
        }
    }
}

impl Users {
    /// Parses an htpasswd file. Only bcrypt entries (`$2y$`, `$2b$`, `$2a$`, as
    /// `htpasswd -B` writes them) are accepted: MD5-crypt, SHA-1 and crypt(3) hashes are weak,
    /// and one accepted silently would be a hole. The error names the line, never the hash.
    pub fn from_htpasswd(text: &str, tokens: Vec<Secret>) -> Result<Users, String> {
        let mut htpasswd = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(format!("line {}: not user:hash", i + 1));
            };
            let bcrypt = ["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p));
            if !bcrypt || hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(format!(
                    "line {} (user {user}): only bcrypt entries are accepted; \
                     write them with `htpasswd -B`",
                    i + 1
                ));
            }
            if htpasswd.iter().any(|(u, _)| u == user) {
                return Err(format!("line {}: user {user} is listed twice", i + 1));
            }
            htpasswd.push((user.to_owned(), hash.to_owned()));
        }
        let cost = htpasswd
            .iter()
            .filter_map(|(_, hash)| hash.parse::<bcrypt::HashParts>().ok())
            .map(|parts| parts.get_cost())
            .max();
        let dummy_hash = match cost {
            Some(cost) => Some(
                bcrypt::hash("no such user", cost)
                    .map_err(|e| format!("cannot make the dummy bcrypt hash: {e}"))?,
            ),
            None => None,
        };
        Ok(Users {
            htpasswd,
            tokens,
            dummy_hash,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.htpasswd.is_empty() && self.tokens.is_empty()
    }

    /// Checks a user name and password against the htpasswd entries. bcrypt is slow on
    /// purpose (tens of ms): call this off the worker threads, through `login`. A name nobody
    /// has is checked against a dummy hash, so it costs the same time as a wrong password.
    pub fn verify_password(&self, user: &str, password: &str) -> Option<Subject> {
        if password.len() > MAX_PASSWORD {
            log::info!(
                "refused a password of {} bytes for user {user:?}: bcrypt reads only {MAX_PASSWORD}",
                password.len()
            );
            return None;
        }
        let entry = self.htpasswd.iter().find(|(u, _)| u == user);
        let hash = match entry {
            Some((_, hash)) => hash,
            None => self.dummy_hash.as_ref()?,
        };
        let matches = bcrypt::verify(password, hash).unwrap_or(false);
        (matches && entry.is_some()).then(|| Subject::User(user.to_owned()))
    }

    /// A static token, presented as a bearer token (scripts, `curl -H`) or as a password with
    /// any user name; cheap to check, in constant time.
    pub fn static_token(&self, bearer: &str) -> Option<Subject> {
        self.tokens
            .iter()
            // Without an early exit, so timing does not tell how much of a token was right
            // (only its length, which is not the secret).
            .position(|t| t.expose().as_bytes().ct_eq(bearer.as_bytes()).into())
            .map(Subject::Token)
    }
}

/// `Authorization: Basic ...` as (user, password); `None` for other schemes or garbage.
pub fn parse_basic(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// `Authorization: Bearer ...`, the token.
pub fn parse_bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Users {
        // Cost 4: the lowest bcrypt allows, to keep the tests fast.
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let text = format!("# comment\n\nalice:{hash}\n");
        Users::from_htpasswd(&text, vec![Secret::new("tok-123")]).unwrap()
    }

    #[test]
    fn htpasswd_users_and_static_tokens_authenticate() {
        let users = users();
        assert_eq!(
            users.verify_password("alice", "s3cret"),
            Some(Subject::User("alice".into()))
        );
        assert_eq!(users.verify_password("alice", "wrong"), None);
        assert_eq!(users.verify_password("bob", "s3cret"), None);
        assert_eq!(users.static_token("tok-123"), Some(Subject::Token(0)));
        assert_eq!(users.static_token("tok-12"), None);
        assert!(!users.is_empty());
    }

    #[test]
    fn an_unknown_name_is_checked_against_a_hash_of_the_same_cost() {
        let hash = bcrypt::hash("s3cret", 5).unwrap();
        let users = Users::from_htpasswd(&format!("alice:{hash}\n"), Vec::new()).unwrap();
        let dummy = users.dummy_hash.as_deref().unwrap();
        assert_eq!(dummy.parse::<bcrypt::HashParts>().unwrap().get_cost(), 5);
        // Even the dummy's own password opens nothing.
        assert_eq!(users.verify_password("nobody", "no such user"), None);
        assert!(Users::from_htpasswd("", Vec::new())
            .unwrap()
            .dummy_hash
            .is_none());
    }

    #[test]
    fn passwords_past_bcrypts_72_bytes_are_refused_not_truncated() {
        let long = "p".repeat(80);
        // What `htpasswd -B` stores for it: a hash of its first 72 bytes.
        let hash = bcrypt::hash(&long, 4).unwrap();
        let users = Users::from_htpasswd(&format!("alice:{hash}\n"), Vec::new()).unwrap();
        let mut guess = long[..MAX_PASSWORD].to_owned();
        guess.push_str("anything");
        assert!(bcrypt::verify(&guess, &hash).unwrap(), "bcrypt truncates");
        assert_eq!(users.verify_password("alice", &guess), None);
        assert_eq!(users.verify_password("alice", &long), None);
        let exact = "q".repeat(MAX_PASSWORD);
        let hash = bcrypt::hash(&exact, 4).unwrap();
        let users = Users::from_htpasswd(&format!("bob:{hash}\n"), Vec::new()).unwrap();
        assert!(users.verify_password("bob", &exact).is_some());
    }

    #[test]
    fn only_bcrypt_entries_are_accepted() {
        for line in [
            "bob:$apr1$abc$defghijklmnopqrstuvwx.",
            "bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",
            "bob:plaintext",
            "bob:$2y$10$short",
            "no-colon",
        ] {
            let err = Users::from_htpasswd(line, Vec::new()).unwrap_err();
            assert!(err.starts_with("line 1"), "{err}");
            assert!(!err.contains('$') || err.contains("bcrypt"), "{err}");
        }
        let hash = bcrypt::hash("x", 4).unwrap();
        let twice = format!("a:{hash}\na:{hash}\n");
        assert!(Users::from_htpasswd(&twice, Vec::new())
            .unwrap_err()
            .contains("twice"));
    }

    #[test]
    fn secrets_do_not_show() {
        let creds = Credentials {
            username: "hubuser".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{creds:?}").contains("hunter2"));
        assert_eq!(creds.basic_header(), "Basic aHVidXNlcjpodW50ZXIy");
        assert_eq!(
            parse_basic(&creds.basic_header()),
            Some(("hubuser".into(), "hunter2".into()))
        );
        assert_eq!(parse_basic("Bearer x"), None);
        assert_eq!(parse_bearer("Bearer abc"), Some("abc"));
        assert_eq!(parse_bearer("bearer  "), None);
    }
}
