//! Automatic HTTPS: the TLS listener's certificate from an ACME CA (RFC 8555; Let's Encrypt by
//! default). One task per process gets a certificate when there is none for the configured
//! names, renews it a third of its lifetime before it expires, and swaps it in through
//! [`Certificates::reload`], the hot reload the files-based listener uses. A failure (CA
//! unreachable, challenge refused) is logged and tried again with back-off while the
//! certificate in service stays. instant-acme speaks the protocol; what is here is when to
//! order, how the challenges are answered ([`challenges`]) and where things are kept
//! ([`store`]).

pub mod challenges;
mod http;
mod store;

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};

use crate::{
    config::{Acme, AcmeChallenge},
    server::tls::{validity, Certificates, Validity},
};
use challenges::Challenges;
pub use http::AcmeHttp;

/// The longest wait after a failure, however many there were in a row.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// The longest single sleep before a renewal: the clock is looked at again after it, so a
/// suspended machine or a clock set forward does not oversleep an expiry.
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// How long the CA may take to validate the challenges, and then to issue.
const VALIDATION: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(250))
    .backoff(1.5)
    .timeout(Duration::from_secs(120));

/// The RFC 8555 problem type of an account the CA no longer knows (a CA reset, a deactivated
/// account): a new one is made.
const ACCOUNT_GONE: &str = "urn:ietf:params:acme:error:accountDoesNotExist";

pub struct Issuer {
    acme: Acme,
    certs: Arc<Certificates>,
    challenges: Arc<Challenges>,
    http: AcmeHttp,
}

impl Issuer {
    pub fn new(
        acme: Acme,
        certs: Arc<Certificates>,
        challenges: Arc<Challenges>,
        http: AcmeHttp,
    ) -> Issuer {
        Issuer {
            acme,
            certs,
            challenges,
            http,
        }
    }

    /// Keeps a certificate in service for as long as the actix system runs.
    pub fn spawn(self) {
        actix_rt::spawn(self.run());
    }

    async fn run(self) {
        let names = self.acme.domains.join(", ");
        let mut failures = 0u32;
        let mut planned = None;
        loop {
            let now = SystemTime::now();
            let served = self
                .certs
                .current()
                .and_then(|pair| validity(&pair.cert[0]));
            let wait = served.map_or(Duration::ZERO, |v| v.until_renewal(now));
            if !wait.is_zero() {
                if planned != served {
                    planned = served;
                    log::info!(
                        "ACME: the certificate for {names} is valid until {}; renewal in {}",
                        humantime::format_rfc3339_seconds(served.map_or(now, |v| v.not_after)),
                        humantime::format_duration(round_seconds(wait)),
                    );
                }
                actix_rt::time::sleep(wait.min(MAX_SLEEP)).await;
                continue;
            }
            match self.obtain(failures).await {
                Ok(()) => {
                    log::info!(
                        "ACME: new certificate for {names} from {} in service",
                        self.acme.directory
                    );
                    // A CA whose certificates are due as soon as issued would otherwise be
                    // asked for one after another: that counts as a failure, backed off.
                    let fresh = self
                        .certs
                        .current()
                        .and_then(|pair| validity(&pair.cert[0]));
                    if fresh.is_some_and(|v| !v.until_renewal(SystemTime::now()).is_zero()) {
                        failures = 0;
                        continue;
                    }
                    let backoff = backoff(self.acme.retry, failures);
                    failures = failures.saturating_add(1);
                    log::warn!(
                        "ACME: the new certificate for {names} is due for renewal already; \
                         next try in {}",
                        humantime::format_duration(backoff)
                    );
                    actix_rt::time::sleep(backoff).await;
                }
                Err(reason) => {
                    let backoff = backoff(self.acme.retry, failures);
                    failures = failures.saturating_add(1);
                    let serving = match served {
                        Some(v) if v.not_after > now => format!(
                            "the certificate in service stays, valid until {}",
                            humantime::format_rfc3339_seconds(v.not_after)
                        ),
                        Some(_) => "the certificate in service has expired".to_owned(),
                        None => "HTTPS has no certificate until one is issued".to_owned(),
                    };
                    log::warn!(
                        "ACME: no certificate for {names} from {}: {reason}; {serving}; trying \
                         again in {}",
                        self.acme.directory,
                        humantime::format_duration(backoff),
                    );
                    actix_rt::time::sleep(backoff).await;
                }
            }
        }
    }

