//! The client's response from an upstream one: its status, the headers the route chose, and
//! the body streamed through (cut for HTTP/1.1 clients by `chunking`, resumed when it breaks by
//! `resume`), with the upstream's length kept.

use std::{sync::Arc, time::Duration};

use actix_web::{
    body::{BodyStream, BoxBody, MessageBody, None as NoBody, SizedStream},
    dev::RequestHead,
    error::PayloadError,
    http::{header, header::HeaderMap, Method, StatusCode, Version},
    HttpResponse,
};
use awc::ClientResponse;
use bytes::Bytes;
use futures_util::Stream;

use crate::{
    error::{RegistryName, UpstreamName},
    metrics::Metrics,
    stream::{
        chunking::ClientChunks,
        idle::IdleGuard,
        resume::{Download, Resume, Resumer},
    },
};
#[cfg(target_os = "linux")]
use crate::{metrics::StreamInFlight, stream::splice};

/// The client's side of a relay.
pub struct ClientSide<'a> {
    /// Its method, and its HTTP version, which decides how the body is cut.
    pub request: &'a RequestHead,
    /// Its socket, when a body may be spliced to it (`stream::splice`).
    #[cfg(target_os = "linux")]
    pub splice_to: Option<splice::SpliceTo>,
}

/// Builds the client's response from an upstream one: status and the given headers, and the
/// body streamed with the upstream `Content-Length` kept (a HEAD answer keeps it with no body).
/// With a `resumer`, a body that breaks is asked for again from where it broke.
pub fn relay(
    response: ClientResponse,
    client: ClientSide<'_>,
    mut headers: HeaderMap,
    body_idle: Duration,
    (upstream, registry): (UpstreamName, RegistryName),
    metrics: &Arc<Metrics>,
    resumer: Option<Resumer>,
) -> HttpResponse {
    let method = &client.request.method;
    let status = response.status();
    // Read before the length is taken out of `headers` below.
    let resume = resumer.and_then(|r| Resume::of(r, status, &headers));
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    // A 304 keeps its Content-Length header as metadata; every other response's framing comes
    // from the body we attach.
    if status != StatusCode::NOT_MODIFIED {
        headers.remove(header::CONTENT_LENGTH);
    }
    let bodiless = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut response = if bodiless {
        match (length, *method == Method::HEAD) {
            (Some(len), true) => HttpResponse::with_body(
                status,
                SizedStream::new(
                    len,
                    futures_util::stream::empty::<Result<Bytes, PayloadError>>(),
                )
                .boxed(),
            ),
            _ => HttpResponse::with_body(status, NoBody::new().boxed()),
        }
    } else {
        let in_flight = metrics.stream_started();
        #[cfg(target_os = "linux")]
        let (response, in_flight, resume) = match spliced(response, &client, length, in_flight) {
            Spliceable::Yes(prepared, response, length, in_flight) => {
                let on_break = splice::OnBreak {
                    names: (upstream, registry),
                    metrics: metrics.clone(),
                    resume,
                    idle: body_idle,
                };
                let body = splice::Spliced::new(prepared, response, length, on_break, in_flight);
                let mut response = HttpResponse::with_body(status, body.boxed());
                *response.headers_mut() = headers;
                return response;
            }
            Spliceable::No(response, in_flight) => (response, in_flight, resume),
        };
        let mut body = IdleGuard::new(response, body_idle, (upstream, registry), "response body");
        body.expected = length;
        body.metrics = Some(metrics.clone());
        let body = Download::new(body, resume, in_flight);
        if client.request.version < Version::HTTP_2 {
            HttpResponse::with_body(status, framed(length, ClientChunks::new(body)))
        } else {
            // HTTP/2 cuts the body into its own frames under flow control.
            HttpResponse::with_body(status, framed(length, body))
        }
    };
    // Moved, not copied header by header: this runs for every proxied request.
    *response.headers_mut() = headers;
    response
}

#[cfg(target_os = "linux")]
enum Spliceable {
    Yes(splice::Prepared, ClientResponse, u64, StreamInFlight),
    No(ClientResponse, StreamInFlight),
}

/// Whether `response`'s body goes to the client by `splice(2)`: an HTTP/1 client on the plain
/// listener, an answer the upstream client noted the plain socket of, and the descriptors made.
#[cfg(target_os = "linux")]
fn spliced(
    response: ClientResponse,
    client: &ClientSide<'_>,
    length: Option<u64>,
    in_flight: StreamInFlight,
) -> Spliceable {
    use actix_web::HttpMessage as _;
    let socket = response.extensions_mut().remove::<splice::UpstreamFd>();
    let (Some(socket), Some(splice_to), Some(length)) = (socket, &client.splice_to, length) else {
        return Spliceable::No(response, in_flight);
    };
    if client.request.version >= Version::HTTP_2 {
        return Spliceable::No(response, in_flight);
    }
    match splice::Prepared::new(socket, splice_to.clone()) {
        Ok(prepared) => Spliceable::Yes(prepared, response, length, in_flight),
        Err(err) => {
            log::debug!("relaying a blob without splice(2): {err}");
            Spliceable::No(response, in_flight)
        }
    }
}

/// A streamed body with the upstream's length kept when it has one.
fn framed<S>(length: Option<u64>, body: S) -> BoxBody
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + 'static,
{
    match length {
        Some(len) => SizedStream::new(len, body).boxed(),
        None => BodyStream::new(body).boxed(),
    }
}
