//! Docker Hub's pull budget, as its manifest answers state it: `ratelimit-limit: 100;w=21600`,
//! `ratelimit-remaining: 76;w=21600` and `docker-ratelimit-source` (the address or account the
//! budget is counted for). Other registries that send the same headers are read the same way.
//! Pure: reading the headers and judging the budget; the metrics keep it, `routes::forward` warns.

/// One sighting of a budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    pub limit: i64,
    pub remaining: i64,
    /// `w=`, in seconds, when given.
    pub window_seconds: Option<i64>,
    /// `docker-ratelimit-source`, as a metric label may carry it (see [`source_label`]).
    pub source: String,
}

/// The budget an answer's headers state, when they state one (both counts parse).
pub fn budget(
    limit: Option<&str>,
    remaining: Option<&str>,
    source: Option<&str>,
) -> Option<Budget> {
    let (limit, limit_window) = parse(limit?)?;
    let (remaining, remaining_window) = parse(remaining?)?;
    Some(Budget {
        limit,
        remaining,
        window_seconds: limit_window.or(remaining_window),
        source: source_label(source),
    })
}

/// `100;w=21600` (RFC draft "RateLimit header fields"): the count, and the window when given.
pub fn parse(value: &str) -> Option<(i64, Option<i64>)> {
    let mut parts = value.split(';').map(str::trim);
    let count = parts.next()?.parse::<i64>().ok()?;
    let window = parts
        .filter_map(|p| p.strip_prefix("w="))
        .find_map(|w| w.trim().parse::<i64>().ok());
    Some((count, window))
}

/// The source as a label value: Docker Hub sends an IP address or an account id; anything else
/// (too long, or with characters an address or id never has) is `invalid`, and none `unknown`.
pub fn source_label(source: Option<&str>) -> String {
    let Some(source) = source.map(str::trim).filter(|s| !s.is_empty()) else {
        return "unknown".to_owned();
    };
    let plain = source.len() <= 64
        && source
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'-' | b'_'));
    if plain {
        source.to_owned()
    } else {
        "invalid".to_owned()
    }
}

/// Whether `remaining` of `limit` is under `fraction` of it.
fn is_low(remaining: i64, limit: i64, fraction: f64) -> bool {
    limit > 0 && (remaining as f64) < fraction * limit as f64
}

/// Whether this sighting takes the budget below `fraction` of its limit: low now, and not low
/// at the last sighting (`previous` remaining; `None` for the first), so that one warning is
/// logged per fall, not one per manifest.
pub fn falls_low(previous: Option<i64>, budget: &Budget, fraction: f64) -> bool {
    is_low(budget.remaining, budget.limit, fraction)
        && previous.is_none_or(|before| !is_low(before, budget.limit, fraction))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse() {
        assert_eq!(parse("100;w=21600"), Some((100, Some(21600))));
        assert_eq!(parse("76; w=21600"), Some((76, Some(21600))));
        assert_eq!(parse("5000"), Some((5000, None)));
        assert_eq!(parse("lots"), None);
        assert_eq!(parse(""), None);
        let seen = budget(Some("100;w=21600"), Some("76;w=21600"), Some("203.0.113.7")).unwrap();
        assert_eq!(
            seen,
            Budget {
                limit: 100,
                remaining: 76,
                window_seconds: Some(21600),
                source: "203.0.113.7".into()
            }
        );
        assert!(budget(Some("100"), None, None).is_none());
        assert_eq!(
            budget(Some("100"), Some("1"), None).unwrap().source,
            "unknown"
        );
    }

    #[test]
    fn a_source_is_an_address_or_an_id() {
        assert_eq!(source_label(Some("2001:db8::1")), "2001:db8::1");
        assert_eq!(
            source_label(Some("c7a3d2b0-0c1e-4bd9-9d1b-5a1b2c3d4e5f")),
            "c7a3d2b0-0c1e-4bd9-9d1b-5a1b2c3d4e5f"
        );
        // What would break the exposition format or a page, and what would grow without bound.
        assert_eq!(source_label(Some("x\"} 1\nfake 1")), "invalid");
        assert_eq!(source_label(Some("<script>")), "invalid");
        assert_eq!(source_label(Some(&"a".repeat(65))), "invalid");
        assert_eq!(source_label(Some(" ")), "unknown");
    }

    #[test]
    fn one_warning_per_fall_below_the_fraction() {
        let at = |remaining| Budget {
            limit: 100,
            remaining,
            window_seconds: None,
            source: "unknown".into(),
        };
        assert!(!falls_low(None, &at(10), 0.1));
        assert!(falls_low(None, &at(9), 0.1));
        assert!(falls_low(Some(10), &at(9), 0.1));
        assert!(!falls_low(Some(9), &at(8), 0.1));
        // Back up after the window, and down again: warned again.
        assert!(falls_low(Some(100), &at(5), 0.1));
        assert!(!falls_low(None, &at(0), 0.0));
    }
}