    /// One order, from the account to the new pair in service. `attempt` counts the failures
    /// before it, to choose the challenge.
    async fn obtain(&self, attempt: u32) -> Result<(), String> {
        let account = self.account(false).await?;
        match self.order(&account, attempt).await {
            Err(Failure::Api(problem)) if problem.r#type.as_deref() == Some(ACCOUNT_GONE) => {
                log::warn!("ACME: the CA no longer knows the stored account; making a new one");
                let account = self.account(true).await?;
                self.order(&account, attempt)
                    .await
                    .map_err(|f| f.to_string())
            }
            result => result.map_err(|f| f.to_string()),
        }
    }

    /// The stored account, or a new one (stored) when there is none or `fresh` is asked.
    async fn account(&self, fresh: bool) -> Result<Account, String> {
        let path = self.acme.account_file();
        if !fresh {
            if let Some(credentials) = store::read_account(&path)? {
                return Account::builder_with_http(Box::new(self.http.clone()))
                    .from_credentials(credentials)
                    .await
                    .map_err(|e| format!("the ACME directory: {e}"));
            }
        }
        let contact = self.acme.email.as_ref().map(|e| format!("mailto:{e}"));
        let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
        let (account, credentials) = Account::builder_with_http(Box::new(self.http.clone()))
            .create(
                &NewAccount {
                    contact: &contact,
                    // Let's Encrypt's subscriber agreement; the README says so.
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.acme.directory.to_string(),
                None,
            )
            .await
            .map_err(|e| format!("creating an account: {e}"))?;
        store::write_account(&path, &credentials)?;
        log::info!(
            "ACME: new account {} at {}, kept in {}",
            account.id(),
            self.acme.directory,
            path.display()
        );
        Ok(account)
    }

    async fn order(&self, account: &Account, attempt: u32) -> Result<(), Failure> {
        let identifiers: Vec<Identifier> = self
            .acme
            .domains
            .iter()
            .map(|name| Identifier::Dns(name.clone()))
            .collect();
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
        let kind = challenge_for(self.acme.challenge, attempt);
        // Whatever happens from here, the answers are withdrawn when the order is over.
        let _open = CloseOnDrop(&self.challenges);
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                // Validated recently for this account: nothing to show.
                AuthorizationStatus::Valid => continue,
                status => {
                    return Err(Failure::Other(format!(
                        "the authorization for {} is {status:?}",
                        authorization.identifier()
                    )))
                }
            }
            let name = authorization.identifier().to_string();
            let mut challenge = authorization.challenge(kind.clone()).ok_or_else(|| {
                Failure::Other(format!(
                    "the CA offers no {} challenge for {name}",
                    challenge_name(&kind)
                ))
            })?;
            let key_authorization = challenge.key_authorization();
            match kind {
                ChallengeType::Http01 => self
                    .challenges
                    .open_http(&challenge.token, key_authorization.as_str()),
                _ => self
                    .challenges
                    .open_tls_alpn(
                        &name,
                        key_authorization.digest().as_ref(),
                        self.certs.provider(),
                    )
                    .map_err(Failure::Other)?,
            }
            log::info!("ACME: answering {} for {name}", challenge_name(&kind));
            challenge.set_ready().await?;
        }
        if order.poll_ready(&VALIDATION).await? != OrderStatus::Ready {
            return Err(Failure::Other(refusal(&mut order, &kind).await));
        }
        let key_pem = order.finalize().await?;
        let chain_pem = order.poll_certificate(&VALIDATION).await?;
        store::write_pair(&self.certs.paths(), &chain_pem, &key_pem).map_err(Failure::Other)?;
        self.certs.reload().map_err(Failure::Other)
    }
}

/// Why an order failed: the CA's problem document, kept whole so an unknown account can be
/// told apart, or anything else.
enum Failure {
    Api(instant_acme::Problem),
    Other(String),
}

impl From<instant_acme::Error> for Failure {
    fn from(e: instant_acme::Error) -> Failure {
        match e {
            instant_acme::Error::Api(problem) => Failure::Api(problem),
            other => Failure::Other(other.to_string()),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Api(problem) => write!(f, "the CA said: {problem}"),
            Failure::Other(reason) => f.write_str(reason),
        }
    }
}

