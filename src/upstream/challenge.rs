//! Token challenges (`WWW-Authenticate`) as upstreams send them, parsed. The rewrite that points
//! clients at the mirror is `proxy::challenge`'s; hubferry reads a challenge itself where it
//! gets a token of its own (an endpoint fallen back on, see `failover`).

/// One parsed `WWW-Authenticate` challenge: scheme and its auth-params in order.
#[derive(Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

/// Parses a challenge `scheme param=value, param="quoted, value"` (RFC 9110 §11.6.1). Returns
/// `None` when the value does not follow the grammar. Values are unquoted.
pub fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, mut rest) = match value.find([' ', '\t']) {
        Some(i) => (&value[..i], value[i..].trim_start()),
        None => (value, ""),
    };
    if scheme.is_empty() || !scheme.bytes().all(is_token_byte) {
        return None;
    }
    let mut params = Vec::new();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let name = rest[..eq].trim();
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return None;
        }
        rest = rest[eq + 1..].trim_start();
        let (param_value, after) = if let Some(quoted) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => out.push(chars.next()?.1),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => out.push(c),
                }
            }
            (out, &quoted[end?..])
        } else {
            let end = rest.find([',', ' ', '\t']).unwrap_or(rest.len());
            let token = &rest[..end];
            if token.is_empty() || !token.bytes().all(is_token_byte) {
                return None;
            }
            (token.to_owned(), &rest[end..])
        };
        params.push((name.to_ascii_lowercase(), param_value));
        rest = after.trim_start();
        if let Some(next) = rest.strip_prefix(',') {
            rest = next.trim_start();
        } else if !rest.is_empty() {
            return None;
        }
    }
    Some(Challenge {
        scheme: scheme.to_owned(),
        params,
    })
}

/// A byte of an RFC 9110 token (a scheme, a parameter name, an unquoted value).
pub fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// What a token endpoint answered (distribution's token spec): the token (`token`, or OAuth2's
/// `access_token`) and its lifetime in seconds when it states one; `None` for anything else.
pub fn token_answer(body: &[u8]) -> Option<(String, Option<u64>)> {
    let answer: serde_json::Value = serde_json::from_slice(body).ok()?;
    let token = answer["token"]
        .as_str()
        .or_else(|| answer["access_token"].as_str())
        .filter(|token| !token.is_empty())?;
    let expires_in = answer["expires_in"].as_u64().filter(|s| *s > 0);
    Some((token.to_owned(), expires_in))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_answers_name_their_token() {
        assert_eq!(
            token_answer(br#"{"token":"t","expires_in":300}"#),
            Some(("t".into(), Some(300)))
        );
        assert_eq!(
            token_answer(br#"{"access_token":"a"}"#),
            Some(("a".into(), None))
        );
        assert_eq!(token_answer(br#"{"token":""}"#), None);
        assert_eq!(token_answer(b"<html>"), None);
    }
}
