//! Helpers the unit tests of several modules share.

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

/// A header map of `pairs`, in order, repeated names kept.
pub fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::try_from(*name).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}