/// What the CA said about the challenges of an order that went invalid.
async fn refusal(order: &mut instant_acme::Order, kind: &ChallengeType) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authorization)) = authorizations.next().await {
        if authorization.refresh().await.is_err() {
            continue;
        }
        let name = authorization.identifier().to_string();
        for challenge in &authorization.challenges {
            if let Some(error) = &challenge.error {
                reasons.push(format!("{name}: {error}"));
            }
        }
    }
    let kind = challenge_name(kind);
    if reasons.is_empty() {
        format!("the order is invalid after the {kind} challenge")
    } else {
        format!("the {kind} challenge failed: {}", reasons.join("; "))
    }
}

/// The answers are withdrawn when this goes out of scope.
struct CloseOnDrop<'a>(&'a Challenges);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.close_all();
    }
}

/// The challenge to answer on this attempt: `auto` starts with TLS-ALPN-01 (only port 443
/// needed) and takes turns with HTTP-01 after each failure, so a mirror with only one of the
/// two ports reachable still gets its certificate.
fn challenge_for(choice: AcmeChallenge, attempt: u32) -> ChallengeType {
    match choice {
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        AcmeChallenge::Http01 => ChallengeType::Http01,
        AcmeChallenge::Auto if attempt.is_multiple_of(2) => ChallengeType::TlsAlpn01,
        AcmeChallenge::Auto => ChallengeType::Http01,
    }
}

/// As RFC 8555 and the settings spell it.
fn challenge_name(kind: &ChallengeType) -> &'static str {
    match kind {
        ChallengeType::Http01 => "http-01",
        ChallengeType::TlsAlpn01 => "tls-alpn-01",
        ChallengeType::Dns01 => "dns-01",
        _ => "other",
    }
}

/// `first` doubled for each failure before this one, at most [`MAX_BACKOFF`].
fn backoff(first: Duration, failures: u32) -> Duration {
    first
        .saturating_mul(2u32.saturating_pow(failures.min(31)))
        .min(MAX_BACKOFF)
}

fn round_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

/// ACME's renewal policy, on the validity `server::tls` reads.
impl Validity {
    /// How long until the renewal is due: a third of the lifetime before the end (30 days
    /// before for Let's Encrypt's 90-day certificates, as it recommends). Zero when due.
    fn until_renewal(&self, now: SystemTime) -> Duration {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        let due = self.not_after - lifetime / 3;
        due.duration_since(now).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn renewal_is_due_a_third_of_the_lifetime_before_expiry() {
        const DAY: u64 = 86_400;
        let lets_encrypt = Validity {
            not_before: at(1000 * DAY),
            not_after: at(1090 * DAY),
        };
        assert_eq!(
            lets_encrypt.until_renewal(at(1000 * DAY)),
            Duration::from_secs(60 * DAY)
        );
        assert_eq!(
            lets_encrypt.until_renewal(at(1059 * DAY)),
            Duration::from_secs(DAY)
        );
        assert_eq!(lets_encrypt.until_renewal(at(1060 * DAY)), Duration::ZERO);
        assert_eq!(lets_encrypt.until_renewal(at(2000 * DAY)), Duration::ZERO);
        // A short-lived certificate (a test CA's 30 s) renews after 20 s.
        let short = Validity {
            not_before: at(100),
            not_after: at(130),
        };
        assert_eq!(short.until_renewal(at(100)), Duration::from_secs(20));
    }

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let first = Duration::from_secs(60);
        assert_eq!(backoff(first, 0), first);
        assert_eq!(backoff(first, 1), first * 2);
        assert_eq!(backoff(first, 5), first * 32);
        assert_eq!(backoff(first, 6), MAX_BACKOFF);
        assert_eq!(backoff(first, u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn auto_takes_turns_starting_with_tls_alpn() {
        let kinds: Vec<_> = (0..4)
            .map(|attempt| challenge_for(AcmeChallenge::Auto, attempt))
            .collect();
        assert_eq!(
            kinds,
            [
                ChallengeType::TlsAlpn01,
                ChallengeType::Http01,
                ChallengeType::TlsAlpn01,
                ChallengeType::Http01
            ]
        );
        assert_eq!(
            challenge_for(AcmeChallenge::Http01, 0),
            ChallengeType::Http01
        );
        assert_eq!(
            challenge_for(AcmeChallenge::TlsAlpn01, 1),
            ChallengeType::TlsAlpn01
        );
    }
}
